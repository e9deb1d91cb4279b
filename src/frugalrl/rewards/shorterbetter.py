"""ShorterBetter: correctness minus the distance to the group's shortest correct length (Yi et
al. 2025, "ShorterBetter: Guiding Reasoning Models to Find Optimal Inference Length for
Efficient Reasoning"; the authors' verl reward manager, JingyangYi/ShorterBetter)."""

from __future__ import annotations

from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


@REWARDS.register("shorterbetter")
def shorterbetter(
    samples: Sequence[Sample],
    alpha: float = 2.0,
    beta: float = 0.001,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[float | None]:
    """r_i = α·1[correct_i] − β·|L_i − ℓ*|, L = ``num_tokens``; ℓ* the shortest correct length
    in the group, or the mean length of the whole group when none is correct.

    α 2.0 and β 0.001 are the authors' code (their released models are α = 2; the paper also
    shows α = 1). The length term is neither clipped nor normalised, so a 6,000-token
    completion 4,000 tokens past ℓ* loses 4.0. Truncated completions (``finished`` False) are
    wrong and keep their distance penalty, as in the authors' code (where a truncated answer
    usually has no box). It includes the correctness term: use it instead of ``accuracy``.
    Deviations: answers are graded by math-verify (the authors: Hendrycks-MATH string
    equivalence of the last box), and L counts the policy's tokens without EOS (theirs with
    it). None when the gold answer cannot be parsed or grading fails; such a completion is not
    a candidate for ℓ*, its length still counts in the mean. docs/algorithms.md#shorterbetter.
    """
    if alpha < 0 or beta < 0:
        raise UserError(f"reward 'shorterbetter': alpha and beta must be >= 0, got {alpha}, {beta}")
    correct = [grade_sample(s, truncated_is_wrong=True, extraction=extraction) for s in samples]
    lengths = [s.num_tokens for s in samples]
    right = [n for n, ok in zip(lengths, correct, strict=True) if ok]
    if not lengths:
        return []
    optimal = min(right) if right else sum(lengths) / len(lengths)
    return [
        None if ok is None else alpha * float(ok) - beta * abs(n - optimal)
        for n, ok in zip(lengths, correct, strict=True)
    ]
