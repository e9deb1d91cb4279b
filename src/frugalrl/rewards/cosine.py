"""Cosine length-scaled correctness (open-rs experiment 3, from "Demystifying Long CoT")."""

from __future__ import annotations

import math
from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


def cosine_interp(length: float, max_len: float, at_zero: float, at_max: float) -> float:
    """at_max + ½(at_zero − at_max)(1 + cos(π·min(L, Lmax)/Lmax)): at_zero at L=0, at_max from Lmax."""
    progress = min(length, max_len) / max_len
    return at_max + 0.5 * (at_zero - at_max) * (1.0 + math.cos(math.pi * progress))


@REWARDS.register("cosine")
def cosine(
    samples: Sequence[Sample],
    max_len: int = 3584,
    correct_at_zero: float = 1.0,
    correct_at_max: float = 0.5,
    wrong_at_zero: float = -1.0,
    wrong_at_max: float = -0.5,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[float | None]:
    """r(L) = v_L + ½(v_0 − v_L)(1 + cos(π·min(L, Lmax)/Lmax)), L = ``num_tokens``, Lmax = ``max_len``.

    (v_0, v_L) = (``correct_at_zero``, ``correct_at_max``) = (1.0, 0.5) for a correct completion
    (short correct answers earn most) and (``wrong_at_zero``, ``wrong_at_max``) = (−1.0, −0.5)
    for a wrong one (long wrong answers are penalised less, as the paper intends). Truncated
    completions (``finished`` False) take the wrong branch. None when the gold answer cannot
    be parsed or grading fails.

    open-rs names: max_value_correct = correct_at_zero, min_value_correct = correct_at_max,
    min_value_wrong = wrong_at_zero, max_value_wrong = wrong_at_max. open-rs deviations: it
    measured L in characters, not tokens; it did not clip L, so past Lmax the cosine climbs
    back (r oscillates); and experiment 3 ran wrong values 0.0 at L=0 falling to −0.5, the
    opposite direction (``wrong_at_zero=0.0, wrong_at_max=-0.5`` reproduces that).
    """
    if max_len <= 0:
        raise UserError(f"reward 'cosine': max_len must be > 0, got {max_len}")
    values: list[float | None] = []
    for sample in samples:
        correct = grade_sample(sample, truncated_is_wrong=True, extraction=extraction)
        if correct is None:
            values.append(None)
            continue
        at_zero, at_max = (
            (correct_at_zero, correct_at_max) if correct else (wrong_at_zero, wrong_at_max)
        )
        values.append(cosine_interp(sample.num_tokens, max_len, at_zero, at_max))
    return values
