"""Per-token estimators of KL(pi || pi_ref) from log-probs of tokens sampled from pi.

Schulman's k1, k2, k3 (http://joschu.net/blog/kl-approx.html); with d = ref_logp - logp:
k1 = -d (unbiased, can be negative), k2 = d^2 / 2 (biased, low variance),
k3 = exp(d) - d - 1 (unbiased, always >= 0; GRPO's choice).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from frugalrl.registry import Registry

KLEstimator = Callable[[Tensor, Tensor], Tensor]

KL_ESTIMATORS = Registry[KLEstimator]("KL estimator")


@KL_ESTIMATORS.register("k1")
def k1(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k1 = logp - ref_logp."""
    return logp - ref_logp


@KL_ESTIMATORS.register("k2")
def k2(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k2 = (logp - ref_logp)^2 / 2."""
    return 0.5 * (logp - ref_logp) ** 2


@KL_ESTIMATORS.register("k3")
def k3(logp: Tensor, ref_logp: Tensor) -> Tensor:
    """k3 = exp(ref_logp - logp) - (ref_logp - logp) - 1."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def kl_penalized_rewards(
    rewards: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    beta: float,
    estimator: str = "k1",
) -> Tensor:
    """r'_i = r_i - beta * sum_t m_it * KL_t(logp_it, ref_logp_it), detached (KL in the reward).

    rewards: (B,); logp, ref_logp, mask: (B, T). With k1 the sum is the sequence log-ratio
    log pi(y_i) / pi_ref(y_i), the KL-regularised reward of Arora & Zanette (beta 0.001) and verl's
    ``use_kl_in_reward``. The penalty then goes through the advantage estimator (a group baseline,
    whitening) like any reward, instead of being a loss term; it is detached because a reward
    carries no gradient. A NaN (unscored) reward stays NaN, a fully masked row is not penalised.
    """
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if rewards.shape != logp.shape[:-1]:
        raise ValueError(
            f"rewards must have shape {tuple(logp.shape[:-1])} (one per completion), "
            f"got {tuple(rewards.shape)}"
        )
    kl = KL_ESTIMATORS.get(estimator)(logp.detach(), ref_logp.detach())
    # where, not a product: a padded -inf log-prob must not turn the sum into NaN.
    seq_kl = torch.where(mask.bool(), kl, 0.0).sum(-1)
    return (rewards - beta * seq_kl).detach()
