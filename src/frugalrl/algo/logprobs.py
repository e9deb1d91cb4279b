"""Per-token log-probabilities of completions under a causal LM."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def pack_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int
) -> dict[str, Tensor]:
    """Lay out (prompt, completion) pairs as [left pad | prompt | completion | right pad].

    Prompts end at the same column, so completion token j of every row sits at column
    ``prompt_width + j``; ``completion_mask`` marks the real completion tokens.
    """
    pw = max(len(p) for p in prompts)
    cw = max(len(c) for c in completions)
    rows, attn, cmask = [], [], []
    for p, c in zip(prompts, completions, strict=True):
        left, right = pw - len(p), cw - len(c)
        rows.append([pad_id] * left + list(p) + list(c) + [pad_id] * right)
        attn.append([0] * left + [1] * (len(p) + len(c)) + [0] * right)
        cmask.append([1] * len(c) + [0] * right)
    attention_mask = torch.tensor(attn)
    # Positions count real tokens only, as in generate(), so left padding changes nothing.
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    return {
        "input_ids": torch.tensor(rows),
        "attention_mask": attention_mask,
        "position_ids": position_ids,
        "completion_mask": torch.tensor(cmask, dtype=torch.bool),
    }


def completion_logprobs(
    model,
    batch: dict[str, Tensor],
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """log π(y_t | x, y_<t) for every completion token, from logits / temperature.

    Dividing by the sampling temperature makes these the log-probs of the distribution the
    completions were actually drawn from, so the PPO ratio compares like with like.
    Returns (B, T_completion) log-probs and, if asked, the per-token entropy of the same
    tempered distribution: detached by default (a logged statistic: keeping its graph would hold
    another (B, T, vocab) tensor for backward), with ``entropy_grad`` part of the graph, for an
    entropy bonus that actually moves the policy.
    """
    width = batch["completion_mask"].shape[1]
    ids = batch["input_ids"]
    # Only the logits that predict completion tokens: the last `width + 1` positions, minus one.
    logits = model(
        input_ids=ids,
        attention_mask=batch["attention_mask"],
        position_ids=batch["position_ids"],
        logits_to_keep=width + 1,
        use_cache=False,
    ).logits[:, :-1]
    logits = logits.float() / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    targets = ids[:, -width:]
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = None
    if with_entropy or entropy_grad:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy
