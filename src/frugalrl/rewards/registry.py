"""The table of reward functions, selected by name from a recipe."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from frugalrl.errors import UserError
from frugalrl.registry import Registry

RewardFn = Callable[..., list[float | None]]
"""``fn(samples: Sequence[Sample], **params) -> list[float | None]``: called on ONE group (all
completions sampled for one prompt), one value per sample; ``None`` means "cannot be scored"."""

REWARDS: Registry[RewardFn] = Registry("reward")


def resolve_reward(name: str) -> RewardFn:
    """A registered reward by name, or a user's own as ``package.module:function``."""
    if ":" not in name:
        return REWARDS.get(name)
    module_name, _, attr = name.partition(":")
    try:
        module = importlib.import_module(module_name)
    except (ImportError, ValueError, TypeError) as e:  # also "" and relative names (".m")
        raise UserError(f"reward '{name}': cannot import module '{module_name}' ({e})") from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise UserError(f"reward '{name}': module '{module_name}' has no function '{attr}'")
    return fn
