"""The table of reward functions, selected by name from a recipe."""

from __future__ import annotations

from collections.abc import Callable

from frugalrl.registry import Registry

RewardFn = Callable[..., list[float | None]]
"""``fn(samples: Sequence[Sample], **params) -> list[float | None]``: called on ONE group (all
completions sampled for one prompt), one value per sample; ``None`` means "cannot be scored"."""

REWARDS: Registry[RewardFn] = Registry("reward")
