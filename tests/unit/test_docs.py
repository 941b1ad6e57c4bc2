"""The documentation a clone of the repository carries is complete in itself.

Every relative link in README.md and docs/*.md resolves to a file or directory inside
the repository (and a `#fragment` into a Markdown file names one of its headings); no
link or text points outside it (`../shared`, absolute paths); docs/architecture.md has
a Mermaid diagram, which the code host renders.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^(`{3,}|~{3,}).*?^\1[ \t]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$", re.MULTILINE)
HTML_LINK = re.compile(r"""<(?:a|img)\b[^>]*?\b(?:href|src)\s*=\s*["']([^"']+)["']""",
                       re.IGNORECASE)
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
HEADING = re.compile(r"^ {0,3}#{1,6}[ \t]+(.+?)[ \t#]*$", re.MULTILINE)


def _prose(text: str) -> str:
    """The Markdown without code: links inside code blocks and spans are not links."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def links(text: str) -> list[str]:
    prose = _prose(text)
    return [m.group(1) for pattern in (INLINE_LINK, REFERENCE_DEF, HTML_LINK)
            for m in pattern.finditer(prose)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, markup and punctuation dropped,
    spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)        # [text](url) -> text
    text = text.replace("`", "").lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def relative_links(page: Path) -> list[str]:
    return [link for link in links(page.read_text(encoding="utf-8"))
            if not SCHEME.match(link)]


def test_pages_exist():
    for name in ("README.md", "design.md", "architecture.md", "history.md"):
        assert (DOCS / name).is_file(), f"docs/{name} is missing"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve_inside_the_repository(page: Path):
    problems = []
    for link in relative_links(page):
        path_part, _, fragment = link.partition("#")
        if path_part.startswith("/"):
            problems.append(f"{link}: absolute path (a clone has no such file)")
            continue
        target = (page.parent / unquote(path_part)).resolve() if path_part else page
        if not target.is_relative_to(ROOT):
            problems.append(f"{link}: outside the repository")
        elif not target.exists():
            problems.append(f"{link}: no such file")
        elif fragment and target.suffix == ".md" and fragment not in anchors(target):
            problems.append(f"{link}: no heading #{fragment} in {target.relative_to(ROOT)}")
    assert not problems, f"{page.relative_to(ROOT)}: " + "; ".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_at_the_shared_folder(page: Path):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{page.relative_to(ROOT)} refers to ../shared"
    assert not [link for link in links(text) if "shared/" in link]


def test_architecture_has_a_mermaid_diagram():
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```mermaid[ \t]*\n(.*?)^```[ \t]*$", text, re.MULTILINE | re.DOTALL)
    assert blocks, "docs/architecture.md has no ```mermaid block"
    for block in blocks:
        first = block.strip().splitlines()[0].split()[0]
        assert first in {"flowchart", "graph", "sequenceDiagram", "stateDiagram-v2"}, first


# The checker itself: a broken link must be caught, code must not count as a link.

def test_link_extraction():
    text = ("See [design](docs/design.md#why), ![img](a%20b.png \"t\"), <a href='x.md'>x</a>,\n"
            "[ref]: other.md\n`[not](a-link.md)`\n```\n[nor](this.md)\n```\n"
            "[web](https://example.org) [top](#top)\n")
    assert links(text) == ["docs/design.md#why", "a%20b.png", "https://example.org",
                           "#top", "other.md", "x.md"]


def test_slug_follows_the_code_host():
    assert slug("Storage layout (one bucket)") == "storage-layout-one-bucket"
    assert slug("Planned, not built") == "planned-not-built"
    assert slug("The `ctr` package") == "the-ctr-package"
