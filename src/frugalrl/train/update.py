"""The policy update of one step: μ optimizer steps of the policy objective over one rollout batch.

What makes it cheap (issue 6; measured in benchmarks/step_vs_trl.py):

* the loss is a sum over completions with weights fixed over the whole batch
  (``algo.aggregation.sequence_weights``), so micro-batches can be any shape and completions
  that contribute exactly nothing can be left out without changing the loss or its gradient:
  completions outside the loss, and, when the objective says so, completions whose advantage
  is 0 (every completion of a group whose rewards are all equal);
* micro-batches are formed by a token budget over completions sorted by length, and packed
  without padding (``train.micro_batch_tokens``, ``train.packing``; ``train/micro_batches.py``),
  so little compute goes to padding;
* with μ = 1 on a batch the current weights sampled, the old log-probs are the detached current
  ones (no extra forward); the reference model runs only when β > 0; the output layer runs
  chunk by chunk over completion tokens only (``train.logprob_chunk_tokens``), so full
  (B, T, vocab) logits never exist.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from frugalrl.algo import PolicyLossOutput, PolicyObjective, kl_penalized_rewards
from frugalrl.algo.aggregation import masked_mean
from frugalrl.algo.importance import importance_weights, rollout_log_ratio
from frugalrl.algo.logprobs import completion_logprobs
from frugalrl.config import Config
from frugalrl.errors import UserError
from frugalrl.precision import autocast
from frugalrl.rollout import Completion
from frugalrl.train.distributed import DataParallel, balanced_shares
from frugalrl.train.micro_batches import (
    Layout,
    layout_of,
    layout_positions,
    micro_batch_tensors,
    micro_batches_of,
)

RowLogprobs = dict[int, torch.Tensor]  # completion index -> (num_tokens,) log-probs


@dataclass
class RolloutBatch:
    """One step's experience, flattened to one row per completion."""

    prompt_ids: list[list[int]]
    completions: list[Completion]
    advantages: torch.Tensor  # (N,)
    in_loss: torch.Tensor  # (N,) bool: scored, and not masked as truncated
    metrics: dict[str, float] = field(default_factory=dict)
    # Log-probs already computed at rollout time (KL in the reward needs both), reused by the
    # update instead of a second forward pass; None: the update computes what it needs.
    old_logps: RowLogprobs | None = None
    ref_logps: RowLogprobs | None = None
    # The version of the weights that sampled the batch (the trainer's step count then): older
    # than the weights trained when sampled ahead (rollout.max_staleness)
    policy_version: int = 0

    def token_counts(self) -> torch.Tensor:
        """(N,) completion tokens that enter the loss: 0 for a completion outside it."""
        lengths = torch.tensor([c.num_tokens for c in self.completions])
        return torch.where(self.in_loss, lengths, 0)


def _length_mask(lengths: torch.Tensor) -> torch.Tensor:
    """(N, max(1, longest)) bool: position t of row i is one of its ``lengths[i]`` tokens."""
    width = max(1, int(lengths.max())) if lengths.numel() else 1
    return torch.arange(width, device=lengths.device) < lengths.unsqueeze(-1)


def _stack(rows: RowLogprobs, idx: list[int], width: int, device) -> torch.Tensor:
    """(len(idx), width) log-probs of the rows ``idx``, right-padded with 0."""
    out = torch.zeros(len(idx), width, device=device)
    for k, i in enumerate(idx):
        out[k, : rows[i].shape[0]] = rows[i]
    return out


def head_dtype(config: Config) -> torch.dtype | None:
    """fp32 for the output layer under ``train.lm_head_fp32``, else the region's dtype."""
    return torch.float32 if config.train.lm_head_fp32 else None


@torch.no_grad()
def batch_logprobs(
    model, batch: RolloutBatch, rows: Sequence[int], pad_id: int, config: Config, device
) -> RowLogprobs:
    """Log-probs of the completions ``rows`` under ``model`` (old policy or reference), no grad."""
    out: RowLogprobs = {}
    layout = layout_of(model, config)
    for idx in micro_batches_of(batch, rows, config, layout):
        packed = micro_batch_tensors(batch, idx, pad_id, device, layout)
        with autocast(config.train.precision, device):
            logp, _ = completion_logprobs(
                model,
                packed,
                config.rollout.temperature,
                chunk_tokens=config.train.logprob_chunk_tokens,
                head_dtype=head_dtype(config),
            )
        for k, i in enumerate(idx):
            out[i] = logp[k, : batch.completions[i].num_tokens]
    return out


def reference_logprobs(
    model, prompt_ids: list[list[int]], groups: list[list[Completion]], *, pad_id: int, config
) -> list[list[tuple[float, ...]]]:
    """Each completion's token log-probs under the frozen ``model``, computed as the update
    computes them: the sampler's side of ``rollout.ReferenceScorer``."""
    completions = [c for group in groups for c in group]
    prompts = [list(p) for p, group in zip(prompt_ids, groups, strict=True) for _ in group]
    n = len(completions)
    batch = RolloutBatch(prompts, completions, torch.zeros(n), torch.ones(n, dtype=torch.bool))
    rows = batch_logprobs(model, batch, range(n), pad_id, config, torch.device("cpu"))
    flat = iter(tuple(rows[i].tolist()) for i in range(n))
    return [[next(flat) for _ in group] for group in groups]


def engine_reference_logprobs(batch: RolloutBatch, device) -> RowLogprobs | None:
    """The reference log-probs the engine reported with every completion, or None."""
    if not batch.completions or any(c.ref_logprobs is None for c in batch.completions):
        return None
    return {i: torch.tensor(c.ref_logprobs, device=device) for i, c in enumerate(batch.completions)}


def fold_kl_into_rewards(
    batch: RolloutBatch,
    rewards: torch.Tensor,
    model,
    ref_model,
    pad_id: int,
    config: Config,
    device,
    dp: DataParallel | None = None,
) -> torch.Tensor:
    """rewards (prompts, G) − β·Σ_t KL_t under the sampling policy vs the reference (Arora &
    Zanette; verl's use_kl_in_reward). Keeps both log-probs on ``batch`` for the update.

    Data-parallel: each process computes its share of the completions' log-probs and every
    process gets all of them, so each folds the same penalties into the same rewards."""
    a = config.algo
    dp = dp or DataParallel(device=device)
    idx = list(range(len(batch.completions)))
    mine = dp.share(idx)
    policy = _gathered(dp, batch_logprobs(model, batch, mine, pad_id, config, device), device)
    ref = batch.ref_logps
    if ref is None:
        ref = _gathered(dp, batch_logprobs(ref_model, batch, mine, pad_id, config, device), device)
    mask = _length_mask(torch.tensor([c.num_tokens for c in batch.completions], device=device))
    width = mask.shape[1]
    flat = kl_penalized_rewards(
        rewards.flatten().to(device),
        _stack(policy, idx, width, device),
        _stack(ref, idx, width, device),
        mask,
        a.reward_beta,
        a.kl_estimator,
    ).cpu()
    penalty = rewards.flatten() - flat
    ok = ~torch.isnan(penalty)
    batch.metrics["train/kl_in_reward"] = float(penalty[ok].mean()) if ok.any() else math.nan
    # Nothing has moved since sampling: these are exactly the old log-probs a μ > 1 update needs.
    batch.old_logps = policy if a.num_iterations > 1 else None
    batch.ref_logps = ref
    return flat.view_as(rewards)


def _gathered(dp: DataParallel, rows: RowLogprobs, device) -> RowLogprobs:
    """Every process's log-probs merged (the shares are disjoint), on ``device``."""
    if not dp.enabled:
        return rows
    parts = dp.gather({i: v.cpu() for i, v in rows.items()})
    return {i: v.to(device) for part in parts for i, v in part.items()}


def policy_objective(config: Config) -> PolicyObjective:
    """The recipe's policy loss with its parameters, and the KL / entropy terms around it."""
    a = config.algo
    return PolicyObjective(
        loss=a.policy_loss,
        params=a.loss_params,
        aggregation=a.loss_aggregation,
        max_completion_length=config.rollout.max_completion_tokens,
        beta=a.loss_beta,
        kl_estimator=a.kl_estimator,
        kl_ratio_correction=a.kl_ratio_correction,
        entropy_coef=a.entropy_coef,
    )


def rows_to_train(
    batch: RolloutBatch, objective: PolicyObjective, skip_zero_advantage: bool = True
) -> list[int]:
    """The completions whose loss terms can be non-zero.

    A completion outside the loss (or without tokens) contributes nothing. Neither does one with
    advantage 0 when the objective says so (``PolicyObjective.skips_zero_advantage``: the policy
    loss declares it, and no KL or entropy term is in the loss). Leaving these out changes
    neither the loss nor the gradient, because the aggregation's weights count them (computed
    over the whole batch); ``train.skip_zero_advantage`` turns this off.
    """
    counts = batch.token_counts()
    rows = [i for i in range(len(batch.completions)) if counts[i] > 0]
    if skip_zero_advantage and objective.skips_zero_advantage:
        rows = [i for i in rows if batch.advantages[i] != 0]
    return rows


# the correction's weights as applied (truncated or masked) and the raw token ratios
# π_old/π_behaviour before that: how far off-policy the batch was (stale or other-engine)
IS_STATS = ("is_weight_mean", "is_raw_weight_mean")
# |trainer − engine| log-probs of the sampled tokens (the trainer's under the weights that
# sampled them): what bf16 sampling, another engine, or stale weights cost in mismatch
GAP_STATS = ("rollout_logprob_abs_diff",)


def reports_logprobs(batch: RolloutBatch) -> bool:
    """Whether the engine reported every sampled token's log-prob (the gap is then logged)."""
    return all(c.logprobs is not None for c in batch.completions)


def needs_old_logprobs(num_iterations: int) -> bool:
    """Whether π_old must be computed before the update. With one pass, the training forward's
    own log-probs, detached, are π_old: the current weights, which are the proximal policy also
    when older weights sampled the batch (async training); the behaviour policy then enters
    through the importance-sampling weights, computed from those same detached log-probs.
    So one pass costs no extra forward, with or without the correction."""
    return num_iterations > 1


def _rollout_logprobs(
    batch: RolloutBatch, rows: Sequence[int], config: Config, device
) -> RowLogprobs:
    """The behaviour log-probs the engine reported for ``rows`` (importance sampling needs them)."""
    if not reports_logprobs(batch):
        r = config.rollout
        raise UserError(
            f"rollout.importance_sampling needs the engine's sampling log-probs; "
            f"rollout.engine '{r.engine}' does not report them"
        )
    return {i: torch.tensor(batch.completions[i].logprobs, device=device) for i in rows}


@dataclass
class StatedLogprobs:
    """The log-probs the update compares the policy with, stated before its first step."""

    old: RowLogprobs | None  # π_old; None: the detached current ones (on-policy, one pass)
    rollout: RowLogprobs | None  # the engine's (behaviour), for importance sampling
    ref: RowLogprobs | None  # the reference model's, for the KL term and train/kl


@dataclass
class UpdateStep:
    """One batch's update: what every micro-batch of it needs."""

    batch: RolloutBatch
    objective: PolicyObjective
    pad_id: int
    config: Config
    device: object
    dp: DataParallel
    layout: Layout = "padded"

    def stated_logprobs(self, model, ref_model, rows: Sequence[int]) -> StatedLogprobs:
        """π_old (when the current weights cannot stand in for it), the engine's log-probs and
        the reference's, for ``rows``; with the KL in the reward the loss has β = 0 and the
        reference log-probs only feed train/kl."""
        b, r, a = self.batch, self.config.rollout, self.config.algo
        old = b.old_logps
        if old is None and needs_old_logprobs(a.num_iterations):
            with self.dp.full_weights(model):
                old = batch_logprobs(model, b, rows, self.pad_id, self.config, self.device)
        rollout = None
        if r.importance_sampling is not None or reports_logprobs(b):
            rollout = _rollout_logprobs(b, rows, self.config, self.device)
        ref = b.ref_logps
        if ref is None and ref_model is not None:
            ref = batch_logprobs(ref_model, b, rows, self.pad_id, self.config, self.device)
        return StatedLogprobs(old, rollout, ref)

    def micro_batch_loss(
        self, policy, idx: list[int], stated: StatedLogprobs, weights: torch.Tensor
    ) -> tuple[PolicyLossOutput, torch.Tensor, dict[str, float]]:
        """The objective on the micro-batch ``idx`` (its loss to backpropagate), its loss mask,
        and the importance-sampling statistics (token means over the micro-batch)."""
        config, device, batch, r = self.config, self.device, self.batch, self.config.rollout
        packed = micro_batch_tensors(batch, idx, self.pad_id, device, self.layout)
        width = packed["completion_mask"].shape[1]
        with autocast(config.train.precision, device):  # backward runs outside, as it should
            logp, entropy = completion_logprobs(
                policy,
                packed,
                r.temperature,
                with_entropy=True,
                entropy_grad=config.algo.entropy_coef > 0,
                chunk_tokens=config.train.logprob_chunk_tokens,
                head_dtype=head_dtype(config),
            )
        mask = packed["completion_mask"] & batch.in_loss[idx].to(device).unsqueeze(-1)
        old = _stack(stated.old, idx, width, device) if stated.old else logp.detach()
        is_weights, is_stats = None, {}
        if stated.rollout is not None:
            rollout = _stack(stated.rollout, idx, width, device)
            known = mask & ~rollout.isnan()  # an engine may leave a token's log-prob out
            gap = (old - rollout).abs().masked_fill(~known, 0.0)
            is_stats["rollout_logprob_abs_diff"] = masked_mean(gap, known)
            is_stats["rollout_logprob_abs_diff_max"] = gap.max().item() if known.any() else 0.0
        if r.importance_sampling is not None:
            is_weights = importance_weights(
                r.importance_sampling,
                old,
                rollout,
                mask,
                r.importance_sampling_clip_min,
                r.importance_sampling_clip_max,
            )
            is_stats["is_weight_mean"] = masked_mean(is_weights.expand_as(mask), mask)
            raw = rollout_log_ratio(old, rollout, mask).exp()
            is_stats["is_raw_weight_mean"] = masked_mean(raw, mask)
            is_stats["is_raw_weight_max"] = raw.masked_fill(~mask, 0.0).max().item()
        out = self.objective(
            logp,
            old,
            batch.advantages[idx].to(device),
            mask,
            weights[idx],
            ref_logp=_stack(stated.ref, idx, width, device) if stated.ref else None,
            entropy=entropy,
            is_weights=is_weights,
        )
        return out, mask, is_stats


def policy_update(
    model,
    ref_model,
    optimizer,
    scheduler,
    batch: RolloutBatch,
    pad_id: int,
    config: Config,
    device,
    dp: DataParallel | None = None,
) -> dict[str, float]:
    """μ optimizer steps on one batch; returns the loss statistics (token means over the
    completions trained on, averaged over the μ steps).

    Data-parallel (``dp``): every process holds the same batch; each
    trains on its share of the completions (balanced by tokens), the loss weights and token
    shares stay those of the whole batch, and gradients and statistics are summed over
    processes, so each process steps with the batch gradient of one process."""
    a = config.algo
    dp = dp or DataParallel(device=device)
    layout = layout_of(model, config)
    step = UpdateStep(batch, policy_objective(config), pad_id, config, device, dp, layout)
    rows = rows_to_train(batch, step.objective, config.train.skip_zero_advantage)
    mine = rows
    if dp.enabled:
        costs = [
            len(p) + c.num_tokens for p, c in zip(batch.prompt_ids, batch.completions, strict=True)
        ]
        mine = balanced_shares(costs, rows, dp.world)[dp.rank]
    plan = micro_batches_of(batch, mine, config, layout)
    counts = batch.token_counts()
    weights = step.objective.sequence_weights(_length_mask(counts)).to(device)
    stated = step.stated_logprobs(model, ref_model, mine)
    # Every key from the start: the processes sum them key by key.
    summed = ("loss", "kl", "entropy", *step.objective.stat_names)
    summed += IS_STATS if config.rollout.importance_sampling is not None else ()
    summed += GAP_STATS if reports_logprobs(batch) else ()
    maxima = {"rollout_logprob_abs_diff_max": 0.0, "is_raw_weight_max": 0.0}
    stats = dict.fromkeys((*summed, "grad_norm", "lr"), 0.0)
    trained_tokens = max(1, int(counts[rows].sum())) if rows else 1
    nonfinite = 0
    padding = 0
    if dp.shard_weights or dp.zero is not None:
        # Sharded forward passes, and DeepSpeed's backward passes, are collectives: as many on
        # every process (DeepSpeed: at least one, which closes the step's accumulation).
        floor = 1 if dp.zero is not None else 0
        padding = dp.max_int(max(floor, len(plan))) - len(plan)
    passes = padding + len(plan)
    model.train()
    policy = dp.training_forward(model)
    for _ in range(a.num_iterations):
        for k in range(padding):  # a forward and backward that add exactly nothing
            packed = micro_batch_tensors(batch, (rows or [0])[:1], pad_id, device, layout)
            with autocast(config.train.precision, device):
                logp, _ = completion_logprobs(policy, packed, config.rollout.temperature)
            dp.backward(logp.sum() * 0.0, last=k == passes - 1)
        for n, idx in enumerate(plan, padding + 1):
            out, mask, is_stats = step.micro_batch_loss(policy, idx, stated, weights)
            dp.backward(out.loss, last=n == passes)
            share = int(mask.sum()) / trained_tokens  # of the token means logged
            for name in maxima:
                maxima[name] = max(maxima[name], is_stats.pop(name, 0.0))
            stats["loss"] += out.loss.item()
            for name, value in {
                "kl": out.kl,
                "entropy": out.entropy,
                **out.stats,
                **is_stats,
            }.items():
                stats[name] += value * share
        stats["lr"] += optimizer.param_groups[0]["lr"]  # what this step uses
        grad_norm, applied = dp.optimizer_step(model, optimizer, config.optim.max_grad_norm)
        stats["grad_norm"] += grad_norm
        nonfinite += not applied  # a skipped NaN/inf update: the guards report it
        scheduler.step()
    positions, tokens = layout_positions(batch, plan, layout)
    totals = dp.sum_floats(
        {
            **{k: stats[k] for k in summed},
            "micro_batches": float(len(plan)),
            "positions": float(positions),
            "tokens": float(tokens),
        }
    )
    micro_batches = totals.pop("micro_batches")
    positions, tokens = totals.pop("positions"), totals.pop("tokens")
    metrics = {f"train/{k}": v / a.num_iterations for k, v in (stats | totals).items()}
    if not rows:
        metrics.update({"train/loss": 0.0, "train/kl": math.nan, "train/entropy": math.nan})
        metrics.update({f"train/{name}": 0.0 for name in step.objective.stat_names})
    metrics["train/trained_fraction"] = len(rows) / max(1, len(batch.completions))
    metrics["train/micro_batches"] = micro_batches
    # of the training forward's positions, how many hold no token (what packing removes)
    metrics["train/padding_fraction"] = 1 - tokens / positions if positions else 0.0
    metrics["train/nonfinite_updates"] = float(nonfinite)
    if reports_logprobs(batch):
        gap_max = maxima["rollout_logprob_abs_diff_max"]
        metrics["train/rollout_logprob_abs_diff_max"] = dp.max_float(gap_max)
    if config.rollout.importance_sampling is not None:
        metrics["train/is_raw_weight_max"] = dp.max_float(maxima["is_raw_weight_max"])
    return metrics


def skip_update(scheduler, config: Config) -> dict[str, float]:
    """A step with nothing to train on (dynamic sampling kept no group, logged as
    train/dynamic_sampling_kept_groups = 0): no optimizer step, but the step counts and the
    schedule advances as if updated, so the learning rate stays the function of the step count
    the user configured (warm-up and decay over ``train.steps``), and a run on data with no
    signal still ends after ``train.steps`` generation steps instead of looping forever."""
    with warnings.catch_warnings():
        # torch warns when the scheduler steps before any optimizer step; here that is intended.
        warnings.simplefilter("ignore", UserWarning)
        for _ in range(config.algo.num_iterations):
            scheduler.step()
    return {}
