"""One GRPO step, frugalrl against TRL's GRPOTrainer: same model, data, rewards, hyper-parameters.

    python benchmarks/step_vs_trl.py [--configs small large] [--steps 8] [--json PATH]

For each model config (small ≈ 1M, large ≈ 30M parameters; a Qwen2 built and saved locally,
loaded by both through ``from_pretrained``) the script runs, each in a fresh process so that
peak memory is its own and neither warms the other's caches:

1. TRL's ``GRPOTrainer`` for ``--steps`` steps, recording the wall time of every optimizer step
   and of the ``generate`` call inside it, and the completions of its first step;
2. ``frugalrl train`` (the real loop, ``frugalrl.train.loop.train``) for ``--steps`` steps;
3. frugalrl's update on TRL's first batch (same prompts, completions and rewards), from the
   same initial weights: the first-step loss and gradient norm must agree with TRL's.

Both use G completions for each of P prompts per step, the demo task's prompts and answers,
the demo recipe's rewards (accuracy + open-rs format), β = 0, μ = 1, DAPO's token-level loss (TRL's default ``loss_type="dapo"``,
frugalrl's ``token_mean``), temperature 1, AdamW with a constant learning rate. Step times are
averaged over the steps after the first (warm-up). Throughput is tokens (prompt + completion)
per second of step time, since the two runs sample different completions.

The model is first fine-tuned on the demo's reasoning traces for ``--warm-start-steps`` steps
(16 traces each), so that, as in real runs, completions end at varied lengths (10-120 tokens
after 40 steps) and some groups get equal rewards for every sample; a random model writes to
the length cap and never solves a problem. frugalrl forms micro-batches by a token budget
(``--micro-batch-tokens``, at most ``--micro-batch`` rows); TRL pads micro-batches of
``--micro-batch`` rows.

Each config runs at each of ``--precisions`` (default both): fp32, and bf16 mixed precision
(frugalrl's ``train.precision: bf16``, TRL's ``bf16=True``: both autocast over fp32 weights).

Goal (issue 19): frugalrl ≥ 3× TRL's end-to-end tokens/s at both precisions on the large (28.5M)
config; first-step losses on TRL's batch equal to 1e-4 in fp32.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = {
    # name: (hidden, intermediate, layers, heads, kv heads)
    "small": (128, 384, 4, 4, 2),
    "large": (512, 1536, 9, 8, 4),
}


def peak_rss_mib() -> float:
    """This process's peak resident memory. VmHWM, not ru_maxrss: Linux carries ru_maxrss over
    fork + exec, so a spawned child would report its parent's peak if that was higher."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- shared setup


def build_assets(root: Path, config: str, args) -> dict:
    """The model (saved in HF format), the training problems and the prompts both runs use."""
    import torch

    from frugalrl.data import encode_prompts
    from frugalrl.data.prompts import build_messages, render_prompt
    from frugalrl.demo.model import build_model, build_trace_tokenizer, save_pretrained
    from frugalrl.demo.sft import supervised_finetune
    from frugalrl.demo.task import make_split

    torch.set_num_threads(args.threads)
    traces = make_split("train", 2000, 0, with_traces=True)
    tokenizer = build_trace_tokenizer(traces)
    hidden, inter, layers, heads, kv = CONFIGS[config]
    model = build_model(
        len(tokenizer),
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
    )
    if args.warm_start_steps:
        prompts = [render_prompt(tokenizer, build_messages(r["problem"], "demo")) for r in traces]
        supervised_finetune(
            model,
            tokenizer,
            prompts,
            [r["completion"] for r in traces],
            steps=args.warm_start_steps,
            batch_size=16,
            lr=1e-3,
            progress=False,
        )
    model_dir = save_pretrained(model, tokenizer, root / "model")
    problems = make_split("train", 512, 7)
    data = root / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in problems))
    texts = [render_prompt(tokenizer, build_messages(r["problem"], "demo")) for r in problems]
    ids = encode_prompts(problems, tokenizer, "demo", None)
    assert all(
        tokenizer(t, add_special_tokens=False)["input_ids"] == i
        for t, i in zip(texts, ids, strict=True)
    )
    return {
        "model_dir": str(model_dir),
        "data": str(data),
        "prompts": texts,
        "answers": [r["answer"] for r in problems],
        "parameters": sum(p.numel() for p in model.parameters()),
        "prompt_tokens_mean": statistics.mean(len(i) for i in ids),
    }


REWARDS = [("accuracy", {}), ("format", {"schema": "open-rs"})]


def score(name: str, params: dict, texts, lengths, finished, answers) -> list[float]:
    """The frugalrl reward ``name`` of each completion, as a list of floats (None → NaN)."""
    from frugalrl.rewards.registry import resolve_reward
    from frugalrl.sample import Sample

    samples = [
        Sample(t, n, f, {"answer": a})
        for t, n, f, a in zip(texts, lengths, finished, answers, strict=True)
    ]
    return [float("nan") if v is None else v for v in resolve_reward(name)(samples, **params)]


# ---------------------------------------------------------------- TRL


def run_trl(assets: dict, args, out: Path) -> None:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.set_num_threads(args.threads)
    tokenizer = AutoTokenizer.from_pretrained(assets["model_dir"])
    model = AutoModelForCausalLM.from_pretrained(assets["model_dir"], dtype=torch.float32)
    eos = tokenizer.eos_token_id
    first_batch: list[dict] = []

    def make_reward(name, params):
        def reward(prompts, completions, completion_ids, answer, **_):
            lengths = [len(c) for c in completion_ids]
            finished = [bool(c) and c[-1] == eos for c in completion_ids]
            values = score(name, params, completions, lengths, finished, answer)
            if name == REWARDS[0][0] and not first_batch:
                first_batch.extend(
                    {"prompt": p, "completion_ids": list(c), "answer": a}
                    for p, c, a in zip(prompts, completion_ids, answer, strict=True)
                )
            return values

        reward.__name__ = name
        return reward

    completions = args.prompts * args.generations
    config = GRPOConfig(
        output_dir=str(out / "trl"),
        per_device_train_batch_size=args.micro_batch,
        gradient_accumulation_steps=completions // args.micro_batch,
        num_generations=args.generations,
        max_completion_length=args.max_tokens,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
        beta=0.0,
        num_iterations=1,
        loss_type="dapo",
        learning_rate=args.lr,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        adam_beta2=0.99,
        max_grad_norm=1.0,
        max_steps=args.steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=args.precision == "bf16",  # autocast over fp32 weights, as frugalrl's bf16
        seed=args.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    dataset = datasets.Dataset.from_list(
        [
            {"prompt": p, "answer": a}
            for p, a in zip(assets["prompts"], assets["answers"], strict=True)
        ]
    )
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=[make_reward(n, p) for n, p in REWARDS],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    step_times: list[float] = []
    generation_times: list[float] = []
    real_generate = model.generate

    def timed_generate(*a, **k):
        t0 = time.perf_counter()
        result = real_generate(*a, **k)
        generation_times.append(time.perf_counter() - t0)
        return result

    model.generate = timed_generate

    class StepTimer(TrainerCallback):
        def on_step_begin(self, *_, **__):
            self.t0 = time.perf_counter()

        def on_step_end(self, *_, **__):
            step_times.append(time.perf_counter() - self.t0)

    trainer.add_callback(StepTimer())
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    tokens = [h.get("num_tokens") for h in trainer.state.log_history if "num_tokens" in h]
    result = {
        "step_seconds": step_times,
        "generation_seconds": generation_times,
        "first_loss": logs[0]["loss"],
        "first_grad_norm": logs[0]["grad_norm"],
        "completion_length_mean": [h.get("completions/mean_length") for h in logs],
        "num_tokens": tokens,
        "peak_rss_mib": peak_rss_mib(),
        "first_batch": first_batch,
    }
    (out / "trl.json").write_text(json.dumps(result))


# ---------------------------------------------------------------- frugalrl


def frugalrl_config(assets: dict, args, run_dir: Path, **extra):
    from frugalrl.config import load_config

    completions = args.prompts * args.generations
    overrides = [
        f"model.name_or_path={assets['model_dir']}",
        f"data.path={assets['data']}",
        f"train.output_dir={run_dir}",
        f"train.steps={args.steps}",
        f"train.prompts_per_step={args.prompts}",
        f"train.micro_batch_size={args.micro_batch}",
        f"train.micro_batch_tokens={args.micro_batch_tokens or 'null'}",
        f"train.threads={args.threads}",
        f"train.seed={args.seed}",
        f"train.precision={args.precision}",
        "train.save_every=0",
        f"rollout.num_generations={args.generations}",
        f"rollout.max_completion_tokens={args.max_tokens}",
        f"rollout.batch_size={completions}",
        "rollout.temperature=1.0",
        "rollout.top_p=1.0",
        "algo.beta=0.0",
        "algo.num_iterations=1",
        "algo.loss_aggregation=token_mean",
        "algo.mask_truncated=false",
        f"optim.lr={args.lr}",
        "optim.lr_scheduler=constant",
        "optim.warmup_ratio=0",
        "eval.before=false",
        "eval.after=false",
        "logging.progress=false",
        "logging.tensorboard=false",
        "scoring.workers=0",
        *[f"{k}={v}" for k, v in extra.items()],
    ]
    config = load_config("recipes/demo.yaml", overrides)
    config.rewards = [
        type(config.rewards[0]).model_validate({"name": n, "weight": 1.0, **p}) for n, p in REWARDS
    ]
    return config


def run_frugalrl(assets: dict, args, out: Path) -> None:
    from frugalrl.train.loop import train
    from frugalrl.train.metrics import read_metrics

    config = frugalrl_config(assets, args, out / "frugalrl")
    train(config)
    rows = read_metrics(config.run_dir / "metrics.jsonl")
    result = {
        "step_seconds": [r["time/step_seconds"] for r in rows],
        "generation_seconds": [r["time/generation_seconds"] for r in rows],
        "completion_length_mean": [r["completion/length_mean"] for r in rows],
        "trained_fraction": [r.get("train/trained_fraction") for r in rows],
        "peak_rss_mib": peak_rss_mib(),
    }
    (out / "frugalrl.json").write_text(json.dumps(result))


def replay_first_batch(assets: dict, args, out: Path) -> None:
    """frugalrl's update on TRL's first batch, from the same initial weights."""
    import torch

    from frugalrl.policy import load_policy
    from frugalrl.rollout import Completion
    from frugalrl.train.loop import build_batch, build_optimizer
    from frugalrl.train.rollout_source import ScoredGroups
    from frugalrl.train.update import policy_update

    torch.set_num_threads(args.threads)
    trl = json.loads((out / "trl.json").read_text())
    config = frugalrl_config(assets, args, out / "replay")
    model, tokenizer = load_policy(assets["model_dir"], "float32", torch.device("cpu"))
    eos = tokenizer.eos_token_id
    rows = trl["first_batch"]
    g = args.generations
    groups, prompt_ids, totals = [], [], []
    for start in range(0, len(rows), g):
        group = rows[start : start + g]
        assert len({r["prompt"] for r in group}) == 1, "TRL's batch is not in groups of G"
        prompt_ids.append(tokenizer(group[0]["prompt"], add_special_tokens=False)["input_ids"])
        comps = []
        for r in group:
            ids = tuple(r["completion_ids"])
            finished = bool(ids) and ids[-1] == eos
            text = tokenizer.decode(ids[:-1] if finished else ids, skip_special_tokens=True)
            comps.append(Completion(ids, text, finished))
        groups.append(comps)
        answers = [r["answer"] for r in group]
        per_reward = [
            score(
                n,
                p,
                [c.text for c in comps],
                [c.num_tokens for c in comps],
                [c.finished for c in comps],
                answers,
            )
            for n, p in REWARDS
        ]
        totals.append([sum(v) for v in zip(*per_reward, strict=True)])
    rollouts = ScoredGroups(prompt_ids, groups, totals, {})
    batch = build_batch(rollouts, model, None, tokenizer.pad_token_id, config, "cpu")
    optimizer, scheduler = build_optimizer(model, config)
    metrics = policy_update(
        model, None, optimizer, scheduler, batch, tokenizer.pad_token_id, config, "cpu"
    )
    result = {"first_loss": metrics["train/loss"], "first_grad_norm": metrics["train/grad_norm"]}
    (out / "replay.json").write_text(json.dumps(result))


# ---------------------------------------------------------------- driver


def in_child(target, *args) -> None:
    process = mp.get_context("spawn").Process(target=target, args=args)
    process.start()
    process.join()
    if process.exitcode != 0:
        sys.exit(f"{target.__name__} failed (exit {process.exitcode})")


def tokens_per_step(result: dict, prompt_tokens: float, completions: int) -> list[float]:
    return [(prompt_tokens + length) * completions for length in result["completion_length_mean"]]


def summarize(name: str, assets: dict, args, out: Path) -> dict:
    trl = json.loads((out / "trl.json").read_text())
    ours = json.loads((out / "frugalrl.json").read_text())
    replay = json.loads((out / "replay.json").read_text())
    completions = args.prompts * args.generations
    prompt_tokens = assets["prompt_tokens_mean"]
    rows = {}
    for label, r in (("TRL", trl), ("frugalrl", ours)):
        timed = slice(1, None) if len(r["step_seconds"]) > 1 else slice(None)
        step = statistics.mean(r["step_seconds"][timed])
        gen = statistics.mean(r["generation_seconds"][timed])
        tokens = statistics.mean(tokens_per_step(r, prompt_tokens, completions)[timed])
        rows[label] = {
            "step_seconds": step,
            "generation_seconds": gen,
            "training_seconds": step - gen,
            "completion_tokens_mean": statistics.mean(r["completion_length_mean"][timed]),
            "tokens_per_second": tokens / step,
            "peak_rss_mib": r["peak_rss_mib"],
        }
    return {
        "config": name,
        "precision": args.precision,
        "parameters": assets["parameters"],
        "rows": rows,
        "throughput_ratio": rows["frugalrl"]["tokens_per_second"]
        / rows["TRL"]["tokens_per_second"],
        "step_time_ratio": rows["TRL"]["step_seconds"] / rows["frugalrl"]["step_seconds"],
        "first_loss": {"TRL": trl["first_loss"], "frugalrl": replay["first_loss"]},
        "first_grad_norm": {"TRL": trl["first_grad_norm"], "frugalrl": replay["first_grad_norm"]},
        "trained_fraction": statistics.mean(f for f in ours["trained_fraction"] if f is not None),
    }


def print_table(results: list[dict], args) -> None:
    print(
        f"\nGRPO step, frugalrl vs TRL: {args.prompts} prompts x {args.generations} completions, "
        f"<= {args.max_tokens} tokens, micro-batch {args.micro_batch}, beta 0, mu 1, "
        f"{args.threads} threads, mean of steps 2-{args.steps}"
    )
    header = (
        f"{'config':<19}{'run':<10}{'step s':>8}{'gen s':>8}{'train s':>9}{'compl tok':>10}"
        f"{'tok/s':>9}{'peak RSS MiB':>14}"
    )
    print(header)
    print("-" * len(header))
    for res in results:
        label = f"{res['config']} {res['parameters'] / 1e6:.1f}M {res['precision']}"
        for run, r in res["rows"].items():
            print(
                f"{label:<19}{run:<10}{r['step_seconds']:>8.2f}{r['generation_seconds']:>8.2f}"
                f"{r['training_seconds']:>9.2f}{r['completion_tokens_mean']:>10.1f}"
                f"{r['tokens_per_second']:>9.0f}{r['peak_rss_mib']:>14.0f}"
            )
            label = ""
        loss, norm = res["first_loss"], res["first_grad_norm"]
        ok = abs(loss["TRL"] - loss["frugalrl"]) <= 1e-4
        print(
            f"{'':<19}ratio: throughput frugalrl/TRL {res['throughput_ratio']:.2f}x, "
            f"step time TRL/frugalrl {res['step_time_ratio']:.2f}x; completions trained "
            f"{res['trained_fraction']:.0%}"
        )
        print(
            f"{'':<19}first-step loss TRL {loss['TRL']:.6f} frugalrl {loss['frugalrl']:.6f} "
            f"({'equal to 1e-4' if ok else 'DIFFERENT'}); grad norm TRL {norm['TRL']:.5f} "
            f"frugalrl {norm['frugalrl']:.5f}"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", nargs="+", default=["small", "large"], choices=CONFIGS)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--warm-start-steps", type=int, default=40)
    parser.add_argument(
        "--precisions",
        nargs="+",
        default=["fp32", "bf16"],
        choices=["fp32", "bf16"],
        help="each run at each: fp32, and bf16 mixed precision (TRL's bf16=True)",
    )
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if (args.prompts * args.generations) % args.micro_batch:
        parser.error("--micro-batch must divide prompts x generations (TRL's accumulation)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.configs:
            root = Path(tmp) / name
            root.mkdir()
            assets = build_assets(root, name, args)
            for precision in args.precisions:
                run_args = argparse.Namespace(**{**vars(args), "precision": precision})
                out = root / precision
                out.mkdir()
                in_child(run_trl, assets, run_args, out)
                in_child(run_frugalrl, assets, run_args, out)
                in_child(replay_first_batch, assets, run_args, out)
                results.append(summarize(name, assets, run_args, out))
    print_table(results, args)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
