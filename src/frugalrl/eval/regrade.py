"""Re-grading saved generations without a model: ``frugalrl eval --regrade FILE``.

Accepts frugalrl's own ``generations.jsonl`` and other tools' outputs (see
:func:`read_generations`); grades like ``frugalrl eval`` and writes the same files. Imports
no torch, so a re-grade starts in a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from frugalrl.data.dataset import read_jsonl
from frugalrl.errors import UserError
from frugalrl.eval.grading import grade_rows
from frugalrl.eval.summary import summarize, summary_markdown
from frugalrl.rewards.answer import DEFAULT_EXTRACTION


def write_results(
    out: Path, rows: Sequence[dict], meta: dict[str, Any], title: str, votes: Sequence[str] = ()
) -> dict:
    """Summarise graded ``rows`` into ``out`` (generations, summary.json, summary.md);
    ``votes``: short-m@k votes to add (``frugalrl.eval.summary.summarize``)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "generations.jsonl.tmp"
    with tmp.open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    tmp.replace(out / "generations.jsonl")
    summary = {**summarize(rows, votes), **meta}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "summary.md").write_text(summary_markdown(summary, title=title) + "\n")
    return summary


def read_generations(path: Path) -> list[dict[str, Any]]:
    """Rows to re-grade, from frugalrl or another tool.

    Each row needs the gold ``answer``, the model text in ``completion`` (or ``response``) and
    its problem in ``id`` (or ``problem``); ``benchmark`` defaults to the file's stem; ``tokens``
    and ``finished`` are kept when present.
    """
    rows = []
    seen: dict[tuple[str, str], int] = {}
    for n, raw in enumerate(read_jsonl(path), 1):
        text = raw.get("completion", raw.get("response"))
        key = raw.get("id", raw.get("problem"))
        for field, value in (("answer", raw.get("answer")), ("completion", text), ("id", key)):
            if value is None:
                alt = {"completion": " (or 'response')", "id": " (or 'problem')"}.get(field, "")
                raise UserError(f"{path}: row {n}: missing field '{field}'{alt}")
        benchmark = str(raw.get("benchmark", path.stem))
        problem = (benchmark, str(key))
        sample = raw.get("sample", seen.get(problem, 0))
        seen[problem] = seen.get(problem, 0) + 1
        rows.append(
            {
                "benchmark": benchmark,
                "id": str(key),
                "sample": sample,
                "completion": str(text),
                "answer": str(raw["answer"]),
                "tokens": raw.get("tokens"),
                "finished": raw.get("finished"),
            }
        )
    if not rows:
        raise UserError(f"{path}: no rows to grade")
    return rows


def regrade(
    path: Path,
    out: Path | None = None,
    extraction: str = DEFAULT_EXTRACTION,
    workers: int = 0,
    timeout: float = 30.0,
    votes: Sequence[str] = (),
) -> dict[str, Any]:
    """Grade saved generations again (no model) and summarise them like ``frugalrl eval``."""
    t0 = time.perf_counter()
    rows = grade_rows(read_generations(path), extraction, workers, timeout)
    meta = {"regraded": str(path), "extraction": extraction}
    meta["grade_seconds"] = time.perf_counter() - t0
    if out is None:
        return {**summarize(rows, votes), **meta}
    return write_results(out, rows, meta, f"regrade of {path}", votes)
