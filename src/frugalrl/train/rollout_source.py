"""Where a step's rollouts come from: sampled at the step, or sampled ahead beside training.

A step asks its rollout source for its first round (``first_round``) and, with dynamic
sampling, for extra rounds sampled on the spot (``draw``); it tells the source when it is
done (``step_done``), and a rollback or a failed engine makes the source ``drop`` what it
sampled ahead. The loop never asks which source it has:

* ``SynchronousRounds`` (``rollout.max_staleness: 0``, the default): each step's prompts are
  drawn and sampled at that step, from the weights the last step left.
* ``PrefetchedRounds`` (K > 0): the first rounds of the next K steps stay queued on an engine
  that samples beside training (``rollout.engine: hf-process``). At step t it queues step
  t + K's prompts, sampled from the weights of step t, then takes step t's round, queued K
  steps earlier. A batch is therefore sampled from weights at most K optimizer steps old
  (``rollout/staleness`` logs how many); the update computes π_old under the current weights
  and corrects for the behaviour policy with ``rollout.importance_sampling``.

Data-parallel: every process draws the same prompts and samples and scores its contiguous
share, then the groups are gathered, in prompt order. Ahead of time each process queues its
share on its own sampling process; the gathering is the trainer's, when it takes the round, so
no collective ever waits on a sampler.

Resume: a checkpoint holds the queued rounds (waited for, their completions saved), so a
resumed run trains exactly the batches the uninterrupted run would have. After a failure of
the engine, or a rollback, the queued rounds are dropped and the data order rewinds to the
first of them: those prompts are drawn again and sampled from the weights then current.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from frugalrl.config import Config
from frugalrl.data.sampler import PromptSampler
from frugalrl.rollout import Completion, EngineUnavailable, SamplingParams
from frugalrl.sample import Sample
from frugalrl.train.distributed import DataParallel


@dataclass
class ScoredGroups:
    """Prompts with their G sampled completions each and the completions' rewards, one row a prompt.

    Rewards stay Python floats (NaN = unscored) until advantages need a tensor, so the logged
    means are the float64 ones. Counters and timings belong to the rounds that spent them.
    """

    prompt_ids: list[list[int]]
    groups: list[list[Completion]]
    totals: list[list[float]]  # weighted total reward per completion
    per_reward: dict[str, list[list[float]]]  # each reward term, same layout
    failed_groups: int = 0
    timed_out_groups: int = 0
    generation_seconds: float = 0.0
    scoring_seconds: float = 0.0

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def rewards(self) -> torch.Tensor:
        """(prompts, G) float32 totals, NaN where unscored."""
        if not self.totals:  # view(0, -1) is ambiguous, and dynamic sampling may keep nothing
            return torch.empty(0, 0)
        return torch.tensor(self.totals, dtype=torch.float32).view(len(self), -1)

    def select(self, keep: list[int]) -> ScoredGroups:
        """Only the groups at ``keep``; counters and timings stay with this round (not copied)."""
        return ScoredGroups(
            [self.prompt_ids[i] for i in keep],
            [self.groups[i] for i in keep],
            [self.totals[i] for i in keep],
            {name: [v[i] for i in keep] for name, v in self.per_reward.items()},
        )

    @staticmethod
    def concat(parts: list[ScoredGroups], concurrent: bool = False) -> ScoredGroups:
        """Groups of consecutive sampling rounds (their times add up), or of the processes of
        one round (``concurrent``: they ran side by side, the round took the longest's time)."""
        wall = max if concurrent else sum
        return ScoredGroups(
            [p for part in parts for p in part.prompt_ids],
            [g for part in parts for g in part.groups],
            [t for part in parts for t in part.totals],
            {
                name: [v for part in parts for v in part.per_reward[name]]
                for name in parts[0].per_reward
            },
            failed_groups=sum(p.failed_groups for p in parts),
            timed_out_groups=sum(p.timed_out_groups for p in parts),
            generation_seconds=wall(p.generation_seconds for p in parts),
            scoring_seconds=wall(p.scoring_seconds for p in parts),
        )


def group_seeds(seed: int, draws: range) -> list[int]:
    """One sampling seed per drawn prompt, from the run's seed and the draw's position in the
    run only: a group's samples are the same whatever batch, round or process it lands in."""
    return [
        int(np.random.SeedSequence([seed, d]).generate_state(1, np.uint64)[0] >> 1) for d in draws
    ]


def collect_rollouts(
    engine,
    problems,
    prompt_ids,
    config: Config,
    scorer,
    seeds: list[int] | None = None,
    dp: DataParallel | None = None,
) -> ScoredGroups:
    """One round: sample G completions per prompt and score each group.

    Data-parallel: each process samples and scores its share of the prompts, and every process
    gets all the groups, in prompt order."""
    dp = dp or DataParallel()
    if dp.enabled:
        mine = dp.share(range(len(prompt_ids)))
        part = collect_rollouts(
            engine,
            [problems[i] for i in mine],
            [prompt_ids[i] for i in mine],
            config,
            scorer,
            None if seeds is None else [seeds[i] for i in mine],
        )
        return ScoredGroups.concat(dp.gather(part), concurrent=True)
    t0 = time.perf_counter()
    n = config.rollout.num_generations
    groups = engine.generate(prompt_ids, n, sampling_params(config), seeds=seeds)
    return score_groups(problems, prompt_ids, groups, scorer, time.perf_counter() - t0)


def score_groups(problems, prompt_ids, groups, scorer, gen_seconds: float) -> ScoredGroups:
    """Score sampled groups (one per prompt) with the step's rewards."""
    t0 = time.perf_counter()
    scored_batch = scorer.score(
        [
            [Sample(c.text, c.num_tokens, c.finished, problem) for c in group]
            for problem, group in zip(problems, groups, strict=True)
        ]
    )
    score_seconds = time.perf_counter() - t0

    def nan_for_none(values: list[list[float | None]]) -> list[list[float]]:
        return [[math.nan if v is None else v for v in group] for group in values]

    return ScoredGroups(
        [list(p) for p in prompt_ids],
        groups,
        nan_for_none(scored_batch.totals),
        {name: nan_for_none(v) for name, v in scored_batch.per_reward.items()},
        failed_groups=sum(scored_batch.failures.values()),
        timed_out_groups=scored_batch.timed_out,
        generation_seconds=gen_seconds,
        scoring_seconds=score_seconds,
    )


def sampling_params(config: Config) -> SamplingParams:
    r = config.rollout
    return SamplingParams(r.temperature, r.top_p, r.max_completion_tokens)


@dataclass
class Round:
    """A step's first round: its scored groups, the version of the weights that sampled them
    (the trainer's step count then), and what taking it cost (sampled ahead: the waits)."""

    groups: ScoredGroups
    version: int
    metrics: dict[str, float] = field(default_factory=dict)


class SynchronousRounds:
    """Each step's prompts drawn and sampled at that step (module docstring)."""

    def __init__(
        self,
        engine,
        sampler: PromptSampler,
        problems: list[Any],
        prompt_ids: list[list[int]],
        config: Config,
        dp: DataParallel | None = None,
    ) -> None:
        self.engine, self.sampler, self.config = engine, sampler, config
        self.problems, self.prompt_ids = problems, prompt_ids
        self.dp = dp or DataParallel()

    def _seeds(self, n: int) -> list[int]:
        """The seeds of the next ``n`` draws."""
        position = self.sampler.position
        return group_seeds(self.config.train.seed, range(position, position + n))

    def draw(self, n: int, scorer) -> ScoredGroups:
        """Draw ``n`` prompts, sample their groups now and score them."""
        seeds = self._seeds(n)
        idx = self.sampler.next(n)
        return collect_rollouts(
            self.engine,
            [self.problems[i] for i in idx],
            [self.prompt_ids[i] for i in idx],
            self.config,
            scorer,
            seeds,
            self.dp,
        )

    def first_round(self, step: int, scorer) -> Round:
        """Step ``step``'s ``prompts_per_step`` groups, sampled by the weights of ``step``."""
        return Round(self.draw(self.config.train.prompts_per_step, scorer), step)

    def step_done(self) -> None:
        """The step that took the first round is complete."""

    def drop(self) -> None:
        """Forget what was sampled ahead: nothing here."""

    def state_dict(self) -> list[dict[str, Any]]:
        return []

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        """A checkpoint of a run that sampled ahead, resumed without: its queued prompts are
        drawn again."""
        if state:
            self.sampler.load_state_dict(state[0]["sampler_before"])


@dataclass
class QueuedRound:
    """One step's first round, drawn and queued ahead of its step."""

    sampler_before: dict[str, int]  # the data order before its draw (to rewind to)
    indices: list[int]  # the problems drawn
    seeds: list[int]
    version: int  # the trainer's step count when queued: the weights that sample it
    request: int | None = None  # the engine's id while in flight
    groups: list[list[Completion]] | None = None  # this process's share, once received
    generation_seconds: float = 0.0
    idle_seconds: float = 0.0  # how long the sampler waited for work before it


class PrefetchedRounds(SynchronousRounds):
    """The next ``max_staleness`` steps' first rounds, queued on the engine (module
    docstring). Extra dynamic-sampling rounds are sampled on the spot (``draw``)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.queued: deque[QueuedRound] = deque()
        self.current: QueuedRound | None = None  # the round of the step in progress

    @property
    def depth(self) -> int:
        return self.config.rollout.max_staleness

    def _mine(self, entry: QueuedRound) -> list[int]:
        """This process's share of ``entry``'s prompts (positions in the draw)."""
        return self.dp.share(range(len(entry.indices)))

    def _queue(self, version: int) -> None:
        n = self.config.train.prompts_per_step
        before, seeds = self.sampler.state_dict(), self._seeds(n)
        entry = QueuedRound(before, self.sampler.next(n), seeds, version)
        mine = self._mine(entry)
        entry.request = self.engine.submit(
            [self.prompt_ids[entry.indices[i]] for i in mine],
            self.config.rollout.num_generations,
            sampling_params(self.config),
            [seeds[i] for i in mine],
        )
        self.queued.append(entry)

    def _receive(self, entry: QueuedRound) -> None:
        if entry.groups is None:
            generated = self.engine.result(entry.request)
            entry.groups, entry.request = generated.groups, None
            entry.generation_seconds = generated.seconds
            entry.idle_seconds = generated.idle_seconds

    def _wait_everywhere(self, entries) -> EngineUnavailable | None:
        """Wait for ``entries``; the failure if an engine could not return them, this
        process's own or, under data parallelism, another's (a collective: all processes
        agree on a failure and fail together)."""
        failure = None
        try:
            for entry in entries:
                self._receive(entry)
        except EngineUnavailable as e:
            failure = e
        if self.dp.enabled:
            failed = self.dp.sum_floats({"engine_failed": float(failure is not None)})
            if failed["engine_failed"] and failure is None:
                failure = EngineUnavailable("rollout.engine: another process's sampler failed")
        return failure

    def first_round(self, step: int, scorer) -> Round:
        """Queue rounds up to step + K (sampled from the current weights, those of ``step``),
        then wait for this step's and score it."""
        while len(self.queued) < self.depth + 1:
            self._queue(step)
        entry = self.current = self.queued.popleft()
        t0 = time.perf_counter()
        if failure := self._wait_everywhere([entry]):
            raise failure
        waited = time.perf_counter() - t0
        mine = self._mine(entry)
        groups = score_groups(
            [self.problems[entry.indices[i]] for i in mine],
            [self.prompt_ids[entry.indices[i]] for i in mine],
            entry.groups,
            scorer,
            entry.generation_seconds,
        )
        if self.dp.enabled:
            groups = ScoredGroups.concat(self.dp.gather(groups), concurrent=True)
        metrics = {
            "time/rollout_wait_seconds": waited,  # the trainer idle
            "time/sampler_idle_seconds": entry.idle_seconds,  # the sampler idle before it
        }
        return Round(groups, entry.version, metrics)

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
        """The queued rounds, each waited for and gathered from every process: what a resume
        needs to train the same batches. With an engine gone they are dropped instead (and the
        data order rewound: take the sampler's state after this)."""
        if self._wait_everywhere(self.queued):
            self.drop()
        state = []
        for entry in self.queued:
            shares = self.dp.gather(entry.groups) if self.dp.enabled else [entry.groups]
            state.append(
                {
                    **{k: v for k, v in asdict(entry).items() if k != "groups"},
                    "groups": [[asdict(c) for c in g] for share in shares for g in share],
                }
            )
        return state

    def load_state_dict(self, state: list[dict[str, Any]]) -> None:
        self.queued = deque()
        for saved in state:
            entry = QueuedRound(**{k: v for k, v in saved.items() if k != "groups"})
            groups = saved["groups"]
            entry.groups = [[Completion(**c) for c in groups[i]] for i in self._mine(entry)]
            self.queued.append(entry)


def rollout_source(
    engine, sampler, problems, prompt_ids, config: Config, dp: DataParallel
) -> SynchronousRounds:
    """The source ``rollout.max_staleness`` asks for (K > 0 needs an engine with ``submit``)."""
    if not config.rollout.max_staleness:
        return SynchronousRounds(engine, sampler, problems, prompt_ids, config, dp)
    return PrefetchedRounds(engine, sampler, problems, prompt_ids, config, dp)
