"""Evaluation: held-out accuracy and token cost of a policy."""

from frugalrl.eval.heldout import evaluate_problems

__all__ = ["evaluate_problems"]
