"""Loss aggregations: how per-token losses become one number (docs/algorithms.md#loss-aggregations).

Per-token tensors are (B, T): B completions, T padded completion tokens; ``mask`` marks real
completion tokens. Every aggregation is a per-completion weight, so the batch loss is a plain sum
over completions: micro-batches of any shape sum to it exactly. Definitions follow TRL's
``GRPOTrainer._compute_loss`` (checked against TRL's own code in tests/test_algo_vs_trl.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

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
    (GRPO; TRL "grpo").

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


def masked_mean(x: Tensor, mask: Tensor) -> float:
    """sum(m * x) / max(1, sum(m)) as a float, for logging."""
    return float(_masked(x.detach(), mask).sum() / mask.sum().clamp(min=1))
