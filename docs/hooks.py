"""mkdocs hooks (``hooks:`` in mkdocs.yml): the pages made when the site is built, the files
included into pages, and the links that leave docs/.

* ``config-reference.md`` and ``curate-reference.md`` are generated from the pydantic models of
  ``src/frugalrl/config.py`` and ``src/frugalrl/curate/config.py`` by
  ``docs/gen_config_reference.py``, so they cannot drift from the code.
* ``<!-- frugalrl:include PATH -->`` … ``<!-- frugalrl:end-include -->`` in a page is replaced by
  the repository file PATH, word for word under a note saying so, its headings one level down
  (the page keeps its own title). What sits between the two markers is what a reader of the
  Markdown in the repository sees instead: a link to the file. ``docs/benchmarks.md`` includes
  ``benchmarks/README.md`` this way, so the measured tables stay beside their scripts.
* A page may link to those repository files as ``../benchmarks/README.md#anchor`` or
  ``../src/frugalrl/config.py#algo``, which is right when the Markdown is read in the
  repository; on the site such a link goes to the page that shows the file (and its section).
"""

from __future__ import annotations

import importlib
import importlib.util
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent

# Repository files (relative to the root) -> the page of the site that shows them.
SITE_PAGES = {
    "benchmarks/README.md": "benchmarks.md",
    "src/frugalrl/config.py": "config-reference.md",
    "src/frugalrl/curate/config.py": "curate-reference.md",
}

INCLUDE_NOTE = """\
!!! note "Included from `{path}`"
    This section is the repository file `{path}`, included word for word when the site is
    built: edit that file, not this page.
"""


def _generator():
    """docs/gen_config_reference.py, loaded afresh (docs/ is not a package), with the config
    modules reloaded, so that `mkdocs serve` shows an edit of them on its next rebuild."""
    for name in ("frugalrl.config", "frugalrl.curate.config"):
        importlib.reload(importlib.import_module(name))
    name = "frugalrl_docs_config_reference"
    spec = importlib.util.spec_from_file_location(name, DOCS / "gen_config_reference.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def on_files(files: Files, config) -> Files:
    generator = _generator()
    generated = {
        "config-reference.md": generator.render_recipe,
        "curate-reference.md": generator.render_curate,
    }
    for name, render in generated.items():
        if files.get_file_from_path(name) is not None:
            raise PluginError(f"docs/{name} is generated when the site is built: remove the file")
        files.append(File.generated(config, name, content=render()))
    return files


_INCLUDE = re.compile(
    r"^<!-- frugalrl:include (?P<path>\S+) -->\n.*?^<!-- frugalrl:end-include -->$",
    re.DOTALL | re.MULTILINE,
)
_FENCE = re.compile(r"^\s*(```|~~~)")


def _included(path: str) -> str:
    """The file at ``path`` (relative to the repository root) without its title, its other
    headings one level down, under the note saying where it comes from."""
    file = ROOT / path
    if not file.is_file():
        raise PluginError(f"frugalrl:include: {path} is not a file of the repository")
    lines = file.read_text(encoding="utf-8").splitlines()
    if lines and lines[0].startswith("# "):
        lines = lines[1:]
    fenced = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.startswith("#"):
            lines[i] = "#" + line
    return INCLUDE_NOTE.format(path=path) + "\n".join(lines)


_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")


def _table_code_pipes(markdown: str) -> str:
    """``\\|`` inside a code span of a table row, as GitHub needs it, is a plain ``|`` to
    Python-Markdown (which would show the backslash)."""
    lines = markdown.split("\n")
    fenced = False
    for i, line in enumerate(lines):
        if _FENCE.match(line):
            fenced = not fenced
        elif not fenced and line.lstrip().startswith("|") and "\\|" in line:
            parts = line.split("`")
            parts[1::2] = [p.replace("\\|", "|") for p in parts[1::2]]
            lines[i] = "`".join(parts)
    return "\n".join(lines)


def on_page_markdown(markdown: str, page, config, files) -> str:
    markdown = _INCLUDE.sub(lambda m: _included(m.group("path")), markdown)
    markdown = _table_code_pipes(markdown)
    here = posixpath.dirname(page.file.src_uri)

    def redirect(match: re.Match) -> str:
        target = match.group("target")
        if "://" in target or target.startswith(("/", "mailto:")):
            return match.group(0)
        in_repo = posixpath.normpath(posixpath.join("docs", here, target))
        page_uri = SITE_PAGES.get(in_repo)
        if page_uri is None:
            return match.group(0)
        new = posixpath.relpath(page_uri, here or ".")
        return f"]({new}{match.group('anchor') or ''})"

    return _LINK.sub(redirect, markdown)
