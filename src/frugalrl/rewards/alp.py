"""ALP, the Adaptive Length Penalty: a length penalty that grows with the prompt's solve rate,
so easy prompts pay for extra tokens and hard ones barely do (Xiang et al. 2025, "Just Enough
Thinking: Efficient Reasoning with Adaptive Length Penalties Reinforcement Learning", arXiv
2506.05256)."""

from __future__ import annotations

from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


@REWARDS.register("alp")
def alp(
    samples: Sequence[Sample],
    beta: float = 0.1,
    max_tokens: int = 4096,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[float | None]:
    """r_i = 1[correct_i] − β·max(p, 1/K)·n_i / N, n = ``num_tokens``, N = ``max_tokens``,
    p the share of the group's K completions that are right.

    The penalty applies to right and wrong completions alike; the floor 1/K keeps a small
    one on prompts nobody solved. Truncated completions are wrong (and pay for their
    length). It includes the correctness term: use it instead of ``accuracy``. The defaults
    are ours: the paper's values of β and N could not be checked here (no code is released);
    β 0.1 with N 4,096 makes an always-solved prompt's 4,096-token answer lose 0.1, the
    scale of ``efficiency``'s α = 0.1. Under GRPO's per-group normalisation the scale of the
    penalty matters only against the correctness term. K and p count the completions whose
    grade is known; one that cannot be graded scores None. docs/algorithms.md#alp."""
    if beta < 0:
        raise UserError(f"reward 'alp': beta must be >= 0, got {beta}")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise UserError(f"reward 'alp': max_tokens must be a positive integer: {max_tokens!r}")
    graded = [grade_sample(s, truncated_is_wrong=True, extraction=extraction) for s in samples]
    known = [ok for ok in graded if ok is not None]
    if not known:
        return [None] * len(samples)
    scale = beta * max(sum(known) / len(known), 1 / len(known)) / max_tokens
    return [
        None if ok is None else float(ok) - scale * s.num_tokens
        for s, ok in zip(samples, graded, strict=True)
    ]
