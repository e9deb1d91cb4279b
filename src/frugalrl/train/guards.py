"""Stability guards: monitors over a moving window of the logged metrics, each with an action.

open-rs (PAPERS.md §1, "what doesn't work") saw accuracy degrade after 50–100 steps,
completions hit the length cap and the multilingual base drift into other languages, and
nothing stopped the run. A monitor is a small function of the metrics rows logged since the
last rollback; when it trips, its action runs:

* ``warn``: one line on the console, counted in ``guards/warnings``;
* ``stop``: checkpoint, evaluate and report as at the end, then exit (code 3) saying why;
* ``rollback``: restore the checkpoint with the best held-out accuracy so far, multiply the
  learning rate by ``guards.rollback_lr_factor`` and continue (the step count and the data go
  on, so the run still ends after ``train.steps``); after ``guards.max_rollbacks`` rollbacks a
  rollback becomes a stop.

Monitors are a registry selected by name in the recipe (``guards.monitors``), like rewards.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
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


@dataclass
class Alarm:
    monitor: str
    action: str
    message: str
    repeated: bool = False  # a warning already raised at the previous step (not printed again)

    def __str__(self) -> str:
        return f"guard '{self.monitor}' ({self.action}): {self.message}"


@dataclass
class Guards:
    """The recipe's monitors over the rows logged since the last rollback."""

    monitors: Sequence[MonitorSpec]
    window: int
    max_rollbacks: int
    rows: list[Row] = field(default_factory=list)
    rollbacks: int = 0
    warnings: int = 0
    _warning: set[str] = field(default_factory=set)  # monitors that warned at the last step

    def observe(self, row: Row) -> list[Alarm]:
        """Add a step's metrics; the alarms it raises, the most severe first. A rollback
        beyond ``max_rollbacks`` is turned into a stop."""
        self.rows.append(row)
        alarms = []
        for spec in self.monitors:
            message = MONITORS.get(spec.name)(self.rows, spec, self.window)
            if message is None:
                continue
            action = spec.action
            if action == "rollback" and self.rollbacks >= self.max_rollbacks:
                action = "stop"
                message += f" (after {self.rollbacks} rollbacks)"
            alarms.append(Alarm(spec.name, action, message, spec.name in self._warning))
        self._warning = {a.monitor for a in alarms if a.action == "warn"}
        severity = {"stop": 0, "rollback": 1, "warn": 2}
        return sorted(alarms, key=lambda a: severity[a.action])

    def rolled_back(self, best_row: Row | None) -> None:
        """Start over from the restored checkpoint: its evaluation is the only history kept."""
        self.rollbacks += 1
        self.rows = [best_row] if best_row else []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "rollbacks": self.rollbacks, "warnings": self.warnings}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rows = list(state["rows"])
        self.rollbacks, self.warnings = state["rollbacks"], state["warnings"]
