"""Stability monitors: small functions of the metrics rows logged so far, by name.

Each returns None, or one line saying what went wrong; ``train/guards.py`` runs the recipe's
monitors after every step and acts on what they report. They live below the config, which
checks a recipe's monitor names and parameters when it loads (docs/algorithms.md#stability-guards).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from frugalrl.registry import Registry

Row = dict[str, Any]


class MonitorSpec(Protocol):
    """What a monitor reads from its recipe entry (``config.MonitorConfig``)."""

    name: str
    threshold: float | None
    low: float | None
    high: float | None
    action: str


Monitor = Callable[[Sequence[Row], MonitorSpec, int], "str | None"]
MONITORS: Registry[Monitor] = Registry("guard monitor")
# Which of threshold / low / high each monitor reads: checked when the recipe loads.
MONITOR_PARAMS: dict[str, str] = {}


def _register(name: str, params: str) -> Callable[[Monitor], Monitor]:
    MONITOR_PARAMS[name] = params
    return MONITORS.register(name)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def window_mean(rows: Sequence[Row], key: str, window: int) -> float | None:
    """Mean of ``key`` over the last ``window`` rows that logged a finite value of it."""
    values = [r[key] for r in rows if _finite(r.get(key))][-window:]
    return sum(values) / len(values) if values else None


def _outside(value: float | None, spec: MonitorSpec, what: str) -> str | None:
    if value is None:
        return None
    if spec.low is not None and value < spec.low:
        return f"{what} {value:.4g} is below {spec.low:g}"
    if spec.high is not None and value > spec.high:
        return f"{what} {value:.4g} is above {spec.high:g}"
    return None


@_register("accuracy_drop", "threshold")
def accuracy_drop(rows: Sequence[Row], spec: MonitorSpec, window: int) -> str | None:
    """Held-out accuracy (``eval/accuracy``, from ``eval.every_steps``) more than ``threshold``
    below its best so far; without periodic evaluation, the ``window``-step mean of training
    accuracy more than ``threshold`` below the best such mean."""
    heldout = [r["eval/accuracy"] for r in rows if _finite(r.get("eval/accuracy"))]
    if heldout:
        best, now, what = max(heldout), heldout[-1], "held-out accuracy"
    else:
        values = [r["train/accuracy"] for r in rows if _finite(r.get("train/accuracy"))]
        if len(values) < window:
            return None
        means = [sum(values[i - window : i]) / window for i in range(window, len(values) + 1)]
        best, now, what = max(means), means[-1], f"training accuracy ({window}-step mean)"
    if best - now > spec.threshold:
        return f"{what} fell to {now:.3f}, {best - now:.3f} below its best {best:.3f}"
    return None


@_register("truncation", "threshold")
def truncation(rows: Sequence[Row], spec: MonitorSpec, window: int) -> str | None:
    """Share of completions cut at the length cap, ``window``-step mean, above ``threshold``."""
    value = window_mean(rows, "completion/truncated_fraction", window)
    if value is not None and value > spec.threshold:
        return f"{value:.1%} of completions hit the length cap ({window}-step mean)"
    return None


@_register("language_drift", "threshold")
def language_drift(rows: Sequence[Row], spec: MonitorSpec, window: int) -> str | None:
    """Share of completions leaving the expected script (the ``language`` reward's
    ``language/drift_fraction``), ``window``-step mean, above ``threshold``."""
    value = window_mean(rows, "language/drift_fraction", window)
    if value is not None and value > spec.threshold:
        return f"{value:.1%} of completions drift out of the expected language ({window}-step mean)"
    return None


@_register("kl", "bounds")
def kl(rows: Sequence[Row], spec: MonitorSpec, window: int) -> str | None:
    """KL to the reference (``train/kl``), ``window``-step mean, outside [low, high]."""
    return _outside(window_mean(rows, "train/kl", window), spec, f"KL ({window}-step mean)")


@_register("entropy", "bounds")
def entropy(rows: Sequence[Row], spec: MonitorSpec, window: int) -> str | None:
    """Policy entropy (``train/entropy``), ``window``-step mean, outside [low, high]: a collapse
    to near-determinism or a blow-up to noise."""
    mean = window_mean(rows, "train/entropy", window)
    return _outside(mean, spec, f"entropy ({window}-step mean)")


@_register("nonfinite", "none")
def nonfinite(rows: Sequence[Row], spec: MonitorSpec, window: int) -> str | None:
    """The last step's loss or gradient was NaN or infinite (its update was skipped)."""
    if rows and rows[-1].get("train/nonfinite_updates", 0):
        return "the loss or gradient was NaN/inf (that update was skipped)"
    return None
