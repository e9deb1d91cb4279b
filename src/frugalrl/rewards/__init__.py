"""Rewards: pure functions scoring one group of completions, selected by name from a recipe."""

from frugalrl.rewards import (  # noqa: F401  (registers the rewards)
    accuracy,
    alp,
    cosine,
    efficiency,
    format,
    kimi_length,
    l1,
    language,
    laser,
    overlong,
    repetition,
    shorterbetter,
    thinkprune,
)
from frugalrl.rewards.compose import RewardFailures, RewardSpec, score_group
from frugalrl.rewards.language import drift_fraction
from frugalrl.rewards.registry import REWARDS, RewardFn

__all__ = ["REWARDS", "RewardFailures", "RewardFn", "RewardSpec", "drift_fraction", "score_group"]
