"""Compare evaluation summaries side by side: a markdown table and an accuracy-vs-tokens plot.

Inputs are ``summary.json`` files written by ``frugalrl eval`` ({"benchmarks": {...},
"overall": {...}}, see ``frugalrl.eval.summary``), found from any of:

- an eval directory holding such a summary.json: one entry labelled by the directory name;
- a training run directory with ``eval/<label>/summary.json``: one entry per label, named
  ``<run dir>/<label>`` (base first, final last);
- the path of a summary.json itself.

The plot puts each entry at (mean completion tokens, accuracy) with its CI as an error bar
and joins the Pareto frontier: the entries no other entry beats on both axes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from frugalrl.errors import UserError
from frugalrl.eval.summary import format_percent, stats_cells
from frugalrl.report.run_report import SUMMARY_FILE, _cell, _is_number, _new_axes, _read_summary

REPORT_FILE = "report.md"
PLOT_FILE = "frontier.png"
COMPARE_DIR = "compare"
OVERALL = "overall"


@dataclass(frozen=True)
class Entry:
    label: str
    summary: Mapping[str, Any]

    def stats(self, benchmark: str) -> Mapping[str, Any] | None:
        """The stats of one benchmark ('overall' included), None if this entry lacks it."""
        if benchmark == OVERALL:
            stats = self.summary.get(OVERALL)
        else:
            stats = (self.summary.get("benchmarks") or {}).get(benchmark)
        return stats if isinstance(stats, Mapping) else None


def compare_report(
    paths: Sequence[Path], out: Path | None, benchmark: str = OVERALL
) -> tuple[str, Path | None]:
    """Write report.md and frontier.png into ``out`` (default ``<first path>/compare/``).

    Returns the markdown and the PNG path (None when no entry can be plotted: none has the
    benchmark with both an accuracy and a mean token count).
    """
    if not paths:
        raise UserError("nothing to compare: give at least one eval or run directory")
    entries = _dedupe_labels([e for p in paths for e in load_entries(Path(p))])
    if out is None:
        first = Path(paths[0])
        out = (first.parent if first.is_file() else first) / COMPARE_DIR
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    plotted = [e for e in entries if _plottable(e.stats(benchmark))]
    png = out / PLOT_FILE
    if plotted:
        _plot_frontier(plotted, benchmark).savefig(png, dpi=110)
    else:
        png.unlink(missing_ok=True)  # a stale plot from an earlier comparison would mislead
        png = None
    markdown = _render_markdown(entries, plotted, benchmark, png)
    (out / REPORT_FILE).write_text(markdown, encoding="utf-8")
    return markdown, png


# --- inputs ------------------------------------------------------------------------------


def _eval_summary(path: Path) -> Mapping[str, Any] | None:
    """The summary at ``path`` if it is an eval summary (has "benchmarks"), else None."""
    summary = _read_summary(path)
    return summary if summary is not None and "benchmarks" in summary else None


def _natural_key(text: str) -> list[Any]:
    """'step-20' before 'step-100'."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def load_entries(path: Path) -> list[Entry]:
    """The entries one command-line path stands for (see the module docstring)."""
    if path.is_file():
        summary = _eval_summary(path)
        if summary is None:
            raise UserError(f"{path} is not an eval summary (no 'benchmarks' key)")
        parent = path.parent
        # .../<run>/eval/<label>/summary.json keeps the run name, as when given the run dir
        in_run = parent.parent.name == "eval" and parent.parent.parent.name
        label = f"{parent.parent.parent.name}/{parent.name}" if in_run else parent.name
        return [Entry(label or str(path), summary)]
    if not path.is_dir():
        raise UserError(f"not found: {path}")
    summary = _eval_summary(path / SUMMARY_FILE)
    if summary is not None:
        return [Entry(path.resolve().name, summary)]
    entries = []
    eval_dir = path / "eval"
    labels = [p.name for p in eval_dir.iterdir() if p.is_dir()] if eval_dir.is_dir() else []
    labels.sort(key=lambda name: (name != "base", name == "final", _natural_key(name)))
    for label in labels:
        summary = _eval_summary(eval_dir / label / SUMMARY_FILE)
        if summary is not None:
            entries.append(Entry(f"{path.resolve().name}/{label}", summary))
    if not entries:
        raise UserError(
            f"{path}: expected an eval directory ({SUMMARY_FILE} from `frugalrl eval`) or a "
            f"training run directory with eval/<label>/{SUMMARY_FILE}"
        )
    return entries


def _dedupe_labels(entries: list[Entry]) -> list[Entry]:
    """Number repeated labels ('final', 'final #2') so table rows and plot points stay apart."""
    seen: dict[str, int] = {}
    unique = []
    for entry in entries:
        seen[entry.label] = seen.get(entry.label, 0) + 1
        count = seen[entry.label]
        unique.append(entry if count == 1 else Entry(f"{entry.label} #{count}", entry.summary))
    return unique


# --- Pareto frontier and plot ------------------------------------------------------------


def pareto_frontier(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the (tokens, accuracy) points no other point dominates, by tokens.

    j dominates i when accuracy_j >= accuracy_i and tokens_j <= tokens_i, one of them
    strictly. Identical points do not dominate each other: both stay on the frontier.
    """

    def dominates(a: tuple[float, float], b: tuple[float, float]) -> bool:
        return a[1] >= b[1] and a[0] <= b[0] and a != b

    front = [i for i, p in enumerate(points) if not any(dominates(q, p) for q in points)]
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


def _plottable(stats: Mapping[str, Any] | None) -> bool:
    return (
        stats is not None
        and _is_number(stats.get("accuracy"))
        and _is_number(stats.get("mean_tokens"))
    )


def _points(entries: Sequence[Entry], benchmark: str) -> list[tuple[float, float]]:
    """(mean tokens, accuracy %) of plottable entries."""
    return [
        (float(s["mean_tokens"]), 100 * float(s["accuracy"]))
        for s in (e.stats(benchmark) for e in entries)
    ]


def _plot_frontier(entries: Sequence[Entry], benchmark: str) -> Figure:
    fig, ax = _new_axes(f"Accuracy vs. completion tokens ({benchmark})", "accuracy (%)")
    ax.set_xlabel("mean completion tokens")
    stats = [e.stats(benchmark) for e in entries]
    points = _points(entries, benchmark)
    xs, ys = [x for x, _ in points], [y for _, y in points]
    # Asymmetric error bars from the CI; entries without one get none rather than a guess.
    below, above = [], []
    for s, y in zip(stats, ys, strict=True):
        ci = s.get("accuracy_ci95")
        has_ci = isinstance(ci, Sequence) and len(ci) == 2 and all(_is_number(v) for v in ci)
        below.append(max(y - 100 * ci[0], 0.0) if has_ci else 0.0)
        above.append(max(100 * ci[1] - y, 0.0) if has_ci else 0.0)
    ax.errorbar(xs, ys, yerr=[below, above], fmt="o", capsize=3, color="tab:blue", zorder=3)
    for entry, x, y in zip(entries, xs, ys, strict=True):
        ax.annotate(entry.label, (x, y), xytext=(5, 5), textcoords="offset points", fontsize=8)
    ax.margins(x=0.12, y=0.1)  # room for the labels right of the outermost points
    front = pareto_frontier(points)
    if len(front) > 1:  # a one-point frontier is just that point, already drawn
        ax.plot(
            [xs[i] for i in front],
            [ys[i] for i in front],
            color="tab:green",
            linestyle="--",
            label="Pareto frontier",
            zorder=2,
        )
        ax.legend(loc="best", fontsize="small")
    return fig


# --- markdown ----------------------------------------------------------------------------


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def _main_table(entries: Sequence[Entry], benchmark: str) -> tuple[list[str], list[str]]:
    """Table lines for the entries that have ``benchmark``, and the labels of those that don't."""
    lines = [
        _row(
            [
                "entry",
                "problems",
                "k",
                "accuracy (95% CI)",
                "pass@k",
                "maj@k",
                "mean tokens",
                "tokens/correct",
                "truncated %",
            ]
        ),
        "|---|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    missing = []
    for entry in entries:
        stats = entry.stats(benchmark)
        if stats is None:
            missing.append(entry.label)
            continue
        cells = [entry.label, *stats_cells(stats, median=False)]
        lines.append(_row(cells))
    return lines, missing


def _benchmark_table(entries: Sequence[Entry]) -> list[str]:
    """Accuracy (%) of every entry on every benchmark, when there is more than one."""
    names: list[str] = []
    for entry in entries:
        names += [n for n in entry.summary.get("benchmarks") or {} if n not in names]
    if len(names) < 2:
        return []
    lines = [_row(["entry", *names, OVERALL]), "|---|" + "---:|" * (len(names) + 1)]
    for entry in entries:
        cells = [format_percent((entry.stats(n) or {}).get("accuracy")) for n in names]
        overall = format_percent((entry.stats(OVERALL) or {}).get("accuracy"))
        lines.append(_row([entry.label, *cells, overall]))
    return lines


def _render_markdown(
    entries: Sequence[Entry], plotted: Sequence[Entry], benchmark: str, png: Path | None
) -> str:
    table, missing = _main_table(entries, benchmark)
    out = [f"# Comparison: {benchmark}", ""]
    out += ["Accuracy is avg@k in %, with a 95% bootstrap CI over problems.", ""]
    out += [*table, ""]
    if missing:
        out += [f"Not in the table or plot (no `{benchmark}` results): {', '.join(missing)}.", ""]
    shown = set(missing) | {e.label for e in plotted}
    unplotted = [e.label for e in entries if e.label not in shown]
    if unplotted:
        out += [f"Not in the plot (no mean token count): {', '.join(unplotted)}.", ""]
    per_benchmark = _benchmark_table(entries)
    if per_benchmark:
        out += ["## Accuracy per benchmark (avg@k, %)", "", *per_benchmark, ""]
    if png is not None:
        out += ["## Accuracy vs. tokens", "", f"![accuracy vs. tokens]({png.name})", ""]
        front = pareto_frontier(_points(plotted, benchmark))
        out += [f"Pareto frontier: {', '.join(plotted[i].label for i in front)}.", ""]
    return "\n".join(out).rstrip() + "\n"
