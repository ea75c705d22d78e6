"""Every relative link in README.md points at a file of the repository (and, for a Markdown
file, at a heading that exists), so the README's links work on GitHub."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LINK = re.compile(r"(?<!!)\[[^\]]+\]\(([^)\s]+)\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCED = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    text = FENCED.sub("", markdown)
    slugs, seen = set(), {}
    for heading in HEADING.findall(text):
        slug = github_slug(heading)
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        slugs.add(slug if n == 0 else f"{slug}-{n}")
    return slugs


def relative_links(markdown: str) -> list[str]:
    text = FENCED.sub("", markdown)
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", t)]


def test_github_slug_matches_known_headings():
    assert github_slug("Sample efficiency: SAC vs Stable-Baselines3 SAC (issue 16)") == \
        "sample-efficiency-sac-vs-stable-baselines3-sac-issue-16"
    assert github_slug("Bin grasping for QT-Opt (`rlc:grasp`)") == "bin-grasping-for-qt-opt-rlcgrasp"


def test_readme_relative_links_resolve():
    readme = (ROOT / "README.md").read_text()
    links = relative_links(readme)
    assert len(links) >= 10, "the README should link into the documentation"
    broken = []
    for target in links:
        path, _, anchor = target.partition("#")
        file = (ROOT / path) if path else ROOT / "README.md"
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file.read_text()):
            broken.append(f"{target}: no heading with that anchor in {path or 'README.md'}")
    assert not broken, "broken links in README.md:\n" + "\n".join(broken)


def test_readme_links_the_docs_site_pages():
    links = {t.partition("#")[0] for t in relative_links((ROOT / "README.md").read_text())}
    for page in ("docs/index.md", "docs/getting_started.md", "docs/guides/bring_your_own_robot.md",
                 "docs/guides/configs.md", "docs/api/index.md"):
        assert page in links, f"README.md does not link {page}"
