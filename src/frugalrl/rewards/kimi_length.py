"""Kimi k1.5's length reward: a group-relative bonus for short correct answers and a penalty
for long wrong ones (Kimi Team 2025, "Kimi k1.5", arXiv 2501.12599, §2.3.3)."""

from __future__ import annotations

from collections.abc import Sequence

from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


@REWARDS.register("kimi_length")
def kimi_length(
    samples: Sequence[Sample], extraction: str = DEFAULT_EXTRACTION
) -> list[float | None]:
    """λ_i = 0.5 − (L_i − L_min) / (L_max − L_min) over the group's lengths L = ``num_tokens``;
    r_i = λ_i if correct, min(0, λ_i) if wrong.

    λ runs from 0.5 (the group's shortest) to −0.5 (its longest): short correct answers earn up
    to +0.5, a wrong answer is never rewarded and is penalised only when longer than the group's
    midpoint. Every length of the group counts, as in the paper (a completion's length does not
    depend on its grade). All lengths equal: 0 for every sample, as the paper sets it.
    Truncated completions (``finished`` False) are wrong. It is the length term only: the
    paper adds it to the accuracy reward with a weight (the recipe's ``weight``); its warm-up
    (no length reward for the first phase of training) is not implemented. None when the gold
    answer cannot be parsed or grading fails. docs/algorithms.md#kimi_length.
    """
    correct = [grade_sample(s, truncated_is_wrong=True, extraction=extraction) for s in samples]
    lengths = [s.num_tokens for s in samples]
    shortest, longest = min(lengths, default=0), max(lengths, default=0)
    values: list[float | None] = []
    for length, ok in zip(lengths, correct, strict=True):
        if ok is None:
            values.append(None)
            continue
        lam = 0.0 if longest == shortest else 0.5 - (length - shortest) / (longest - shortest)
        values.append(lam if ok else min(0.0, lam))
    return values
