"""Writing the curated set and the account of how it was made.

* ``data.jsonl`` and ``hf/`` (``datasets.save_to_disk``): the rows, bookkeeping keys dropped;
* ``dropped.jsonl``: every dropped or flagged row with its stage, reason and detail;
* ``curation_summary.json``: rows in, dropped by reason and out, per stage;
* ``curation_report.md``: the same as tables, with examples of each reason, and
  ``difficulty.png`` (histogram of estimated pass rates) when the difficulty stage ran.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from frugalrl.curate.stage import Dropped, Row, StageResult, excerpt, origin

DATA_FILE = "data.jsonl"
HF_DIR = "hf"
DROPPED_FILE = "dropped.jsonl"
SUMMARY_FILE = "curation_summary.json"
REPORT_FILE = "curation_report.md"
HISTOGRAM_FILE = "difficulty.png"


def public(row: Row) -> Row:
    """The row as written: without ``_`` bookkeeping keys."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def stage_summary(name: str, result: StageResult, seconds: float) -> dict[str, Any]:
    kept, dropped = len(result.kept), len(result.dropped)
    return {
        "stage": name,
        "rows_in": kept + dropped,
        "dropped": dropped,
        "dropped_by_reason": result.dropped_by_reason(),
        "flagged_by_reason": result.flagged_by_reason(),
        "rows_out": kept,
        "stats": result.stats,
        "seconds": round(seconds, 3),
    }


def write_rows(out: Path, rows: Sequence[Row], progress: bool = True) -> dict[str, str]:
    """data.jsonl and the HF dataset directory; returns their paths."""
    import datasets
    from datasets.utils.logging import disable_progress_bar, enable_progress_bar

    clean = [public(r) for r in rows]
    with (out / DATA_FILE).open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in clean)
    if not progress:
        disable_progress_bar()
    try:
        datasets.Dataset.from_list(clean).save_to_disk(str(out / HF_DIR))
    finally:
        enable_progress_bar()
    return {"jsonl": str(out / DATA_FILE), "hf": str(out / HF_DIR)}


def write_dropped(out: Path, removed: Sequence[tuple[str, str, Dropped]]) -> str:
    """dropped.jsonl: ``(stage, "dropped" | "flagged", Dropped)`` as one row each."""
    path = out / DROPPED_FILE
    with path.open("w", encoding="utf-8") as f:
        for stage, kind, d in removed:
            row = {
                "stage": stage,
                kind: True,
                "reason": d.reason,
                "detail": d.detail,
                "origin": d.row.get("_origin"),
                "row": public(d.row),
            }
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    return str(path)


def plot_difficulty(histogram: dict[str, list], path: Path) -> Path:
    """Bar chart of pass-rate counts (Figure directly: no pyplot, no global backend)."""
    edges, counts = histogram["edges"], histogram["counts"]
    fig = Figure(figsize=(6, 3.5))
    ax = fig.add_subplot()
    widths = [b - a for a, b in zip(edges, edges[1:], strict=False)]
    ax.bar(edges[:-1], counts, width=widths, align="edge", edgecolor="black")
    ax.set_xlabel("estimated pass rate")
    ax.set_ylabel("problems")
    ax.set_title("Difficulty under the model")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path


def _table(stages: Sequence[dict[str, Any]]) -> list[str]:
    lines = [
        "| stage | rows in | dropped | rows out | why dropped | seconds |",
        "|---|---:|---:|---:|---|---:|",
    ]
    for s in stages:
        why = ", ".join(f"{r}: {n:,}" for r, n in s["dropped_by_reason"].items()) or "–"
        lines.append(
            f"| {s['stage']} | {s['rows_in']:,} | {s['dropped']:,} | {s['rows_out']:,} | {why} "
            f"| {s['seconds']:.1f} |"
        )
    return lines


def _examples(title: str, items: Sequence[Dropped], per_reason: int) -> list[str]:
    by_reason: dict[str, list[Dropped]] = {}
    for d in items:
        by_reason.setdefault(d.reason, []).append(d)
    lines: list[str] = []
    for reason, group in by_reason.items():
        lines += ["", f"**{title}: {reason}** ({len(group):,})", ""]
        for d in group[:per_reason]:
            problem = excerpt(d.row.get("problem", ""), 100)
            text = f"- `{origin(d.row)}`: {d.detail}".rstrip(": ")
            lines.append(f"{text}" + (f"<br>problem: {problem}" if problem else ""))
    return lines


def report_markdown(
    summary: dict[str, Any],
    results: Sequence[tuple[str, StageResult]],
    per_reason: int,
    histogram_png: str | None,
) -> str:
    lines = [
        f"# Curation report: {summary['name']}",
        "",
        f"{summary['rows_in']:,} rows read, {summary['rows_out']:,} written, in "
        f"{summary['wall_seconds']:.1f} s. Outputs: `{DATA_FILE}`, `{HF_DIR}/`, every dropped "
        f"or flagged row in `{DROPPED_FILE}`, these numbers in `{SUMMARY_FILE}`.",
        "",
        *_table(summary["stages"]),
    ]
    for (name, result), s in zip(results, summary["stages"], strict=True):
        lines += ["", f"## {name}"]
        stats = {k: v for k, v in s["stats"].items() if k != "histogram"}
        if stats:
            lines += [""] + [
                f"- {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in stats.items()
            ]
        if s["flagged_by_reason"]:
            kept = ", ".join(f"{r}: {n:,}" for r, n in s["flagged_by_reason"].items())
            lines += ["", f"Kept but listed: {kept}."]
        lines += _examples("dropped", result.dropped, per_reason)
        lines += _examples("kept, listed", result.flagged, per_reason)
        if name == "difficulty" and histogram_png:
            lines += ["", f"![estimated difficulty]({histogram_png})"]
    return "\n".join(lines) + "\n"
