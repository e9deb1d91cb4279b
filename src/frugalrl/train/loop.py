"""The GRPO-family training loop: generate, score, compute advantages, update, log, checkpoint.

One step (PAPERS.md §1, DESIGN.md "data flow"):

1. draw ``prompts_per_step`` problems and sample ``G = num_generations`` completions each;
2. score each group with the recipe's weighted rewards (None → excluded from the loss);
3. advantages from the named estimator, per group;
4. ``num_iterations`` (μ) passes of the PPO-clip loss over the batch in micro-batches
   (gradient accumulation), one optimizer step per pass, against the log-probs the batch was
   sampled with; optional KL to a frozen reference when β > 0.

Which estimator, aggregation, KL estimator, rewards and engine are used is config, never a
branch here.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from frugalrl.algo import group_advantages, ppo_clip_loss
from frugalrl.algo.logprobs import completion_logprobs, pack_batch
from frugalrl.config import Config
from frugalrl.data import build_messages, load_problems, render_prompt
from frugalrl.data.sampler import PromptSampler
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import Benchmark, load_benchmark
from frugalrl.eval.runner import EvalSettings, evaluate_engine
from frugalrl.policy import load_policy, pick_device
from frugalrl.rewards import RewardSpec
from frugalrl.rewards.registry import resolve_reward
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.rollout import ROLLOUT_ENGINES, Completion, SamplingParams
from frugalrl.sample import Sample
from frugalrl.train.checkpoint import (
    list_checkpoints,
    load_training_state,
    save_checkpoint,
    set_rng_state,
)
from frugalrl.train.metrics import MetricsLogger
from frugalrl.train.schedule import lr_multiplier


@dataclass
class RolloutBatch:
    """One step's experience, flattened to one row per completion."""

    prompt_ids: list[list[int]]
    completions: list[Completion]
    advantages: torch.Tensor  # (N,)
    in_loss: torch.Tensor  # (N,) bool: scored, and not masked as truncated
    metrics: dict[str, float]


def encode_prompts(problems: list[dict], tokenizer, config: Config) -> list[list[int]]:
    ids = []
    for p in problems:
        messages = build_messages(
            p["problem"], config.data.prompt_template, config.data.system_prompt
        )
        text = render_prompt(tokenizer, messages)
        ids.append(tokenizer(text, add_special_tokens=False)["input_ids"])
    return ids


def collect_rollouts(engine, problems, prompt_ids, config: Config, scorer) -> RolloutBatch:
    """Sample G completions per prompt, score each group, turn rewards into advantages."""
    r = config.rollout
    params = SamplingParams(r.temperature, r.top_p, r.max_completion_tokens)
    t0 = time.perf_counter()
    groups = engine.generate(prompt_ids, r.num_generations, params)
    gen_seconds = time.perf_counter() - t0

    t0 = time.perf_counter()
    scored_batch = scorer.score(
        [
            [Sample(c.text, c.num_tokens, c.finished, problem) for c in group]
            for problem, group in zip(problems, groups, strict=True)
        ]
    )
    score_seconds = time.perf_counter() - t0

    def flat(values: list[list[float | None]]) -> list[float]:
        return [math.nan if v is None else v for group in values for v in group]

    per_reward = {name: flat(v) for name, v in scored_batch.per_reward.items()}
    totals = flat(scored_batch.totals)
    rewards = torch.tensor(totals, dtype=torch.float32).view(len(problems), r.num_generations)
    advantages = group_advantages(config.algo.advantage, rewards, config.algo.advantage_eps)
    completions = [c for group in groups for c in group]
    scored = ~torch.isnan(rewards.flatten())
    finished = torch.tensor([c.finished for c in completions])
    in_loss = scored & (finished | (not config.algo.mask_truncated))

    lengths = np.array([c.num_tokens for c in completions])
    metrics = {
        "reward/unscored_fraction": float(1 - scored.float().mean()),
        "completion/length_mean": float(lengths.mean()),
        "completion/length_max": float(lengths.max()),
        "completion/truncated_fraction": float(1 - finished.float().mean()),
        "train/zero_variance_groups": zero_variance_fraction(rewards),
        "time/generation_seconds": gen_seconds,
        "time/scoring_seconds": score_seconds,
        "reward/failed_groups": float(sum(scored_batch.failures.values())),
        "reward/timed_out_groups": float(scored_batch.timed_out),
        "throughput/generated_tokens_per_second": float(lengths.sum() / max(gen_seconds, 1e-9)),
    }
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
    prompts_flat = [list(p) for p in prompt_ids for _ in range(r.num_generations)]
    return RolloutBatch(prompts_flat, completions, advantages.flatten(), in_loss, metrics)


def zero_variance_fraction(rewards: torch.Tensor) -> float:
    """Share of groups whose scored rewards are all equal: they get zero advantage, no signal."""
    hi = torch.where(torch.isnan(rewards), -math.inf, rewards).amax(dim=1)
    lo = torch.where(torch.isnan(rewards), math.inf, rewards).amin(dim=1)
    return float((~(hi > lo)).float().mean())


def micro_batches(n: int, size: int) -> list[list[int]]:
    return [list(range(i, min(i + size, n))) for i in range(0, n, size)]


@torch.no_grad()
def batch_logprobs(
    model, batch: RolloutBatch, pad_id: int, config: Config, device
) -> list[torch.Tensor]:
    """Log-probs of every micro-batch under ``model`` (old policy or reference), no grad."""
    out = []
    for idx in micro_batches(len(batch.completions), config.train.micro_batch_size):
        packed = _pack(batch, idx, pad_id, device)
        logp, _ = completion_logprobs(model, packed, config.rollout.temperature)
        out.append(logp)
    return out


def _pack(batch: RolloutBatch, idx: list[int], pad_id: int, device) -> dict[str, torch.Tensor]:
    packed = pack_batch(
        [batch.prompt_ids[i] for i in idx], [batch.completions[i].token_ids for i in idx], pad_id
    )
    return {k: v.to(device) for k, v in packed.items()}


def policy_update(
    model, ref_model, optimizer, scheduler, batch: RolloutBatch, pad_id: int, config: Config, device
) -> dict[str, float]:
    """μ optimizer steps on one batch; returns the averaged loss statistics."""
    a = config.algo
    chunks = micro_batches(len(batch.completions), config.train.micro_batch_size)
    # With one pass the policy has not moved since sampling: old log-probs = current, detached.
    old_logps = (
        batch_logprobs(model, batch, pad_id, config, device) if a.num_iterations > 1 else None
    )
    ref_logps = batch_logprobs(ref_model, batch, pad_id, config, device) if ref_model else None
    stats: Counter = Counter()
    model.train()
    for _ in range(a.num_iterations):
        for k, idx in enumerate(chunks):
            packed = _pack(batch, idx, pad_id, device)
            logp, entropy = completion_logprobs(
                model, packed, config.rollout.temperature, with_entropy=True
            )
            mask = packed["completion_mask"] & batch.in_loss[idx].to(device).unsqueeze(-1)
            out = ppo_clip_loss(
                logp,
                old_logps[k] if old_logps else logp.detach(),
                batch.advantages[idx].to(device),
                mask,
                eps_low=a.epsilon_low,
                eps_high=a.epsilon_high,
                ref_logp=ref_logps[k] if ref_logps else None,
                beta=a.beta,
                kl_estimator=a.kl_estimator,
                aggregation=a.loss_aggregation,
                max_completion_length=config.rollout.max_completion_tokens,
            )
            (out.loss / len(chunks)).backward()
            valid = mask.sum().clamp(min=1)
            stats["loss"] += out.loss.item() / len(chunks)
            stats["clip_fraction"] += out.clip_fraction / len(chunks)
            stats["kl"] += out.kl / len(chunks)
            stats["entropy"] += float((entropy * mask).sum() / valid) / len(chunks)
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), config.optim.max_grad_norm)
        stats["grad_norm"] += float(grad_norm)
        stats["lr"] += scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    return {f"train/{k}": v / a.num_iterations for k, v in stats.items()}


def build_optimizer(model, config: Config):
    """AdamW with linear warm-up then cosine (or constant); one scheduler step per update."""
    o = config.optim
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=o.lr, betas=o.betas, weight_decay=o.weight_decay
    )
    total_updates = config.train.steps * config.algo.num_iterations
    warmup = round(o.warmup_ratio * total_updates)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: lr_multiplier(s, total_updates, warmup, o.lr_scheduler, o.min_lr_ratio),
    )
    return optimizer, scheduler


def run_eval(engine, tokenizer, config: Config, label: str, run_dir: Path) -> dict[str, Any] | None:
    """Evaluate the current policy on the held-out set and ``eval.benchmarks`` into
    ``run_dir/eval/label``; returns the held-out statistics (else the overall ones)."""
    e = config.eval
    benchmarks = [load_benchmark(spec, limit=e.num_problems) for spec in e.benchmarks]
    if e.path is not None:
        heldout = load_problems(
            e.path,
            problem_field=config.data.problem_field,
            answer_field=config.data.answer_field,
            limit=e.num_problems,
        )
        benchmarks.insert(0, Benchmark("heldout", heldout))
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
        progress=config.logging.progress,
        title=f"{config.name}: {label}",
    )
    return summary["benchmarks"]["heldout"] if e.path is not None else summary["overall"]


def train(config: Config, resume: bool = False) -> dict[str, Any]:
    """Train per ``config``; with ``resume``, continue from the run directory's last checkpoint."""
    wall0 = time.perf_counter()
    run_dir = config.run_dir
    checkpoints = list_checkpoints(run_dir) if resume else []
    if resume and not checkpoints:
        raise UserError(f"--resume: no complete checkpoint in {run_dir / 'checkpoints'}")
    if not resume and list_checkpoints(run_dir):
        raise UserError(f"{run_dir} already holds a run; use --resume, or another train.output_dir")
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(config.to_yaml())

    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)
    device = pick_device(config.train.device)
    problems = load_problems(
        config.data.path,
        problem_field=config.data.problem_field,
        answer_field=config.data.answer_field,
        split=config.data.split,
        limit=config.data.limit,
    )
    start_path = checkpoints[-1] if checkpoints else config.model.name_or_path
    model, tokenizer = load_policy(
        start_path,
        config.model.dtype,
        device,
        config.model.trust_remote_code,
        config.model.gradient_checkpointing,
    )
    ref_model = None
    if config.algo.beta > 0:
        ref_model, _ = load_policy(
            config.model.name_or_path, config.model.dtype, device, config.model.trust_remote_code
        )
        ref_model.eval().requires_grad_(False)
    engine = ROLLOUT_ENGINES.get(config.rollout.engine)(
        model, tokenizer, batch_size=config.rollout.batch_size
    )

    prompt_ids = encode_prompts(problems, tokenizer, config)
    keep = [i for i, ids in enumerate(prompt_ids) if len(ids) <= config.data.max_prompt_tokens]
    if not keep:
        raise UserError(
            f"every prompt is longer than data.max_prompt_tokens={config.data.max_prompt_tokens}"
        )
    problems = [problems[i] for i in keep]
    prompt_ids = [prompt_ids[i] for i in keep]

    optimizer, scheduler = build_optimizer(model, config)
    sampler = PromptSampler(len(problems), config.train.seed)
    step = 0
    summary_path = run_dir / "summary.json"
    summary: dict[str, Any] = {
        "recipe": config.name,
        "model": config.model.name_or_path,
        "run_dir": str(run_dir),
        "eval": {},
        "train_seconds": 0.0,
    }
    if checkpoints:
        state = load_training_state(checkpoints[-1])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        sampler.load_state_dict(state["sampler"])
        set_rng_state(state["rng"])
        step = state["step"]
        if summary_path.is_file():
            summary = json.loads(summary_path.read_text())
        summary["train_seconds"] = state.get("train_seconds", 0.0)

    if config.eval.before and "base" not in summary["eval"]:
        base = run_eval(engine, tokenizer, config, "base", run_dir)
        if base is not None:
            summary["eval"]["base"] = {**base, "model": config.model.name_or_path}
        summary_path.write_text(json.dumps(summary, indent=2))

    scorer = RewardScorer(
        [RewardSpec(r.name, r.weight, r.params) for r in config.rewards],
        workers=config.scoring.resolved_workers(),
        timeout=config.scoring.timeout_seconds,
    )
    logger = MetricsLogger(
        run_dir,
        tensorboard=config.logging.tensorboard,
        wandb=config.logging.wandb,
        config=config.model_dump(mode="json"),
    )
    train_seconds = summary["train_seconds"]
    bar = tqdm(
        total=config.train.steps, initial=step, desc="train", disable=not config.logging.progress
    )

    def checkpoint() -> None:
        save_checkpoint(
            run_dir,
            step,
            model,
            tokenizer,
            {
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "sampler": sampler.state_dict(),
                "train_seconds": train_seconds,
            },
            keep=config.train.save_total_limit,
        )

    with logger, scorer:
        while step < config.train.steps:
            t0 = time.perf_counter()
            idx = sampler.next(config.train.prompts_per_step)
            batch = collect_rollouts(
                engine,
                [problems[i] for i in idx],
                [prompt_ids[i] for i in idx],
                config,
                scorer,
            )
            update = policy_update(
                model,
                ref_model,
                optimizer,
                scheduler,
                batch,
                tokenizer.pad_token_id,
                config,
                device,
            )
            engine.sync()
            step += 1
            seconds = time.perf_counter() - t0
            train_seconds += seconds
            metrics = {
                **batch.metrics,
                **update,
                "time/step_seconds": seconds,
            }
            logger.log(step, metrics)
            bar.update(1)
            bar.set_postfix(
                reward=f"{metrics['reward/total/mean']:.3f}",
                acc=f"{metrics.get('train/accuracy', math.nan):.2f}",
                len=f"{metrics['completion/length_mean']:.0f}",
            )
            if step == config.train.steps or (
                config.train.save_every and step % config.train.save_every == 0
            ):
                checkpoint()
    bar.close()

    final_dir = run_dir / "final"
    model.save_pretrained(final_dir)
    tokenizer.save_pretrained(final_dir)
    if config.eval.after:
        final = run_eval(engine, tokenizer, config, "final", run_dir)
        if final is not None:
            summary["eval"]["final"] = {**final, "model": str(final_dir)}
    summary.update(
        steps=step,
        train_seconds=train_seconds,
        wall_seconds=summary.get("wall_seconds", 0.0) + time.perf_counter() - wall0,
    )
    base, final = summary["eval"].get("base"), summary["eval"].get("final")
    if base and final:
        summary["accuracy_gain_points"] = 100 * (final["accuracy"] - base["accuracy"])
        summary["token_change_percent"] = 100 * (final["mean_tokens"] / base["mean_tokens"] - 1)
    summary_path.write_text(json.dumps(summary, indent=2))
    from frugalrl.report import write_run_report

    summary["report"] = str(write_run_report(run_dir))
    return summary
