"""Learning-rate schedules as multipliers of the peak rate."""

from __future__ import annotations

import math


def lr_multiplier(
    step: int, total_steps: int, warmup_steps: int, kind: str = "cosine", min_ratio: float = 0.1
) -> float:
    """Linear warm-up to 1, then constant or cosine decay to ``min_ratio`` at ``total_steps``.

    cosine: m = r + (1 − r)·½(1 + cos(π·p)), p = (step − warmup)/(total − warmup); the open-rs
    schedule with r = 0.1 (TRL's ``cosine_with_min_lr``).
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
