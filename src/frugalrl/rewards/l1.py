"""L1 / LCPO: correctness traded against the distance to a target length stated in the prompt
(Aggarwal & Welleck 2025, "L1: Controlling How Long A Reasoning Model Thinks With Reinforcement
Learning"; the authors' reward, cmu-l3/l1 ``deepscaler/rewards/math_reward.py``).

The target N is the row's ``target_tokens`` (``data.length_targets`` draws one per problem and
writes it into the prompt); a row without one is scored by correctness alone, as the authors'
budget-free rows are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from frugalrl.data.length_targets import TARGET_FIELD
from frugalrl.errors import UserError
from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


def _target(sample: Sample) -> int | None:
    value = sample.example.get(TARGET_FIELD)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        # a data error, like a missing answer: the group scores None and is counted
        raise ValueError(f"field '{TARGET_FIELD}' must be a positive number of tokens: {value!r}")
    return int(value)


def _score(
    samples: Sequence[Sample], extraction: str, formula: Callable[[float, int, int], float]
) -> list[float | None]:
    """``formula(correct, N, n)`` for each sample with a target; correctness alone without."""
    values: list[float | None] = []
    for s in samples:
        ok = grade_sample(s, truncated_is_wrong=True, extraction=extraction)
        target = _target(s)
        if ok is None or target is None:
            values.append(None if ok is None else float(ok))
        else:
            values.append(formula(float(ok), target, s.num_tokens))
    return values


@REWARDS.register("l1_exact")
def l1_exact(
    samples: Sequence[Sample], alpha: float = 1 / 3000, extraction: str = DEFAULT_EXTRACTION
) -> list[float | None]:
    """L1-Exact: r = 1[correct] − α·|N − n|, n = ``num_tokens``, N the row's target.

    α = 1/3000 is the authors' code (the paper rounds it to 0.0003): 3,000 tokens off the
    target cost as much as a wrong answer. Truncated completions are wrong. Includes the
    correctness term: use it instead of ``accuracy``. Deviation: graded by math-verify (the
    authors: DeepScaleR's sympy/mathd grader). None when grading fails.
    docs/algorithms.md#l1."""
    if alpha < 0:
        raise UserError(f"reward 'l1_exact': alpha must be >= 0, got {alpha}")
    return _score(samples, extraction, lambda c, target, n: c - alpha * abs(target - n))


@REWARDS.register("l1_max")
def l1_max(
    samples: Sequence[Sample],
    alpha: float = 0.001,
    delta: float = 0.5,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[float | None]:
    """L1-Max: r = 1[correct]·clip(α·(N − n) + δ, 0, 1), N the row's maximum.

    α 0.001 and δ 0.5 are the authors' code (slope 1/500 on [−1, 1], rescaled to [0, 1]): a
    right answer exactly at the budget earns 0.5, one 500 tokens under it 1.0, one 500 over it
    0; a wrong answer earns 0 at any length. Truncated completions are wrong. Deviations:
    math-verify grading; the authors train L1-Max on prompts mixing both instructions (each
    row scored by its own formula), here a run uses one kind. docs/algorithms.md#l1."""
    if alpha < 0:
        raise UserError(f"reward 'l1_max': alpha must be >= 0, got {alpha}")
    return _score(
        samples,
        extraction,
        lambda c, target, n: c * min(1.0, max(0.0, alpha * (target - n) + delta)),
    )
