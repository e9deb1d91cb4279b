"""The GRPO-family training loop: generate, score, compute advantages, update, log, checkpoint.

One step (docs/design.md#one-training-step; the algorithms: docs/algorithms.md):

1. draw ``prompts_per_step`` problems and sample ``G = num_generations`` completions each;
2. score each group with the recipe's weighted rewards (None → excluded from the loss);
   with ``algo.dynamic_sampling`` (DAPO), drop groups whose rewards are all equal and sample
   more prompts until the batch is full or ``algo.max_sampling_rounds`` extra rounds are spent;
3. with ``algo.kl_in_reward`` (Arora & Zanette), subtract β·Σ_t KL_t from each reward; then
   advantages from the named estimator;
4. ``num_iterations`` (μ) passes of the PPO-clip loss over the batch in micro-batches
   (gradient accumulation), one optimizer step per pass, against the log-probs the batch was
   sampled with; optional KL to a frozen reference in the loss when β > 0 (and the KL is not in
   the reward), optional dual-clip and entropy bonus.

Which estimator, aggregation, KL estimator, rewards and engine are used is config, never a
branch here.
"""

from __future__ import annotations

import json
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from frugalrl.algo import group_advantages
from frugalrl.algo.logprobs import supports_chunked_logprobs
from frugalrl.algo.packing import supports_packing
from frugalrl.config import Config
from frugalrl.data import encode_prompts, load_problems
from frugalrl.data.length_targets import with_length_targets
from frugalrl.data.sampler import PromptSampler
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import Benchmark, load_benchmark
from frugalrl.eval.runner import EvalSettings, evaluate_engine
from frugalrl.policy import add_adapters, load_policy, pick_device
from frugalrl.precision import policy_dtype, reference_dtype, sampling_dtype
from frugalrl.rewards.registry import resolve_reward
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.rng import rng_state, set_rng_state
from frugalrl.rollout import (
    ROLLOUT_ENGINES,
    AutocastSampling,
    EngineUnavailable,
    ReferenceScorer,
)
from frugalrl.run_layout import FINAL, checkpoint_dir
from frugalrl.train.checkpoint import (
    list_checkpoints,
    load_training_state,
    restore_weights,
    save_checkpoint,
)
from frugalrl.train.distributed import DataParallel
from frugalrl.train.guards import Alarm, Guards
from frugalrl.train.interrupt import GracefulStop
from frugalrl.train.metrics import MetricsLogger
from frugalrl.train.rollout_source import ScoredGroups, SynchronousRounds, rollout_source
from frugalrl.train.schedule import lr_multiplier
from frugalrl.train.update import (
    RolloutBatch,
    engine_reference_logprobs,
    fold_kl_into_rewards,
    policy_update,
    reference_logprobs,
    skip_update,
)


def rollout_metrics(rollouts: ScoredGroups, scorer) -> dict[str, float]:
    """Rewards, lengths and timings of everything generated this step (before any filtering,
    so that e.g. train/accuracy keeps measuring the policy, not the dynamic-sampling filter)."""
    completions = [c for group in rollouts.groups for c in group]
    rewards = rollouts.rewards
    lengths = np.array([c.num_tokens for c in completions])
    finished = np.array([c.finished for c in completions])
    gen_seconds = rollouts.generation_seconds
    metrics = {
        "reward/unscored_fraction": float(torch.isnan(rewards).float().mean()),
        "completion/length_mean": float(lengths.mean()),
        "completion/length_max": float(lengths.max()),
        "completion/truncated_fraction": float(1 - finished.mean()),
        "train/zero_variance_groups": zero_variance_fraction(rewards),
        "time/generation_seconds": gen_seconds,
        "time/scoring_seconds": rollouts.scoring_seconds,
        "reward/failed_groups": float(rollouts.failed_groups),
        "reward/timed_out_groups": float(rollouts.timed_out_groups),
        "throughput/generated_tokens_per_second": float(lengths.sum() / max(gen_seconds, 1e-9)),
    }
    per_reward = {
        name: [v for group in values for v in group] for name, values in rollouts.per_reward.items()
    }
    totals = [v for group in rollouts.totals for v in group]
    for name, vals in {"total": totals, **per_reward}.items():
        arr = np.array(vals, dtype=float)
        ok = ~np.isnan(arr)
        metrics[f"reward/{name}/mean"] = float(arr[ok].mean()) if ok.any() else math.nan
        metrics[f"reward/{name}/std"] = float(arr[ok].std()) if ok.any() else math.nan
    for spec in scorer.specs:
        extra = getattr(resolve_reward(spec.name), "batch_metrics", None)
        if extra is not None:
            metrics.update(extra(per_reward[spec.name]))
    if "accuracy" in per_reward:
        metrics["train/accuracy"] = metrics["reward/accuracy/mean"]
    return metrics


def informative_groups(rewards: torch.Tensor) -> torch.Tensor:
    """(prompts,) bool: the group's scored rewards are not all equal, so its advantages are not
    all zero. A group with fewer than two scored rewards is not informative either."""
    hi = torch.where(torch.isnan(rewards), -math.inf, rewards).amax(dim=1)
    lo = torch.where(torch.isnan(rewards), math.inf, rewards).amin(dim=1)
    return hi > lo


def zero_variance_fraction(rewards: torch.Tensor) -> float:
    """Share of groups whose scored rewards are all equal: they get zero advantage, no signal."""
    return float((~informative_groups(rewards)).float().mean())


@dataclass
class StepRollouts:
    """What a step sampled: the groups it trains on, everything generated for it, the version
    of the weights that sampled its first round, and sampling metrics."""

    kept: ScoredGroups
    generated: ScoredGroups
    version: int
    metrics: dict[str, float]


def sample_step(source: SynchronousRounds, config: Config, scorer, step: int) -> StepRollouts:
    """Step ``step``'s groups: its first round from the rollout ``source`` (sampled now, or
    ahead: ``rollout_source``), then, with dynamic sampling, extra rounds sampled now.

    Without dynamic sampling: one round of ``prompts_per_step`` prompts, all trained on.
    With it (DAPO): groups with all-equal rewards are dropped and extra rounds sample more
    prompts, at most ``max_sampling_rounds`` of them, until ``prompts_per_step`` informative
    groups are kept. An extra round draws the number still missing divided by the share of
    informative groups seen so far this step (the whole ``prompts_per_step`` when none was
    informative), at most ``prompts_per_step``: enough to fill the batch at the rate seen,
    without one round costing more than the first. Informative groups beyond the batch are
    dropped, as verl does, so every step trains on at most ``prompts_per_step`` groups. The
    sampler advances by what was drawn, a function of seeded rollouts, so resuming is exact.
    """
    target = config.train.prompts_per_step
    opening = source.first_round(step, scorer)
    first, version = opening.groups, opening.version
    metrics = {**opening.metrics, "rollout/staleness": float(step - version)}
    if not config.algo.dynamic_sampling:
        return StepRollouts(first, first, version, metrics)
    rounds: list[ScoredGroups] = []
    kept: list[ScoredGroups] = []
    num_kept = num_drawn = dropped = 0
    draw = target
    for _ in range(config.algo.max_sampling_rounds + 1):
        part = first if not rounds else source.draw(draw, scorer)
        rounds.append(part)
        informative = informative_groups(part.rewards).nonzero().flatten().tolist()
        dropped += len(part) - len(informative)
        take = informative[: target - num_kept]
        kept.append(part.select(take))
        num_kept += len(take)
        num_drawn += len(part)
        if num_kept == target:
            break
        missing = target - num_kept
        draw = target if num_kept == 0 else min(target, math.ceil(missing * num_drawn / num_kept))
    metrics |= {
        "train/dynamic_sampling_dropped_groups": float(dropped),
        "train/dynamic_sampling_rounds": float(len(rounds) - 1),
        "train/dynamic_sampling_kept_groups": float(num_kept),
    }
    return StepRollouts(ScoredGroups.concat(kept), ScoredGroups.concat(rounds), version, metrics)


def build_batch(
    rollouts: ScoredGroups,
    model,
    ref_model,
    pad_id: int,
    config: Config,
    device,
    dp: DataParallel | None = None,
) -> RolloutBatch:
    """Flatten the groups to train on, fold the KL into their rewards if asked, then advantages."""
    a = config.algo
    g = config.rollout.num_generations
    completions = [c for group in rollouts.groups for c in group]
    prompts = [list(p) for p in rollouts.prompt_ids for _ in range(g)]
    rewards = rollouts.rewards
    scored = ~torch.isnan(rewards.flatten())
    finished = torch.tensor([c.finished for c in completions], dtype=torch.bool)
    in_loss = scored & (finished | (not a.mask_truncated))
    batch = RolloutBatch(prompts, completions, torch.zeros(len(completions)), in_loss)
    batch.ref_logps = engine_reference_logprobs(batch, device)  # sampled ahead, if reported
    if a.reward_beta > 0:
        rewards = fold_kl_into_rewards(batch, rewards, model, ref_model, pad_id, config, device, dp)
    batch.advantages = group_advantages(a.advantage, rewards, **a.estimator_params).flatten()
    return batch


def build_optimizer(model, config: Config):
    """AdamW with linear warm-up then cosine (or constant); one scheduler step per update."""
    o = config.optim
    trainable = [p for p in model.parameters() if p.requires_grad]  # LoRA: the adapters only
    optimizer = torch.optim.AdamW(trainable, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    total_updates = config.train.steps * config.algo.num_iterations
    warmup = round(o.warmup_ratio * total_updates)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_multiplier(s, total_updates, warmup, o.lr_scheduler, o.min_lr_ratio),
    )
    return optimizer, scheduler


def eval_sets(config: Config, periodic: bool = False) -> list[Benchmark]:
    """The held-out set (first, named 'heldout') and ``eval.benchmarks``, as evaluated.
    ``periodic``: the held-out set only, its first ``eval.every_num_problems`` problems."""
    e = config.eval
    limit = (e.every_num_problems or e.num_problems) if periodic else e.num_problems
    specs = [] if periodic else e.benchmarks
    benchmarks = [load_benchmark(spec, limit=limit) for spec in specs]
    if e.path is not None:
        heldout = load_problems(
            e.path,
            problem_field=config.data.problem_field,
            answer_field=config.data.answer_field,
            limit=limit,
        )
        benchmarks.insert(0, Benchmark("heldout", heldout))
    return benchmarks


def run_eval(
    engine, tokenizer, config: Config, label: str, run_dir: Path, periodic: bool = False
) -> dict[str, Any] | None:
    """Evaluate the current policy on ``eval_sets`` into ``run_dir/eval/label``; returns the
    held-out statistics (else the overall ones)."""
    e = config.eval
    benchmarks = eval_sets(config, periodic)
    if not benchmarks:
        return None
    settings = EvalSettings(
        samples=e.samples_per_problem,
        temperature=e.temperature,
        top_p=e.top_p,
        max_new_tokens=e.max_new_tokens or config.rollout.max_completion_tokens,
        prompt_template=config.data.prompt_template,
        system_prompt=config.data.system_prompt,
        seed=config.train.seed,
    )
    summary = evaluate_engine(
        engine,
        tokenizer,
        benchmarks,
        settings,
        run_dir / "eval" / label,
        workers=config.scoring.resolved_workers(),
        timeout=config.scoring.timeout_seconds,
        progress=config.logging.progress and not periodic,
        title=f"{config.name}: {label}",
    )
    return summary["benchmarks"]["heldout"] if e.path is not None else summary["overall"]


def weights_bytes(directory: Path) -> int:
    """Bytes of the weight files (safetensors / bin) saved in ``directory``."""
    return sum(f.stat().st_size for f in directory.glob("*.safetensors")) + sum(
        f.stat().st_size for f in directory.glob("*.bin")
    )


@dataclass
class Run:
    """A training run's live objects: built by ``start_run``, advanced one step at a time by
    ``train``. Every data-parallel process holds one; only the main process writes files."""

    config: Config  # as the run uses it: ``runnable_config`` may have turned an option off
    dp: DataParallel
    run_dir: Path
    model: Any  # the policy being trained (sharded when launched so)
    ref_model: Any  # the frozen reference for the KL term; None when β = 0
    tokenizer: Any
    engine: Any  # the rollout engine, sampling from ``model``'s weights
    problems: list[Any]  # the training problems whose prompts fit data.max_prompt_tokens
    prompt_ids: list[list[int]]  # their encoded prompts, same order
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    sampler: PromptSampler
    guards: Guards
    summary: dict[str, Any]  # what summary.json will say
    step: int = 0  # steps done
    train_seconds: float = 0.0  # time spent in steps, over every resumed session
    best: dict[str, Any] | None = None  # the best held-out evaluation: step, accuracy, its row
    stopped: Alarm | None = None  # the guard alarm that stopped the run
    source: SynchronousRounds = field(init=False)  # where rollouts come from (rollout_source)
    # Opened last, once the base evaluation is done (``start_run``):
    scorer: RewardScorer = field(init=False)
    logger: MetricsLogger | SilentLogger = field(init=False)
    bar: tqdm = field(init=False)

    @property
    def summary_path(self) -> Path:
        return self.run_dir / "summary.json"

    @property
    def evaluates_periodically(self) -> bool:
        return bool(self.config.eval.every_steps) and self.config.eval.path is not None


def train(
    config: Config, resume: bool = False, report: Callable[[Path], Path] | None = None
) -> dict[str, Any]:
    """Train per ``config``; with ``resume``, continue from the run directory's last checkpoint.

    ``report``: the last step, given the run directory once the summary is written (also when a
    signal stopped the run), returning the report it wrote; the commands pass
    ``frugalrl.report.write_run_report``, the layer above this one.

    Launched as several processes (``accelerate launch``, ``frugalrl train --num-processes``),
    it trains data-parallel (``train/distributed.py``); only the main process writes and returns
    the summary (the others return {}). Processes must make matching collective calls: each helper
    makes the same ones, in the same order, on every process."""
    wall0 = time.perf_counter()
    run = start_run(config, resume)
    try:
        summary = train_run(run, wall0)
    finally:
        run.engine.close()  # e.g. a vLLM server it started
    if summary and report is not None:
        summary["report"] = str(report(run.run_dir))
    return summary


def train_run(run: Run, wall0: float) -> dict[str, Any]:
    """``train``'s steps, from ``run``'s step to the last (or a stop), then its end."""
    steps = run.config.train.steps
    interrupted = False
    with run.logger, run.scorer, GracefulStop() as signals:
        if run.evaluates_periodically and run.step == 0:
            evaluate_starting_policy(run)
        while run.step < steps:
            try:  # the engine can fail in sampling, in the sync, in an evaluation, in a rollback
                metrics = train_step(run)
                if run.evaluates_periodically and run.step % run.config.eval.every_steps == 0:
                    metrics |= periodic_eval(
                        run.engine,
                        run.model,
                        run.tokenizer,
                        run.config,
                        run.step,
                        run.run_dir,
                        run.dp,
                    )
                    track_best(run, metrics)
                heed_guards(run, metrics)
            except EngineUnavailable as e:
                checkpoint(run)  # the state is whole: a failed sampling was undone
                raise EngineUnavailable(
                    f"{e}; saved step {run.step}: continue with frugalrl train --resume "
                    f"{run.run_dir}"
                ) from None
            log_step(run, metrics)
            interrupted = stop_requested(signals, run.dp)
            save_every = run.config.train.save_every
            if (
                run.step == steps
                or (save_every and run.step % save_every == 0)
                or interrupted
                or run.stopped
            ):
                checkpoint(run)
            if interrupted or run.stopped:
                break
    run.bar.close()
    if interrupted and run.step < steps:
        return report_interrupted(run, signals.requested)
    return finish(run, wall0)


def start_run(config: Config, resume: bool) -> Run:
    """Load and check everything the run reads, then create the run directory, restore the last
    checkpoint's state when resuming, and evaluate the base policy if asked."""
    dp = DataParallel.from_environment(pick_device(config.train.device))
    run_dir = config.run_dir
    checkpoints = list_checkpoints(run_dir) if resume else []
    if resume and not checkpoints:
        raise UserError(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}")
    if not resume and list_checkpoints(run_dir):
        raise UserError(f"{run_dir} already holds a run; use --resume, or another train.output_dir")

    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)  # same on every process: same LoRA initialisation
    problems = training_problems(config)
    model, ref_model, tokenizer = load_models(config, checkpoints[-1] if checkpoints else None, dp)
    config = runnable_config(config, model, dp)
    model = dp.prepare(model)  # sharded (FSDP) when launched so, else as it is
    problems, prompt_ids = fitting_prompts(problems, tokenizer, config)
    eval_sets(config)  # a bad held-out file or benchmark name fails now, not after training
    if config.rollback_guarded and config.eval.path is None:
        raise UserError(
            "guards: a rollback restores the checkpoint with the best held-out accuracy; "
            "it needs eval.path and eval.every_steps > 0"
        )
    engine = build_engine(config, model, ref_model, tokenizer, dp)  # last: it may start a server

    # Everything the run reads is loaded and checked: only now is the run directory written,
    # so bad input never leaves a half-made run behind.
    dp.barrier()  # every process has checked the run directory before the main one writes to it
    if dp.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(config.to_yaml())

    optimizer, scheduler = build_optimizer(model, config)
    dp.attach_optimizer(model, optimizer, config.optim.max_grad_norm)  # DeepSpeed launches
    g = config.guards
    run = Run(
        config,
        dp,
        run_dir,
        model,
        ref_model,
        tokenizer,
        engine,
        problems,
        prompt_ids,
        optimizer,
        scheduler,
        sampler=PromptSampler(len(problems), config.train.seed),
        guards=Guards(g.monitors, g.window, g.max_rollbacks),
        summary={
            "recipe": config.name,
            "model": config.model.name_or_path,
            "run_dir": str(run_dir),
            "eval": {},
            "train_seconds": 0.0,
        },
    )
    run.scorer = RewardScorer(
        [r.spec() for r in config.rewards],
        workers=config.scoring.resolved_workers(),
        timeout=config.scoring.timeout_seconds,
    )
    run.source = rollout_source(engine, run.sampler, problems, prompt_ids, config, dp)
    if checkpoints:
        restore_training_state(run, checkpoints[-1])

    if config.eval.before and "base" not in run.summary["eval"]:
        evaluate_base_policy(run)
    open_progress(run)
    return run


def training_problems(config: Config) -> list[Any]:
    """The recipe's training problems (with their length targets when it samples them)."""
    problems = load_problems(
        config.data.path,
        problem_field=config.data.problem_field,
        answer_field=config.data.answer_field,
        split=config.data.split,
        limit=config.data.limit,
    )
    if (targets := config.data.length_targets) is not None:
        problems = with_length_targets(problems, **targets.model_dump())
    return problems


def build_engine(config: Config, model, ref_model, tokenizer, dp: DataParallel):
    """The recipe's rollout engine on ``model`` (checked against the run's layout first)."""
    engine_class = ROLLOUT_ENGINES.get(config.rollout.engine)
    check_engine(config, engine_class, dp)
    engine = engine_class(
        model,
        tokenizer,
        batch_size=config.rollout.batch_size,
        **engine_extras(config, engine_class, ref_model, tokenizer),
        **config.rollout.engine_options,
    )
    if config.train.precision != "fp32":
        engine = AutocastSampling(engine, config.train.precision, dp.device)
    return engine


def open_progress(run: Run) -> None:
    """The metrics logger (the main process writes) and the progress bar, from ``run.step``."""
    config, dp = run.config, run.dp
    run.logger = (
        MetricsLogger(
            run.run_dir,
            tensorboard=config.logging.tensorboard,
            wandb=config.logging.wandb,
            config=config.model_dump(mode="json"),
        )
        if dp.is_main
        else SilentLogger()
    )
    run.train_seconds = run.summary["train_seconds"]
    run.bar = tqdm(
        total=config.train.steps,
        initial=run.step,
        desc="train",
        disable=not (config.logging.progress and dp.is_main),
    )


def check_engine(config: Config, engine_class: type, dp: DataParallel) -> None:
    """Refuse, before it starts, an engine that cannot serve this run's layout."""
    name = config.rollout.engine
    if dp.shard_weights and getattr(engine_class, "copies_weights", False):
        raise UserError(
            f"rollout.engine {name!r} copies the policy's weights after each step, which "
            f"{dp.sharding} shards across processes: use DDP (or rollout.engine hf)"
        )
    if config.rollout.max_staleness and not hasattr(engine_class, "submit"):
        raise UserError(
            f"rollout.max_staleness samples beside training: rollout.engine {name!r} samples "
            "between steps; use rollout.engine hf-process or vllm-server"
        )
    if (
        config.rollout.max_staleness
        and dp.enabled
        and getattr(engine_class, "samples_ahead_for_one_process", False)
    ):
        raise UserError(
            f"rollout.max_staleness with rollout.engine {name!r} trains in one process; with "
            "several, use rollout.engine hf-process"
        )


def engine_extras(config: Config, engine_class: type, ref_model, tokenizer) -> dict[str, Any]:
    """What an engine takes beyond the policy: the dtype of its own copy of the weights, and,
    sampling ahead, the reference to score its samples with beside training."""
    extras: dict[str, Any] = {}
    if getattr(engine_class, "copies_weights", False):
        extras["dtype"] = sampling_dtype(config.train.precision)
    ahead = config.rollout.max_staleness and getattr(engine_class, "scores_reference", False)
    if ahead and ref_model is not None:
        logprobs = partial(reference_logprobs, pad_id=tokenizer.pad_token_id, config=config)
        extras["reference"] = ReferenceScorer(ref_model, logprobs)
    return extras


def load_models(config: Config, checkpoint_dir: Path | None, dp: DataParallel):
    """The policy (from ``checkpoint_dir`` when resuming, LoRA adapters added or reloaded), the
    frozen reference policy when β > 0 (else None), and the tokenizer."""
    resume_adapters = checkpoint_dir is not None and config.peft is not None
    precision = config.train.precision
    model, tokenizer = load_policy(
        checkpoint_dir or config.model.name_or_path,
        policy_dtype(precision, config.model.dtype),
        dp.device,
        config.model.trust_remote_code,
        config.model.gradient_checkpointing,
        adapters="train" if resume_adapters else "merge",
        attn_implementation=config.model.attn_implementation,
    )
    if dp.sharding and config.peft is not None:
        raise UserError(f"peft (LoRA) with {dp.sharding} is not supported: use DDP")
    if config.peft is not None and not resume_adapters:
        p = config.peft
        model = add_adapters(model, p.r, p.alpha, p.dropout, p.target_modules)
    ref_model = None
    if config.algo.beta > 0:
        ref_model, _ = load_policy(
            config.model.name_or_path,
            reference_dtype(precision, config.model.dtype),
            dp.device,
            config.model.trust_remote_code,
            attn_implementation=config.model.attn_implementation,
        )
        ref_model.eval().requires_grad_(False)
    return model, ref_model, tokenizer


def runnable_config(config: Config, model, dp: DataParallel) -> Config:
    """``config``, or a copy without ``train.logprob_chunk_tokens`` where the chunked log-probs
    would be wrong for this model or this weight layout (``train.lm_head_fp32``, which takes
    that path, is then an error), and without ``train.packing`` where the model's attention
    would mix packed sequences."""
    if config.train.lm_head_fp32 and (dp.shard_weights or not supports_chunked_logprobs(model)):
        raise UserError(
            "train.lm_head_fp32 computes the output layer apart from the model's forward: it "
            "needs logits = lm_head(hidden state) and unsharded weights (not FSDP / ZeRO-3)"
        )
    if config.train.logprob_chunk_tokens and not supports_chunked_logprobs(model):
        warnings.warn(
            f"{config.model.name_or_path}: logits are not lm_head(hidden state) (e.g. a soft-cap);"
            " computing log-probs from full logits (train.logprob_chunk_tokens ignored)",
            stacklevel=4,  # train()'s caller: runnable_config ← start_run ← train ← caller
        )
        config = config.model_copy(deep=True)
        config.train.logprob_chunk_tokens = None
    if config.train.packing and not supports_packing(model):
        warnings.warn(
            f"{config.model.name_or_path}: packed sequences are not kept apart by this model's "
            "attention; padding micro-batches instead (train.packing ignored)",
            stacklevel=4,
        )
        config = config.model_copy(deep=True)
        config.train.packing = False
    if dp.shard_weights and config.train.logprob_chunk_tokens:
        # the chunked path runs the decoder and the output layer's weight outside the model's
        # forward, where FSDP's or ZeRO-3's hooks would not gather them: full logits instead
        config = config.model_copy(deep=True)
        config.train.logprob_chunk_tokens = None
    return config


def fitting_prompts(problems, tokenizer, config: Config) -> tuple[list[Any], list[list[int]]]:
    """The problems whose encoded prompt fits ``data.max_prompt_tokens``, and those prompts."""
    prompt_ids = encode_prompts(
        problems, tokenizer, config.data.prompt_template, config.data.system_prompt
    )
    keep = [i for i, ids in enumerate(prompt_ids) if len(ids) <= config.data.max_prompt_tokens]
    if not keep:
        raise UserError(
            f"every prompt is longer than data.max_prompt_tokens={config.data.max_prompt_tokens}"
        )
    return [problems[i] for i in keep], [prompt_ids[i] for i in keep]


def restore_training_state(run: Run, checkpoint_dir: Path) -> None:
    """Continue where ``checkpoint_dir`` left off: optimizer, schedule, data order, RNG, step,
    guards, best evaluation, and the summary so far (its weights are already loaded)."""
    state = load_training_state(checkpoint_dir)
    run.dp.load_optimizer_state(run.model, run.optimizer, state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.sampler.load_state_dict(state["sampler"])
    run.source.load_state_dict(state.get("prefetched", []))
    set_rng_state(state["rng"])
    run.step = state["step"]
    if "guards" in state:  # checkpoints from before the guards have none
        run.guards.load_state_dict(state["guards"])
    run.scorer.load_state_dict(state.get("rewards", {}))
    run.best = state.get("best")
    if run.summary_path.is_file():
        run.summary = json.loads(run.summary_path.read_text())
    run.summary["train_seconds"] = state.get("train_seconds", 0.0)


def evaluate_base_policy(run: Run) -> None:
    """Evaluate the policy before training (``eval.before``) into the summary, written now so a
    resumed run does not evaluate it again."""
    with run.dp.full_weights(run.model):
        if run.dp.is_main:
            base = run_eval(run.engine, run.tokenizer, run.config, "base", run.run_dir)
            if base is not None:
                run.summary["eval"]["base"] = {**base, "model": run.config.model.name_or_path}
            run.summary_path.write_text(json.dumps(run.summary, indent=2))
        run.dp.barrier()


def evaluate_starting_policy(run: Run) -> None:
    """The starting policy is the first candidate for best: a run that degrades from its first
    steps can still roll back to where it began."""
    start = periodic_eval(
        run.engine, run.model, run.tokenizer, run.config, run.step, run.run_dir, run.dp
    )
    track_best(run, start)
    run.guards.observe(start)
    run.logger.log(run.step, start)


def train_step(run: Run) -> dict[str, float]:
    """One step (the module docstring): sample and score, build the batch, update the policy
    (or only advance the schedule when no group is left to train on); the step's metrics."""
    t0 = time.perf_counter()
    pad_id = run.tokenizer.pad_token_id
    before = run.sampler.state_dict(), rng_state()
    scorer = run.scorer.at(run.step)  # rewards with a schedule score by this step's stage
    with run.dp.full_weights(run.model):
        try:
            sampled = sample_step(run.source, run.config, scorer, run.step)
        except EngineUnavailable:
            # nothing of this step is kept: the checkpoint resumes by drawing it again
            run.sampler.load_state_dict(before[0])
            set_rng_state(before[1])
            run.source.drop()  # and the rounds sampled ahead
            raise
        generated = sampled.generated
        lengths = [[c.num_tokens for c in group] for group in generated.groups]
        run.scorer.observe(run.step, lengths, generated.per_reward)  # Laser-D's targets
        batch = None
        if len(sampled.kept):
            batch = build_batch(
                sampled.kept, run.model, run.ref_model, pad_id, run.config, run.dp.device, run.dp
            )
            batch.policy_version = sampled.version  # this step's weights, or (ahead) older
    if batch is not None:
        update = policy_update(
            run.model,
            run.ref_model,
            run.optimizer,
            run.scheduler,
            batch,
            pad_id,
            run.config,
            run.dp.device,
            run.dp,
        )
        update = {**batch.metrics, **update}
    else:
        update = skip_update(run.scheduler, run.config)
    run.source.step_done()
    run.step += 1  # the step is taken: a sync that fails now checkpoints it (train())
    if batch is not None:
        sync_engine(run)
    seconds = time.perf_counter() - t0
    run.train_seconds += seconds
    return {
        **rollout_metrics(generated, scorer),
        **scorer.scheduled_values(),
        **sampled.metrics,
        **update,
        "time/step_seconds": seconds,
    }


def sync_engine(run: Run) -> None:
    """Hand the updated weights to the rollout engine; under data parallelism every process
    waits for it, so none samples the next step from the old weights of a shared server."""
    run.engine.sync()
    run.dp.barrier()


def track_best(run: Run, row: dict[str, float]) -> None:
    """Keep the policy with the best held-out accuracy as checkpoints/best (rollbacks)."""
    if run.dp.is_main and (run.best is None or row["eval/accuracy"] > run.best["accuracy"]):
        run.best = {"step": run.step, "accuracy": row["eval/accuracy"], "row": row}
    run.best = run.dp.broadcast(run.best)
    if run.best["step"] == run.step:
        checkpoint(run, "best")


def heed_guards(run: Run, metrics: dict[str, float]) -> None:
    """Show the step's metrics to the guards and act on their alarms: a warning is counted, a
    rollback or a stop settles the step. The guards' counters join the metrics."""
    dp = run.dp
    alarms = dp.broadcast(run.guards.observe(metrics) if dp.is_main else [])
    for alarm in alarms:
        if alarm.action == "rollback" and run.best is None:
            alarm = Alarm(alarm.monitor, "stop", alarm.message + " (no best checkpoint yet)")
        if dp.is_main and not alarm.repeated:
            print(f"frugalrl: step {run.step}: {alarm}", file=sys.stderr, flush=True)
        if alarm.action == "warn":
            run.guards.warnings += 1
            continue
        if alarm.action == "rollback":
            roll_back(run)
        else:
            run.stopped = alarm
        break  # a rollback or a stop settles this step
    metrics["guards/warnings"] = float(run.guards.warnings)
    metrics["guards/rollbacks"] = float(run.guards.rollbacks)


def roll_back(run: Run) -> None:
    """The best checkpoint's weights and optimizer state, a lower learning rate; the step
    count, schedule position and data order go on."""
    best_dir = checkpoint_dir(run.run_dir, "best")
    restore_weights(run.model, best_dir, run.dp)
    run.dp.load_optimizer_state(
        run.model, run.optimizer, load_training_state(best_dir)["optimizer"]
    )
    scale_learning_rate(run.optimizer, run.scheduler, run.config.guards.rollback_lr_factor)
    run.guards.rolled_back(run.best["row"] if run.best else None)
    run.source.drop()  # what was sampled ahead, by the weights rolled back from
    sync_engine(run)  # last: if the engine fails, the checkpoint holds the whole rollback


def log_step(run: Run, metrics: dict[str, float]) -> None:
    """Write the step's metrics and move the progress bar."""
    run.logger.log(run.step, metrics)
    run.bar.update(1)
    run.bar.set_postfix(
        reward=f"{metrics['reward/total/mean']:.3f}",
        acc=f"{metrics.get('train/accuracy', math.nan):.2f}",
        len=f"{metrics['completion/length_mean']:.0f}",
    )


def stop_requested(signals: GracefulStop, dp: DataParallel) -> bool:
    """Whether a signal asked to stop, on any process: every process stops after the same step."""
    interrupted = signals.requested is not None
    if dp.enabled:
        interrupted = dp.sum_floats({"stop": float(interrupted)})["stop"] > 0
    return interrupted


def checkpoint(run: Run, name: str | None = None) -> None:
    """Save the weights and everything a resume needs (checkpoints/step-N, or ``name``)."""
    # Replicated: every process holds the same state, the main one saves it. Sharded: the
    # shards are gathered to the main process first (collectives).
    dp = run.dp
    weights, optimizer_state = (
        dp.model_state(run.model),
        dp.optimizer_state(run.model, run.optimizer),
    )
    # first: with its engine gone the rounds sampled ahead are dropped and the data rewound
    prefetched = run.source.state_dict()
    if dp.is_main:
        save_checkpoint(
            run.run_dir,
            run.step,
            run.model,
            run.tokenizer,
            {
                "optimizer": optimizer_state,
                "scheduler": run.scheduler.state_dict(),
                "sampler": run.sampler.state_dict(),
                "prefetched": prefetched,
                "train_seconds": run.train_seconds,
                "guards": run.guards.state_dict(),
                "rewards": run.scorer.state_dict(),
                "best": run.best,
            },
            keep=run.config.train.save_total_limit,
            weights=weights,
            name=name,
        )
    dp.barrier()


def report_interrupted(run: Run, signal_name: str | None) -> dict[str, Any]:
    """Stopped by a signal before the last step: the summary says where, and how to go on
    (the checkpoint is saved); no final weights or evaluation."""
    if not run.dp.is_main:
        return {}
    summary = run.summary
    summary.update(steps=run.step, train_seconds=run.train_seconds)
    summary["interrupted"] = {"step": run.step, "signal": signal_name or "a signal"}
    run.summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def finish(run: Run, wall0: float) -> dict[str, Any]:
    """Save the final weights, evaluate them if asked, and write the summary and the report."""
    config, dp, summary = run.config, run.dp, run.summary
    final_dir = run.run_dir / FINAL
    weights = dp.model_state(run.model)
    if dp.is_main:
        run.model.save_pretrained(final_dir, **({} if weights is None else {"state_dict": weights}))
        run.tokenizer.save_pretrained(final_dir)
        summary["saved_weights_bytes"] = weights_bytes(final_dir)
        base_dir = Path(config.model.name_or_path)
        if config.peft is not None and base_dir.is_dir():
            summary["base_weights_bytes"] = weights_bytes(base_dir)
    if config.eval.after:
        with dp.full_weights(run.model):
            if dp.is_main:
                final = run_eval(run.engine, run.tokenizer, config, "final", run.run_dir)
                if final is not None:
                    summary["eval"]["final"] = {**final, "model": str(final_dir)}
            dp.barrier()
    if not dp.is_main:
        return {}  # the main process reports
    summary.update(
        steps=run.step,
        train_seconds=run.train_seconds,
        wall_seconds=summary.get("wall_seconds", 0.0) + time.perf_counter() - wall0,
    )
    summary["guards"] = {"warnings": run.guards.warnings, "rollbacks": run.guards.rollbacks}
    if run.best is not None:
        summary["best"] = {
            "step": run.best["step"],
            "heldout_accuracy": run.best["accuracy"],
            "checkpoint": str(checkpoint_dir(run.run_dir, "best")),
        }
    if run.stopped is not None:
        summary["stopped"] = {
            "step": run.step,
            "monitor": run.stopped.monitor,
            "reason": str(run.stopped),
        }
    base, final = summary["eval"].get("base"), summary["eval"].get("final")
    if base and final:
        summary["accuracy_gain_points"] = 100 * (final["accuracy"] - base["accuracy"])
        summary["token_change_percent"] = 100 * (final["mean_tokens"] / base["mean_tokens"] - 1)
    run.summary_path.write_text(json.dumps(summary, indent=2))
    return summary


def scale_learning_rate(optimizer, scheduler, factor: float) -> None:
    """Multiply the schedule's base learning rates by ``factor``, from the current step on."""
    scheduler.base_lrs = [lr * factor for lr in scheduler.base_lrs]
    for group, base, fn in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * fn(scheduler.last_epoch)


def periodic_eval(
    engine, model, tokenizer, config: Config, step: int, run_dir: Path, dp: DataParallel
) -> dict[str, float]:
    """Held-out accuracy and length at ``step`` (main process; the others wait), as metrics."""
    t0 = time.perf_counter()
    stats = None
    with dp.full_weights(model):
        if dp.is_main:
            label = f"step-{step:06d}"
            stats = run_eval(engine, tokenizer, config, label, run_dir, periodic=True)
        dp.barrier()
    if not dp.is_main or stats is None:
        return {}
    keys = ("accuracy", "mean_tokens", "truncated_fraction")
    metrics = {f"eval/{k}": math.nan if stats[k] is None else stats[k] for k in keys}
    return metrics | {"time/eval_seconds": time.perf_counter() - t0}


class SilentLogger:
    """The metrics logger of a process that does not write (data-parallel, not the main one)."""

    def __enter__(self) -> SilentLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def log(self, step: int, metrics: dict[str, float]) -> None:
        pass
