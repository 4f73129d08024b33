"""Relative links of the user docs lead somewhere: the file exists and, with ``#anchor``, so does the heading.

Anchors follow GitHub's rule for headings (lower case, punctuation dropped, spaces as hyphens, a
repeated heading numbered ``-1``, ``-2``...), so a link that works here works on the repository's
pages. Bundle templates are left out: their links resolve inside a packaged bundle.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "data_manifests").glob("*.md"),
               *(ROOT / "bundles").glob("*/docs/*.md")])
CODE_BLOCK = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)\s]+)\)")


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings of ``markdown`` (and of explicit ``<a id=...>`` tags).

    Examples
    --------
    >>> sorted(heading_anchors("# Shifted domain (`benchmarks/domain_shift.py`)\\n## Setup\\n## Setup\\n"))
    ['setup', 'setup-1', 'shifted-domain-benchmarksdomain_shiftpy']
    """
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    for line in CODE_BLOCK.sub("", markdown).splitlines():
        anchors.update(re.findall(r'<a (?:id|name)="([^"]+)"', line))
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading is None:
            continue
        text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1))
        slug = re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")
        anchors.add(slug if slug not in seen else f"{slug}-{seen[slug]}")
        seen[slug] = seen.get(slug, 0) + 1
    return anchors


def broken_links(md: Path) -> list[str]:
    """The relative links of ``md`` whose file or heading anchor does not exist."""
    broken = []
    for target in LINK.findall(CODE_BLOCK.sub("", md.read_text(encoding="utf-8"))):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (md.parent / path) if path else md
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in heading_anchors(dest.read_text(encoding="utf-8")):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_docs_are_found() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {"README.md", "docs/benchmarks.md", "docs/models.md", "bundles/ich_ct_segmentation/docs/README.md"} <= names


@pytest.mark.parametrize("md", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(md: Path) -> None:
    assert broken_links(md) == []


def test_a_wrong_anchor_or_file_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Shifted domain (`benchmarks/domain_shift.py`)\n", encoding="utf-8")
    md = tmp_path / "index.md"
    md.write_text("# Top\n[a](#top) [b](other.md#shifted-domain-benchmarksdomain_shiftpy) [c](#nowhere)\n"
                  "[d](other.md#shifted-domain) [e](missing.md) [f](https://example.org/x#y)\n"
                  "```\n[g](#inside-code)\n```\n", encoding="utf-8")
    assert broken_links(md) == ["#nowhere (no such heading)", "other.md#shifted-domain (no such heading)",
                                "missing.md (no such file)"]
