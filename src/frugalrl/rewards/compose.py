"""Score a group with several weighted rewards."""

from __future__ import annotations

import inspect
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from frugalrl.errors import UserError
from frugalrl.rewards.registry import resolve_reward
from frugalrl.sample import Sample

log = logging.getLogger(__name__)

RewardFailures = Counter
"""Reward name -> number of groups whose reward function raised (and were scored None)."""


@dataclass(frozen=True)
class RewardSpec:
    """One reward of a recipe: ``{name: format, weight: 1.0, schema: open-rs}`` gives
    ``RewardSpec("format", 1.0, {"schema": "open-rs"})``.

    ``schedule``: (first step, parameters) stages in step order; from its first step on, a
    stage's parameters replace those before it (ThinkPrune's length limit lowered in stages).
    """

    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)
    schedule: tuple[tuple[int, Mapping[str, Any]], ...] = ()

    def at(self, step: int) -> RewardSpec:
        """The reward as it scores at training step ``step`` (0-based), its schedule applied."""
        params = dict(self.params)
        for start, stage in sorted(self.schedule, key=lambda s: s[0]):
            if step >= start:
                params.update(stage)
        return RewardSpec(self.name, self.weight, params)


def checked_reward(name: str, params: Mapping[str, Any], where: str = ""):
    """The reward ``name``; a UserError if it cannot be called with ``params``."""
    fn = resolve_reward(name)
    try:
        inspect.signature(fn).bind([], **params)
    except TypeError as e:
        raise UserError(f"reward '{name}'{where}: bad parameters {dict(params)}: {e}") from None
    return fn


def score_group(
    samples: Sequence[Sample],
    specs: Sequence[RewardSpec],
    failures: Counter[str] | None = None,
) -> tuple[dict[str, list[float | None]], list[float | None]]:
    """Score one group with each reward; return (values by reward name, weighted totals).

    total_i = sum_k weight_k * r_k,i, or None when any r_k,i with weight_k != 0 is None (a
    zero-weight reward is only reported). A reward function that raises gives None for the
    whole group and adds 1 to ``failures[name]``. Recipe mistakes (unknown name, parameter or
    schema; a reward listed twice) raise UserError.
    """
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise UserError(f"each reward may appear once in a recipe; got {', '.join(names)}")
    per_reward: dict[str, list[float | None]] = {}
    for spec in specs:
        fn = checked_reward(spec.name, spec.params)
        try:
            values = list(fn(samples, **spec.params))
            if len(values) != len(samples):
                raise ValueError(f"returned {len(values)} values for {len(samples)} samples")
        except UserError:
            raise
        except Exception:
            log.warning("reward '%s' failed on a group; scored None", spec.name, exc_info=True)
            if failures is not None:
                failures[spec.name] += 1
            values = [None] * len(samples)
        per_reward[spec.name] = values
    totals: list[float | None] = []
    for i in range(len(samples)):
        parts = [(spec.weight, per_reward[spec.name][i]) for spec in specs if spec.weight != 0]
        if any(v is None for _, v in parts):
            totals.append(None)
        else:
            totals.append(sum(w * v for w, v in parts))
    return per_reward, totals
