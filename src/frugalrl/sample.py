"""Data passed between the rollout engine, the rewards and the loop."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Sample:
    """One sampled completion of one prompt, as rewards see it.

    Lengths are in tokens of the policy's tokenizer (never characters), and ``finished`` is
    False when generation hit the length cap before EOS (a truncated completion).
    """

    completion: str
    num_tokens: int
    finished: bool
    example: Mapping[str, Any] = field(default_factory=dict)
