"""RL algorithm pieces: advantage estimators, KL estimators, policy losses."""

from frugalrl.algo.advantages import ADVANTAGES, AdvantageFn, group_advantages
from frugalrl.algo.kl import KL_ESTIMATORS, KLEstimator, kl_penalized_rewards
from frugalrl.algo.losses import LOSS_AGGREGATIONS, Aggregation, PolicyLossOutput, ppo_clip_loss

__all__ = [
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "AdvantageFn",
    "Aggregation",
    "KLEstimator",
    "PolicyLossOutput",
    "group_advantages",
    "kl_penalized_rewards",
    "ppo_clip_loss",
]
