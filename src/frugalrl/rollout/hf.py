"""Rollouts on the training model itself, with ``transformers``: work everywhere, share the
policy's weights (nothing to synchronise).

Two engines:

* ``hf``: a sampling loop of its own over the model's KV cache, built for RL's G samples per
  prompt: each prompt is prefilled once and its cache copied to its G samples; a sample that
  ends (EOS) leaves the batch at once, so later steps run only over the samples still writing
  (``generate`` keeps every row until the longest is done, and RL completions vary in length
  several-fold);
* ``hf-generate``: ``model.generate``, for architectures whose cache the loop does not handle.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import torch
from transformers import DynamicCache

from frugalrl.rollout.base import ROLLOUT_ENGINES, Completion, SamplingParams


def cache_keyword(model: torch.nn.Module) -> str:
    """The forward argument that takes the KV cache: transformers 5 renamed ``past_key_values``
    to ``cache`` and drops the old name in 5.40; older releases know only ``past_key_values``."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


class _TransformersEngine:
    def __init__(self, model, tokenizer, batch_size: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def sync(self) -> None:
        pass  # generates with the training model itself

    def close(self) -> None:
        pass  # started nothing

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Sample in eval mode (no dropout), then give the model back in the mode it was in."""
        was_training = self.model.training
        self.model.eval()
        try:
            yield
        finally:
            self.model.train(was_training)

    def _completion(self, row: Sequence[int], eos: int) -> Completion:
        finished = eos in row
        tokens = list(row[: row.index(eos) + 1]) if finished else list(row)
        # The EOS is an action the policy takes (it is trained on) but not part of the text.
        text = self.tokenizer.decode(tokens[:-1] if finished else tokens, skip_special_tokens=True)
        return Completion(tuple(tokens), text, finished)

    def _left_padded(self, prompts: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Left padding keeps every prompt's last token in the last column."""
        pad = self.tokenizer.pad_token_id
        width = max(len(p) for p in prompts)
        ids = torch.tensor([[pad] * (width - len(p)) + list(p) for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        device = next(self.model.parameters()).device
        return ids.to(device), attention.to(device)


def sample_next(
    logits: torch.Tensor, temperature: float, top_p: float, uniform: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row from softmax(logits / temperature), restricted to the smallest set of
    tokens whose probability reaches ``top_p`` (nucleus sampling; 1.0 keeps every token), and
    its log-probability under that (renormalised) distribution.

    ``uniform`` (one U[0, 1) draw per row) samples by inverting each row's CDF instead of
    drawing from the global generator: the token then depends only on the row's own draw.
    """
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = probs.sort(dim=-1, descending=True)
        # Drop a token when the tokens more likely than it already reach top_p.
        drop = sorted_probs.cumsum(-1) - sorted_probs >= top_p
        sorted_probs = sorted_probs.masked_fill(drop, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
        probs = probs / probs.sum(-1, keepdim=True)
    if uniform is None:
        token = torch.multinomial(probs, 1)
    else:
        cdf = probs.cumsum(-1)
        # right=True: the first token whose CDF exceeds the draw, never a zero-probability one
        target = (uniform.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
        token = torch.searchsorted(cdf, target, right=True).clamp(max=probs.shape[-1] - 1)
    return token.squeeze(-1), probs.gather(-1, token).squeeze(-1).log()


@ROLLOUT_ENGINES.register("hf")
class HFEngine(_TransformersEngine):
    """KV-cache sampling with shared prompt prefill and early exit of finished samples."""

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        per_call = max(1, self.batch_size // n)
        groups: list[list[Completion]] = []
        with self._eval_mode():
            for start in range(0, len(prompt_ids), per_call):
                part = slice(start, start + per_call)
                groups.extend(
                    self._sample_groups(
                        prompt_ids[part], n, params, None if seeds is None else seeds[part]
                    )
                )
        return groups

    def _sample_groups(
        self,
        prompts: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None,
    ) -> list[list[Completion]]:
        eos = self.tokenizer.eos_token_id
        ids, attention = self._left_padded(prompts)
        # Every draw a group can need, from the group's own stream: a row's t-th token uses
        # uniforms[row, t] whatever else is in the batch or still running.
        uniforms = None
        if seeds is not None:
            uniforms = torch.cat(
                [
                    torch.rand(
                        n,
                        params.max_new_tokens,
                        generator=torch.Generator(ids.device).manual_seed(seed),
                        device=ids.device,
                    )
                    for seed in seeds
                ]
            )
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        cache_arg = cache_keyword(self.model)
        logits = self.model(
            input_ids=ids,
            attention_mask=attention,
            position_ids=positions,
            use_cache=True,
            **{cache_arg: cache},
            logits_to_keep=1,
        ).logits[:, -1]
        # The G samples of a prompt share its prefill: copy the cache rows instead of recomputing.
        cache.batch_repeat_interleave(n)
        logits = logits.repeat_interleave(n, dim=0)
        attention = attention.repeat_interleave(n, dim=0)
        position = positions[:, -1].repeat_interleave(n, dim=0)
        alive = torch.arange(len(prompts) * n, device=ids.device)  # output row of each cache row
        steps: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        for step in range(params.max_new_tokens):
            token, logprob = sample_next(
                logits,
                params.temperature,
                params.top_p,
                None if uniforms is None else uniforms[alive, step],
            )
            steps.append((alive, token, logprob))
            running = token != eos
            if step == params.max_new_tokens - 1 or not running.any():
                break
            if not running.all():
                keep = running.nonzero().squeeze(-1)
                cache.batch_select_indices(keep)
                alive, token = alive[keep], token[keep]
                attention, position = attention[keep], position[keep]
            attention = torch.cat([attention, attention.new_ones(len(alive), 1)], dim=1)
            position = position + 1
            logits = self.model(
                input_ids=token.unsqueeze(-1),
                attention_mask=attention,
                position_ids=position.unsqueeze(-1),
                use_cache=True,
                **{cache_arg: cache},
            ).logits[:, -1]
        rows: list[list[int]] = [[] for _ in range(len(prompts) * n)]
        logprobs: list[list[float]] = [[] for _ in range(len(prompts) * n)]
        for row_ids, tokens, token_logprobs in steps:
            for r, t, lp in zip(
                row_ids.tolist(), tokens.tolist(), token_logprobs.tolist(), strict=True
            ):
                rows[r].append(t)
                logprobs[r].append(lp)
        completions = [
            replace(self._completion(row, eos), logprobs=tuple(lp))
            for row, lp in zip(rows, logprobs, strict=True)
        ]
        return [completions[i * n : (i + 1) * n] for i in range(len(prompts))]


@ROLLOUT_ENGINES.register("hf-generate")
class HFGenerateEngine(_TransformersEngine):
    """``model.generate`` over batches of ``batch_size`` samples."""

    @torch.no_grad()
    def generate(
        self,
        prompt_ids: Sequence[Sequence[int]],
        n: int,
        params: SamplingParams,
        seeds: Sequence[int] | None = None,
    ) -> list[list[Completion]]:
        if seeds is not None:
            # generate() draws from the global generator across the whole batch, so samples
            # stay reproducible per call but depend on the batch (use the hf engine for that)
            torch.manual_seed(seeds[0])
        flat = [list(ids) for ids in prompt_ids for _ in range(n)]
        completions: list[Completion] = []
        with self._eval_mode():
            for start in range(0, len(flat), self.batch_size):
                batch = flat[start : start + self.batch_size]
                completions.extend(self._generate_batch(batch, params))
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        input_ids, attention = self._left_padded(prompts)
        out = self.model.generate(
            input_ids=input_ids,
            attention_mask=attention,
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        return [self._completion(row, eos) for row in out[:, input_ids.shape[1] :].tolist()]
