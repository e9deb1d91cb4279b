"""Accuracy: did the completion reach the gold answer?"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from frugalrl.rewards.answer import is_correct, parse_gold
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample

log = logging.getLogger(__name__)


@REWARDS.register("accuracy")
def accuracy(samples: Sequence[Sample], truncated_is_wrong: bool = False) -> list[float | None]:
    """r = 1 if math-verify finds the completion's final answer equal to ``example["answer"]``, else 0.

    None when the gold answer cannot be parsed (open-rs gives 1.0 there, rewarding every
    completion of a broken example: a bug we avoid), and None when grading raises or times out.
    Truncated completions (``finished`` False) are graded like the others unless
    ``truncated_is_wrong``, which gives them 0.
    """
    values: list[float | None] = []
    for sample in samples:
        answer = sample.example["answer"]
        gold = parse_gold(str(answer))
        if gold is None:
            log.warning("accuracy: unparseable gold answer %r, sample not scored", answer)
            values.append(None)
        elif truncated_is_wrong and not sample.finished:
            values.append(0.0)
        else:
            try:
                values.append(1.0 if is_correct(sample.completion, gold) else 0.0)
            except Exception as e:  # a timeout, or a math-verify failure
                log.debug("accuracy: grading failed: %r", e)
                values.append(None)
    return values
