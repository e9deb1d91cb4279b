"""Importance-sampling correction of the rollout engine / trainer mismatch.

An engine such as vLLM samples with its own kernels (and often another precision), so the
probability it gave a token differs from the trainer's π_old for the same weights; the
policy-gradient then uses samples from the wrong distribution. The correction weights each
token's policy term by ρ = π_old / π_rollout, bounded, as TRL (``vllm_importance_sampling_*``)
and verl (truncated IS, Yao et al. 2025 "Your efficient RL framework secretly brings you
off-policy RL training") do. Each mode is a small function of the per-token log-ratio
log ρ_t = log π_old(y_t) − log π_rollout(y_t), registered by name.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from frugalrl.registry import Registry

ISCorrection = Callable[[Tensor, Tensor, float | None, float | None], Tensor]

IS_CORRECTIONS = Registry[ISCorrection]("importance sampling correction")


def _bounds(clip_min: float | None, clip_max: float | None) -> tuple[float, float]:
    return (-math.inf if clip_min is None else clip_min, math.inf if clip_max is None else clip_max)


def rollout_log_ratio(old_logp: Tensor, rollout_logp: Tensor, mask: Tensor) -> Tensor:
    """(B, T) log ρ_t on valid tokens, 0 elsewhere (and where a log-prob is missing: NaN)."""
    diff = torch.where(mask.bool(), old_logp - rollout_logp, 0.0)
    return torch.nan_to_num(diff, nan=0.0)


@IS_CORRECTIONS.register("token_truncate")
def token_truncate(log_ratio: Tensor, mask: Tensor, clip_min=None, clip_max=2.0) -> Tensor:
    """w_t = clip(ρ_t, C_min, C_max)   (truncated IS per token; verl's TIS, TRL token_truncate)."""
    lo, hi = _bounds(clip_min, clip_max)
    return log_ratio.exp().clamp(lo, hi)


@IS_CORRECTIONS.register("token_mask")
def token_mask(log_ratio: Tensor, mask: Tensor, clip_min=None, clip_max=2.0) -> Tensor:
    """w_t = ρ_t if C_min ≤ ρ_t ≤ C_max else 0   (a token too far off-policy is dropped)."""
    lo, hi = _bounds(clip_min, clip_max)
    ratio = log_ratio.exp()
    return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)


@IS_CORRECTIONS.register("sequence_truncate")
def sequence_truncate(log_ratio: Tensor, mask: Tensor, clip_min=None, clip_max=2.0) -> Tensor:
    """w_i = clip(Π_t ρ_t, C_min, C_max), one weight per completion: (B, 1)."""
    lo, hi = _bounds(clip_min, clip_max)
    return log_ratio.sum(-1, keepdim=True).exp().clamp(lo, hi)


@IS_CORRECTIONS.register("sequence_mask")
def sequence_mask(log_ratio: Tensor, mask: Tensor, clip_min=None, clip_max=2.0) -> Tensor:
    """w_i = Π_t ρ_t if within [C_min, C_max] else 0: (B, 1)   (TRL's default mode)."""
    lo, hi = _bounds(clip_min, clip_max)
    ratio = log_ratio.sum(-1, keepdim=True).exp()
    return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)


def importance_weights(
    mode: str,
    old_logp: Tensor,
    rollout_logp: Tensor,
    mask: Tensor,
    clip_min: float | None = None,
    clip_max: float | None = 2.0,
) -> Tensor:
    """The named correction's weights, detached: they rescale the policy term, not its gradient
    direction, and are (B, T) for token modes, (B, 1) for sequence modes."""
    log_ratio = rollout_log_ratio(old_logp.detach(), rollout_logp, mask)
    return IS_CORRECTIONS.get(mode)(log_ratio, mask, clip_min, clip_max).detach()
