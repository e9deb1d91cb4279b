"""The code, recipes and README cite the project's own docs: every ``docs/X.md#anchor`` they
name exists, and nothing cites the design notes that are not in the repository."""

import re
from pathlib import Path

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
CITING = [
    *sorted((ROOT / "src" / "frugalrl").rglob("*.py")),
    *sorted((ROOT / "src" / "frugalrl" / "recipes").glob("*.yaml")),
    ROOT / "README.md",
    *sorted(DOCS.glob("*.md")),
]


def anchors(doc: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation but - and _ dropped, spaces to -."""
    found = set()
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            found.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return found


def test_every_cited_docs_anchor_exists():
    known = {doc.name: anchors(doc) for doc in DOCS.glob("*.md")}
    cited = []
    for path in CITING:
        text = path.read_text(encoding="utf-8")
        for doc, anchor in re.findall(r"(?:docs/|\]\()([\w-]+\.md)#([\w\-]+)", text):
            if doc in known:
                cited.append((path.name, doc, anchor))
    assert len(cited) > 20
    missing = [c for c in cited if c[2] not in known[c[1]]]
    assert not missing


def test_nothing_cites_files_outside_the_repository():
    for path in CITING:
        text = path.read_text(encoding="utf-8")
        assert "PAPERS.md" not in text and "DESIGN.md" not in text, path
