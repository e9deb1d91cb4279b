"""Run a function over groups of samples in worker processes, under a no-progress watchdog.

Reward scoring (training) and grading (evaluation) both call math-verify and user code on
arbitrary model output, which can take seconds or hang in C code where no signal reaches. A
pool of spawned workers bounds that:

* inside a worker, math-verify's own per-call time limits turn slow parses into None;
* around the workers, a watchdog: when no group finishes for ``timeout`` seconds, the groups
  still running are declared timed out, the pool is killed and rebuilt, and groups that had
  not started run on the new pool. This also catches what no signal can interrupt (a user
  reward stuck in C code, a huge integer power).

``workers=0`` runs in this process: no watchdog, for tests and tiny batches.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

GroupFn = Callable[[Sequence[Any]], Any]

# Worker-process state, set once by the pool initializer (the function and its bound
# arguments do not travel with every task).
_worker_fn: GroupFn | None = None
_worker_started: mp.Queue | None = None


def _init_worker(fn: GroupFn, started: mp.Queue, setup: Callable[[], None] | None) -> None:
    global _worker_fn, _worker_started
    _worker_fn, _worker_started = fn, started
    if setup is not None:
        setup()


def _run_in_worker(index: int, group: Sequence[Any]) -> tuple[int, Any]:
    _worker_started.put(index)
    return index, _worker_fn(group)


def default_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


class GroupPool:
    """Applies ``fn`` (picklable: a module-level function or a ``functools.partial`` of one) to
    each group; keep one for a whole run, the worker processes persist between calls."""

    def __init__(
        self,
        fn: GroupFn,
        workers: int = 0,
        timeout: float = 30.0,
        setup: Callable[[], None] | None = None,
    ):
        # setup: run once in each new worker (picklable), e.g. to register what fn looks up
        self.fn, self.workers, self.timeout, self.setup = fn, workers, timeout, setup
        self._ctx = mp.get_context("spawn")  # no fork: the trainer has threads and torch state
        self._pool = None
        self._started: mp.Queue | None = None

    def map(self, groups: Sequence[Sequence[Any]]) -> tuple[dict[int, Any], set[int]]:
        """``fn`` of every group, by group index, and the indices the watchdog gave up on.

        An exception raised by ``fn`` propagates (``fn`` handles the failures it expects).
        """
        if self.workers == 0:
            return {g: self.fn(group) for g, group in enumerate(groups)}, set()
        results: dict[int, Any] = {}
        timed_out: set[int] = set()
        pending = set(range(len(groups)))
        while pending:
            finished, hung = self._run_pool(groups, sorted(pending))
            results.update(finished)
            timed_out |= hung
            pending -= set(finished) | hung
        return results, timed_out

    def _run_pool(
        self, groups: Sequence[Sequence[Any]], todo: list[int]
    ) -> tuple[dict[int, Any], set[int]]:
        """Run ``todo`` until done or stalled; a stall returns the groups that were running."""
        pool = self._ensure_pool()
        handles = {g: pool.apply_async(_run_in_worker, (g, groups[g])) for g in todo}
        finished: dict[int, Any] = {}
        started: set[int] = set()
        last_progress = time.monotonic()
        while len(finished) < len(todo):
            for g, handle in list(handles.items()):
                if handle.ready():
                    index, result = handle.get()
                    finished[index] = result
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
                self.workers,
                initializer=_init_worker,
                initargs=(self.fn, self._started, self.setup),
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

    def __enter__(self) -> GroupPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
