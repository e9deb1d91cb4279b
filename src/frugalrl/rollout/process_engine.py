"""The ``hf`` sampler in a process of its own, with its own copy of the policy's weights.

``rollout.engine: hf-process``. Sampling then runs beside training instead of between its
steps: ``submit`` queues a generation and returns at once, ``result`` waits for it, so the
trainer can update the policy while the next batch is sampled (``rollout.max_staleness``).

Weights travel through shared memory: at start the policy's weights (LoRA adapters merged,
checkpoint names, ``rollout/vllm_weights.py``) are copied into shared tensors the child maps;
``sync`` copies the current weights into them and queues a ``load``, which the child runs
between generations, copying them into its private model. The child runs one command at a
time, in order, so a generation queued before a sync samples from the weights before it, one
queued after, from the weights after: every result carries the weight version it was sampled
with (the number of syncs the child had loaded). The shared copy is overwritten only once the
child has loaded the previous one.

A child that dies or fails is ``EngineUnavailable`` in one line (the loop checkpoints the
last whole step); a generation that does not come back within ``timeout_seconds`` as well.
"""

from __future__ import annotations

import itertools
import os
import queue
import signal
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.multiprocessing as mp

from frugalrl.errors import UserError
from frugalrl.rollout.base import (
    ROLLOUT_ENGINES,
    Completion,
    EngineUnavailable,
    Generated,
    ReferenceScorer,
    SamplingParams,
)
from frugalrl.rollout.hf import HFEngine
from frugalrl.rollout.vllm_llm import options_of
from frugalrl.rollout.vllm_weights import base_model, merged_weights


@dataclass(frozen=True)
class ProcessEngineOptions:
    """``rollout.engine_options`` of ``hf-process``."""

    # torch threads of the sampling process (the trainer keeps train.threads): on a 2-core
    # machine, one each, so neither waits for the other's cores.
    threads: int = 1
    # CPU cores the sampling process runs on (os.sched_setaffinity); None: any.
    cpu_cores: tuple[int, ...] | None = None
    # A generation taking longer than this means the process hung: the run checkpoints.
    timeout_seconds: float = 1800.0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> ProcessEngineOptions:
        opts = options_of(cls, options, "rollout.engine_options", " for hf-process")
        if opts.threads < 1 or opts.timeout_seconds <= 0:
            raise UserError("rollout.engine_options: threads and timeout_seconds must be > 0")
        return opts


def _child(commands, results, config, staging, tokenizer, batch_size, opts, reference) -> None:
    """The sampling process: its own model, loaded from ``staging`` on each ``load``; each
    generation scored by the ``reference`` (a ``ReferenceScorer``) when there is one."""
    # Ctrl-C reaches the whole process group: the trainer finishes its step, saves the rounds
    # queued here (so it waits for them), then closes this process
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        torch.set_num_threads(opts.threads)
        if opts.cpu_cores is not None:
            os.sched_setaffinity(0, opts.cpu_cores)
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_config(config, dtype=next(iter(staging.values())).dtype)
        model.eval().requires_grad_(False)
        params = dict(model.named_parameters())
        engine = HFEngine(model, tokenizer, batch_size=batch_size)
        version = -1
        idle = 0.0  # waiting for commands since the last generation (a load's wait included)
        waited = time.perf_counter()
        while True:
            command, *args = commands.get()
            idle += time.perf_counter() - waited
            if command == "close":
                return
            if command == "load":
                (version,) = args
                with torch.no_grad():
                    for name, tensor in staging.items():
                        params[name].copy_(tensor)
                results.put(("loaded", version))
            else:  # generate
                request, prompt_ids, n, sampling, seeds = args
                t0 = time.perf_counter()
                groups = engine.generate(prompt_ids, n, sampling, seeds=seeds)
                if reference is not None:
                    groups = reference(prompt_ids, groups)
                seconds = time.perf_counter() - t0
                results.put(("generated", request, Generated(groups, version, seconds, idle)))
                idle = 0.0
            waited = time.perf_counter()
    except Exception:  # the parent reports it in one line and checkpoints
        line = traceback.format_exc().strip().splitlines()[-1]
        results.put(("failed", line))


@ROLLOUT_ENGINES.register("hf-process")
class ProcessEngine:
    """``HFEngine`` sampling in its own process (module docstring). CPU only for now: a CUDA
    policy is refused (one GPU shared by two processes wants vLLM's sleep mode instead)."""

    copies_weights = True  # the child holds its own copy, refreshed by sync
    scores_reference = True  # reference=: the child reports reference log-probs too

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 256,
        dtype: torch.dtype | None = None,
        reference: ReferenceScorer | None = None,
        **engine_options: Any,
    ) -> None:
        self.opts = ProcessEngineOptions.from_options(engine_options)
        self.model = model
        base = base_model(model)
        if next(base.parameters()).device.type != "cpu":
            raise UserError("rollout.engine 'hf-process' samples on CPU: the policy is on a GPU")
        # bf16 under mixed precision: the child's copy is bf16 and samples in it
        self.staging = {
            name: torch.empty_like(t, dtype=dtype or t.dtype).share_memory_()
            for name, t in merged_weights(model)
        }
        ctx = mp.get_context("spawn")
        self.commands, self.results = ctx.Queue(), ctx.Queue()
        self.process = ctx.Process(
            target=_child,
            args=(
                self.commands,
                self.results,
                base.config,
                self.staging,
                tokenizer,
                batch_size,
                self.opts,
                reference,  # its frozen weights travel in shared memory, not copied
            ),
            daemon=True,
        )
        self.process.start()
        self.requests = itertools.count()
        self.done: dict[int, Generated] = {}
        self.version = -1  # weight versions sent; the child's start is the first sync
        self.loaded = -1
        self.sync()

    def sync(self) -> None:
        """Send the policy's current weights: once the child has loaded the previous ones, into
        the shared copy, then a ``load`` queued after every generation submitted so far."""
        while self.loaded < self.version:
            self._receive()
        with torch.no_grad():
            for name, tensor in merged_weights(self.model):
                self.staging[name].copy_(tensor)
        self.version += 1
        self.commands.put(("load", self.version))

    def submit(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> int:
        """Queue a generation; its id, for ``result``."""
        request = next(self.requests)
        prompts = [list(p) for p in prompt_ids]
        self.commands.put(("generate", request, prompts, n, params, seeds and list(seeds)))
        return request

    def result(self, request: int) -> Generated:
        """The generation ``request``, waiting for it."""
        while request not in self.done:
            self._receive()
        return self.done.pop(request)

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        return self.result(self.submit(prompt_ids, n, params, seeds)).groups

    def _receive(self) -> None:
        deadline = time.monotonic() + self.opts.timeout_seconds
        while True:
            try:
                message = self.results.get(timeout=1.0)
                break
            except queue.Empty:
                if not self.process.is_alive():
                    raise EngineUnavailable(
                        f"rollout.engine 'hf-process': the sampling process died "
                        f"(exit code {self.process.exitcode})"
                    ) from None
                if time.monotonic() > deadline:
                    raise EngineUnavailable(
                        f"rollout.engine 'hf-process': no answer in "
                        f"{self.opts.timeout_seconds:.0f} s"
                    ) from None
        kind, *rest = message
        if kind == "failed":
            raise EngineUnavailable(f"rollout.engine 'hf-process' failed: {rest[0]}")
        if kind == "loaded":
            self.loaded = rest[0]
        else:
            self.done[rest[0]] = rest[1]

    def close(self) -> None:
        if self.process.is_alive():
            self.commands.put(("close",))
            self.process.join(timeout=30)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
