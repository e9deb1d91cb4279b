"""Accuracy: did the completion reach the gold answer?"""

from __future__ import annotations

from collections.abc import Sequence

from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


@REWARDS.register("accuracy")
def accuracy(
    samples: Sequence[Sample],
    truncated_is_wrong: bool = False,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[float | None]:
    """r = 1 if math-verify finds the completion's final answer equal to ``example["answer"]``, else 0.

    None when the gold answer cannot be parsed (open-rs gives 1.0 there, rewarding every
    completion of a broken example: a bug we avoid), and None when grading raises or times out.
    Truncated completions (``finished`` False) are graded like the others unless
    ``truncated_is_wrong``, which gives them 0.
    ``extraction`` names how the final answer is found (``frugalrl.rewards.answer.EXTRACTIONS``):
    ``boxed_or_anchored`` (default, as open-rs trains), ``boxed``, or ``boxed_latex_expr``.
    """
    values: list[float | None] = []
    for sample in samples:
        correct = grade_sample(sample, truncated_is_wrong, extraction)
        values.append(None if correct is None else float(correct))
    return values
