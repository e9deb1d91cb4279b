"""RL algorithm pieces: advantage estimators, KL estimators, policy losses."""

from frugalrl.algo.advantages import ADVANTAGES, AdvantageFn, group_advantages
from frugalrl.algo.kl import KL_ESTIMATORS, KLEstimator, kl_penalized_rewards
from frugalrl.algo.losses import (
    LOSS_AGGREGATIONS,
    PolicyLossOutput,
    SequenceWeights,
    aggregate_loss,
    ppo_clip_loss,
    sequence_weights,
)

__all__ = [
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdvantageFn",
    "KLEstimator",
    "PolicyLossOutput",
    "SequenceWeights",
    "aggregate_loss",
    "group_advantages",
    "kl_penalized_rewards",
    "ppo_clip_loss",
    "sequence_weights",
]
