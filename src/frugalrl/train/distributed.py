"""Data-parallel training over processes started by ``accelerate launch`` (or torchrun).

Every process holds the whole model and draws the same prompt indices; each generates and
scores its contiguous share of the prompts, and the scored groups are gathered so every process
sees the whole batch. Group and batch statistics (advantages, dynamic-sampling filter, loss
weights, logged rewards) are then computed from the same numbers as in one process. Each
process trains on its share of the completions; the gradients are summed over processes once
per optimizer step, then every process takes the same optimizer step.

Why the gradient is summed by hand rather than by DDP: the loss is a sum over completions with
weights fixed over the whole batch (``algo.losses.sequence_weights``), so the batch gradient is
exactly the sum of each process's gradient. The processes run different numbers of
micro-batches (packed by token budget over completions of uneven length), which DDP's
per-backward synchronisation does not allow; one all-reduce after the last micro-batch is what
DDP's ``no_sync`` accumulation does anyway.

Only the main process writes (logs, checkpoints, reports, evaluation); the others wait.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from frugalrl.errors import UserError

T = TypeVar("T")

BUCKET_ELEMENTS = 1 << 25  # gradients are all-reduced in flat buckets of at most this size


def launched_processes() -> int:
    """Processes in this job as the launcher set them (1 when not launched)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class DataParallel:
    """This process's place among ``world`` data-parallel processes (``world == 1``: alone)."""

    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_environment(cls, device: torch.device) -> DataParallel:
        """Join the process group a launcher (``accelerate launch``, torchrun) set up.

        accelerate's ``PartialState`` initialises it: NCCL and one GPU per process on CUDA,
        gloo on a CPU. ``device`` is the device the recipe asked for (``train.device``)."""
        for engine in ("DEEPSPEED", "FSDP"):
            if os.environ.get(f"ACCELERATE_USE_{engine}", "false").lower() == "true":
                raise UserError(
                    f"launched with an accelerate {engine} config: frugalrl trains data-parallel "
                    "with replicated weights (accelerate_configs/ddp.yaml, cpu-gloo.yaml); "
                    "sharded training is not supported yet"
                )
        if launched_processes() <= 1:
            return cls(device=device)
        from accelerate import PartialState

        # Long: the other processes wait at a barrier while the main one evaluates.
        state = PartialState(cpu=device.type == "cpu", timeout=timedelta(hours=6))
        return cls(state.process_index, state.num_processes, state.device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's contiguous share: the first ``len % world`` processes take one more."""
        base, extra = divmod(len(items), self.world)
        start = self.rank * base + min(self.rank, extra)
        return list(items[start : start + base + (self.rank < extra)])

    def gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def broadcast(self, obj: T) -> T:
        """The main process's ``obj`` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def sum_floats(self, values: dict[str, float]) -> dict[str, float]:
        """Each key summed over processes (float64); every process must pass the same keys."""
        if not self.enabled:
            return values
        keys = sorted(values)
        t = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return dict(zip(keys, t.tolist(), strict=True))

    def sum_gradients(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Replace each parameter's gradient by its sum over processes.

        A missing gradient becomes an exact 0 first, on one process too: a step with nothing to
        train on must still reach AdamW as a zero gradient (its moments decay), as the full
        computation would give."""
        params = list(params)
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if not self.enabled:
            return
        bucket: list[torch.Tensor] = []
        size = 0
        for p in params:
            bucket.append(p.grad)
            size += p.grad.numel()
            if size >= BUCKET_ELEMENTS:
                _all_reduce_flat(bucket)
                bucket, size = [], 0
        if bucket:
            _all_reduce_flat(bucket)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def _all_reduce_flat(grads: list[torch.Tensor]) -> None:
    """All-reduce (sum) a list of tensors as one flat buffer per dtype, written back in place."""
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for g in grads:
        by_dtype.setdefault(g.dtype, []).append(g)
    for group in by_dtype.values():
        flat = torch.cat([g.reshape(-1) for g in group])
        dist.all_reduce(flat)
        offset = 0
        for g in group:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


def balanced_shares(costs: Sequence[int], rows: Sequence[int], world: int) -> list[list[int]]:
    """Split ``rows`` over ``world`` processes so their summed ``costs`` are close: the costliest
    row first, each to the process with the least so far (ties: lowest rank). Deterministic, so
    every process computes the same split."""
    shares: list[list[int]] = [[] for _ in range(world)]
    load = [0] * world
    for i in sorted(rows, key=lambda i: (-costs[i], i)):
        k = min(range(world), key=lambda r: (load[r], r))
        shares[k].append(i)
        load[k] += costs[i]
    return [sorted(s) for s in shares]
