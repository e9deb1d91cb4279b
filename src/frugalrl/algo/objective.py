"""The objective the update minimises: any registered policy loss, with the importance-sampling
weights, the KL penalty and the entropy bonus composed around it in one place, then aggregated.

    x_t = rho_t p_t + beta u_t KL_t(logp, ref_logp) - c H_t,   u_t = r_t if kl_ratio_correction else 1
    L   = sum_i w_i sum_t m_it x_it

p_t the policy loss's term (``algo.policy_losses``), rho_t the rollout importance-sampling weights
(``algo.importance``), r_t the loss's own ratio, w_i the aggregation's per-completion weights
(``algo.aggregation``). Shapes as in ``algo.policy_losses``. docs/algorithms.md#composition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from frugalrl.algo.aggregation import (
    LOSS_AGGREGATIONS,
    aggregate_loss,
    masked_mean,
    sequence_weights,
)
from frugalrl.algo.kl import KL_ESTIMATORS
from frugalrl.algo.policy_losses import PolicyLoss, checked_policy_loss


@dataclass
class PolicyLossOutput:
    """The loss to backpropagate, plus detached statistics (token means) for logging."""

    loss: Tensor
    kl: float = 0.0  # per-token KL to the reference; 0.0 without one
    entropy: float = 0.0  # per-token entropy; 0.0 without one
    ratio_mean: float = 1.0  # the loss's ratio π/π_old
    stats: dict[str, float] = field(default_factory=dict)  # the loss's own, e.g. clip_fraction


@dataclass(frozen=True)
class PolicyObjective:
    """A policy loss by name with its parameters, and the terms composed around it.

    The KL and entropy terms are added per token before aggregation, so the entropy bonus is
    aggregated like the policy term (verl); TRL instead subtracts a token mean of the entropy
    whatever the loss type. kl_ratio_correction is TRL's ``use_bias_correction_kl`` (DeepSeek-V3.2):
    the unbiased reverse-KL gradient, which moves even where the ratio is 1. The entropy bonus
    moves the policy only if ``entropy`` carries gradient.
    """

    loss: str = "ppo_clip"
    params: Mapping[str, Any] = field(default_factory=dict)
    aggregation: str = "seq_mean_token_mean"
    max_completion_length: int | None = None  # seq_mean_token_sum_norm's constant divisor
    beta: float = 0.0
    kl_estimator: str = "k3"
    kl_ratio_correction: bool = False
    entropy_coef: float = 0.0

    def __post_init__(self) -> None:
        # Look every name up now, so a misspelt one fails before the first step.
        LOSS_AGGREGATIONS.get(self.aggregation)
        KL_ESTIMATORS.get(self.kl_estimator)
        object.__setattr__(self, "_policy_loss", checked_policy_loss(self.loss, self.params))

    @property
    def policy_loss(self) -> PolicyLoss:
        return self._policy_loss  # type: ignore[attr-defined]

    @property
    def skips_zero_advantage(self) -> bool:
        """True when a completion with advantage 0 contributes exactly nothing: the loss says
        so, and no KL or entropy term (which do not vanish with A) is in the loss."""
        return (
            self.policy_loss.inert_at_zero_advantage and self.beta == 0 and self.entropy_coef == 0
        )

    @property
    def stat_names(self) -> tuple[str, ...]:
        return self.policy_loss.stats

    def sequence_weights(self, mask: Tensor) -> Tensor:
        """(B,) aggregation weights for the whole batch whose valid tokens ``mask`` marks."""
        return sequence_weights(self.aggregation, mask, self.max_completion_length)

    def __call__(
        self,
        logp: Tensor,
        old_logp: Tensor,
        advantages: Tensor,
        mask: Tensor,
        seq_weights: Tensor | None = None,
        *,
        ref_logp: Tensor | None = None,
        entropy: Tensor | None = None,
        is_weights: Tensor | None = None,
    ) -> PolicyLossOutput:
        """L for these B completions. ``seq_weights``: the whole batch's weights when this is one
        micro-batch of it (the micro-batch losses then sum to the batch loss); None: the weights
        of these B alone. ``is_weights`` (B, T) or (B, 1) rescale the policy term only (TRL)."""
        if self.beta > 0 and ref_logp is None:
            raise ValueError("beta > 0 needs ref_logp")
        if self.entropy_coef != 0 and entropy is None:
            raise ValueError("entropy_coef != 0 needs entropy")
        if seq_weights is None:
            seq_weights = self.sequence_weights(mask)
        term = self.policy_loss.fn(logp, old_logp, advantages, mask, **self.params)
        per_token = term.per_token
        if is_weights is not None:
            per_token = per_token * is_weights
        kl = KL_ESTIMATORS.get(self.kl_estimator)(logp, ref_logp) if ref_logp is not None else None
        if kl is not None and self.beta > 0:
            per_token = per_token + self.beta * (
                kl * term.ratio if self.kl_ratio_correction else kl
            )
        if self.entropy_coef != 0:
            per_token = per_token - self.entropy_coef * entropy
        return PolicyLossOutput(
            loss=aggregate_loss(per_token, mask, seq_weights.to(per_token.device)),
            kl=masked_mean(kl, mask) if kl is not None else 0.0,
            entropy=masked_mean(entropy, mask) if entropy is not None else 0.0,
            ratio_mean=masked_mean(term.ratio, mask),
            stats={name: masked_mean(term.stats[name], mask) for name in self.stat_names},
        )
