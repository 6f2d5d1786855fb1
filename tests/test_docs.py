"""The README stays short and every relative link of README.md and docs/*.md resolves (files and #anchors)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import REPO_ROOT

DOCS = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links there are examples, not links)."""
    text = re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]{2,}|`", "", heading.strip()).lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+?)\s*#*$", re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", path.read_text(),
                                                                flags=re.M | re.S), flags=re.M):
        base, n = slug(heading), 0
        name = base
        while name in found:
            n += 1
            name = f"{base}-{n}"
        found.add(name)
    return found


def links(path: Path) -> list[str]:
    return [t for t in LINK.findall(prose(path.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def test_slugs_follow_github() -> None:
    assert slug("Why did this rerun?") == "why-did-this-rerun"
    assert slug("`params.yaml`") == "paramsyaml"
    assert slug("Inference (`bench_inference.py`)") == "inference-bench_inferencepy"
    assert slug("Results on WLASL100 (val)") == "results-on-wlasl100-val"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in links(doc):
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading #{anchor} in {dest.relative_to(REPO_ROOT)}")
    assert not broken, broken


def test_readme_is_short_and_points_to_every_doc() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    linked = {(REPO_ROOT / t.partition("#")[0]).resolve() for t in links(REPO_ROOT / "README.md")}
    assert set(DOCS[1:]) <= linked, set(DOCS[1:]) - linked
    assert readme.count("make demo") >= 2 and "<!-- results:begin" in readme  # the place for new results
