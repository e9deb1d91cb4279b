"""The rollout interface: what every generation engine (HF generate, vLLM, ...) provides."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

from frugalrl.errors import UserError
from frugalrl.precision import Precision, autocast
from frugalrl.registry import Registry


class EngineUnavailable(UserError):
    """The engine's server stopped, refused or hung: the loop checkpoints, then stops with
    this one line (``--resume`` continues once the server is back)."""


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Completion:
    """One sampled completion: its tokens (through EOS when it finished) and decoded text."""

    token_ids: tuple[int, ...]
    text: str
    finished: bool  # ended with EOS; False means it hit max_new_tokens (truncated)
    # log-prob of each token under the distribution the engine sampled it from (after
    # temperature and top-p), for the importance-sampling correction; None if not reported
    logprobs: tuple[float, ...] | None = None
    # log-prob of each token under the reference policy, when the engine computed them beside
    # training (``ReferenceScorer``); None: the trainer computes them if the KL needs them
    ref_logprobs: tuple[float, ...] | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


class RolloutEngine(Protocol):
    """Engines are built as ``cls(model, tokenizer, batch_size=...)`` and sample from the
    *current* policy weights (an engine holding its own copy must refresh it in ``sync``).
    Those that hold a copy (class attribute ``copies_weights``) also take ``dtype=``: the
    dtype to keep it and sample in (bf16 under mixed precision; None: the policy's)."""

    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        """``n`` completions for each prompt, grouped by prompt in input order.

        ``seeds`` (one per prompt): each group is drawn from its own seeded random stream, so
        a prompt's completions do not depend on which other prompts share the batch, or on
        which process samples them (data-parallel training draws the same samples on 1 or N
        processes). Without seeds, engines draw from their global random state.
        """
        ...

    def sync(self) -> None:
        """Pick up the policy's updated weights (no-op for engines that share them)."""
        ...

    def close(self) -> None:
        """Release what the engine started (a server process); called when training or
        evaluation ends."""
        ...


@dataclass
class Generated:
    """A generation queued with ``submit``: its groups, the weight version that sampled them
    (the number of syncs the engine had applied), the seconds it took, and how long the
    sampler waited for work before it."""

    groups: list[list[Completion]]
    version: int
    seconds: float
    idle_seconds: float


class SamplesAhead(RolloutEngine, Protocol):
    """An engine that samples beside training (``rollout.max_staleness``): generations queued
    with ``submit`` run in order, one at a time, each from the weights of the last ``sync``
    before it was queued, while the caller goes on."""

    def submit(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> int:
        """Queue a generation (``generate``'s arguments); its id, for ``result``."""
        ...

    def result(self, request: int) -> Generated:
        """The generation ``request``, waiting for it (``EngineUnavailable`` if it failed)."""
        ...


@dataclass
class ReferenceScorer:
    """The frozen reference policy, on the sampler's side: an engine that samples beside
    training (``scores_reference``) reports each completion's token log-probs under it
    (``Completion.ref_logprobs``), so the trainer's step has one forward pass fewer. The
    reference never changes, so they are the same whatever weights sampled the batch.

    ``logprobs(model, prompt_ids, groups)``: per group, per completion, the token log-probs,
    computed exactly as the trainer computes them (the trainer supplies it)."""

    model: Any
    logprobs: Callable[[Any, list[list[int]], list[list[Completion]]], list[list[tuple]]]

    def __call__(
        self, prompt_ids: list[list[int]], groups: list[list[Completion]]
    ) -> list[list[Completion]]:
        scored = self.logprobs(self.model, prompt_ids, groups)
        return [
            [replace(c, ref_logprobs=lp) for c, lp in zip(group, lps, strict=True)]
            for group, lps in zip(groups, scored, strict=True)
        ]


ROLLOUT_ENGINES: Registry[type] = Registry("rollout engine")


class AutocastSampling:
    """``engine`` with every ``generate`` inside ``precision``'s autocast region
    (frugalrl.precision): the engines that sample on the training model itself (``hf``,
    ``hf-generate``) then decode with bf16 matrix products from its fp32 master weights, one
    bf16 copy of them per call. Engines with their own weights (vLLM) are unaffected: they
    are built with ``dtype=sampling_dtype(precision)`` instead."""

    def __init__(self, engine: RolloutEngine, precision: Precision, device) -> None:
        self.engine, self.precision, self.device = engine, precision, device

    def generate(self, *args, **kwargs) -> list[list[Completion]]:
        with autocast(self.precision, self.device):
            return self.engine.generate(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.engine, name)  # sync, close, and each engine's own attributes
