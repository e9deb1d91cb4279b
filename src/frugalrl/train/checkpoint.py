"""Checkpoints: the model and tokenizer in HF format, plus everything needed to resume exactly.

``RUN/checkpoints/step-000050/`` loads with ``AutoModelForCausalLM.from_pretrained``; its
``training_state.pt`` holds optimizer, scheduler, sampler and RNG states. A checkpoint is written
to a temporary directory and renamed into place, so a crash mid-save never leaves a half
checkpoint that ``--resume`` would pick up.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch

from frugalrl.rng import rng_state
from frugalrl.run_layout import CHECKPOINTS, STATE_FILE, list_checkpoints


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    tokenizer,
    training_state: dict[str, Any],
    keep: int,
    weights: dict[str, torch.Tensor] | None = None,
    name: str | None = None,
) -> Path:
    """Write ``checkpoints/step-N`` (or ``checkpoints/<name>``, e.g. ``best``, which is kept
    apart from the newest ``keep``) atomically. ``weights``: the state dict to save instead of
    the model's own (gathered shards)."""
    root = run_dir / CHECKPOINTS
    name = name or f"step-{step:06d}"
    final = root / name
    tmp = root / f".{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, **({} if weights is None else {"state_dict": weights}))
    tokenizer.save_pretrained(tmp)
    torch.save({**training_state, "step": step, "rng": rng_state()}, tmp / STATE_FILE)
    # os.replace cannot replace a non-empty directory: move the old one aside first, so that a
    # crash at any moment leaves a complete checkpoint under one of the two names.
    old = root / f".{name}.old"
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def restore_weights(model, checkpoint: Path, dp) -> None:
    """Load a checkpoint's weights into the live ``model`` (full, LoRA adapters or sharded)."""
    from safetensors.torch import load_file

    from frugalrl.policy import is_adapter_dir

    if is_adapter_dir(checkpoint):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
        return
    from transformers import AutoModelForCausalLM

    dtype = next(model.parameters()).dtype
    state = AutoModelForCausalLM.from_pretrained(checkpoint, dtype=dtype).state_dict()
    dp.load_model_state(model, state)


def load_training_state(checkpoint: Path) -> dict[str, Any]:
    # weights_only=False: the state holds numpy RNG tuples; the file is our own.
    return torch.load(checkpoint / STATE_FILE, map_location="cpu", weights_only=False)
