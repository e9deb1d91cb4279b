"""Rollouts with vLLM, colocated with training on the same GPU (``pip install frugalrl[vllm]``).

UNTESTED HERE: this module is written against vLLM's documented offline API (``LLM``,
``SamplingParams``, sleep mode) and has not yet run on a GPU; the CPU tests cover only what does
not need vLLM (output conversion, weight names, the missing-package error). Between phases the
engine sleeps (level 1: weights offloaded to CPU, KV cache freed, so training has the GPU), and
after every optimizer step the
policy's weights (LoRA adapters merged) are loaded into it; pair it with
``rollout.importance_sampling`` to correct the remaining vLLM/trainer log-prob mismatch.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from frugalrl.errors import UserError
from frugalrl.rollout.base import ROLLOUT_ENGINES, Completion, SamplingParams

PEFT_PREFIX = "base_model.model."


def vllm_weight_name(name: str) -> str | None:
    """The name vLLM's ``load_weights`` knows for a policy parameter, or None to skip it.

    A peft model's parameters are ``base_model.model.<name>`` with adapted layers' weights under
    ``.base_layer``; the adapters themselves (``lora_A``/``lora_B``) are not sent, since they are
    merged into the base weights first, nor are ``modules_to_save`` originals.
    """
    if "lora_" in name or "original_module" in name:
        return None
    name = name.removeprefix(PEFT_PREFIX).replace(".base_layer", "")
    return name.replace("modules_to_save.default.", "")


def merged_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(vLLM name, tensor) for every weight of the policy, LoRA adapters merged in."""
    merge = getattr(model, "merge_adapter", None)
    if merge is not None:
        merge()
    try:
        for name, param in model.named_parameters():
            mapped = vllm_weight_name(name)
            if mapped is not None:
                yield mapped, param.data
    finally:
        if merge is not None:
            model.unmerge_adapter()


def completion_from_output(output: Any, eos: int, decode) -> Completion:
    """A vLLM ``CompletionOutput`` as a ``Completion``: token ids through EOS when it finished
    on EOS, and the sampled token's log-prob at each step (``logprobs=0`` asks vLLM for it)."""
    tokens = list(output.token_ids)
    logprobs = None
    if output.logprobs is not None:
        logprobs = [step[t].logprob for step, t in zip(output.logprobs, tokens, strict=True)]
    finished = output.finish_reason == "stop"
    if finished and (not tokens or tokens[-1] != eos):
        tokens.append(eos)  # vLLM may leave the stop token out; the policy did take it
        if logprobs is not None:
            logprobs.append(float("nan"))  # unknown: the IS correction treats it as on-policy
    text = decode(tokens[:-1] if finished else tokens, skip_special_tokens=True)
    return Completion(tuple(tokens), text, finished, tuple(logprobs) if logprobs else None)


@ROLLOUT_ENGINES.register("vllm")
class VLLMEngine:
    """vLLM sampling on the policy's current weights; see the module docstring."""

    def __init__(
        self,
        model,
        tokenizer,
        batch_size: int = 256,
        gpu_memory_utilization: float = 0.3,
        max_model_len: int | None = None,
        seed: int = 0,
        sleep: bool = True,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError:
            raise UserError(
                "rollout.engine 'vllm' needs vLLM on a CUDA machine: pip install 'frugalrl[vllm]'"
            ) from None
        self.model, self.tokenizer, self.batch_size = model, tokenizer, batch_size
        self.sleep_between = sleep
        base = getattr(model, "get_base_model", lambda: model)()
        self.llm = LLM(
            model=base.config.name_or_path,
            tokenizer=base.config.name_or_path,
            dtype=str(base.dtype).removeprefix("torch."),
            gpu_memory_utilization=gpu_memory_utilization,
            max_model_len=max_model_len,
            seed=seed,
            enable_sleep_mode=sleep,
            logprobs_mode="processed_logprobs",  # log-probs after temperature / top-p
        )
        self.sync()  # the policy may already differ from the checkpoint on disk (resume, LoRA)

    def _load(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        runner = self.llm.llm_engine.model_executor.driver_worker.model_runner
        runner.model.load_weights(weights)

    def sync(self) -> None:
        if self.sleep_between:
            self.llm.wake_up(tags=["weights"])
        self._load(merged_weights(self.model))
        self.llm.reset_prefix_cache()
        if self.sleep_between:
            self.llm.sleep(level=1)

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        from vllm import SamplingParams as VLLMSamplingParams

        def sampling_params(seed: int | None) -> VLLMSamplingParams:
            return VLLMSamplingParams(
                n=n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                logprobs=0,
                seed=seed,  # vLLM's per-request generator
            )

        sampling = sampling_params(None) if seeds is None else [sampling_params(s) for s in seeds]
        if self.sleep_between:
            self.llm.wake_up()
        try:
            outputs = self.llm.generate(
                [{"prompt_token_ids": list(p)} for p in prompt_ids], sampling, use_tqdm=False
            )
        finally:
            if self.sleep_between:
                self.llm.sleep(level=1)
        eos, decode = self.tokenizer.eos_token_id, self.tokenizer.decode
        return [[completion_from_output(o, eos, decode) for o in out.outputs] for out in outputs]
