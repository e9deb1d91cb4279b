"""Scoring whole batches: every group scored by the recipe's rewards, in worker processes,
with a watchdog so that no completion can hang or crash a run.

Two layers bound the time a reward may take:

* inside a worker, math-verify's own per-call time limits turn slow parses into None;
* around the workers, a watchdog: when no group finishes for ``timeout`` seconds, the groups
  still running are declared timed out (None, counted), the pool is killed and rebuilt, and
  groups that had not started are scored by the new pool. This also catches what no signal
  can interrupt (a user reward stuck in C code, a huge integer power).

``workers=0`` scores in this process: no watchdog, for tests and tiny batches.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from frugalrl.rewards.compose import RewardSpec, score_group
from frugalrl.sample import Sample

Scores = tuple[dict[str, list[float | None]], list[float | None], Counter]


@dataclass
class ScoredBatch:
    """Rewards of a batch of groups; ``per_reward[name][g][i]`` is sample i of group g."""

    per_reward: dict[str, list[list[float | None]]]
    totals: list[list[float | None]]
    failures: Counter = field(default_factory=Counter)  # reward name -> groups where it raised
    timed_out: int = 0  # groups the watchdog gave up on


def _score(samples: Sequence[Sample], specs: Sequence[RewardSpec]) -> Scores:
    failures: Counter = Counter()
    values, totals = score_group(samples, specs, failures)
    return values, totals, failures


# Worker-process state, set once by the pool initializer (specs do not travel with every task).
_worker_specs: Sequence[RewardSpec] = ()
_worker_started: mp.Queue | None = None


def _init_worker(specs: Sequence[RewardSpec], started: mp.Queue) -> None:
    global _worker_specs, _worker_started
    _worker_specs, _worker_started = specs, started
    import frugalrl.rewards  # noqa: F401  (registers the built-in rewards in this process)


def _score_in_worker(index: int, samples: Sequence[Sample]) -> tuple[int, Scores]:
    _worker_started.put(index)
    return index, _score(samples, _worker_specs)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class RewardScorer:
    """Scores batches of groups with ``specs``; keep one for a whole run (the pool persists)."""

    def __init__(self, specs: Sequence[RewardSpec], workers: int = 0, timeout: float = 30.0):
        self.specs, self.workers, self.timeout = list(specs), workers, timeout
        self._ctx = mp.get_context("spawn")  # no fork: the trainer has threads and torch state
        self._pool = None
        self._started: mp.Queue | None = None

    def score(self, groups: Sequence[Sequence[Sample]]) -> ScoredBatch:
        results: dict[int, Scores] = {}
        timed_out: set[int] = set()
        if self.workers == 0:
            results = {g: _score(samples, self.specs) for g, samples in enumerate(groups)}
        else:
            pending = set(range(len(groups)))
            while pending:
                finished, hung = self._run_pool(groups, sorted(pending))
                results.update(finished)
                timed_out |= hung
                pending -= set(finished) | hung
        return self._assemble(groups, results, timed_out)

    def _run_pool(
        self, groups: Sequence[Sequence[Sample]], todo: list[int]
    ) -> tuple[dict[int, Scores], set[int]]:
        """Score ``todo`` until done or stalled; a stall returns the groups that were running."""
        pool = self._ensure_pool()
        handles = {g: pool.apply_async(_score_in_worker, (g, groups[g])) for g in todo}
        finished: dict[int, Scores] = {}
        started: set[int] = set()
        last_progress = time.monotonic()
        while len(finished) < len(todo):
            for g, handle in list(handles.items()):
                if handle.ready():
                    index, scores = handle.get()
                    finished[index] = scores
                    del handles[g]
                    last_progress = time.monotonic()
            started |= self._drain_started()
            if len(finished) == len(todo):
                break
            if time.monotonic() - last_progress > self.timeout:
                self._kill_pool()
                return finished, (started | self._drain_started()) - set(finished)
            time.sleep(0.002)
        return finished, set()

    def _drain_started(self) -> set[int]:
        out = set()
        while True:
            try:
                out.add(self._started.get_nowait())
            except queue.Empty:
                return out

    def _ensure_pool(self):
        if self._pool is None:
            self._started = self._ctx.Queue()
            self._pool = self._ctx.Pool(
                self.workers, initializer=_init_worker, initargs=(self.specs, self._started)
            )
        return self._pool

    def _kill_pool(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _assemble(self, groups, results: dict[int, Scores], timed_out: set[int]) -> ScoredBatch:
        names = [s.name for s in self.specs]
        batch = ScoredBatch({n: [] for n in names}, [], Counter(), len(timed_out))
        for g, samples in enumerate(groups):
            if g in results:
                values, totals, failures = results[g]
                batch.failures.update(failures)
            else:  # timed out: nothing of this group is scored
                values = {n: [None] * len(samples) for n in names}
                totals = [None] * len(samples)
            for n in names:
                batch.per_reward[n].append(values[n])
            batch.totals.append(totals)
        return batch
