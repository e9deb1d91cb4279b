"""Evaluation benchmarks: the standard math test sets shipped with frugalrl, or a user's JSONL file.

The shipped files live in ``frugalrl/eval/data/`` (provenance in ``SOURCES.md`` there). Every
loaded problem is a dict with string ``id``, ``problem`` and ``answer``, plus the row's other
fields, so a benchmark row grades like a training row (``answer`` is the gold answer string).
"""

from __future__ import annotations

import importlib.resources
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from frugalrl.data.dataset import read_jsonl_numbered, require_fields
from frugalrl.errors import UserError

BENCHMARKS: dict[str, tuple[str, str]] = {
    "aime24": ("aime24.jsonl", "AIME 2024 I and II, 30 problems (integer answers 0-999)"),
    "amc23": ("amc23.jsonl", "AMC 12A and 12B 2023, 40 problems"),
    "math500": ("math500.jsonl", "MATH-500, 500 problems of the MATH test set (all 5 levels)"),
    "minerva": ("minerva_math.jsonl", "Minerva Math, 272 MIT OpenCourseWare STEM problems"),
    "olympiadbench": (
        "olympiadbench.jsonl",
        "OlympiadBench, 675 English text-only open-ended olympiad math problems",
    ),
    "gsm8k": ("gsm8k.jsonl", "GSM8K test set, 1319 grade-school word problems"),
    "aime25": ("aime25.jsonl", "AIME 2025 I and II, 30 problems (integer answers 0-999)"),
    "hmmt_feb25": (
        "hmmt_feb25.jsonl",
        "HMMT February 2025, 30 problems (LaTeX answers: fractions, radicals, one pair of values)",
    ),
}
"""Shipped benchmarks: name -> (file name in ``frugalrl/eval/data/``, one-line description)."""


@dataclass(frozen=True)
class Benchmark:
    """A named list of problems, each with string ``id``, ``problem`` and ``answer``."""

    name: str
    problems: list[dict[str, Any]]


def _is_path(spec: str) -> bool:
    return spec.endswith(".jsonl") or "/" in spec or "\\" in spec or Path(spec).is_file()


def _split_spec(spec: str) -> tuple[str, str | None]:
    """(name, path) for a spec; path is None for a shipped benchmark.

    Raises UserError for a spec that is neither a shipped name nor a file path.
    """
    spec = spec.strip()
    if spec in BENCHMARKS:
        return spec, None
    name, sep, path = spec.partition("=")
    # a "=" inside a path (not in a name) must not split it, hence the checks on the name part
    if sep and name.strip() and path.strip() and not _is_path(name):
        return name.strip(), path.strip()
    if spec and _is_path(spec):
        return Path(spec).stem, spec
    raise UserError(
        f"unknown benchmark {spec!r}; choose from: {', '.join(BENCHMARKS)} "
        "(or give a .jsonl file, as path or name=path)"
    )


def parse_benchmark_list(text: str) -> list[str]:
    """Benchmark specs from a comma-separated CLI value, e.g. ``aime24,amc23,math500``.

    ``all`` stands for every shipped benchmark and may be mixed with other specs; repeats are
    dropped (first one kept). Each spec is a shipped name, a JSONL path or ``name=path``; names
    are checked here, files only when loaded. Paths cannot contain commas.
    """
    specs: list[str] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        for spec in BENCHMARKS if item == "all" else [item]:
            _split_spec(spec)
            if spec not in specs:
                specs.append(spec)
    if not specs:
        raise UserError(f"no benchmarks in {text!r}; choose from: all, {', '.join(BENCHMARKS)}")
    return specs


def _answer_str(value: Any, where: str, field: str) -> str:
    """A gold answer as a string; whole floats lose their ``.0`` (AMC answers come as 27.0)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UserError(
            f"{where}: field '{field}' must be a string or a number, got {type(value).__name__}"
        )
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _normalise(
    name: str,
    path: Path,
    problem_field: str,
    answer_field: str,
    id_field: str,
) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    first_line: dict[str, int] = {}
    for index, (lineno, row) in enumerate(read_jsonl_numbered(path)):
        where = f"{path}:{lineno}"
        require_fields(row, (problem_field, answer_field), where)
        raw_id = row.get(id_field)
        problem_id = f"{name}-{index}" if raw_id is None else str(raw_id)
        if problem_id in first_line:
            raise UserError(
                f"{where}: duplicate id {problem_id!r} (first on line {first_line[problem_id]})"
            )
        first_line[problem_id] = lineno
        problems.append(
            {
                **row,
                "id": problem_id,
                "problem": str(row[problem_field]),
                "answer": _answer_str(row[answer_field], where, answer_field),
            }
        )
    if not problems:
        raise UserError(f"{path}: no problems found")
    return problems


def load_benchmark(
    spec: str,
    problem_field: str = "problem",
    answer_field: str = "answer",
    id_field: str = "id",
    limit: int | None = None,
) -> Benchmark:
    """Load a benchmark: a shipped name (see :data:`BENCHMARKS`), a JSONL path, or ``name=path``.

    A file's benchmark is named after its stem unless a name is given. The field names apply to
    user files only (shipped files always use ``id``/``problem``/``answer``); rows are
    normalised to string ``id``, ``problem`` and ``answer``, keeping their other fields. A row
    without an id gets ``<name>-<i>``, ``i`` its 0-based position in the file. The whole file is
    checked (missing fields, duplicate ids: UserError naming file and line) before ``limit``
    keeps its first problems.
    """
    if limit is not None and limit < 1:
        raise UserError(f"benchmark limit must be at least 1, got {limit}")
    name, user_path = _split_spec(spec)
    if user_path is None:
        resource = importlib.resources.files("frugalrl") / "eval" / "data" / BENCHMARKS[name][0]
        # as_file: the package may be installed somewhere that is not a plain directory
        with importlib.resources.as_file(resource) as path:
            if not path.is_file():
                raise UserError(f"shipped benchmark file missing: {path} (reinstall frugalrl)")
            problems = _normalise(name, path, "problem", "answer", "id")
    else:
        path = Path(user_path)
        if not path.is_file():
            raise UserError(f"benchmark file not found: {path}")
        problems = _normalise(name, path, problem_field, answer_field, id_field)
    return Benchmark(name, problems[:limit] if limit is not None else problems)
