"""Turn a run directory (metrics.jsonl + summary.json) into PNG plots and a report.md.

Everything is optional: a plot is drawn from whichever of its metrics were logged (and left
out if none were), and the evaluation table from whichever of ``eval.base`` /
``eval.final`` the summary holds. Figures are built with ``matplotlib.figure.Figure``
directly, never through pyplot, so no global backend is switched and no GUI is needed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from frugalrl.errors import UserError
from frugalrl.train.metrics import METRICS_FILE, read_metrics

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"

REWARD_TOTAL = "reward/total/mean"
TRAIN_ACCURACY = "train/accuracy"
HELDOUT_ACCURACY = "eval/accuracy"  # periodic held-out evaluations (eval.every_steps)
HELDOUT_TOKENS = "eval/mean_tokens"
LENGTH_MEAN = "completion/length_mean"
LENGTH_MAX = "completion/length_max"
TRUNCATED = "completion/truncated_fraction"

MAX_METRIC_ROWS = 40  # keeps the "last logged metrics" table short

Rows = Sequence[Mapping[str, Any]]


def write_run_report(run_dir: str | Path) -> Path:
    """Write reward.png, accuracy.png, completion_length.png and report.md into ``run_dir``.

    Returns the path of report.md. Raises UserError if the directory holds neither a
    metrics.jsonl nor a summary.json.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory not found: {run_dir}")
    has_metrics = (run_dir / METRICS_FILE).is_file()
    summary = _read_summary(run_dir / SUMMARY_FILE)
    if not has_metrics and summary is None:
        raise UserError(f"{run_dir} has neither {METRICS_FILE} nor {SUMMARY_FILE}: not a run dir")
    rows = read_metrics(run_dir) if has_metrics else []
    summary = summary or {}
    evals = summary.get("eval") or {}

    plots = {
        "reward.png": _plot_rewards(rows),
        "accuracy.png": _plot_accuracy(rows, evals),
        "completion_length.png": _plot_completion_length(rows),
    }
    written = []
    for name, fig in plots.items():
        path = run_dir / name
        if fig is None:
            path.unlink(missing_ok=True)  # a stale plot from an earlier report would mislead
            continue
        fig.savefig(path, dpi=110)
        written.append(name)

    report = run_dir / REPORT_FILE
    report.write_text(_render_markdown(run_dir, summary, rows, written), encoding="utf-8")
    return report


def read_json(path: Path) -> Any:
    """The JSON in ``path``; None if there is no such file; invalid JSON is a one-line error."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON: {e}") from None


def _read_summary(path: Path) -> dict | None:
    """summary.json as a dict, or None if there is none (a run still going, or one that died)."""
    summary = read_json(path)
    if summary is None:
        return None
    if not isinstance(summary, dict):
        raise UserError(f"{path} should hold a JSON object")
    return summary


# --- plots -------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _series(rows: Rows, key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    """(steps, values) of the rows where ``key`` was logged with a finite value."""
    points = [(r["step"], float(r[key]) * scale) for r in rows if _is_number(r.get(key))]
    return [s for s, _ in points], [v for _, v in points]


def _new_axes(title: str, ylabel: str) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.subplots()
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole numbers
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _plot_line(ax: Axes, steps: list[int], values: list[float], label: str, **style: Any) -> None:
    # A lone point draws no line segment: give it a marker so one-step runs still show up.
    style.setdefault("marker", "o" if len(steps) == 1 else None)
    ax.plot(steps, values, label=label, **style)


def _reward_keys(rows: Rows) -> list[str]:
    """Every ``reward/<name>/mean`` key, the weighted total first."""
    keys = {k for r in rows for k in r if k.startswith("reward/") and k.endswith("/mean")}
    return sorted(keys, key=lambda k: (k != REWARD_TOTAL, k))


def _plot_rewards(rows: Rows) -> Figure | None:
    fig, ax = _new_axes("Mean reward per step", "reward")
    drawn = False
    for key in _reward_keys(rows):
        steps, values = _series(rows, key)
        if steps:
            label = key.removeprefix("reward/").removesuffix("/mean") or key
            width = 2.0 if key == REWARD_TOTAL else 1.2
            _plot_line(ax, steps, values, label, linewidth=width)
            drawn = True
    if not drawn:
        return None
    ax.legend(loc="best", fontsize="small")
    return fig


def _plot_accuracy(rows: Rows, evals: Mapping[str, Any]) -> Figure | None:
    """Training accuracy (%) with the held-out base/final accuracy as dashed references."""
    fig, ax = _new_axes("Accuracy", "accuracy (%)")
    steps, values = _series(rows, TRAIN_ACCURACY, scale=100)
    drawn = bool(steps)
    if steps:
        _plot_line(ax, steps, values, "train (sampled completions)")
    steps, values = _series(rows, HELDOUT_ACCURACY, scale=100)
    if steps:
        _plot_line(ax, steps, values, "held-out (periodic)", marker="o", color="tab:green")
        drawn = True
    for name, color in (("base", "tab:gray"), ("final", "tab:green")):
        accuracy = (evals.get(name) or {}).get("accuracy")
        if _is_number(accuracy):
            label = f"{name} held-out ({100 * accuracy:.1f}%)"
            ax.axhline(100 * accuracy, linestyle="--", color=color, label=label)
            drawn = True
    if not drawn:
        return None
    ax.set_ylim(0, 100)
    ax.legend(loc="best", fontsize="small")
    return fig


def _plot_completion_length(rows: Rows) -> Figure | None:
    """Completion length (tokens) with the truncated fraction on a second y axis."""
    fig, ax = _new_axes("Completion length", "tokens")
    drawn = False
    for key, label in ((LENGTH_MEAN, "mean length"), (LENGTH_MAX, "max length")):
        steps, values = _series(rows, key)
        if steps:
            _plot_line(ax, steps, values, label)
            drawn = True
    steps, values = _series(rows, TRUNCATED)
    handles, labels = ax.get_legend_handles_labels()
    if steps:
        twin = ax.twinx()
        _plot_line(twin, steps, values, "truncated fraction", color="tab:red", linestyle=":")
        twin.set_ylabel("truncated fraction")
        twin.set_ylim(0, 1.05)
        more_handles, more_labels = twin.get_legend_handles_labels()
        handles, labels = handles + more_handles, labels + more_labels
        drawn = True
    if not drawn:
        return None
    ax.legend(handles, labels, loc="best", fontsize="small")
    return fig


# --- markdown ----------------------------------------------------------------------------


def _cell(value: Any) -> str:
    """Table-safe text: a '|' would split the cell."""
    return str(value).replace("|", "\\|")


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a" if value is None else str(value)
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def _percent(fraction: Any) -> str:
    """0.41 -> '41.0'; 'n/a' when missing."""
    return f"{100 * fraction:.1f}" if _is_number(fraction) else "n/a"


def _duration(seconds: Any) -> str:
    if not _is_number(seconds):
        return "n/a"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _accuracy_cell(ev: Mapping[str, Any]) -> str:
    text = f"{_percent(ev.get('accuracy'))}%"
    ci = ev.get("accuracy_ci95")
    if isinstance(ci, Sequence) and len(ci) == 2 and all(_is_number(x) for x in ci):
        text += f" ({_percent(ci[0])}–{_percent(ci[1])})"
    return text


def _eval_table(evals: Mapping[str, Any]) -> list[str]:
    lines = [
        "| | held-out accuracy (95% CI) | mean completion tokens | truncated | problems × samples |",
        "|---|---|---|---|---|",
    ]
    for name in ("base", "final"):
        ev = evals.get(name)
        if not isinstance(ev, Mapping):
            continue
        tokens = ev.get("mean_tokens")
        tokens_cell = f"{tokens:.1f}" if _is_number(tokens) else "n/a"
        size = f"{_number(ev.get('num_problems'))} × {_number(ev.get('samples_per_problem'))}"
        cells = [
            name,
            _accuracy_cell(ev),
            tokens_cell,
            f"{_percent(ev.get('truncated_fraction'))}%",
            size,
        ]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return lines if len(lines) > 2 else []


def _heldout_by_step(rows: Rows, evals: Mapping[str, Any]) -> list[str]:
    """Base, each periodic evaluation, final: held-out accuracy and mean tokens by step."""
    periodic = [r for r in rows if _is_number(r.get(HELDOUT_ACCURACY))]
    if not periodic:
        return []  # the base/final table above says it all
    points = [("0 (base)", evals.get("base") or {})]
    points += [
        (str(r["step"]), {"accuracy": r[HELDOUT_ACCURACY], "mean_tokens": r.get(HELDOUT_TOKENS)})
        for r in periodic
    ]
    points.append((f"{rows[-1]['step']} (final)", evals.get("final") or {}))
    lines = ["| step | held-out accuracy | mean completion tokens |", "|---|---|---|"]
    for label, ev in points:
        if _is_number(ev.get("accuracy")):
            tokens = ev.get("mean_tokens")
            tokens_cell = f"{tokens:.1f}" if _is_number(tokens) else "n/a"
            lines.append(f"| {label} | {100 * ev['accuracy']:.1f}% | {tokens_cell} |")
    return lines


def _both_numbers(base: Mapping[str, Any], final: Mapping[str, Any], key: str) -> bool:
    return _is_number(base.get(key)) and _is_number(final.get(key))


def _changes(summary: Mapping[str, Any], evals: Mapping[str, Any]) -> list[str]:
    """Accuracy gain (points) and token change (%): from the summary, else recomputed."""
    base, final = evals.get("base") or {}, evals.get("final") or {}
    gain = summary.get("accuracy_gain_points")
    if not _is_number(gain) and _both_numbers(base, final, "accuracy"):
        gain = 100 * (final["accuracy"] - base["accuracy"])
    change = summary.get("token_change_percent")
    tokens_known = _both_numbers(base, final, "mean_tokens") and base["mean_tokens"] > 0
    if not _is_number(change) and tokens_known:
        change = 100 * (final["mean_tokens"] / base["mean_tokens"] - 1)
    lines = []
    if _is_number(gain):
        lines.append(f"- Accuracy gain: **{gain:+.1f} points**")
    if _is_number(change):
        lines.append(f"- Completion tokens: **{change:+.1f}%**")
    return lines


def _last_metrics(rows: Rows) -> list[str]:
    """The last finite value of every metric, with the step it was logged at."""
    last: dict[str, tuple[int, Any]] = {}
    for row in rows:
        for key, value in row.items():
            if key != "step" and value is not None:
                last[key] = (row["step"], value)
    if not last:
        return []
    keys = sorted(last)
    lines = ["| metric | value | step |", "|---|---|---|"]
    for key in keys[:MAX_METRIC_ROWS]:
        step, value = last[key]
        lines.append(f"| {_cell(key)} | {_cell(_number(value))} | {step} |")
    if len(keys) > MAX_METRIC_ROWS:
        lines.append(f"\n{len(keys) - MAX_METRIC_ROWS} more metrics in `{METRICS_FILE}`.")
    return lines


def _render_markdown(
    run_dir: Path, summary: Mapping[str, Any], rows: Rows, plots: list[str]
) -> str:
    evals = summary.get("eval") or {}
    steps = summary.get("steps", rows[-1]["step"] if rows else None)
    out = [f"# Run report: {run_dir.name}", ""]
    out += ["| | |", "|---|---|"]
    out.append(f"| recipe | {_cell(summary.get('recipe', 'n/a'))} |")
    out.append(f"| model | {_cell(summary.get('model', 'n/a'))} |")
    out.append(f"| steps | {_cell(_number(steps))} |")
    out.append(f"| wall time | {_duration(summary.get('wall_seconds'))} |")
    if "train_seconds" in summary:
        out.append(f"| training time | {_duration(summary.get('train_seconds'))} |")
    out.append("")

    table = _eval_table(evals)
    if table:
        out += ["## Held-out evaluation", "", *table, "", *_changes(summary, evals), ""]
    by_step = _heldout_by_step(rows, evals)
    if by_step:
        out += ["## Held-out accuracy by step", "", *by_step, ""]
    if plots:
        out += ["## Training curves", ""]
        out += [f"![{Path(name).stem}]({name})\n" for name in plots]
    last = _last_metrics(rows)
    if last:
        out += ["## Last logged training metrics", "", *last, ""]
    return "\n".join(out).rstrip() + "\n"
