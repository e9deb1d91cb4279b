"""Rewards: pure functions scoring one group of completions, selected by name from a recipe."""

from frugalrl.rewards import accuracy, format  # noqa: F401  (registers the rewards)
from frugalrl.rewards.compose import RewardFailures, RewardSpec, score_group
from frugalrl.rewards.registry import REWARDS, RewardFn

__all__ = ["REWARDS", "RewardFailures", "RewardFn", "RewardSpec", "score_group"]
