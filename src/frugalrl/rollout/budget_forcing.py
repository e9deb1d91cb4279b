"""Budget forcing (Muennighoff et al. 2025, "s1: Simple test-time scaling"): cap the thinking at
N tokens, then make the model answer.

A completion that has not finished after N tokens gets the end-of-thinking delimiter appended
(unless it already closed its thinking) and is continued for at most ``answer_tokens`` more,
so that a model stopped mid-thought still commits to an answer instead of being scored as
truncated. docs/algorithms.md#budget-forcing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from frugalrl.errors import UserError
from frugalrl.rollout.base import Completion, RolloutEngine, SamplingParams

DEFAULT_THINK_END = "\n</think>\n"


@dataclass
class BudgetForcing:
    """Wraps an engine (any :class:`RolloutEngine`) so that its completions think at most
    ``think_tokens`` tokens; ``forced`` counts the completions that were cut and made to answer.
    """

    engine: RolloutEngine
    tokenizer: object
    think_tokens: int
    answer_tokens: int = 256
    think_end: str = DEFAULT_THINK_END
    forced: int = 0

    def __post_init__(self) -> None:
        if self.think_tokens < 1 or self.answer_tokens < 1:
            raise UserError(
                f"budget forcing: the thinking and answer budgets must be >= 1 token, got "
                f"{self.think_tokens} and {self.answer_tokens}"
            )
        self._end_ids = tuple(self.tokenizer.encode(self.think_end, add_special_tokens=False))
        self._closed = self.think_end.strip()  # "</think>": the thinking is already over

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        thinking = replace(params, max_new_tokens=min(self.think_tokens, params.max_new_tokens))
        groups = self.engine.generate(prompt_ids, n, thinking, seeds)
        cut = [
            (p, i) for p, group in enumerate(groups) for i, c in enumerate(group) if not c.finished
        ]
        if not cut:
            return groups
        appended = [() if self._closed in groups[p][i].text else self._end_ids for p, i in cut]
        continuations = self.engine.generate(
            [
                (*prompt_ids[p], *groups[p][i].token_ids, *extra)
                for (p, i), extra in zip(cut, appended, strict=True)
            ],
            1,
            replace(params, max_new_tokens=self.answer_tokens),
            None if seeds is None else [seeds[p] + 7919 * (i + 1) for p, i in cut],
        )
        for (p, i), extra, (answer,) in zip(cut, appended, continuations, strict=True):
            c = groups[p][i]
            groups[p][i] = Completion(
                (*c.token_ids, *extra, *answer.token_ids),
                c.text + (self.think_end if extra else "") + answer.text,
                answer.finished,
            )
        self.forced += sum(bool(extra) for extra in appended)
        return groups

    def sync(self) -> None:
        self.engine.sync()

    def close(self) -> None:
        self.engine.close()
