"""The documentation site (mkdocs.yml, docs/): it builds with ``mkdocs build --strict`` (no
broken link or anchor, no page missing from the navigation), and the generated configuration
references list every field of every config section with its own description, so an option
added to config.py appears there without anyone editing a page."""

from __future__ import annotations

import html
import re
import typing
from html.parser import HTMLParser
from pathlib import Path

import pytest
from pydantic import BaseModel

pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]'")
pytest.importorskip("material", reason="mkdocs-material is not installed: pip install -e '.[docs]'")

from docs_build import ROOT, build_site  # noqa: E402

from frugalrl.config import Config  # noqa: E402
from frugalrl.curate.config import CurateConfig  # noqa: E402

PAGES = [
    "index.html",
    "quickstart.html",
    "demo.html",
    "training.html",
    "rewards.html",
    "evaluation.html",
    "curation.html",
    "scale-out.html",
    "reliability.html",
    "from-trl.html",
    "convert.html",
    "config-reference.html",
    "curate-reference.html",
    "algorithms.html",
    "design.html",
    "benchmarks.html",
    "development.html",
]


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    run = build_site(out)
    assert run.returncode == 0, f"mkdocs build --strict failed:\n{run.stderr[-5000:]}"
    return out


class _Tables(HTMLParser):
    """The rows of every table (cell texts) and the h2 headings of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.h2: list[str] = []
        self._cell: list[str] | None = None
        self._h2: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "tr":
            self.rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "h2":
            self._h2 = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "h2" and self._h2 is not None:
            self.h2.append("".join(self._h2).replace("¶", "").strip())
            self._h2 = None

    def handle_data(self, data):
        for part in (self._cell, self._h2):
            if part is not None:
                part.append(data)


def _models_in(annotation) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _suffix(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return "[]" + _suffix(args[0])
    if origin is dict:
        return ".NAME" + _suffix(args[1])
    return next((_suffix(a) for a in args if _models_in(a)), "")


def options(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    """Every option of a config, by its dotted key (``rewards[].weight``), with its field;
    and every section, by its key, with None."""
    found: dict[str, object] = {}
    for name, field in model.model_fields.items():
        key = f"{prefix}.{name}" if prefix else name
        nested = _models_in(field.annotation)
        if not nested:
            found[key] = field
        for sub in nested:
            section = key + _suffix(field.annotation)
            found[section] = None
            found.update(options(sub, section))
    return found


def _plain(description: str) -> str:
    """A field's description as the page's text shows it (code spans without backticks)."""
    return " ".join(description.replace("`", "").split())


@pytest.mark.parametrize(
    ("page", "root"), [("config-reference.html", Config), ("curate-reference.html", CurateConfig)]
)
def test_config_reference_lists_every_field(site, page, root):
    parsed = _Tables()
    parsed.feed((site / page).read_text(encoding="utf-8"))
    rows = {row[0]: row for row in parsed.rows if len(row) == 4 and row[0] != "option"}
    expected = options(root)
    fields = {key: f for key, f in expected.items() if f is not None}
    sections = {key for key, f in expected.items() if f is None}
    assert len(fields) > 20
    assert sorted(set(fields) - set(rows)) == [], "options missing from the page"
    assert sorted(set(rows) - set(fields)) == [], "rows for options the config does not have"
    assert sections | {"Top level"} <= set(parsed.h2), "a section without its heading"
    for key, field in fields.items():
        _, kind, default, description = rows[key]
        assert kind and default, key
        if field.description:
            assert description == _plain(field.description), key
        else:
            assert description == "–", key


def test_the_pages_are_built(site):
    missing = [page for page in PAGES if not (site / page).is_file()]
    assert not missing
    # every page of the navigation (mkdocs.yml) is one of PAGES and vice versa
    nav = re.findall(r":\s*([\w-]+)\.md\s*$", (ROOT / "mkdocs.yml").read_text(), re.MULTILINE)
    assert sorted(f"{name}.html" for name in nav) == sorted(PAGES)


def test_benchmarks_page_includes_the_benchmarks_readme(site):
    """docs/benchmarks.md shows benchmarks/README.md whole: each of its headings, and its
    measured tables' figures, are on the built page."""
    page = html.unescape((site / "benchmarks.html").read_text(encoding="utf-8"))
    readme = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    fenced = False
    headings = []
    for line in readme.splitlines()[1:]:
        fenced ^= line.lstrip().startswith("```")
        if not fenced and line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            headings.append(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    assert len(headings) > 5
    assert [h for h in headings if f'id="{h}"' not in page] == []
    for figure in re.findall(r"\*\*([\d.]+×)\*\*", readme):
        assert figure in page


def test_links_to_repository_files_go_to_their_pages(site):
    """`../benchmarks/README.md#x` and `../src/frugalrl/config.py#algo`, right in the
    repository, lead to the pages that show those files on the site."""
    algorithms = (site / "algorithms.html").read_text(encoding="utf-8")
    assert 'href="benchmarks.html#asynchronous-training"' in algorithms
    training = (site / "training.html").read_text(encoding="utf-8")
    assert 'href="config-reference.html#algo"' in training
    assert "config.py" not in re.findall(r'href="([^"]+)"', training)
