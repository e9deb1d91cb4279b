"""Data-parallel training over processes started by ``accelerate launch`` (or torchrun).

Every process holds the whole model and draws the same prompt indices; each generates and
scores its contiguous share of the prompts, and the scored groups are gathered so every process
sees the whole batch. Group and batch statistics (advantages, dynamic-sampling filter, loss
weights, logged rewards) are then computed from the same numbers as in one process. Each
process trains on its share of the completions; the gradients are summed over processes once
per optimizer step, then every process takes the same optimizer step.

Why the gradient is summed by hand rather than by DDP: the loss is a sum over completions with
weights fixed over the whole batch (``algo.aggregation.sequence_weights``), so the batch gradient is
exactly the sum of each process's gradient. The processes run different numbers of
micro-batches (packed by token budget over completions of uneven length), which DDP's
per-backward synchronisation does not allow; one all-reduce after the last micro-batch is what
DDP's ``no_sync`` accumulation does anyway.

Only the main process writes (logs, checkpoints, reports, evaluation); the others wait.

Sharded weights (``accelerate launch`` with an FSDP config, ``accelerate_configs/fsdp-*.yaml``):
torch FSDP2 (``fully_shard``) over each decoder layer and the whole model, so each process keeps
1/N of the weights, gradients and optimizer state (ZeRO-3, or ZeRO-2 when weights stay gathered
between forward and backward). Sharded forward passes are collectives, so every process must run
the same number: training micro-batches are padded to the same count, and everything without a
gradient (sampling, evaluation, old-policy log-probs) runs inside ``full_weights``, where each
process holds the whole weights and runs as many forward passes as its own share needs.

DeepSpeed (``accelerate_configs/deepspeed-zero2.yaml`` / ``-zero3.yaml``): the same loop, with
DeepSpeed's engine taking the backward passes and the optimizer step (``deepspeed_zero.py``):
gradients and AdamW state partitioned over processes (ZeRO-2), and the weights too (ZeRO-3,
whose forward passes are collectives like FSDP's).
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from frugalrl.errors import UserError
from frugalrl.train.deepspeed_zero import (
    ZeroEngine,
    check_build_locks,
    engine_config,
    launch_config,
    launched_zero_stage,
)

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
    fsdp: bool = False  # FSDP2: each process keeps 1/world of the weights
    reshard_after_forward: bool = True  # ZeRO-3; False: ZeRO-2 (weights gathered until backward)
    offload: bool = False  # sharded weights and optimizer state in CPU memory
    zero_stage: int = 0  # DeepSpeed ZeRO stage of the launch (0: no DeepSpeed)
    zero: ZeroEngine | None = field(default=None, repr=False)  # set by ``attach_optimizer``

    @classmethod
    def from_environment(cls, device: torch.device) -> DataParallel:
        """Join the process group a launcher (``accelerate launch``, torchrun) set up.

        accelerate's ``PartialState`` initialises it: NCCL and one GPU per process on CUDA,
        gloo on a CPU. ``device`` is the device the recipe asked for (``train.device``)."""
        zero_stage = launched_zero_stage()
        if zero_stage not in (0, 2, 3):
            raise UserError(
                f"DeepSpeed ZeRO stage {zero_stage}: frugalrl runs stage 2 or 3 "
                "(accelerate_configs/deepspeed-zero2.yaml, deepspeed-zero3.yaml)"
            )
        if launched_processes() <= 1:
            if zero_stage:
                warnings.warn(
                    "a DeepSpeed config launched one process: nothing to partition, training "
                    "without DeepSpeed",
                    stacklevel=2,
                )
            return cls(device=device)
        if zero_stage:
            check_build_locks()  # before PartialState: DeepSpeed loads its ops there
        from accelerate import PartialState

        # Long: the other processes wait at a barrier while the main one evaluates.
        state = PartialState(cpu=device.type == "cpu", timeout=timedelta(hours=6))
        reshard = os.environ.get("FSDP_RESHARD_AFTER_FORWARD", "true").lower()
        return cls(
            state.process_index,
            state.num_processes,
            state.device,
            fsdp=_env_flag("ACCELERATE_USE_FSDP"),
            # FSDP2 configs say true/false; FSDP1 ones name the sharding strategy
            reshard_after_forward=reshard not in ("false", "shard_grad_op", "2"),
            offload=_env_flag("FSDP_OFFLOAD_PARAMS"),
            zero_stage=zero_stage,
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def shard_weights(self) -> bool:
        """Each process keeps 1/world of the weights (FSDP, ZeRO-3): forward passes with a
        gradient are collectives."""
        return self.fsdp or self.zero_stage == 3

    @property
    def sharding(self) -> str | None:
        """The sharding engine, in words (None: weights, gradients, optimizer replicated)."""
        if self.fsdp:
            return "FSDP"
        return f"DeepSpeed ZeRO-{self.zero_stage}" if self.zero_stage else None

    @property
    def gradient_scale(self) -> float:
        """What to multiply each process's loss by for the optimizer to see the summed
        gradient: FSDP and DeepSpeed average gradients over processes; ``sum_gradients`` sums."""
        return float(self.world) if self.sharding else 1.0

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Shard ``model`` (FSDP2, one unit per decoder layer and one for the rest) when the
        launch asked for FSDP; otherwise return it as it is (DeepSpeed partitions it in
        ``attach_optimizer``)."""
        if not self.fsdp:
            return model
        from torch.distributed.fsdp import CPUOffloadPolicy, OffloadPolicy, fully_shard

        options = {
            "reshard_after_forward": self.reshard_after_forward,
            "offload_policy": CPUOffloadPolicy() if self.offload else OffloadPolicy(),
        }
        layers = set(getattr(model, "_no_split_modules", None) or ())
        for module in model.modules():
            if type(module).__name__ in layers:
                fully_shard(module, **options)
        fully_shard(model, **options)
        return model

    def attach_optimizer(self, model: torch.nn.Module, optimizer, max_grad_norm: float) -> None:
        """DeepSpeed launches: hand ``model`` and the recipe's ``optimizer`` to a DeepSpeed
        engine, which takes the backward passes and the steps from here on."""
        if self.zero_stage:
            dtype = next(model.parameters()).dtype
            config = engine_config(launch_config(), max_grad_norm, dtype)
            self.zero = ZeroEngine(model, optimizer, config)

    def training_forward(self, model: torch.nn.Module) -> torch.nn.Module:
        """What to call for forward passes that train: ZeRO-3's engine, whose forward keeps
        the books its gradient partitioning relies on (over several micro-batches); else
        ``model`` itself."""
        if self.zero is not None and self.zero.stage == 3:
            return self.zero.engine
        return model

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate this micro-batch's gradient (``last``: the optimizer step's last one)."""
        if self.zero is not None:
            self.zero.backward(loss * self.gradient_scale, last)
        else:
            (loss * self.gradient_scale).backward()

    def optimizer_step(self, model: torch.nn.Module, optimizer, max_grad_norm: float):
        """Sum the gradients over processes, clip them to ``max_grad_norm`` and step, unless
        the gradient is not finite (a NaN/inf would poison every weight). Returns the gradient
        norm before clipping and whether the update was applied; gradients are cleared."""
        if self.zero is not None:
            return self.zero.step()
        self.sum_gradients(p for p in model.parameters() if p.requires_grad)
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        if hasattr(norm, "full_tensor"):  # sharded: a DTensor over the processes' shards
            norm = norm.full_tensor()
        norm = float(norm)
        applied = math.isfinite(norm)
        if applied:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return norm, applied

    @contextmanager
    def full_weights(self, model: torch.nn.Module) -> Iterator[None]:
        """Inside, every process holds ``model``'s whole weights, so forward passes without a
        gradient need no collective and processes may run different numbers of them (every
        process must enter and leave together: gathering is a collective)."""
        if self.zero is not None:
            with self.zero.full_weights():
                yield
            return
        if not self.fsdp:
            yield
            return
        from torch.distributed.fsdp import FSDPModule

        units = [m for m in model.modules() if isinstance(m, FSDPModule)]
        for unit in units:
            unit.unshard()
            unit.set_reshard_after_forward(False, recurse=False)
        try:
            yield
        finally:
            for unit in units:
                unit.reshard()
                # the root keeps FSDP2's own default: not resharded (backward needs it at once)
                keep = self.reshard_after_forward and unit is not model
                unit.set_reshard_after_forward(keep, recurse=False)

    def model_state(self, model: torch.nn.Module) -> dict[str, torch.Tensor] | None:
        """Sharded: the whole weights on the main process (a collective; others get {}).
        Replicated: None (save the model as it is)."""
        if not self.shard_weights:
            return None
        if self.zero is not None:
            with self.zero.full_weights():
                state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            if not self.is_main:
                return {}
        else:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                get_model_state_dict,
            )

            options = StateDictOptions(full_state_dict=True, cpu_offload=True)
            state = get_model_state_dict(model, options=options)
        # A tied weight (output layer = input embeddings) is saved once, as from_pretrained
        # expects and as the replicated model's save_pretrained does.
        first: dict[int, str] = {}
        for name, param in model.named_parameters(remove_duplicate=False):
            if first.setdefault(id(param), name) != name:
                state.pop(name, None)
        return state

    def load_model_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Overwrite the live ``model``'s weights with a full state dict (on every process)."""
        if self.zero is not None:
            with self.zero.writable_weights():
                if self.is_main or self.zero_stage != 3:
                    model.load_state_dict(state)
        elif self.fsdp:
            from torch.distributed.checkpoint.state_dict import (
                StateDictOptions,
                set_model_state_dict,
            )

            set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))
        else:
            model.load_state_dict(state)

    def optimizer_state(self, model: torch.nn.Module, optimizer) -> dict[str, Any]:
        """The optimizer's state as one process would save it (sharded: gathered whole, keyed by
        parameter name, on the main process; DeepSpeed: every process's partition, in rank
        order, on the main process; a collective)."""
        if self.zero is not None:
            partitions = self.gather_to_main(self.zero.optimizer_state())
            return {"deepspeed_zero": self.zero_stage, "partitions": partitions}
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(model, optimizer, options=options)

    def load_optimizer_state(self, model: torch.nn.Module, optimizer, state: dict) -> None:
        saved_stage = state.get("deepspeed_zero", 0)
        if self.zero is not None or saved_stage:
            partitions = state.get("partitions") or []
            if (saved_stage, len(partitions)) != (self.zero_stage, self.world):
                saved = f"ZeRO-{saved_stage} over {len(partitions)}" if saved_stage else "no"
                raise UserError(
                    f"the checkpoint's optimizer state was saved by {saved} DeepSpeed "
                    f"process(es); resume it with the same DeepSpeed config and process count"
                )
            self.zero.load_optimizer_state(partitions)
            return
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True)
        set_optimizer_state_dict(model, optimizer, state, options=options)

    def max_int(self, value: int) -> int:
        return int(self.max_float(value))  # float64 holds every count exactly

    def max_float(self, value: float) -> float:
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

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

    def gather_to_main(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on the main process ([] on the others)."""
        if not self.enabled:
            return [obj]
        out: list[Any] | None = [None] * self.world if self.is_main else None
        dist.gather_object(obj, out, dst=0)
        return out or []

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
        if not self.enabled or self.fsdp:  # FSDP has reduced them in backward
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


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "false").lower() in ("true", "1", "yes")


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
