"""Accuracy against a token budget: ``frugalrl eval --budget 64,128,256`` (the budget stated in
the prompt, for L1-style models) or ``--budget-forcing 64,128,256`` (s1's budget forcing).

Each budget is a whole evaluation in ``<out>/budget-N/`` or ``<out>/forcing-N/``;
``<out>/<kind>.json`` and ``.md`` put the overall rows side by side (the PNG is drawn by
:mod:`frugalrl.report`). docs/algorithms.md#budget-forcing.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from frugalrl.data.length_targets import with_target
from frugalrl.eval.benchmarks import Benchmark
from frugalrl.eval.runner import EvalSettings, evaluate_engine
from frugalrl.eval.summary import format_accuracy, format_percent, format_tokens
from frugalrl.rollout.base import RolloutEngine
from frugalrl.rollout.budget_forcing import DEFAULT_THINK_END, BudgetForcing

SWEEP_KINDS = {"budget": "target stated in the prompt", "forcing": "budget forcing"}


@dataclass(frozen=True)
class BudgetSweep:
    """``kind`` "budget": every prompt ends "Think for (maximum) N tokens." (``instruction``
    exact or max, the two L1 instructions); "forcing": the thinking is cut at N tokens and the
    model made to answer in at most ``answer_tokens`` more."""

    kind: Literal["budget", "forcing"]
    budgets: tuple[int, ...]
    instruction: Literal["exact", "max"] = "max"
    answer_tokens: int = 256
    think_end: str = DEFAULT_THINK_END

    def point(
        self, budget: int, engine: RolloutEngine, tokenizer, benchmarks: Sequence[Benchmark]
    ) -> tuple[RolloutEngine, list[Benchmark]]:
        """The engine and benchmarks that evaluate at ``budget``."""
        if self.kind == "forcing":
            forcing = BudgetForcing(engine, tokenizer, budget, self.answer_tokens, self.think_end)
            return forcing, list(benchmarks)
        asked = [
            Benchmark(b.name, [with_target(p, self.instruction, budget) for p in b.problems])
            for b in benchmarks
        ]
        return engine, asked


def run_sweep(
    sweep: BudgetSweep,
    engine: RolloutEngine,
    tokenizer,
    benchmarks: Sequence[Benchmark],
    settings: EvalSettings,
    out: Path,
    meta: dict[str, Any],
    **grading: Any,
) -> dict[str, Any]:
    """Evaluate at every budget; the sweep's table as written to ``<out>/<kind>.json``.
    ``grading``: ``workers``, ``timeout``, ``progress`` of :func:`evaluate_engine`."""
    rows = []
    for budget in sweep.budgets:
        point_engine, point_benchmarks = sweep.point(budget, engine, tokenizer, benchmarks)
        summary = evaluate_engine(
            point_engine,
            tokenizer,
            point_benchmarks,
            settings,
            out / f"{sweep.kind}-{budget}",
            {**meta, "sweep": sweep.kind, "budget": budget},
            title=f"{meta.get('model', 'model')}, {sweep.kind} {budget}",
            **grading,
        )
        overall = summary["overall"]
        row = {"budget": budget, **{k: overall.get(k) for k in _COLUMNS}}
        if isinstance(point_engine, BudgetForcing):
            row["forced_fraction"] = point_engine.forced / overall["num_samples"]
        rows.append(row)
    table = {"kind": sweep.kind, "description": SWEEP_KINDS[sweep.kind], "rows": rows, **meta}
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{sweep.kind}.json").write_text(json.dumps(table, indent=2) + "\n")
    (out / f"{sweep.kind}.md").write_text(sweep_markdown(table))
    return table


_COLUMNS = ("accuracy", "accuracy_ci95", "mean_tokens", "truncated_fraction", "num_samples")


def sweep_markdown(table: dict[str, Any]) -> str:
    """The sweep as a markdown table, one row per budget."""
    forcing = table["kind"] == "forcing"
    head = "| budget | avg@k (95% CI) | mean tokens | truncated % |" + (
        " forced % |" if forcing else ""
    )
    lines = [f"## accuracy vs budget ({table['description']})", "", head]
    lines.append("|---:|---|---:|---:|" + ("---:|" if forcing else ""))
    for row in table["rows"]:
        cells = [
            str(row["budget"]),
            format_accuracy(row),
            format_tokens(row["mean_tokens"]),
            format_percent(row["truncated_fraction"]),
        ]
        if forcing:
            cells.append(format_percent(row["forced_fraction"]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
