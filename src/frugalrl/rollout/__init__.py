"""Rollout engines: turn prompts into sampled completions behind one small interface."""

from frugalrl.rollout.base import ROLLOUT_ENGINES, Completion, RolloutEngine, SamplingParams
from frugalrl.rollout.hf import HFEngine

__all__ = ["ROLLOUT_ENGINES", "Completion", "HFEngine", "RolloutEngine", "SamplingParams"]
