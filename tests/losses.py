"""One call for the composed PPO-clip objective, so the loss tests read as formulas."""

from dataclasses import dataclass

from torch import Tensor

from frugalrl.algo import PolicyObjective

OBJECTIVE_FIELDS = (
    "aggregation",
    "max_completion_length",
    "beta",
    "kl_estimator",
    "kl_ratio_correction",
    "entropy_coef",
)
CALL_FIELDS = ("ref_logp", "entropy", "is_weights")


@dataclass
class LossOut:
    loss: Tensor
    kl: float
    entropy: float
    ratio_mean: float
    clip_fraction: float
    dual_clip_fraction: float


def objective_loss(name: str, logp, old, adv, mask, seq_weights=None, **kwargs) -> LossOut:
    """``PolicyObjective(name, params, ...)(logp, old, adv, mask, ...)``; the keyword arguments
    are split between the objective's fields, the call's tensors and the loss's parameters."""
    fields = {k: kwargs.pop(k) for k in OBJECTIVE_FIELDS if k in kwargs}
    call = {k: kwargs.pop(k) for k in CALL_FIELDS if k in kwargs}
    objective = PolicyObjective(loss=name, params=kwargs, **fields)
    out = objective(logp, old, adv, mask, seq_weights, **call)
    return LossOut(
        out.loss,
        out.kl,
        out.entropy,
        out.ratio_mean,
        out.stats.get("clip_fraction", 0.0),
        out.stats.get("dual_clip_fraction", 0.0),
    )


def ppo_clip_loss(logp, old, adv, mask, **kwargs) -> LossOut:
    return objective_loss("ppo_clip", logp, old, adv, mask, **kwargs)
