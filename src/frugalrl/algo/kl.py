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
