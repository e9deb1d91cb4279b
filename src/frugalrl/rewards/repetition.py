"""Repetition penalty (open-r1, after "Demystifying Long CoT" appendix C.2): repeated word n-grams."""

from __future__ import annotations

from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample


@REWARDS.register("repetition")
def repetition(
    samples: Sequence[Sample], ngram_size: int = 3, max_penalty: float = -1.0
) -> list[float | None]:
    """r = (1 − #distinct n-grams / #n-grams) × ``max_penalty``; 0 with fewer than n words.

    Words are ``completion.lower().split()``; the n-grams (n = ``ngram_size``, default 3) are
    all consecutive n-word tuples, so a text that never repeats one scores 0 and a loop of one
    phrase approaches ``max_penalty`` (default −1.0; must be ≤ 0). As open-r1's reward.
    """
    if ngram_size < 1:
        raise UserError(f"reward 'repetition': ngram_size must be >= 1, got {ngram_size}")
    if max_penalty > 0:
        raise UserError(f"reward 'repetition': max_penalty must be <= 0, got {max_penalty}")
    values: list[float | None] = []
    for sample in samples:
        words = sample.completion.lower().split()
        if len(words) < ngram_size:
            values.append(0.0)
            continue
        # zip stops at the shortest shifted list: exactly the len(words) - n + 1 n-grams
        ngrams = list(zip(*(words[i:] for i in range(ngram_size)), strict=False))
        values.append((1.0 - len(set(ngrams)) / len(ngrams)) * max_penalty)
    return values
