"""``frugalrl curate CONFIG.yaml``: run the configured stages in order, then write it all.

Each stage (see :data:`~frugalrl.curate.stage.CURATION_STAGES`) gets the previous stage's
kept rows and its own config section; the pipeline only counts, times and records.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import yaml

# importing the stage modules registers them
from frugalrl.curate import answers, decontaminate, dedup, difficulty, load, mix  # noqa: F401
from frugalrl.curate.config import CurateConfig, load_curate_config
from frugalrl.curate.report import (
    HISTOGRAM_FILE,
    REPORT_FILE,
    SUMMARY_FILE,
    plot_difficulty,
    report_markdown,
    stage_summary,
    write_dropped,
    write_rows,
)
from frugalrl.curate.stage import CURATION_STAGES, Row, StageContext, StageResult


def run_stages(
    config: CurateConfig, context: StageContext
) -> tuple[list[Row], list[tuple[str, StageResult, float]]]:
    """The final rows, and each stage's result and seconds."""
    for name in config.stages:  # every name checked before any work is done
        CURATION_STAGES.get(name)
    rows: list[Row] = []
    results = []
    for name in config.stages:
        t0 = time.perf_counter()
        result = CURATION_STAGES.get(name)(rows, getattr(config, name), context)
        results.append((name, result, time.perf_counter() - t0))
        rows = result.kept
    return rows, results


def curate(config: CurateConfig, out: Path | None = None) -> dict[str, Any]:
    """Run the pipeline, write the outputs into ``out`` (default: the config's), return the summary."""
    t0 = time.perf_counter()
    out = Path(out) if out is not None else config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(
        yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
    )
    rows, results = run_stages(config, StageContext(out, config.progress))
    outputs = write_rows(out, rows, config.progress)
    removed = [
        (name, kind, d)
        for name, r, _ in results
        for kind, items in (("dropped", r.dropped), ("flagged", r.flagged))
        for d in items
    ]
    outputs["dropped"] = write_dropped(out, removed)
    histogram_png = None
    for name, result, _ in results:
        if name == "difficulty" and result.stats.get("estimated"):
            histogram_png = HISTOGRAM_FILE
            outputs["histogram"] = str(
                plot_difficulty(result.stats["histogram"], out / HISTOGRAM_FILE)
            )
    stages = [stage_summary(name, result, seconds) for name, result, seconds in results]
    summary: dict[str, Any] = {
        "name": config.name,
        "rows_in": stages[0]["rows_in"],
        "rows_out": len(rows),
        "dropped_by_stage": {s["stage"]: s["dropped"] for s in stages},
        "stages": stages,
        "outputs": outputs,
        "wall_seconds": time.perf_counter() - t0,
    }
    outputs["report"] = str(out / REPORT_FILE)
    outputs["summary"] = str(out / SUMMARY_FILE)
    markdown = report_markdown(
        summary, [(n, r) for n, r, _ in results], config.examples_per_reason, histogram_png
    )
    (out / REPORT_FILE).write_text(markdown, encoding="utf-8")
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str))
    return summary


def run_curation(
    config_path: str | Path, overrides: list[str] | None = None, out: str | Path | None = None
) -> dict[str, Any]:
    """The ``frugalrl curate`` command: load the config, run, return the summary dict."""
    config = load_curate_config(config_path, overrides)
    return curate(config, Path(out) if out is not None else None)


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The per-stage counts as console lines (for the CLI and the benchmark script)."""
    lines = [f"{'stage':<14} {'in':>7} {'dropped':>8} {'out':>7}  why"]
    for s in summary["stages"]:
        why = ", ".join(f"{r} {n}" for r, n in s["dropped_by_reason"].items())
        flagged = ", ".join(f"{r} {n}" for r, n in s["flagged_by_reason"].items())
        why += f" (kept, listed: {flagged})" if flagged else ""
        lines.append(
            f"{s['stage']:<14} {s['rows_in']:>7} {s['dropped']:>8} {s['rows_out']:>7}  {why}"
        )
    lines.append(f"report: {summary['outputs']['report']}")
    return lines
