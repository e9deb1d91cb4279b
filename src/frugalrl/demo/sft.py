"""Supervised warm-start of the demo policy on (noisy, sometimes verbose) reasoning traces.

Plays the role of the distillation that produced DeepSeek-R1-Distill-Qwen-1.5B: it teaches the
format and the arithmetic, and copies the traces' slips and re-checks, so the RL stage starts
from a policy that is partially right and verbose.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from frugalrl.train.schedule import lr_multiplier


def _encode(tokenizer, prompts: Sequence[str], completions: Sequence[str]):
    """Right-padded input ids with labels on completion tokens (+ EOS) only."""
    rows = []
    for prompt, completion in zip(prompts, completions, strict=True):
        p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        c = tokenizer(completion, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append((p + c, [-100] * len(p) + c))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.tensor([ids + [pad] * (width - len(ids)) for ids, _ in rows])
    labels = torch.tensor([lab + [-100] * (width - len(lab)) for _, lab in rows])
    attention = torch.tensor([[1] * len(ids) + [0] * (width - len(ids)) for ids, _ in rows])
    return input_ids, attention, labels


def supervised_finetune(
    model,
    tokenizer,
    prompts: Sequence[str],
    completions: Sequence[str],
    *,
    steps: int = 300,
    batch_size: int = 64,
    lr: float = 3e-3,
    warmup_steps: int = 20,
    seed: int = 0,
    progress: bool = True,
) -> list[float]:
    """Next-token cross-entropy on completions; AdamW with warm-up and cosine decay.

    Returns the loss of every step.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    order = list(range(len(prompts)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))

    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_multiplier(step, steps, warmup_steps, "cosine", min_ratio=0.1)
    )
    model.train()
    losses: list[float] = []
    cursor = len(order)
    bar = tqdm(range(steps), desc="sft", disable=not progress)
    for _ in bar:
        if cursor + batch_size > len(order):
            rng.shuffle(order)
            cursor = 0
        batch = order[cursor : cursor + batch_size]
        cursor += batch_size
        input_ids, attention, labels = _encode(
            tokenizer, [prompts[i] for i in batch], [completions[i] for i in batch]
        )
        loss = model(input_ids=input_ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
    model.eval()
    return losses
