"""The documentation site builds in strict mode: a broken link, a missing anchor, a page left out
of the navigation, an API reference to a missing object or a link to a missing repository file
fails the build (mkdocs.yml, docs/_hooks/repo_links.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")  # the dev extra installs it, so CI never skips this
    pytest.importorskip("material")
    pytest.importorskip("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "MUJOCO_GL": "egl"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"mkdocs build --strict failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"

    # The target of issue 18: from the front page, deploying on one's own robot is one click away.
    home = (site / "index.html").read_text()
    assert 'href="guides/bring_your_own_robot/"' in home
    guide = (site / "guides" / "bring_your_own_robot" / "index.html").read_text()
    assert "Checklist before the first activation" in guide
    # The API reference was generated from the docstrings, not left as ::: directives.
    api = (site / "api" / "deploy" / "index.html").read_text()
    assert "rlcontrol.deploy.runtime.load" in api and ":::" not in api
