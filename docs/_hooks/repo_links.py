"""MkDocs hook: links from a page to repository files outside docs/ (configs, sources, tests).

On GitHub such a relative link (`../configs/td3_pendulum.yaml`) opens the file. The site has no
copy of those files, so MkDocs would report the link as broken. This hook checks that every such
target exists in the repository (a missing one is a warning, which `mkdocs build --strict` turns
into a failure, so these links cannot rot either) and rewrites the link: to
`<repo_url>/blob/main/<path>` when mkdocs.yml sets `repo_url`, else to the link's text (plus the
path in code, where the text does not already name it). Links inside code (fenced or inline) are left alone.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.repo_links")

FENCE = re.compile(r"^[ \t]*(```|~~~).*$", re.MULTILINE)
LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
CODE_SPAN = re.compile(r"(?<!`)(?P<ticks>`+)(?!`).+?(?<!`)(?P=ticks)(?!`)", re.DOTALL)  # `code`, ``co`de``
EXTERNAL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")  # http:, https:, mailto:, ...


def _outside_segments(markdown: str):
    """(text, is_code) pieces: fenced code blocks are passed through untouched."""
    pos, inside, fence = 0, False, ""
    for match in FENCE.finditer(markdown):
        marker = match.group(1)
        if not inside:
            yield markdown[pos:match.start()], False
            pos, inside, fence = match.start(), True, marker
        elif marker == fence:
            yield markdown[pos:match.end()], True
            pos, inside = match.end(), False
    yield markdown[pos:], inside


def on_page_markdown(markdown: str, page, config, files) -> str:
    docs_dir = Path(config["docs_dir"]).resolve()
    root = docs_dir.parent
    page_dir = (docs_dir / page.file.src_path).parent
    repo_url = (config.get("repo_url") or "").rstrip("/")

    def rewrite(match: re.Match) -> str:
        target = match.group("target")
        if EXTERNAL.match(target) or target.startswith(("#", "/")):
            return match.group(0)
        path, _, anchor = target.partition("#")
        resolved = (page_dir / path).resolve()
        if resolved == docs_dir or docs_dir in resolved.parents:
            return match.group(0)  # a page or file of the site: MkDocs checks it
        if root not in resolved.parents:
            log.warning(f"{page.file.src_path}: link {target!r} leaves the repository")
            return match.group(0)
        rel = resolved.relative_to(root).as_posix()
        if not resolved.exists():
            log.warning(f"{page.file.src_path}: link {target!r}: no such file in the repository ({rel})")
            return match.group(0)
        text = match.group("text")
        if repo_url:
            kind = "tree" if resolved.is_dir() else "blob"
            return f"[{text}]({repo_url}/{kind}/main/{rel}{'#' + anchor if anchor else ''})"
        return text if rel.rstrip("/") in text else f"{text} (`{rel}`)"

    def outside_code_spans(text: str) -> str:
        spans = [m.span() for m in CODE_SPAN.finditer(text)]  # a link starting inside one is code

        def maybe(match: re.Match) -> str:
            inside = any(start < match.start() < end for start, end in spans)
            return match.group(0) if inside else rewrite(match)

        return LINK.sub(maybe, text)

    return "".join(piece if code else outside_code_spans(piece) for piece, code in _outside_segments(markdown))
