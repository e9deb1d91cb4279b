"""Loading a policy (model + tokenizer) from a Hugging Face directory or hub name."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from frugalrl.errors import UserError


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when available, else CPU; any other name is passed to torch."""
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def pick_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 on GPUs that support it, else float32."""
    if name == "auto":
        bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if bf16 else torch.float32
    return getattr(torch, name)


def load_policy(
    path: str | Path,
    dtype: str,
    device: torch.device,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
):
    """``(model, tokenizer)`` on ``device``, through ``from_pretrained`` like any HF model.

    A tokenizer without a pad token pads with EOS (generation and batching need one).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=pick_dtype(dtype, device), trust_remote_code=trust_remote_code
        )
    except OSError as e:
        raise UserError(f"cannot load model '{path}': {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if gradient_checkpointing:
        # transformers 5 renamed it; older versions only have the first name
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
    return model.to(device), tokenizer
