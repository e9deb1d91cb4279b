"""Mixed precision: bf16 arithmetic over fp32 master weights (docs/design.md#precision).

``train.precision: bf16`` keeps the policy's weights, gradients and optimizer state in fp32 and
runs its forward passes (sampling, log-probs, the training forward and so its backward) under
``torch.autocast`` in bfloat16: the matrix products in bf16 (AMX on recent x86 CPUs, tensor
cores on GPUs), while log-softmax, the log-probs of sampled tokens and the loss stay in fp32.
This is what TRL / the HF Trainer call ``bf16=True`` and what verl / FSDP call a bf16
``param_dtype`` over fp32 masters. The frozen reference model is loaded in bf16 outright: it is
never updated, so it needs no fp32 copy.
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]


def autocast(precision: Precision, device: torch.device | str) -> contextlib.AbstractContextManager:
    """The region forward passes run in: bf16 autocast for ``bf16``, nothing for ``fp32``.

    Autocast casts each fp32 weight to bf16 once per region and reuses the copy inside it
    (its weight cache), so a whole sampling loop in one region decodes from bf16 weights."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)


def policy_dtype(precision: Precision, model_dtype: str) -> str:
    """The dtype to load the trained policy in: its fp32 masters under ``bf16``."""
    return "float32" if precision == "bf16" else model_dtype


def reference_dtype(precision: Precision, model_dtype: str) -> str:
    """The dtype to load the frozen reference model in: bf16 under ``bf16``."""
    return "bfloat16" if precision == "bf16" else model_dtype


def compute_dtype(device: torch.device, default: torch.dtype) -> torch.dtype:
    """The dtype matrix products take here: the autocast dtype inside an autocast region on
    ``device``'s type, else ``default`` (the weights' dtype)."""
    kind = device.type
    if torch.is_autocast_enabled(kind):
        return torch.get_autocast_dtype(kind)
    return default


def sampling_dtype(precision: Precision) -> torch.dtype | None:
    """The dtype an engine with its own copy of the weights (vLLM) samples in: bf16 under
    ``bf16``, as the trainer's forward runs; None under ``fp32``: the policy's own dtype."""
    return torch.bfloat16 if precision == "bf16" else None
