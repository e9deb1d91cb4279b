"""The picture of a budget sweep (``frugalrl eval --budget`` / ``--budget-forcing``): accuracy
with its CI and mean tokens, each against the budget."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure


def plot_sweep(table: Mapping[str, Any]) -> Figure:
    rows = table["rows"]
    budgets = [r["budget"] for r in rows]
    accuracy = [100 * r["accuracy"] for r in rows]
    below = [a - 100 * r["accuracy_ci95"][0] for a, r in zip(accuracy, rows, strict=True)]
    above = [100 * r["accuracy_ci95"][1] - a for a, r in zip(accuracy, rows, strict=True)]
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    left, right = fig.subplots(1, 2)
    fig.suptitle(f"Accuracy vs. budget ({table['description']})")
    left.errorbar(budgets, accuracy, yerr=[below, above], marker="o", capsize=3)
    left.set_ylabel("accuracy (%)")
    right.plot(budgets, [r["mean_tokens"] for r in rows], marker="o", label="mean tokens")
    right.plot(budgets, budgets, linestyle=":", color="grey", label="budget")
    right.set_ylabel("mean completion tokens")
    right.legend(loc="best", fontsize="small")
    for ax in (left, right):
        ax.set_xlabel("budget (tokens)")
        ax.grid(alpha=0.3)
    return fig


def write_sweep_plot(table: Mapping[str, Any], out: Path) -> Path:
    """``<out>/<kind>.png``."""
    path = out / f"{table['kind']}.png"
    plot_sweep(table).savefig(path, dpi=110)
    return path
