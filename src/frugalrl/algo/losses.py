"""The PPO-clip policy loss of the GRPO family, with the loss aggregations that tell its variants apart.

Per-token tensors are (B, T): B completions, T padded completion tokens; ``mask`` marks real
completion tokens. Definitions follow TRL's ``GRPOTrainer._compute_loss`` (checked against TRL's
own code in tests/test_algo_vs_trl.py); dual-clip follows verl's ``compute_policy_loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from frugalrl.algo.kl import KL_ESTIMATORS
from frugalrl.registry import Registry

SequenceWeights = Callable[[Tensor, int | None], Tensor]

LOSS_AGGREGATIONS = Registry[SequenceWeights]("loss aggregation")


def _masked(per_token: Tensor, mask: Tensor) -> Tensor:
    """per_token where mask, else 0 (where, not a product: a padded inf or NaN must not leak in)."""
    return torch.where(mask.bool(), per_token, 0.0)


def aggregate_loss(per_token: Tensor, mask: Tensor, seq_weights: Tensor) -> Tensor:
    """L = sum_i w_i sum_t m_it x_it.

    Every aggregation of the GRPO family is a per-completion weight on the completion's summed
    per-token loss. Writing it this way makes the loss a plain sum over completions, so the batch
    can be cut into micro-batches of any shape (by token budget), and completions that contribute
    nothing can be left out, without changing the loss: the weights are computed once, from the
    token counts of the whole batch.
    """
    return (seq_weights * _masked(per_token, mask).sum(-1)).sum()


@LOSS_AGGREGATIONS.register("seq_mean_token_mean")
def seq_meanmasked_mean(token_counts: Tensor, max_completion_length: int | None = None) -> Tensor:
    """w_i = 1 / (B max(1, n_i)):  L = (1/B) sum_i (sum_t m_it x_it) / max(1, n_i)
    (GRPO, open-rs; TRL "grpo").

    Each completion weighs the same, so tokens of long completions count less. A completion
    without valid tokens contributes 0 but still counts in B, as in TRL.
    """
    return 1.0 / (token_counts.numel() * token_counts.clamp(min=1))


@LOSS_AGGREGATIONS.register("token_mean")
def token_mean(token_counts: Tensor, max_completion_length: int | None = None) -> Tensor:
    """w_i = 1 / max(1, sum_j n_j):  L = sum_it m_it x_it / max(1, sum_it m_it)
    (DAPO's token-level loss; TRL "dapo").

    Every token of the batch weighs the same, so long completions are not diluted. The count runs
    over the whole batch (the generation batch behind one optimizer step), as DAPO defines it;
    TRL's "bnpo" divides by each micro-batch's own count instead.
    """
    total = token_counts.sum().clamp(min=1)
    return torch.ones_like(token_counts, dtype=torch.float32) / total


@LOSS_AGGREGATIONS.register("seq_mean_token_sum_norm")
def seq_mean_token_sum_norm(
    token_counts: Tensor, max_completion_length: int | None = None
) -> Tensor:
    """w_i = 1 / (B L_max):  L = (1/B) sum_i (sum_t m_it x_it) / L_max   (Dr. GRPO; TRL "dr_grpo").

    A constant divisor removes the length bias of dividing by each completion's own length.
    """
    if max_completion_length is None or max_completion_length <= 0:
        raise ValueError(
            "seq_mean_token_sum_norm needs max_completion_length > 0, "
            f"got {max_completion_length!r}"
        )
    b = token_counts.numel()
    return torch.full(token_counts.shape, 1.0 / (b * max_completion_length))


def sequence_weights(
    aggregation: str, mask: Tensor, max_completion_length: int | None = None
) -> Tensor:
    """(B,) weights of the named aggregation for the batch whose valid tokens ``mask`` marks."""
    return LOSS_AGGREGATIONS.get(aggregation)(mask.sum(-1), max_completion_length).float()


@dataclass
class PolicyLossOutput:
    """The loss to backpropagate, plus detached statistics for logging."""

    loss: Tensor
    clip_fraction: float  # share of valid tokens whose gradient the clip removed
    kl: float  # mean per-token KL to the reference over valid tokens; 0.0 without one
    ratio_mean: float  # mean pi / pi_old over valid tokens
    dual_clip_fraction: float = 0.0  # share of valid tokens capped at -c * A (A < 0); 0.0 without
    entropy: float = 0.0  # mean per-token entropy over valid tokens; 0.0 without one


def masked_mean(x: Tensor, mask: Tensor) -> float:
    """sum(m * x) / max(1, sum(m)) as a float, for logging."""
    return float(_masked(x.detach(), mask).sum() / mask.sum().clamp(min=1))


def ppo_clip_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    eps_low: float = 0.2,
    eps_high: float = 0.2,
    ref_logp: Tensor | None = None,
    beta: float = 0.0,
    kl_estimator: str = "k3",
    aggregation: str = "seq_mean_token_mean",
    max_completion_length: int | None = None,
    dual_clip_c: float | None = None,
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    kl_ratio_correction: bool = False,
    seq_weights: Tensor | None = None,
    is_weights: Tensor | None = None,
) -> PolicyLossOutput:
    """PPO-clip loss, aggregated over tokens and completions by ``aggregation``.

    ratio = exp(logp - old_logp)
    p_t = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)
    p_t = min(p_t, -c * A)   if A < 0 and dual_clip_c = c is set (dual-clip, Ye et al. 2020; verl)
    x_t = p_t + beta * w_t * KL(logp, ref_logp) - entropy_coef * H_t
    w_t = ratio if kl_ratio_correction else 1

    logp, old_logp, ref_logp, entropy, mask: (B, T); advantages: (B,). The KL and entropy terms
    are added per token before aggregation, so the entropy bonus is aggregated like the policy
    term (verl); TRL instead subtracts a token mean of the entropy whatever the loss type. With
    one optimisation pass per batch (old_logp = logp.detach()) the ratio is 1 and this is the
    plain policy gradient.

    Dual-clip: for A < 0 the standard clip leaves -ratio * A unbounded as the ratio grows, so one
    token the old policy found unlikely can dominate the batch; capping at -c * A (c > 1, verl's
    clip_ratio_c = 3) removes its gradient there. The cap only binds above ratio = c.

    The entropy bonus moves the policy only if ``entropy`` carries gradient: a detached entropy
    (as from ``completion_logprobs(with_entropy=True)``) shifts the loss value, not the update.

    kl_ratio_correction weights the KL by the differentiable ratio, TRL's ``use_bias_correction_kl``
    (its default in TRL 1.16; DeepSeek-V3.2): the gradient becomes the unbiased reverse-KL gradient
    and changes even where the ratio is exactly 1. Off, as in GRPO, open-rs and verl.

    ``seq_weights`` (B,) are the aggregation's weights (``sequence_weights``) computed over the
    whole batch when this call sees one micro-batch of it; the micro-batch losses then sum to the
    batch loss. None: the weights of these B completions alone.

    ``is_weights`` ((B, T) or (B, 1), ``algo.importance.importance_weights``) rescale the policy
    term p_t for the rollout engine / trainer mismatch, before the KL and entropy terms (TRL).
    """
    if beta > 0 and ref_logp is None:
        raise ValueError("beta > 0 needs ref_logp")
    if dual_clip_c is not None and dual_clip_c <= 1:
        raise ValueError(f"dual_clip_c must be > 1, got {dual_clip_c}")
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef != 0 needs entropy")
    # Look both up first so a misspelt name fails even on the path that would not use it.
    kl_fn = KL_ESTIMATORS.get(kl_estimator)
    if seq_weights is None:
        seq_weights = sequence_weights(aggregation, mask, max_completion_length)
    else:
        LOSS_AGGREGATIONS.get(aggregation)
    adv = advantages.unsqueeze(-1)  # (B, 1): one advantage for every token of a completion
    ratio = torch.exp(logp - old_logp)
    clipped = torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = -torch.min(ratio * adv, clipped * adv)

    is_dual_clipped = torch.zeros_like(ratio, dtype=torch.bool)
    if dual_clip_c is not None:
        cap = -dual_clip_c * adv
        is_dual_clipped = (adv < 0) & (per_token > cap)
        per_token = torch.where(adv < 0, torch.min(per_token, cap), per_token)

    if is_weights is not None:
        per_token = per_token * is_weights

    kl = kl_fn(logp, ref_logp) if ref_logp is not None else None
    if kl is not None and beta > 0:
        per_token = per_token + beta * (kl * ratio if kl_ratio_correction else kl)

    if entropy_coef != 0:
        per_token = per_token - entropy_coef * entropy

    loss = aggregate_loss(per_token, mask, seq_weights.to(per_token.device))

    # Clipping only zeroes the gradient when it lowers the objective: ratio too low for A < 0,
    # too high for A > 0 (TRL's clip_ratio/region_mean). Dual-clipped tokens (ratio > c, A < 0)
    # are counted apart, so this stays comparable with and without dual-clip.
    is_clipped = ((ratio < 1 - eps_low) & (adv < 0)) | ((ratio > 1 + eps_high) & (adv > 0))
    return PolicyLossOutput(
        loss=loss,
        clip_fraction=masked_mean(is_clipped.to(ratio.dtype), mask),
        kl=masked_mean(kl, mask) if kl is not None else 0.0,
        ratio_mean=masked_mean(ratio, mask),
        dual_clip_fraction=masked_mean(is_dual_clipped.to(ratio.dtype), mask),
        entropy=masked_mean(entropy, mask) if entropy is not None else 0.0,
    )
