"""Stability guards: monitors over a moving window of the logged metrics, each with an action.

open-rs (Dang & Ngo 2025; docs/algorithms.md#stability-guards) saw accuracy degrade after
~150–200 steps, completions hit the length cap and the multilingual base drift into other
languages, and nothing stopped the run. A monitor is a small function of the metrics rows logged since the
last rollback; when it trips, its action runs:

* ``warn``: one line on the console, counted in ``guards/warnings``;
* ``stop``: checkpoint, evaluate and report as at the end, then exit (code 3) saying why;
* ``rollback``: restore the checkpoint with the best held-out accuracy so far, multiply the
  learning rate by ``guards.rollback_lr_factor`` and continue (the step count and the data go
  on, so the run still ends after ``train.steps``); after ``guards.max_rollbacks`` rollbacks a
  rollback becomes a stop.

Monitors are a registry selected by name in the recipe (``guards.monitors``), like rewards
(``frugalrl/monitors.py``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from frugalrl.monitors import MONITORS, MonitorSpec, Row


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
