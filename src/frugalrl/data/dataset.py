"""Loading problems (a problem text and a gold answer per row) from files or the HF hub."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frugalrl.errors import UserError


def read_jsonl_numbered(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, JSON object) for each non-empty line; a bad line is an error naming file
    and line (invalid JSON or UTF-8, not an object). A UTF-8 byte-order mark is skipped."""
    if not path.is_file():
        raise UserError(f"file not found: {path}")
    rows = []
    # bytes, decoded line by line, so that bad UTF-8 is reported on its own line
    for lineno, raw in enumerate(path.read_bytes().splitlines(), 1):
        try:
            line = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise UserError(f"{path}:{lineno}: not UTF-8 text (byte {e.start + 1})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
        except (ValueError, RecursionError) as e:  # a number over 4300 digits, deep nesting
            raise UserError(f"{path}:{lineno}: not valid JSON ({e})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
        rows.append((lineno, row))
    return rows


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """JSON objects, one per non-empty line; a bad line is an error naming file and line."""
    return [row for _, row in read_jsonl_numbered(path)]


def _read_any(path: str, split: str) -> list[dict[str, Any]]:
    p = Path(path)
    if p.suffix == ".jsonl":
        if not p.is_file():
            raise UserError(f"data file not found: {p}")
        return read_jsonl(p)
    if p.suffix in {".json", ".parquet", ".csv"}:
        if not p.is_file():
            raise UserError(f"data file not found: {p}")
        import datasets

        kind = {".json": "json", ".parquet": "parquet", ".csv": "csv"}[p.suffix]
        try:
            return list(datasets.load_dataset(kind, data_files=str(p), split="train"))
        except Exception as e:  # noqa: BLE001 - a malformed file, reported in one line
            cause = e.__cause__ or e  # datasets wraps the parser's error, which says what is wrong
            reason = " ".join(str(cause).split())[:300] or type(cause).__name__
            raise UserError(f"{p}: cannot read as {kind} ({reason})") from None
    if p.exists():
        raise UserError(f"{p}: unsupported data format (use .jsonl, .json, .parquet or .csv)")
    import datasets  # a hub dataset name: the one case that may download

    try:
        return list(datasets.load_dataset(path, split=split))
    except Exception as e:  # noqa: BLE001 - any hub failure is the user's to fix, in one line
        raise UserError(f"cannot load dataset '{path}' (split '{split}'): {e}") from None


def require_fields(row: dict[str, Any], fields: Sequence[str], where: str) -> None:
    """UserError naming ``where`` unless every field is present and not blank."""
    for field in fields:
        value = row.get(field)
        if value is None or (isinstance(value, str) and not value.strip()):
            fields = ", ".join(str(k).encode("unicode_escape").decode() for k in row)
            raise UserError(f"{where}: missing field '{field}' (fields: {fields})")


def load_problems(
    path: str,
    *,
    problem_field: str = "problem",
    answer_field: str = "answer",
    split: str = "train",
    limit: int | None = None,
) -> list[dict[str, Any]]:
    """Rows with non-empty ``problem`` and ``answer`` strings (renamed from the given fields).

    Other fields are kept. A row without either field is an error naming the row, so a
    malformed file fails before training starts rather than mid-run.
    """
    if not path:
        raise UserError("no data path given (set data.path in the recipe)")
    rows = _read_any(path, split)
    problems = []
    for i, row in enumerate(rows[:limit] if limit else rows):
        require_fields(row, (problem_field, answer_field), f"{path}: row {i + 1}")
        problems.append(
            {**row, "problem": str(row[problem_field]), "answer": str(row[answer_field])}
        )
    if not problems:
        raise UserError(f"{path}: no problems found")
    return problems
