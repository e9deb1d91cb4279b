"""Policy losses: the per-token policy term of the GRPO family, one small function each.

Every loss has one signature, ``fn(logp, old_logp, advantages, mask, *, <its params>)``:
logp, old_logp and mask are (B, T) (B completions, T padded completion tokens), advantages (B,).
It returns a ``PolicyTerm``: the per-token policy term p_t before importance-sampling weights,
KL and entropy, which ``algo.objective.PolicyObjective`` composes around any loss in one place,
then aggregates. Each loss is registered with whether a completion of advantage 0 contributes
exactly nothing (loss and gradient), the only case where the update may leave it out.

With one pass over a batch sampled by the current weights (old_logp = logp.detach()) every ratio
is 1 and all four losses here have the plain policy gradient; they part only when the batch is
reused (``algo.num_iterations`` > 1) or stale. Formulas, sources and our deviations:
docs/algorithms.md#policy-losses; checked against TRL's own code in tests/test_algo_vs_trl.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from frugalrl.errors import UserError
from frugalrl.registry import Registry, check_params


@dataclass
class PolicyTerm:
    """What a policy loss computes for one (micro-)batch."""

    per_token: Tensor  # (B, T), or (B, 1) for one value per completion: the policy term p
    ratio: Tensor  # (B, T) or (B, 1): the differentiable ratio π/π_old the loss uses
    stats: dict[str, Tensor] = field(default_factory=dict)  # name -> (B, T) or (B, 1), logged


PolicyLossFn = Callable[..., PolicyTerm]


@dataclass(frozen=True)
class PolicyLoss:
    """A registered policy loss and what the update may assume about it."""

    fn: PolicyLossFn
    # True when a completion with advantage 0 adds exactly 0 to the loss and its gradient,
    # whatever the ratio: only then may the update leave such completions out.
    inert_at_zero_advantage: bool
    stats: tuple[str, ...] = ()  # the names in PolicyTerm.stats, logged as train/<name>


POLICY_LOSSES = Registry[PolicyLoss]("policy loss")


def register_policy_loss(
    name: str, *, inert_at_zero_advantage: bool, stats: tuple[str, ...] = ()
) -> Callable[[PolicyLossFn], PolicyLossFn]:
    """Register ``fn`` as the policy loss ``name`` (``algo.policy_loss`` in a recipe)."""

    def decorator(fn: PolicyLossFn) -> PolicyLossFn:
        POLICY_LOSSES.register(name)(PolicyLoss(fn, inert_at_zero_advantage, stats))
        return fn

    return decorator


def checked_policy_loss(name: str, params: Mapping[str, Any]) -> PolicyLoss:
    """The loss ``name``, after checking ``params`` on a one-token batch: an unknown parameter or
    a bad value is a UserError before any model is loaded."""
    loss = POLICY_LOSSES.get(name)
    check_params(loss.fn, params, f"policy loss '{name}'")
    one = torch.zeros(1, 1)
    try:
        loss.fn(one, one, torch.ones(1), torch.ones(1, 1, dtype=torch.bool), **params)
    except (ValueError, TypeError) as e:
        raise UserError(f"policy loss '{name}': {e}") from None
    return loss


def _clipped_surrogate(
    ratio: Tensor, adv: Tensor, eps_low: float, eps_high: float, dual_clip_c: float | None = None
) -> PolicyTerm:
    """p = -min(ratio A, clip(ratio, 1 - eps_low, 1 + eps_high) A), with the dual-clip cap."""
    if eps_low < 0 or eps_high < 0:
        raise ValueError(f"eps_low and eps_high must be >= 0, got {eps_low}, {eps_high}")
    if dual_clip_c is not None and dual_clip_c <= 1:
        raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)
    is_dual_clipped = torch.zeros_like(per_token, dtype=torch.bool)
    if dual_clip_c is not None:
        cap = -dual_clip_c * adv
        is_dual_clipped = (adv < 0) & (per_token > cap)
        per_token = torch.where(adv < 0, torch.min(per_token, cap), per_token)
    # Clipping zeroes the gradient only where it lowers the objective: ratio too low for A < 0,
    # too high for A > 0 (TRL's clip_ratio/region_mean). Dual-clipped tokens are counted apart.
    is_clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    stats = {"clip_fraction": is_clipped.float(), "dual_clip_fraction": is_dual_clipped.float()}
    return PolicyTerm(per_token, ratio, stats)


@register_policy_loss(
    "ppo_clip", inert_at_zero_advantage=True, stats=("clip_fraction", "dual_clip_fraction")
)
def ppo_clip(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    dual_clip_c: float | None = None,
) -> PolicyTerm:
    """PPO-clip (Schulman et al. 2017), as in GRPO (Shao et al. 2024) and TRL.

    r_t = exp(logp_t - old_t)
    p_t = -min(r_t A, clip(r_t, 1 - eps_low, 1 + eps_high) A)
    p_t = min(p_t, -c A)   for A < 0 when dual_clip_c = c (Ye et al. 2020; verl's clip_ratio_c 3)

    eps 0.2 (GRPO, open-rs); DAPO's clip-higher raises eps_high to 0.28. For A < 0 the plain clip
    leaves -r A unbounded as r grows, so one token the old policy found unlikely can dominate a
    batch; the dual-clip cap removes its gradient above r = c. At A = 0, p_t = 0 for every r.
    """
    ratio = torch.exp(logp - old_logp)
    return _clipped_surrogate(ratio, advantages.unsqueeze(-1), eps_low, eps_high, dual_clip_c)


@register_policy_loss("gspo", inert_at_zero_advantage=True, stats=("clip_fraction",))
def gspo(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 3e-4,
    eps_high: float = 4e-4,
) -> PolicyTerm:
    """GSPO (Zheng et al. 2025, Qwen3): one importance ratio per completion, its length-normalised
    likelihood ratio, clipped as a whole.

    s_i = exp((1/n_i) sum_t m_it (logp_it - old_it))
    p_i = -min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i)     (one value per completion)

    eps 3e-4 / 4e-4 are the paper's: a sequence ratio moves far less than a token's. With the
    default seq_mean_token_mean aggregation the loss is the paper's (1/G) sum_i p_i, TRL's
    ``importance_sampling_level="sequence"``; its gradient equals that of the GSPO-token form.
    """
    valid = mask.bool()
    n = valid.sum(-1, keepdim=True).clamp(min=1)
    log_ratio = torch.where(valid, logp - old_logp, 0.0).sum(-1, keepdim=True) / n
    return _clipped_surrogate(torch.exp(log_ratio), advantages.unsqueeze(-1), eps_low, eps_high)


@register_policy_loss("cispo", inert_at_zero_advantage=True, stats=("clip_fraction",))
def cispo(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    max_weight: float = 5.0,
    min_weight: float | None = None,
) -> PolicyTerm:
    """CISPO (MiniMax-M1, 2025): clip the importance weight, not the update, and stop its gradient.

    r_t = exp(logp_t - old_t)
    p_t = -sg(clip(r_t, min_weight, max_weight)) A logp_t

    A REINFORCE term weighted by a bounded, detached ratio: unlike PPO-clip no token loses its
    gradient (rare "fork" tokens with large ratios keep theirs, bounded). max_weight 5.0 is
    ScaleRL's (Khatri et al. 2025) and TRL's recommended ``epsilon_high`` for cispo; min_weight
    None as MiniMax-M1, which sets no lower bound. The value of p is not PPO's (it is -w A logp),
    its gradient at r = 1 is. MiniMax-M1 averages over all tokens: the recipe uses token_mean.
    """
    if max_weight <= 0 or (min_weight is not None and not 0 <= min_weight < max_weight):
        raise ValueError(
            f"need 0 <= min_weight < max_weight and max_weight > 0, got {min_weight}, {max_weight}"
        )
    ratio = torch.exp(logp - old_logp)
    weight = ratio.clamp(min=min_weight, max=max_weight).detach()
    per_token = -weight * advantages.unsqueeze(-1) * logp
    is_clipped = ratio > max_weight
    if min_weight is not None:
        is_clipped = is_clipped | (ratio < min_weight)
    return PolicyTerm(per_token, ratio, {"clip_fraction": is_clipped.float()})


@register_policy_loss("sapo", inert_at_zero_advantage=True)
def sapo(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    tau_pos: float = 1.0,
    tau_neg: float = 1.05,
) -> PolicyTerm:
    """SAPO (Gao et al. 2025, Qwen): a smooth gate on the ratio instead of a hard clip.

    r_t = exp(logp_t - old_t),  tau = tau_pos if A > 0 else tau_neg
    p_t = -f(r_t) A,   f(r) = sigmoid(tau (r - 1)) 4 / tau

    f'(1) = 1, so near r = 1 this is the policy gradient; away from 1 the gradient fades smoothly
    (f'(r) = 4 s (1 - s), s = sigmoid(tau (r - 1))) instead of dropping to 0 at the clip edge.
    tau_neg > tau_pos fades negative updates faster, which the paper found more stable.
    """
    if tau_pos <= 0 or tau_neg <= 0:
        raise ValueError(f"tau_pos and tau_neg must be > 0, got {tau_pos}, {tau_neg}")
    adv = advantages.unsqueeze(-1)
    ratio = torch.exp(logp - old_logp)
    tau = torch.where(adv > 0, tau_pos, tau_neg)
    per_token = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * adv
    return PolicyTerm(per_token, ratio)
