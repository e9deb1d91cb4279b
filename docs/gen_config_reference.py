"""The configuration reference pages, generated from the pydantic models: one table per
section (option, type, default, description), the descriptions being the fields' own
``description=``, so the pages cannot drift from the code.

* ``config-reference.md``: a training recipe, ``frugalrl.config.Config`` (src/frugalrl/config.py);
* ``curate-reference.md``: a curation config, ``frugalrl.curate.config.CurateConfig``.

docs/hooks.py calls ``render_recipe()`` / ``render_curate()`` when mkdocs builds the site;
``python docs/gen_config_reference.py [curate]`` prints the same Markdown.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Union

import annotated_types
import yaml
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

INTRO = """\
# Configuration reference

Every option a recipe can set, section by section. This page is generated, when the site is
built, from the pydantic models in `src/frugalrl/config.py` (`docs/gen_config_reference.py`):
the descriptions are the fields' own, so it always matches the code. A recipe is YAML with these
sections; `--set section.option=value` overrides any of them on the command line
(list items by index: `--set rewards.0.weight=2`), values read as YAML scalars. An unknown key
or a bad value is a one-line error naming the key and the valid choices, before anything is
loaded. How the sections fit together: [Training from a recipe](training.md).

Types: `a | b` is either; `"x" | "y"` lists the valid strings; `null` is YAML's none.
Constraints such as `> 0` are checked when the recipe is loaded.
"""

CURATE_INTRO = """\
# Curation config reference

Every option of a `frugalrl curate` config, section by section. This page is generated, when
the site is built, from the pydantic models in `src/frugalrl/curate/config.py`
(`docs/gen_config_reference.py`), so it always matches the code. `stages` lists the stages to
run, in order; each reads its own section. `--set section.option=value` overrides any option
(list items by index: `--set load.sources.0.path=my.jsonl`). Input paths (data files, a local
model, the difficulty cache) resolve against the config file's directory, `output_dir` against
the working directory. What each stage does: [Curating training data](curation.md).

Types: `a | b` is either; `"x" | "y"` lists the valid strings; `null` is YAML's none.
Constraints such as `> 0` are checked when the config is loaded.
"""

# A short note under a section's heading.
NOTES = {
    "rewards[]": "A list: one entry per weighted reward term. Keys other than those below are "
    "the reward's own parameters (e.g. `alpha` of `efficiency`, `schema` of `format`); each "
    "reward's parameters and defaults are in [Algorithms](algorithms.md#rewards).",
    "guards.monitors[]": "A list: one entry per stability monitor "
    "([stability guards](algorithms.md#stability-guards)).",
    "peft": "Absent (`null`, the default): every weight trains. Present: LoRA adapters "
    "(peft) train instead; `--set peft.r=16` creates the section.",
    "data.length_targets": "Absent (`null`, the default): no target lengths.",
    "load.sources[]": "A list: one entry per input file or dataset.",
    "mix.sources[]": "A list: the parts of the final set.",
    "mix.sets.NAME[]": "Named alternative lists of parts, one chosen by `mix.select`.",
}


@dataclass
class Section:
    key: str  # dotted recipe path: "algo", "data.length_targets", "rewards[]"
    model: type[BaseModel]
    doc: str  # the class docstring, when it has its own
    parent: str | None  # the key of the section holding it (None: the top level)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (X, X | None, list[X])."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def _path_suffix(annotation: Any) -> str:
    """How a section's key continues past its field's name: "[]" for a list item, ".NAME"
    for a mapping's value (mix.sets.NAME[]), "" for the model itself or an optional one."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is list:
        return "[]" + _path_suffix(args[0])
    if origin is dict:
        return ".NAME" + _path_suffix(args[1])
    for arg in args:  # X | None
        if _models_in(arg):
            return _path_suffix(arg)
    return ""


def sections(
    root: type[BaseModel], prefix: str = "", parent: str | None = None
) -> Iterator[Section]:
    """Every section of the config, depth first: the top level (prefix ""), then each field
    that holds a model (its own section), recursively."""
    doc = root.__doc__ if "__doc__" in vars(root) and root.__doc__ else ""
    yield Section(prefix, root, " ".join(doc.split()), parent)
    for name, field in root.model_fields.items():
        for model in _models_in(field.annotation):
            key = f"{prefix}.{name}" if prefix else name
            yield from sections(model, key + _path_suffix(field.annotation), prefix)


def scalar_fields(section: Section) -> dict[str, FieldInfo]:
    """The section's own options: fields that are not sections themselves."""
    return {
        name: field
        for name, field in section.model.model_fields.items()
        if not _models_in(field.annotation)
    }


def option_key(section: Section, name: str) -> str:
    return f"{section.key}.{name}" if section.key else name


def type_name(annotation: Any) -> str:
    """A short, readable type: int, float | null, "hf" | "vllm", list[str], dict[str, any]."""
    if annotation is type(None):
        return "null"
    if annotation is Any:
        return "any"
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else yaml_value(a) for a in args)
    if origin in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is not None:
        inner = ", ".join(type_name(a) for a in args)
        return f"{getattr(origin, '__name__', str(origin))}[{inner}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _alternatives(kind: str) -> list[str]:
    """``kind`` cut at its top-level " | " (not inside brackets)."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(kind):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if depth == 0 and kind.startswith(" | ", i):
            parts.append(kind[start:i])
            start = i + 3
    return [*parts, kind[start:]]


_BOUNDS = [(annotated_types.Gt, "gt", ">"), (annotated_types.Ge, "ge", "≥")]
_BOUNDS += [(annotated_types.Lt, "lt", "<"), (annotated_types.Le, "le", "≤")]


def constraints(field: FieldInfo) -> str:
    """The field's numeric bounds, e.g. "> 0, ≤ 1"."""
    found = []
    for meta in field.metadata:
        for kind, attr, sign in _BOUNDS:
            if isinstance(meta, kind):
                found.append(f"{sign} {getattr(meta, attr)}")
    return ", ".join(found)


def yaml_value(value: Any) -> str:
    """A value as a recipe would write it (YAML flow style)."""
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json", exclude_defaults=True)
    elif isinstance(value, list | tuple):
        value = [
            v.model_dump(mode="json", exclude_defaults=True) if isinstance(v, BaseModel) else v
            for v in value
        ]
    if isinstance(value, str) and value == "":
        return '""'
    text = yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000)
    return text.strip().removesuffix("...").strip()


def default_text(field: FieldInfo) -> str:
    if field.default_factory is not None:
        return yaml_value(field.default_factory())
    if field.default is PydanticUndefined:
        return "required"
    return yaml_value(field.default)


_CITED_DOC = re.compile(r"\bdocs/([\w-]+\.md)(#[\w-]+)?")


def cell(text: str) -> str:
    """Text for a Markdown table cell: `|` and HTML escaped, `*` kept literal outside code
    spans, and docs/X.md#anchor citations turned into links."""
    out = []
    for i, part in enumerate(text.replace("``", "`").split("`")):
        if i % 2:  # inside a code span
            out.append(f"`{part}`")
            continue
        part = part.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        part = part.replace("*", r"\*").replace("|", r"\|")
        part = _CITED_DOC.sub(lambda m: f"[{m.group(0)}]({m.group(1)}{m.group(2) or ''})", part)
        out.append(part)
    return " ".join("".join(out).split())


def section_markdown(section: Section, children: list[Section]) -> str:
    title = section.key or "Top level"
    lines = [f"## {title}", ""]
    if section.doc:
        lines += [cell(section.doc), ""]
    if section.key in NOTES:
        lines += [NOTES[section.key], ""]
    subsections = [s.key for s in children]
    if subsections:
        listed = ", ".join(f"[`{s}`](#{anchor(s)})" for s in subsections)
        lines += [f"Sections: {listed}.", ""]
    fields = scalar_fields(section)
    if fields:
        lines += ['<div class="config-table" markdown>', ""]
        lines += ["| option | type | default | description |", "|---|---|---|---|"]
        for name, field in fields.items():
            # each alternative its own code span: the cell wraps between them
            kind = r" \| ".join(f"`{t}`" for t in _alternatives(type_name(field.annotation)))
            bounds = constraints(field)
            kind += f" ({bounds})" if bounds else ""
            row = [  # a | inside a code span needs no escape on the site
                f"`{option_key(section, name)}`",
                kind,
                f"`{default_text(field)}`",
                cell(field.description or "–"),
            ]
            lines.append("| " + " | ".join(row) + " |")
        lines += ["", "</div>", ""]
    return "\n".join(lines)


def render(root: type[BaseModel], intro: str) -> str:
    """A whole page, Markdown: ``intro``, then a table per section of the model ``root``."""
    found = list(sections(root))
    index = " · ".join(f"[{s.key or 'top level'}](#{anchor(s.key or 'Top level')})" for s in found)
    parts = [intro, f"Sections: {index}", ""]
    for s in found:
        parts.append(section_markdown(s, [c for c in found if c.parent == s.key]))
    return "\n".join(parts)


def render_recipe() -> str:
    """The configuration reference of a training recipe."""
    from frugalrl.config import Config

    return render(Config, INTRO)


def render_curate() -> str:
    """The configuration reference of a curation config."""
    from frugalrl.curate.config import CurateConfig

    return render(CurateConfig, CURATE_INTRO)


def anchor(title: str) -> str:
    """GitHub's (and the site's) heading anchor."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


if __name__ == "__main__":
    import sys

    print(render_curate() if sys.argv[1:] == ["curate"] else render_recipe())
