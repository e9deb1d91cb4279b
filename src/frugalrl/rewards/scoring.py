"""Scoring whole batches: every group scored by the recipe's rewards, in worker processes,
under the watchdog of :mod:`frugalrl.group_pool`, so that no completion can hang or crash a
run: a group the watchdog gives up on scores None everywhere and is counted.

``workers=0`` scores in this process: no watchdog, for tests and tiny batches.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from frugalrl.group_pool import GroupPool, default_workers
from frugalrl.rewards.compose import RewardSpec, score_group
from frugalrl.rewards.registry import resolve_reward
from frugalrl.sample import Sample

__all__ = ["RewardScorer", "ScoredBatch", "default_workers"]

Scores = tuple[dict[str, list[float | None]], list[float | None], Counter]


@dataclass
class ScoredBatch:
    """Rewards of a batch of groups; ``per_reward[name][g][i]`` is sample i of group g."""

    per_reward: dict[str, list[list[float | None]]]
    totals: list[list[float | None]]
    failures: Counter = field(default_factory=Counter)  # reward name -> groups where it raised
    timed_out: int = 0  # groups the watchdog gave up on


def _score(task: tuple[Sequence[Sample], Sequence[RewardSpec]]) -> Scores:
    # the specs travel with each group: a reward's parameters may change from step to step
    samples, specs = task
    failures: Counter = Counter()
    values, totals = score_group(samples, specs, failures)
    return values, totals, failures


def _register_rewards() -> None:
    """In a new worker process: the built-in rewards, registered on import of the package."""
    import frugalrl.rewards  # noqa: F401


class RewardScorer:
    """Scores batches of groups with ``specs``; keep one for a whole run (the pool persists).

    A reward function with an ``adapter`` attribute (Laser-D's targets) gets one adapter,
    kept here in the main process: ``observe`` shows it each step's rollouts, and what it
    sets (``adapter.params()``) is passed to the reward from then on, its state saved with
    each checkpoint (``state_dict``)."""

    def __init__(self, specs: Sequence[RewardSpec], workers: int = 0, timeout: float = 30.0):
        self._scheduled = list(specs)
        self._adapters = {
            spec.name: adapter(spec.params)
            for spec in specs
            if (adapter := getattr(resolve_reward(spec.name), "adapter", None)) is not None
        }
        self.specs = self._specs_at(0)  # what score() uses
        self._adapted = self._adapter_metrics()  # what the adapters had set for these specs
        self._pool = GroupPool(_score, workers, timeout, _register_rewards)

    def _specs_at(self, step: int) -> list[RewardSpec]:
        specs = [spec.at(step) for spec in self._scheduled]
        return [
            RewardSpec(s.name, s.weight, {**s.params, **self._adapters[s.name].params()})
            if s.name in self._adapters
            else s
            for s in specs
        ]

    def at(self, step: int) -> RewardScorer:
        """This scorer at training step ``step``, each reward's schedule and adapter applied;
        it shares the worker processes and adapters (close the original)."""
        view = copy.copy(self)
        view.specs = self._specs_at(step)
        view._adapted = self._adapter_metrics()
        return view

    def _adapter_metrics(self) -> dict[str, float]:
        return {
            f"reward/{name}/{key}": value
            for name, adapter in self._adapters.items()
            for key, value in adapter.metrics().items()
        }

    def observe(
        self,
        step: int,
        lengths: Sequence[Sequence[int]],
        per_reward: dict[str, Sequence[Sequence[float]]],
    ) -> None:
        """Show the adapters step ``step``'s groups: completion lengths and each reward's
        values (NaN unscored), every group of the step on every process alike."""
        for name, adapter in self._adapters.items():
            adapter.observe(step, lengths, per_reward[name])

    def scheduled_values(self) -> dict[str, float]:
        """``reward/<name>/<param>``: the value of each numeric scheduled parameter at this
        scorer's step, and what each adapter had set for it."""
        values = {}
        for scheduled, spec in zip(self._scheduled, self.specs, strict=True):
            for key in sorted({k for _, stage in scheduled.schedule for k in stage}):
                value = spec.params.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values[f"reward/{spec.name}/{key}"] = float(value)
        return {**values, **self._adapted}

    def state_dict(self) -> dict[str, Any]:
        return {name: adapter.state_dict() for name, adapter in self._adapters.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name, adapter_state in state.items():
            if name in self._adapters:
                self._adapters[name].load_state_dict(adapter_state)

    def score(self, groups: Sequence[Sequence[Sample]]) -> ScoredBatch:
        results, timed_out = self._pool.map([(samples, self.specs) for samples in groups])
        names = [s.name for s in self.specs]
        batch = ScoredBatch({n: [] for n in names}, [], Counter(), len(timed_out))
        for g, samples in enumerate(groups):
            if g in results:
                values, totals, failures = results[g]
                batch.failures.update(failures)
            else:  # timed out: nothing of this group is scored
                values = {n: [None] * len(samples) for n in names}
                totals = [None] * len(samples)
            for n in names:
                batch.per_reward[n].append(values[n])
            batch.totals.append(totals)
        return batch

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
