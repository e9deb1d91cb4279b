"""ThinkPrune: a right answer counts only within a length limit, the limit lowered in stages
over training (Hou et al. 2025, "ThinkPrune: Pruning Long Chain-of-Thought of LLMs via
Reinforcement Learning"; the authors' code, UCSB-NLP-Chang/ThinkPrune)."""

from __future__ import annotations

from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


@REWARDS.register("thinkprune")
def thinkprune(
    samples: Sequence[Sample], max_tokens: int = 4000, extraction: str = DEFAULT_EXTRACTION
) -> list[float | None]:
    """r = 1[correct ∧ finished ∧ n ≤ L], n = ``num_tokens``, L = ``max_tokens``.

    The authors cut generation at L (verl's ``max_response_length``), so an answer past the
    limit is never read and scores 0; here L is a reward parameter, so the limit can be
    lowered during one run while the completion cap stays: the recipe's ``schedule`` sets it
    per stage (theirs: 4,000 tokens, then 3,000 and 2,000, each stage a new run from the
    last checkpoint). L = 4,000 is their first stage. It includes the correctness term: use it
    instead of ``accuracy``. Deviations: math-verify grading (theirs: a Hendrycks-MATH
    normaliser); their system prompt also states the limit ("The output of the assistant
    should be within L tokens."), which a frugalrl prompt template does not. None when the
    gold answer cannot be parsed or grading fails. docs/algorithms.md#thinkprune."""
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise UserError(
            f"reward 'thinkprune': max_tokens must be a positive integer: {max_tokens!r}"
        )
    values: list[float | None] = []
    for s in samples:
        ok = grade_sample(s, truncated_is_wrong=True, extraction=extraction)
        values.append(None if ok is None else float(ok and s.num_tokens <= max_tokens))
    return values
