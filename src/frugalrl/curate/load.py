"""The ``load`` stage: read each source, map its fields to ``problem``/``answer``/``solution``.

Reading is row by row so a bad row is dropped and reported by file and line (JSONL, JSON
lines) or row number (JSON arrays, parquet, saved datasets) instead of ending the run; only a
missing or unreadable file is an error (a UserError naming it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from frugalrl.curate.config import LoadConfig, SourceConfig
from frugalrl.curate.stage import CURATION_STAGES, Dropped, Row, StageContext, StageResult
from frugalrl.errors import UserError

Record = tuple[str, Any, str | None]  # (where, parsed value or None, parse error or None)


def _json_lines(path: Path) -> Iterator[Record]:
    with path.open(encoding="utf-8-sig", errors="replace") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path.name}:{lineno}"
            try:
                yield where, json.loads(line), None
            except json.JSONDecodeError as e:
                yield where, None, f"not valid JSON ({e.msg})"
            except (ValueError, RecursionError) as e:  # a number over 4300 digits, deep nesting
                yield where, None, f"not valid JSON ({e})"


_JSON_WHITESPACE = " \t\r\n"  # str.lstrip() would also strip U+2028 etc., which JSON rejects


def _json_file(path: Path) -> Iterator[Record]:
    """A JSON array of objects, or JSON lines saved as .json (what ``to_json`` writes)."""
    text = path.read_text(encoding="utf-8-sig", errors="replace")
    if not text.lstrip(_JSON_WHITESPACE).startswith("["):
        yield from _json_lines(path)
        return
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    except (ValueError, RecursionError) as e:  # a number over 4300 digits, deep nesting
        raise UserError(f"{path}: not valid JSON ({e})") from None
    for i, item in enumerate(items, 1):
        yield f"{path.name}[row {i}]", item, None


def _parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:  # noqa: BLE001 - any pyarrow failure is the file's, reported in one line
        raise UserError(f"{path}: cannot read parquet ({e})") from None
    for i, item in enumerate(table.to_pylist(), 1):
        yield f"{path.name}[row {i}]", item, None


def _saved_dataset(path: Path, split: str) -> Iterator[Record]:
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as e:  # noqa: BLE001
        raise UserError(f"{path}: not a dataset saved with save_to_disk ({e})") from None
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise UserError(f"{path}: no split '{split}' (splits: {', '.join(data)})")
        data = data[split]
    for i, item in enumerate(data, 1):
        yield f"{path.name}[row {i}]", item, None


def read_records(source: SourceConfig) -> Iterator[Record]:
    """Every row of the source as ``(where, value, error)``, by file type."""
    path = Path(source.path)
    if not path.exists():
        raise UserError(f"load.sources '{source.name}': file not found: {path}")
    if path.is_dir():
        return _saved_dataset(path, source.split)
    readers = {".jsonl": _json_lines, ".json": _json_file, ".parquet": _parquet}
    if path.suffix not in readers:
        raise UserError(f"{path}: unsupported format (use .jsonl, .json, .parquet or a directory)")
    return readers[path.suffix](path)


def _text(value: Any) -> str | None:
    """A field as text: strings stripped, numbers written plainly (27.0 -> "27"), else None."""
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def map_record(value: Any, source: SourceConfig) -> tuple[Row | None, str, str]:
    """``(row, reason, detail)``: the mapped row, or None and why it is dropped."""
    if not isinstance(value, dict):
        return None, "not a JSON object", f"got {type(value).__name__}"
    raw_problem = value.get(source.problem_field)
    problem = _text(raw_problem) if isinstance(raw_problem, str) else None
    if not problem:
        kind = "missing" if raw_problem is None else type(raw_problem).__name__
        kind = "blank" if isinstance(raw_problem, str) else kind
        return None, "no problem", f"field '{source.problem_field}': {kind}"
    raw_answer = value.get(source.answer_field)
    answer = "" if raw_answer is None else _text(raw_answer)
    if answer is None:
        return None, "bad answer type", f"'{source.answer_field}' is {type(raw_answer).__name__}"
    solution = ""
    if source.solution_field is not None:
        solution = _text(value.get(source.solution_field)) or ""
    if not answer and not solution:
        return None, "no answer", f"no '{source.answer_field}' and no solution to take it from"
    row = {**value, "problem": problem, "answer": answer}
    if source.solution_field is not None:
        row["solution"] = solution
    return row, "", ""


@CURATION_STAGES.register("load")
def load(rows: list[Row], config: LoadConfig, context: StageContext) -> StageResult:
    """Rows of every source in order, tagged ``_source`` and ``_origin`` ("file:line")."""
    if not config.sources:
        raise UserError("load.sources is empty: name at least one file to curate")
    kept: list[Row] = list(rows)
    dropped: list[Dropped] = []
    read: dict[str, int] = {}
    for source in config.sources:
        n = 0
        for where, value, error in read_records(source):
            if source.limit is not None and n >= source.limit:
                break
            n += 1
            if error is not None:
                dropped.append(
                    Dropped({"_origin": where, "_source": source.name}, "bad JSON", error)
                )
                continue
            row, reason, detail = map_record(value, source)
            if row is None:
                bad = {"_origin": where, "_source": source.name}
                if isinstance(value, dict):
                    bad = {**value, **bad}
                dropped.append(Dropped(bad, reason, detail))
                continue
            kept.append({**row, "_origin": where, "_source": source.name})
        read[source.name] = n
    return StageResult(kept, dropped, stats={"rows read per source": read})
