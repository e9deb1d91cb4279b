"""RL algorithm pieces: advantage estimators, KL estimators, policy losses and their aggregation."""

from frugalrl.algo.advantages import ADVANTAGES, AdvantageFn, group_advantages
from frugalrl.algo.aggregation import (
    LOSS_AGGREGATIONS,
    SequenceWeights,
    aggregate_loss,
    sequence_weights,
)
from frugalrl.algo.kl import KL_ESTIMATORS, KLEstimator, kl_penalized_rewards
from frugalrl.algo.objective import PolicyLossOutput, PolicyObjective
from frugalrl.algo.policy_losses import (
    POLICY_LOSSES,
    PolicyLoss,
    PolicyTerm,
    checked_policy_loss,
    register_policy_loss,
)

__all__ = [
    "ADVANTAGES",
    "KL_ESTIMATORS",
    "LOSS_AGGREGATIONS",
    "POLICY_LOSSES",
    "AdvantageFn",
    "KLEstimator",
    "PolicyLoss",
    "PolicyLossOutput",
    "PolicyObjective",
    "PolicyTerm",
    "SequenceWeights",
    "aggregate_loss",
    "checked_policy_loss",
    "group_advantages",
    "kl_penalized_rewards",
    "register_policy_loss",
    "sequence_weights",
]
