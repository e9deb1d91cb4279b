"""DeepSpeed ZeRO-2 / ZeRO-3 as the optimizer engine of a data-parallel run.

``accelerate launch --config_file accelerate_configs/deepspeed-zero2.yaml`` (or ``-zero3``)
sets the environment this reads. The loop stays the one of ``distributed.py``: every process
trains on its share of the completions, then one optimizer step. What DeepSpeed takes over is
the step: its engine reduces the gradients into per-process partitions, clips them, skips an
update whose gradient is not finite, and steps AdamW on the partitions (ZeRO-2: gradients and
optimizer state partitioned; ZeRO-3: the weights as well).

The optimizer and the learning-rate schedule are the recipe's (``optim:``): the engine wraps
the recipe's torch AdamW, whose ``param_groups`` the scheduler keeps driving. A DeepSpeed JSON
that names its own optimizer or scheduler is refused rather than silently overridden.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from frugalrl.errors import UserError


def launched_zero_stage() -> int:
    """The ZeRO stage an accelerate DeepSpeed launch asked for (0: not a DeepSpeed launch)."""
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() not in ("true", "1"):
        return 0
    return int(launch_config().get("zero_optimization", {}).get("stage", 0))


def launch_config() -> dict[str, Any]:
    """The DeepSpeed config of the launch, as accelerate's ``DeepSpeedPlugin`` reads it from
    the environment (``deepspeed_config`` fields of the accelerate YAML, or its JSON file)."""
    try:
        from accelerate.utils import DeepSpeedPlugin

        return copy.deepcopy(DeepSpeedPlugin().deepspeed_config)
    except ImportError as e:
        raise UserError(
            f"launched with an accelerate DeepSpeed config, but DeepSpeed is not installed ({e}); "
            "pip install 'frugalrl[deepspeed]'"
        ) from None
    except (ValueError, OSError) as e:
        raise UserError(f"the launch's DeepSpeed config: {e}") from None


def engine_config(
    launched: dict[str, Any], max_grad_norm: float, dtype: torch.dtype
) -> dict[str, Any]:
    """The config handed to ``deepspeed.initialize``: the launch's ZeRO section, with the
    recipe's clipping and precision, and one engine step per call of ``step`` (the loop decides
    where the accumulation boundary falls: its micro-batches are packed by tokens, so their
    number varies from step to step)."""
    for key in ("optimizer", "scheduler"):
        if key in launched:
            raise UserError(
                f"the launch's DeepSpeed config sets '{key}': remove it, the recipe's optim: "
                "section sets the optimizer and the learning-rate schedule"
            )
    config = {
        k: v
        for k, v in launched.items()
        if k not in ("train_batch_size", "fp16", "bf16", "gradient_clipping")
    }
    config["zero_optimization"] = {
        k: v for k, v in launched.get("zero_optimization", {}).items() if v != "auto"
    }
    config.update(
        train_micro_batch_size_per_gpu=1,  # unused: the loop packs its own micro-batches
        gradient_accumulation_steps=1,
        gradient_clipping=max_grad_norm,
        zero_allow_untested_optimizer=True,  # the recipe's torch AdamW
        zero_force_ds_cpu_optimizer=False,  # ... also with the optimizer state offloaded
        steps_per_print=2**31 - 1,
    )
    if dtype == torch.bfloat16:  # fp32 master weights; a non-finite gradient skips the update
        config["bf16"] = {"enabled": True, "check_grad_overflow": True}
    elif dtype == torch.float16:
        config["fp16"] = {"enabled": True}
    return {k: v for k, v in config.items() if v != "auto"}


# A torch extension build takes well under a minute here; a lock older than this was left by a
# build that was killed, not by one that is running.
STALE_BUILD_LOCK_S = 600.0


def check_build_locks(now: float | None = None) -> None:
    """Refuse to start on a stale torch-extension build lock.

    DeepSpeed JIT-builds its ops (on CPU: the shared-memory all-reduce) under
    ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``), and torch makes every
    later process that loads the op wait, silently and forever, while ``<op>/lock`` exists. A
    build killed half-way leaves that file behind, and the run would hang at its first step."""
    from torch.utils.cpp_extension import get_default_build_root

    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root())
    now = time.time() if now is None else now
    for lock in sorted(root.glob("*/*/lock")):
        try:
            age = now - lock.stat().st_mtime
        except OSError:  # released while we looked
            continue
        if age > STALE_BUILD_LOCK_S:
            raise UserError(
                f"{lock}: a torch extension build lock {age / 60:.0f} min old, left by an "
                "interrupted build; DeepSpeed would wait on it forever. Delete it if no build "
                "is running"
            )


class ZeroEngine:
    """A DeepSpeed engine around the recipe's model and AdamW."""

    def __init__(self, model: torch.nn.Module, optimizer, config: dict[str, Any]) -> None:
        import deepspeed

        trainable = [p for p in model.parameters() if p.requires_grad]
        self.engine, *_ = deepspeed.initialize(
            model=model, optimizer=optimizer, model_parameters=trainable, config=config
        )
        self.stage = self.engine.zero_optimization_stage()

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate ``loss``'s gradient; ``last``: the step's last micro-batch, after which
        the engine reduces the accumulated gradients over processes (averaging them)."""
        self.engine.set_gradient_accumulation_boundary(last)
        self.engine.backward(loss)

    def step(self) -> tuple[float, bool]:
        """Clip and step; the gradient norm before clipping and whether the update was applied
        (DeepSpeed skips one whose gradient is not finite). Gradients are cleared."""
        self.engine.step()
        norm = self.engine.get_global_grad_norm()
        norm = math.nan if norm is None else float(norm)
        return norm, self.engine.was_step_applied()

    def optimizer_state(self) -> dict[str, Any]:
        """This process's partition of the optimizer state (fp32 master weights included)."""
        return self.engine.optimizer.state_dict()

    def load_optimizer_state(self, per_process: list[dict[str, Any]]) -> None:
        """Every process's partition, as ``optimizer_state`` gave them, in rank order."""
        self.engine.optimizer.load_state_dict(
            per_process, load_optimizer_states=True, load_from_fp32_weights=True
        )

    @contextmanager
    def full_weights(self) -> Iterator[None]:
        """ZeRO-3: every process holds the whole weights inside (a collective to enter), and
        ZeRO-3's forward hooks are off (the per-layer gather/release ones, and the one that
        starts each forward with a check across processes), so forward passes are local and
        processes may run different numbers of them. The hooks are DeepSpeed internals; TRL's
        ``unwrap_model_for_generation`` takes the per-layer ones off the same way."""
        if self.stage != 3:
            yield
            return
        import deepspeed

        model = self.engine.module
        offload = self.engine.optimizer.parameter_offload
        with deepspeed.zero.GatheredParameters(list(model.parameters())):
            for param in model.parameters():
                param.ds_active_sub_modules.clear()
            start_of_forward = model._forward_pre_hooks[offload.fwd_pre_hook.id]
            offload._remove_module_hooks()
            offload.forward_hooks, offload.backward_hooks = [], []
            try:
                yield
            finally:
                coordinator = offload.param_coordinator
                if not coordinator.is_invalid_trace():  # the recorded fetch order is stale
                    coordinator._invalidate_trace()
                # as setup_zero_stage3_hooks registered them: the start-of-forward hook first
                offload.fwd_pre_hook = model.register_forward_pre_hook(start_of_forward)
                offload._register_deepspeed_module(model)

    @contextmanager
    def writable_weights(self) -> Iterator[None]:
        """ZeRO-3: inside, the main process may overwrite the whole weights; on leaving they are
        partitioned again from its copy. A collective."""
        if self.stage != 3:
            yield
            return
        import deepspeed

        params = list(self.engine.module.parameters())
        with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
            yield
