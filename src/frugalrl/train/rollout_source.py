"""Where a step's first sampling round comes from: sampled now, or sampled ahead.

``rollout.max_staleness: 0`` (the default) samples each step's prompts at that step, from the
weights the last step left (``sample_step``'s own round). With K > 0, ``PrefetchedRounds``
keeps the first round of the next K steps queued on an engine that samples beside training
(``rollout.engine: hf-process``): at step t it queues step t + K's prompts, sampled from the
weights of step t, then takes step t's round, queued K steps earlier. A batch is therefore
sampled from weights at most K optimizer steps old (``rollout/staleness`` logs how many); the
update computes π_old under the current weights and corrects for the behaviour policy with
``rollout.importance_sampling``. Extra dynamic-sampling rounds are sampled on the spot.

Resume: a checkpoint holds the queued rounds (waited for, their completions saved), so a
resumed run trains exactly the batches the uninterrupted run would have. After a failure of
the engine, or a rollback, the queued rounds are dropped and the data order rewinds to the
first of them: those prompts are drawn again and sampled from the weights then current.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from frugalrl.config import Config
from frugalrl.data.sampler import PromptSampler
from frugalrl.rollout import Completion, EngineUnavailable, SamplingParams


@dataclass
class QueuedRound:
    """One step's first round, drawn and queued ahead of its step."""

    sampler_before: dict[str, int]  # the data order before its draw (to rewind to)
    indices: list[int]  # the problems drawn
    seeds: list[int]
    version: int  # the trainer's step count when queued: the weights that sample it
    request: int | None = None  # the engine's id while in flight
    groups: list[list[Completion]] | None = None  # once received (or restored)
    generation_seconds: float = 0.0
    idle_seconds: float = 0.0  # how long the sampler waited for work before it


@dataclass
class FirstRound:
    """What ``PrefetchedRounds.take`` hands the step: its problems and their groups."""

    indices: list[int]
    seeds: list[int]
    groups: list[list[Completion]]
    version: int
    generation_seconds: float
    wait_seconds: float  # how long the trainer waited for it
    idle_seconds: float


class PrefetchedRounds:
    """The next ``max_staleness`` steps' first rounds, queued on ``engine`` (module docstring)."""

    def __init__(
        self, engine, sampler: PromptSampler, prompt_ids, config: Config, seeds_of
    ) -> None:
        self.engine, self.sampler, self.prompt_ids, self.config = (
            engine,
            sampler,
            prompt_ids,
            config,
        )
        self.seeds_of = seeds_of  # draw positions -> per-prompt seeds (the loop's group_seeds)
        self.queued: deque[QueuedRound] = deque()
        self.current: QueuedRound | None = None  # the round of the step in progress

    @property
    def depth(self) -> int:
        return self.config.rollout.max_staleness

    def _params(self) -> SamplingParams:
        r = self.config.rollout
        return SamplingParams(r.temperature, r.top_p, r.max_completion_tokens)

    def _queue(self, version: int) -> None:
        n = self.config.train.prompts_per_step
        before = self.sampler.state_dict()
        seeds = self.seeds_of(range(self.sampler.position, self.sampler.position + n))
        indices = self.sampler.next(n)
        request = self.engine.submit(
            [self.prompt_ids[i] for i in indices],
            self.config.rollout.num_generations,
            self._params(),
            seeds,
        )
        self.queued.append(QueuedRound(before, indices, seeds, version, request))

    def _receive(self, entry: QueuedRound) -> None:
        if entry.groups is None:
            generated = self.engine.result(entry.request)
            entry.groups, entry.request = generated.groups, None
            entry.generation_seconds = generated.seconds
            entry.idle_seconds = generated.idle_seconds

    def take(self, step: int) -> FirstRound:
        """Step ``step``'s first round: queue rounds up to step + K (sampled from the current
        weights, those of ``step``), then wait for this step's."""
        while len(self.queued) < self.depth + 1:
            self._queue(step)
        entry = self.current = self.queued.popleft()
        t0 = time.perf_counter()
        self._receive(entry)
        return FirstRound(
            entry.indices,
            entry.seeds,
            entry.groups,
            entry.version,
            entry.generation_seconds,
            time.perf_counter() - t0,
            entry.idle_seconds,
        )

    def step_done(self) -> None:
        """The step that took the current round is complete: its draw stays drawn."""
        self.current = None

    def drop(self) -> None:
        """Forget the queued rounds and an unfinished step's round (a rollback, a failed
        engine): the data order rewinds to the first of them, so their prompts are drawn
        again. In-flight generations are waited for (and thrown away) while the engine lives,
        so none lands in a later round."""
        rounds = ([self.current] if self.current else []) + list(self.queued)
        if not rounds:
            return
        self.sampler.load_state_dict(rounds[0].sampler_before)
        for entry in self.queued:
            try:
                self._receive(entry)
            except EngineUnavailable:
                break  # nothing more will come back
        self.queued.clear()
        self.current = None

    def state_dict(self) -> list[dict[str, Any]]:
        """The queued rounds, each waited for: what a resume needs to train the same batches.
        With the engine gone they are dropped instead (and the data order rewound: take the
        sampler's state after this)."""
        try:
            for entry in self.queued:
                self._receive(entry)
        except EngineUnavailable:
            self.drop()
        return [
            {
                **{k: v for k, v in asdict(entry).items() if k != "groups"},
                "groups": [[asdict(c) for c in group] for group in entry.groups],
            }
            for entry in self.queued
        ]

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.queued = deque(
            QueuedRound(
                **{k: v for k, v in entry.items() if k != "groups"},
                groups=[[Completion(**c) for c in group] for group in entry["groups"]],
            )
            for entry in state
        )
