"""Advantage estimators: per-prompt groups of rewards -> one advantage per completion.

Every estimator takes ``rewards`` of shape (num_prompts, G), G completions per prompt, and its own
parameters as keyword arguments (``algo.advantage_params`` in a recipe), as rewards do. A NaN
reward marks a completion that could not be scored: it is left out of every mean and std and
gets advantage 0.0, so it neither shifts its group's baseline nor moves the policy.
Formulas and sources: docs/algorithms.md#advantage-estimators.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from frugalrl.registry import Registry, check_params

AdvantageFn = Callable[..., Tensor]  # fn(rewards, **params) -> advantages of the same shape

ADVANTAGES = Registry[AdvantageFn]("advantage estimator")

DEFAULT_EPS = 1e-4  # open-rs and TRL: (r - mean) / (std + 1e-4)


def _masked_mean(x: Tensor, valid: Tensor, dim: int | None = None) -> Tensor:
    """mean(x[valid]) along ``dim`` (all dims if None); 0 where nothing is valid."""
    total = torch.where(valid, x, 0.0).sum(dim=dim, keepdim=dim is not None)
    count = valid.sum(dim=dim, keepdim=dim is not None)
    return total / count.clamp(min=1)


def _masked_std(x: Tensor, valid: Tensor, dim: int | None = None) -> Tensor:
    """Unbiased std: sqrt(sum (x - mean)^2 / (n - 1)) over valid x; 0 where n < 2.

    Bessel's correction as in ``torch.std`` (and TRL's ``nanstd``). With n < 2 TRL gets NaN and
    zeroes the advantage afterwards; 0 here gives the same advantage, (r - r) / eps = 0.
    """
    mean = _masked_mean(x, valid, dim)
    sq = torch.where(valid, (x - mean) ** 2, 0.0).sum(dim=dim, keepdim=dim is not None)
    count = valid.sum(dim=dim, keepdim=dim is not None)
    return torch.sqrt(sq / (count - 1).clamp(min=1))


def _scale(x: Tensor, std: Tensor, eps: float) -> Tensor:
    """x / (std + eps), and 0 where std + eps = 0: with eps = 0 a constant group must not give NaN."""
    den = std + eps
    return torch.where(den > 0, x / den, 0.0)


def _check(rewards: Tensor) -> Tensor:
    """The validity mask ~isnan(rewards), after checking the (num_prompts, G) shape."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must have shape (num_prompts, G), got {tuple(rewards.shape)}")
    return ~torch.isnan(rewards)


def _group_centered(rewards: Tensor, valid: Tensor) -> Tensor:
    """a = r - mean_g(r) over each group's valid rewards; 0 where r is NaN."""
    centered = rewards - _masked_mean(rewards, valid, dim=1)
    return torch.where(valid, centered, 0.0)


@ADVANTAGES.register("grpo")
def grpo(rewards: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """A_i = (r_i - mean_g) / (std_g + eps), std_g the unbiased std of the group (GRPO, open-rs).

    A group whose rewards are all equal (or with one valid sample) gets A = 0.
    """
    valid = _check(rewards)
    std = _masked_std(rewards, valid, dim=1)
    return _scale(_group_centered(rewards, valid), std, eps)


@ADVANTAGES.register("dr_grpo")
def dr_grpo(rewards: Tensor) -> Tensor:
    """A_i = r_i - mean_g (Dr. GRPO: no std, which would up-weight easy and hard prompts)."""
    valid = _check(rewards)
    return _group_centered(rewards, valid)


@ADVANTAGES.register("rloo")
def rloo(rewards: Tensor) -> Tensor:
    """A_i = r_i - (sum_j r_j - r_i) / (n - 1), over the n valid samples of the group.

    Leave-one-out keeps the baseline independent of r_i. A group with n = 1 has no baseline: A = 0.
    """
    valid = _check(rewards)
    r = torch.where(valid, rewards, 0.0)
    total = r.sum(dim=1, keepdim=True)
    n = valid.sum(dim=1, keepdim=True)
    adv = r - (total - r) / (n - 1).clamp(min=1)
    return torch.where(valid & (n > 1), adv, 0.0)


@ADVANTAGES.register("grpo_batch_std")
def grpo_batch_std(rewards: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """A_i = a_i / (std_batch(a) + eps), a_i = r_i - mean_g; std unbiased over all valid a_i.

    Group baseline, batch scale: no per-prompt std, so near-solved prompts are not up-weighted.
    """
    valid = _check(rewards)
    centered = _group_centered(rewards, valid)
    return _scale(centered, _masked_std(centered, valid), eps)


@ADVANTAGES.register("reinforce_pp")
def reinforce_pp(rewards: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """A_i = (a_i - mean_batch(a)) / (std_batch(a) + eps), a_i = r_i - mean_g (REINFORCE++ baseline).

    Whitening over the batch of valid samples; std unbiased. Each group's a sums to 0, so
    mean_batch(a) = 0 up to rounding and this equals ``grpo_batch_std``; the two would part only
    if whitening ran over tokens with a per-token KL reward, as in OpenRLHF.
    """
    valid = _check(rewards)
    centered = _group_centered(rewards, valid)
    whitened = _scale(centered - _masked_mean(centered, valid), _masked_std(centered, valid), eps)
    return torch.where(valid, whitened, 0.0)


@ADVANTAGES.register("rloo_batch_whiten")
def rloo_batch_whiten(rewards: Tensor, *, eps: float = DEFAULT_EPS) -> Tensor:
    """A_i = (a_i - mean_batch(a)) / (std_batch(a) + eps), a_i = r_i - (sum_j r_j - r_i) / (n - 1).

    RLOO within each group, then whitened over the batch of valid samples, std unbiased (Arora &
    Zanette: "RLOO ... advantages whitened over the batch"). Whitening runs over completions, one
    value each, not over tokens. Since a_i = n / (n - 1) * (r_i - mean_g), this equals
    ``reinforce_pp`` whenever every group has the same number n of valid samples; NaN rewards that
    leave groups with different n make them differ.
    """
    valid = _check(rewards)
    a = rloo(rewards)
    whitened = _scale(a - _masked_mean(a, valid), _masked_std(a, valid), eps)
    return torch.where(valid, whitened, 0.0)


def group_advantages(name: str, rewards: Tensor, **params) -> Tensor:
    """Advantages of ``rewards`` (num_prompts, G) with the estimator ``name`` and its params."""
    fn = ADVANTAGES.get(name)
    check_params(fn, params, f"advantage estimator '{name}'")
    return fn(rewards, **params)
