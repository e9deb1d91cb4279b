"""The policy's weights as vLLM takes them, and loading them into a running vLLM model.

Both vLLM engines (colocated and server) refresh vLLM's copy of the policy after every
optimizer step. The names are the checkpoint's (vLLM's ``load_weights`` fuses q/k/v and
gate/up itself); LoRA adapters are merged in first, since vLLM serves the merged weights.

Loading goes through vLLM's in-place reload (``initialize_layerwise_reload`` /
``finalize_layerwise_reload``, what ``reload_weights`` and the weight-transfer backends run):
vLLM repacks linear weights after loading (on CPU into oneDNN's layout, so a plain
``load_weights`` fails), and the reload repacks them again. One gap is left: a model with tied
embeddings loads no ``lm_head.weight`` (the checkpoint has none), so its output layer is never
re-processed and a repacked head keeps the *old* weights; ``refresh_tied_head`` redoes it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch

PEFT_PREFIX = "base_model.model."


def base_model(model) -> Any:
    """The transformers model under a peft wrapper (or the model itself)."""
    return getattr(model, "get_base_model", lambda: model)()


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


def vllm_weights(model) -> Iterator[tuple[str, torch.Tensor]]:
    """(vLLM name, parameter) for each weight vLLM takes, as it is now (adapters not merged):
    the names, dtypes and shapes of an update, which merging does not change."""
    for name, param in model.named_parameters():  # a tied head is the embedding: once
        mapped = vllm_weight_name(name)
        if mapped is not None:
            yield mapped, param


def merged_weights(model, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
    """(vLLM name, tensor) for every weight of the policy, LoRA adapters merged in, cast to
    ``dtype`` when given (the dtype vLLM samples in: bf16 from fp32 masters), one at a time.

    The adapters are unmerged again when the iteration ends, so consume it fully (or
    close it) before the next training step.
    """
    merge = getattr(model, "merge_adapter", None)
    if merge is not None:
        merge()
    try:
        for name, param in vllm_weights(model):
            yield name, param.data if dtype is None else param.data.to(dtype)
    finally:
        if merge is not None:
            model.unmerge_adapter()


def refresh_tied_head(model: torch.nn.Module) -> bool:
    """Re-process a vLLM model's output layer when it is tied to the embedding (see the
    module docstring); returns whether it did. Untied heads were reloaded with the rest."""
    head = getattr(model, "lm_head", None)
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if head is None or embed is None or head.weight is not embed.weight:
        return False
    method = getattr(head, "quant_method", None)
    if method is not None:
        method.process_weights_after_loading(head)
    return True


def worker_model(worker: Any) -> torch.nn.Module:
    """The model a vLLM worker runs (``collective_rpc`` hands callables the worker)."""
    return worker.model_runner.get_model()


def reload_in_place(worker: Any, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
    """Load ``weights`` into a vLLM worker's model through vLLM's in-place reload, then
    refresh a tied output layer. Run inside the worker (``llm.collective_rpc``)."""
    worker.reload_weights(weights_iterator=weights)
    refresh_tied_head(worker_model(worker))


def finish_tied_head(worker: Any) -> None:
    """After a weight-transfer round (``finish_weight_update``): refresh a tied output layer."""
    refresh_tied_head(worker_model(worker))
