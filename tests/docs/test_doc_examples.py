"""Every code block in docs/ marked `<!-- runnable -->` runs and exits 0 (docs/contributing.md,
"Runnable examples"), so the examples cannot drift from the code."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
MARKER = "<!-- runnable -->"
FENCE = re.compile(r"^```(\w*)\s*$")
LANGUAGES = {"python": "python", "bash": "bash", "sh": "bash"}
TIMEOUT_S = 60


def runnable_blocks() -> list[tuple[str, int, str, str]]:
    """(page, line of the fence, language, code) of every marked block in docs/**/*.md."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        lines = page.read_text().splitlines()
        quoted = False  # inside a ````-fence: an example of Markdown itself (docs/contributing.md)
        for i, line in enumerate(lines):
            if line.lstrip().startswith("````"):
                quoted = not quoted
            if quoted or line.strip() != MARKER:
                continue
            fence = FENCE.match(lines[i + 1]) if i + 1 < len(lines) else None
            rel = page.relative_to(DOCS).as_posix()
            if fence is None or fence.group(1) not in LANGUAGES:
                raise AssertionError(f"docs/{rel}:{i + 1}: {MARKER} must be followed by a ```python or ```bash fence")
            end = next(j for j in range(i + 2, len(lines)) if lines[j].strip() == "```")
            found.append((rel, i + 2, LANGUAGES[fence.group(1)], "\n".join(lines[i + 2:end]) + "\n"))
    return found


BLOCKS = runnable_blocks()


def test_the_docs_have_runnable_examples():
    pages = {page for page, *_ in BLOCKS}
    for page in ("guides/export.md", "guides/bring_your_own_robot.md", "guides/environments.md"):
        assert page in pages, f"docs/{page} lost its runnable examples"


@pytest.mark.parametrize(("page", "line", "language", "code"), BLOCKS,
                         ids=[f"{page}:{line}" for page, line, *_ in BLOCKS])
def test_doc_example_runs(page, line, language, code, example_dir):
    script = example_dir / ("example.py" if language == "python" else "example.sh")
    script.write_text(code)
    bin_dir = str(Path(sys.executable).parent)
    env = {**os.environ, "MUJOCO_GL": "egl", "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}
    command = [sys.executable, script.name] if language == "python" else ["bash", "-e", "-o", "pipefail", script.name]
    proc = subprocess.run(command, cwd=example_dir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, (f"docs/{page}:{line}: the {language} example failed (exit {proc.returncode})\n"
                                  f"--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}")
