"""Rollout engines: turn prompts into sampled completions behind one small interface."""

from frugalrl.rollout.base import (
    ROLLOUT_ENGINES,
    AutocastSampling,
    Completion,
    EngineUnavailable,
    ReferenceScorer,
    RolloutEngine,
    SamplingParams,
)
from frugalrl.rollout.hf import HFEngine
from frugalrl.rollout.process_engine import ProcessEngine
from frugalrl.rollout.vllm_client import VLLMServerEngine
from frugalrl.rollout.vllm_engine import VLLMEngine

__all__ = [
    "ROLLOUT_ENGINES",
    "AutocastSampling",
    "Completion",
    "EngineUnavailable",
    "HFEngine",
    "ProcessEngine",
    "ReferenceScorer",
    "RolloutEngine",
    "SamplingParams",
    "VLLMEngine",
    "VLLMServerEngine",
]
