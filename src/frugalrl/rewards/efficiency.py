"""Length-normalised correctness within a group (Arora & Zanette 2025, "Reason Efficiently")."""

from __future__ import annotations

import math
from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample

EPS = 1e-7  # added to the std, as in the paper


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


@REWARDS.register("efficiency")
def efficiency(
    samples: Sequence[Sample], alpha: float = 0.1, extraction: str = DEFAULT_EXTRACTION
) -> list[float | None]:
    """r_i = 1[correct_i] · (1 − α·σ((L_i − mean) / (std + 1e-7))), L_i = ``num_tokens``.

    mean and population std of L over the completions of THIS group that are correct and
    finished; σ is the logistic function. Completions without EOS (``finished`` False) get 0
    and are left out of the statistics. Correct finished completions score in [1 − α, 1]:
    a lone correct one has z = 0, so 1 − α/2. ``alpha`` = 0.1 (the paper shows 0.1 and 0.2;
    0 gives plain accuracy). None for every sample when the gold answer cannot be parsed; a
    sample whose grading fails (timeout) is None and left out of the statistics.
    """
    if alpha < 0:
        raise UserError(f"reward 'efficiency': alpha must be >= 0, got {alpha}")
    correct = [grade_sample(s, truncated_is_wrong=True, extraction=extraction) for s in samples]
    lengths = [s.num_tokens for s, ok in zip(samples, correct, strict=True) if ok]
    if not lengths:  # nothing correct (or nothing scorable): no statistics needed
        return [None if ok is None else 0.0 for ok in correct]
    mean = sum(lengths) / len(lengths)
    std = math.sqrt(sum((n - mean) ** 2 for n in lengths) / len(lengths))
    values: list[float | None] = []
    for sample, ok in zip(samples, correct, strict=True):
        if ok is None:
            values.append(None)
        elif ok:
            values.append(1.0 - alpha * _sigmoid((sample.num_tokens - mean) / (std + EPS)))
        else:
            values.append(0.0)
    return values
