"""Rollouts with ``transformers`` ``generate``: works everywhere, shares the policy's weights."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from frugalrl.rollout.base import ROLLOUT_ENGINES, Completion, SamplingParams


@ROLLOUT_ENGINES.register("hf")
class HFEngine:
    def __init__(self, model, tokenizer, batch_size: int = 256) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def sync(self) -> None:
        pass  # generates with the training model itself

    @torch.no_grad()
    def generate(
        self, prompt_ids: Sequence[Sequence[int]], n: int, params: SamplingParams
    ) -> list[list[Completion]]:
        flat = [list(ids) for ids in prompt_ids for _ in range(n)]
        completions: list[Completion] = []
        for start in range(0, len(flat), self.batch_size):
            completions.extend(self._generate_batch(flat[start : start + self.batch_size], params))
        return [completions[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams) -> list[Completion]:
        pad = self.tokenizer.pad_token_id
        eos = self.tokenizer.eos_token_id
        width = max(len(p) for p in prompts)
        # Left padding keeps every prompt's last token at the same position for generation.
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        device = next(self.model.parameters()).device
        was_training = self.model.training
        self.model.eval()
        out = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention.to(device),
            do_sample=True,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=0,
            max_new_tokens=params.max_new_tokens,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        self.model.train(was_training)
        results = []
        for row in out[:, width:].tolist():
            finished = eos in row
            tokens = row[: row.index(eos) + 1] if finished else row
            # The EOS is an action the policy takes (it is trained on) but not part of the text.
            text = self.tokenizer.decode(
                tokens[:-1] if finished else tokens, skip_special_tokens=True
            )
            results.append(Completion(tuple(tokens), text, finished))
        return results
