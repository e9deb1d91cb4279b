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


ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_dir(path: str | Path) -> bool:
    """A directory holding LoRA adapters (peft's ``save_pretrained``), not a full model."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_policy(
    path: str | Path,
    dtype: str,
    device: torch.device,
    trust_remote_code: bool = False,
    gradient_checkpointing: bool = False,
    adapters: str = "merge",
    attn_implementation: str | None = None,
):
    """``(model, tokenizer)`` on ``device``, through ``from_pretrained`` like any HF model
    (with ``attn_implementation`` when given, else transformers' default kernel).

    ``path`` may also hold LoRA adapters (a LoRA run's checkpoint or ``final/``): the base model
    their config names is loaded and the adapters applied, merged into the weights
    (``adapters="merge"``, for generation and evaluation) or kept apart and trainable
    (``"train"``, to resume training them). A tokenizer without a pad token pads with EOS
    (generation and batching need one).
    """
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        adapter = is_adapter_dir(path)
        base = path
        if adapter:
            from peft import PeftConfig

            base = PeftConfig.from_pretrained(str(path)).base_model_name_or_path
        kernel = {"attn_implementation": attn_implementation} if attn_implementation else {}
        try:
            model = AutoModelForCausalLM.from_pretrained(
                base, dtype=pick_dtype(dtype, device), trust_remote_code=trust_remote_code, **kernel
            )
        except (ValueError, ImportError) as e:
            if not attn_implementation:
                raise
            reason = str(e).splitlines()[0].split(". The only possible")[0]
            raise UserError(
                f"model.attn_implementation {attn_implementation!r}: {reason}"
            ) from None
        if adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(path), is_trainable=adapters == "train")
            if adapters == "merge":
                model = model.merge_and_unload()
    except OSError as e:
        raise UserError(f"cannot load model '{path}': {str(e).splitlines()[0]}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if gradient_checkpointing:
        # transformers 5 renamed it; older versions only have the first name
        enable = getattr(model, "activation_checkpointing_enable", None)
        (enable or model.gradient_checkpointing_enable)()
    return model.to(device), tokenizer


def add_adapters(model, r: int, alpha: float, dropout: float, target_modules: list[str] | str):
    """Wrap ``model`` with fresh LoRA adapters (peft); only they are trainable afterwards."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=target_modules,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    inner = model.base_model.model
    checkpointing = getattr(inner, "is_activation_checkpointing", None)
    if checkpointing is None:  # transformers < 5
        checkpointing = getattr(inner, "is_gradient_checkpointing", False)
    if checkpointing:
        # Frozen embeddings give checkpointed blocks inputs without grad: let them carry one.
        model.enable_input_require_grads()
    return model
