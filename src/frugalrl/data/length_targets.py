"""Per-problem target lengths for length-controlled training (L1 / LCPO, Aggarwal & Welleck 2025,
"L1: Controlling How Long A Reasoning Model Thinks With Reinforcement Learning"; the authors'
data script, cmu-l3/l1 ``scripts/data/deepscaler_dataset.py``).

Each problem draws a target N uniformly from [low, high] and its text ends with the
instruction the model learns to follow: "Think for N tokens." (exact) or "Think for maximum N
tokens." (max). The target rides along in the row (``target_tokens``) for the ``l1_exact`` and
``l1_max`` rewards. docs/algorithms.md#l1.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any, Literal

TARGET_FIELD = "target_tokens"
INSTRUCTIONS = {
    "exact": "Think for {n} tokens.",
    "max": "Think for maximum {n} tokens.",
}


def length_instruction(kind: Literal["exact", "max"], target: int) -> str:
    """The sentence the prompt ends with for a target of ``target`` tokens."""
    return INSTRUCTIONS[kind].format(n=target)


def with_length_targets(
    problems: Sequence[dict[str, Any]],
    kind: Literal["exact", "max"],
    low: int,
    high: int,
    budget_free: float = 0.0,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Copies of ``problems`` with a target drawn for each: ``target_tokens`` set and the
    instruction appended to ``problem``; a share ``budget_free`` of them keep no target (the
    authors' ``--use_both``: 0.5), for which the L1 rewards are plain correctness. The draws
    depend on ``seed`` and the row order only, so a resumed run sees the same targets."""
    rng = random.Random(seed)
    out = []
    for row in problems:
        free = rng.random() < budget_free
        target = rng.randint(low, high)
        if free:
            out.append({k: v for k, v in row.items() if k != TARGET_FIELD})
            continue
        out.append(with_target(row, kind, target))
    return out


def with_target(row: dict[str, Any], kind: Literal["exact", "max"], target: int) -> dict[str, Any]:
    """A copy of the problem ``row`` asking for ``target`` tokens (``frugalrl eval --budget``
    asks every problem for the same one)."""
    problem = f"{row['problem']} {length_instruction(kind, target)}"
    return {**row, "problem": problem, TARGET_FIELD: target}
