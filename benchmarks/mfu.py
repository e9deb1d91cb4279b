"""Model-FLOP utilisation of a full GRPO step: the machine's measured fp32 matmul peak, and the
useful FLOP/s of the real training loop (``frugalrl.train.loop.train``, the demo recipe) on a
~30M-parameter Qwen2 built offline, per phase (generation, training) and for the whole step.

    python benchmarks/mfu.py [--steps 4] [--prompts 16] [--generations 8] [--max-tokens 128]
        [--hidden 512 --intermediate 1536 --layers 9 --heads 8 --kv-heads 4] [--threads N]
        [--json PATH]
    python benchmarks/mfu.py --shape qwen2-0.5b --dtype bfloat16 --device cuda   # on a GPU

``--shape qwen2-0.5b`` builds a randomly initialised model of Qwen2-0.5B's shape (hidden 896,
24 layers, 14/2 heads, embedding of 151,936 rows, of which the demo tokenizer uses a few
hundred: ids beyond it decode to nothing), for step time and peak memory at a real model's size
without a model hub. The peak memory reported is the device's (``torch.cuda``) on a GPU and the
process's peak RSS on a CPU.

FLOP convention (stated in the output too): a forward costs 2·N FLOPs per token and a forward +
backward 6·N, with N the parameters that do a matmul for that token: the non-embedding
parameters for every token, plus the output layer (vocab × hidden, tied to the embedding) for
the tokens whose logits are computed (completion tokens; generation computes logits for each
generated token only). Attention-score FLOPs are not counted. Only useful tokens count: prompt
padding, padding to the longest completion, and rows that keep decoding after their EOS are
compute the loop spends but not model FLOPs.

* generation: prefill of each prompt (once per group: the G samples share it) plus one forward
  per generated token, 2·N per token;
* training: the policy forward + backward, 6·N per token of each completion trained on (prompt +
  completion; the loop may skip completions whose loss terms are exactly 0, see
  ``train/trained_fraction``), once per pass (μ), plus 2·N per token for the frozen reference's
  forward when β > 0 (the demo recipe's β = 0.04; ``--beta 0`` drops it) and for the old
  log-probs when μ > 1.

MFU = useful FLOP/s ÷ the best ``torch.mm`` rate measured here at the same thread count, in the
dtype the products run in: fp32, or bf16 with ``--precision bf16`` (mixed precision) or
``--dtype bfloat16``. Figures are totals over the steps after the first (warm-up) divided by
their time. The goals: ≥ 50% of the fp32 peak (issue 6), ≥ 30% of the bf16 peak (issue 19).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path

import torch
import transformers

from frugalrl.config import load_config
from frugalrl.data import encode_prompts
from frugalrl.demo.model import build_model, build_trace_tokenizer, save_pretrained
from frugalrl.demo.task import make_split
from frugalrl.policy import pick_device
from frugalrl.train import loop, rollout_source
from frugalrl.train.metrics import read_metrics
from frugalrl.train.update import policy_objective, rows_to_train

GOALS = {torch.float32: 0.5, torch.bfloat16: 0.3}  # of the compute dtype's peak (issues 6, 19)
SHAPES = {
    "qwen2-0.5b": {
        "hidden": 896,
        "intermediate": 4864,
        "layers": 24,
        "heads": 14,
        "kv_heads": 2,
        "vocab": 151_936,
    },
}


def matmul_peak(
    sizes: list[int], device: torch.device, dtype: torch.dtype, seconds: float = 2.0
) -> dict[int, float]:
    """GFLOP/s of an n×n ``torch.mm`` in ``dtype`` per size n: the best of repetitions after a
    warm-up, repeating for about ``seconds`` per size (at least 3 times)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    rates = {}
    for n in sizes:
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        out = torch.empty(n, n, device=device, dtype=dtype)
        torch.mm(a, b, out=out)  # warm-up
        sync()
        best, spent, reps = float("inf"), 0.0, 0
        while reps < 3 or spent < seconds:
            t0 = time.perf_counter()
            torch.mm(a, b, out=out)
            sync()
            dt = time.perf_counter() - t0
            best, spent, reps = min(best, dt), spent + dt, reps + 1
        rates[n] = 2 * n**3 / best / 1e9
    return rates


def build_shaped_model(shape: dict) -> torch.nn.Module:
    """A randomly initialised Qwen2 of ``shape`` (the keys of a ``SHAPES`` entry)."""
    return build_model(
        shape["vocab"],
        hidden_size=shape["hidden"],
        intermediate_size=shape["intermediate"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        num_key_value_heads=shape["kv_heads"],
    )


def build_policy(args: argparse.Namespace, root: Path):
    """The demo tokenizer and a Qwen2 of the requested shape, saved in HF format under root."""
    rows = make_split("train", 300, 0, with_traces=True)
    tokenizer = build_trace_tokenizer(rows)
    model = build_shaped_model({**vars(args), "vocab": args.vocab or len(tokenizer)})
    total = sum(p.numel() for p in model.parameters())  # unique tensors: the head is tied
    embedding = model.get_input_embeddings().weight.numel()
    head = model.get_output_embeddings().weight.numel()
    tied = bool(model.config.tie_word_embeddings)
    counts = {
        "total_unique": total,
        "embedding": embedding,
        "non_embedding": total - embedding - (0 if tied else head),
        "output_layer": head,
        "matmul_per_token": total - embedding + (head if tied else 0),
        "tied": tied,
        "vocab": model.config.vocab_size,
    }
    return save_pretrained(model, tokenizer, root / "model"), tokenizer, counts


class Recorder:
    """Wraps the loop's rollout and update functions to record, per step, the exact token
    counts of what was generated and trained on, and the update's wall time."""

    def __init__(self) -> None:
        self.rollouts: list[dict] = []
        self.updates: list[dict] = []
        self._collect = rollout_source.collect_rollouts
        self._update = loop.policy_update

    def collect_rollouts(self, engine, problems, prompt_ids, config, scorer, *rest):
        out = self._collect(engine, problems, prompt_ids, config, scorer, *rest)
        g = config.rollout.num_generations
        self.rollouts.append(
            {
                "completions": len(out.groups) * g,
                # The hf engine prefills each prompt once for its G samples.
                "prompt_tokens": sum(len(p) for p in out.prompt_ids),
                "completion_tokens": sum(c.num_tokens for grp in out.groups for c in grp),
                "seconds": out.generation_seconds,
            }
        )
        return out

    def policy_update(
        self, model, ref_model, optimizer, scheduler, batch, pad_id, config, device, *rest, **kw
    ):
        rows = rows_to_train(batch, policy_objective(config), config.train.skip_zero_advantage)
        a = config.algo
        t0 = time.perf_counter()
        out = self._update(
            model, ref_model, optimizer, scheduler, batch, pad_id, config, device, *rest, **kw
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        self.updates.append(
            {
                "seconds": time.perf_counter() - t0,
                "rows": len(rows),
                "prompt_tokens": sum(len(batch.prompt_ids[i]) for i in rows),
                "completion_tokens": sum(batch.completions[i].num_tokens for i in rows),
                "passes": a.num_iterations,
                "reference_forward": ref_model is not None and batch.ref_logps is None,
                "old_logprob_forward": a.num_iterations > 1 and batch.old_logps is None,
            }
        )
        return out

    def __enter__(self) -> Recorder:
        rollout_source.collect_rollouts = self.collect_rollouts
        loop.policy_update = self.policy_update
        return self

    def __exit__(self, *exc) -> None:
        rollout_source.collect_rollouts = self._collect
        loop.policy_update = self._update


def forward_flops(n_body: int, n_head: int, tokens: int, logit_tokens: int) -> float:
    """2·N per token: the body for every token, the output layer where logits are computed."""
    return 2.0 * (n_body * tokens + n_head * logit_tokens)


def peak_memory_mib(device: torch.device) -> tuple[float, str]:
    """The device's peak allocated memory on a GPU, the process's peak RSS on a CPU, and which
    of the two it is."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20, "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10, "ru_maxrss"  # KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--shape", choices=SHAPES, help="a real model's shape (sets the size options below)"
    )
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--prompts", type=int, default=16, help="prompts per step")
    parser.add_argument("--generations", type=int, default=8, help="completions per prompt")
    parser.add_argument("--max-tokens", type=int, default=128, help="completion length cap")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument(
        "--vocab", type=int, default=None, help="embedding rows (default: the tokenizer's)"
    )
    parser.add_argument(
        "--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="model.dtype"
    )
    parser.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="train.precision (bf16: mixed, fp32 masters; the peak is then bf16's)",
    )
    parser.add_argument("--beta", type=float, default=None, help="KL β (default: recipe's 0.04)")
    parser.add_argument(
        "--micro-batch-size", type=int, default=None, help="default: the recipe's (64)"
    )
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--device", default="auto", help="train.device: auto, cpu, cuda")
    parser.add_argument("--matmul-sizes", type=int, nargs="+", default=[1024, 2048, 3072])
    parser.add_argument("--recipe", default="recipes/demo.yaml")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    shape, _ = parser.parse_known_args()
    if shape.shape:
        parser.set_defaults(**SHAPES[shape.shape])
    args = parser.parse_args()
    transformers.utils.logging.disable_progress_bar()  # saving/loading bars would split the table
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)

    dtype = torch.bfloat16 if args.precision == "bf16" else getattr(torch, args.dtype)
    goal = GOALS.get(dtype, 0.5)
    peaks = matmul_peak(args.matmul_sizes, device, dtype)
    best_size = max(peaks, key=peaks.get)
    peak = peaks[best_size] * 1e9

    with tempfile.TemporaryDirectory(prefix="mfu-") as tmp:
        root = Path(tmp)
        model_dir, tokenizer, params = build_policy(args, root)
        problems = make_split("train", 200, 1)
        data = root / "train.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in problems))
        prompt_lengths = [len(p) for p in encode_prompts(problems, tokenizer, "demo", None)]
        overrides = [
            f"model.name_or_path={model_dir}",
            f"data.path={data}",
            f"train.output_dir={root / 'run'}",
            f"train.steps={args.steps}",
            f"train.prompts_per_step={args.prompts}",
            f"rollout.num_generations={args.generations}",
            f"rollout.max_completion_tokens={args.max_tokens}",
            f"train.device={args.device}",
            f"model.dtype={args.dtype}",
            f"train.precision={args.precision}",
            "train.save_every=0",
            "eval.before=false",
            "eval.after=false",
            "logging.progress=false",
            "logging.tensorboard=false",
        ]
        if args.beta is not None:
            overrides.append(f"algo.beta={args.beta}")
        if args.micro_batch_size is not None:
            overrides.append(f"train.micro_batch_size={args.micro_batch_size}")
        if args.threads:
            overrides.append(f"train.threads={args.threads}")
        config = load_config(args.recipe, overrides)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        with Recorder() as rec:
            loop.train(config)
        peak_memory, memory_measure = peak_memory_mib(device)
        metrics = read_metrics(config.run_dir / "metrics.jsonl")

    n_head = params["output_layer"]
    n_body = params["non_embedding"]
    steps = []
    for m, gen, upd in zip(metrics, rec.rollouts, rec.updates, strict=True):
        gen_flops = forward_flops(
            n_body,
            n_head,
            gen["prompt_tokens"] + gen["completion_tokens"],
            gen["completion_tokens"],
        )
        fwd = forward_flops(
            n_body,
            n_head,
            upd["prompt_tokens"] + upd["completion_tokens"],
            upd["completion_tokens"],
        )
        forwards = int(upd["reference_forward"]) + int(upd["old_logprob_forward"])
        train_flops = fwd * (3 * upd["passes"] + forwards)
        steps.append(
            {
                "step": m["step"],
                "step_seconds": m["time/step_seconds"],
                "generation_seconds": gen["seconds"],
                "training_seconds": upd["seconds"],
                "generation_flops": gen_flops,
                "training_flops": train_flops,
                "generated_tokens": gen["completion_tokens"],
                "prompt_tokens": gen["prompt_tokens"],
                "trained_tokens": upd["prompt_tokens"] + upd["completion_tokens"],
                "trained_fraction": m["train/trained_fraction"],
                "completion_length_mean": m["completion/length_mean"],
                "reference_forward": upd["reference_forward"],
            }
        )
    measured = steps[1:] or steps  # the first step warms up (allocations, kernel choice)

    def total(key: str) -> float:
        return sum(s[key] for s in measured)

    gen_s, train_s, step_s = (
        total(k) for k in ("generation_seconds", "training_seconds", "step_seconds")
    )
    gen_f, train_f = total("generation_flops"), total("training_flops")
    k = len(measured)
    phases = [
        ("generation", total("prompt_tokens") + total("generated_tokens"), gen_f, gen_s),
        (
            "training (policy fwd+bwd, ref fwd, optimizer)",
            total("trained_tokens"),
            train_f,
            train_s,
        ),
        ("other (scoring, advantages, bookkeeping)", 0, 0.0, step_s - gen_s - train_s),
        ("whole step", None, gen_f + train_f, step_s),
    ]
    rows = [
        {
            "phase": name,
            "tokens_per_step": None if tokens is None else tokens / k,
            "gflop_per_step": flops / k / 1e9,
            "seconds_per_step": seconds / k,
            "gflop_per_second": flops / seconds / 1e9 if seconds > 0 else 0.0,
            "mfu": flops / seconds / peak if seconds > 0 else 0.0,
        }
        for name, tokens, flops, seconds in phases
    ]

    threads = torch.get_num_threads()
    print(
        f"matmul peak ({str(dtype).removeprefix('torch.')} torch.mm, {device}, {threads} threads): "
        + ", ".join(f"n={n}: {r:.1f}" for n, r in peaks.items())
        + f" GFLOP/s; peak = {peak / 1e9:.1f} GFLOP/s (n={best_size})"
    )
    print(
        f"model: Qwen2 hidden {args.hidden}, intermediate {args.intermediate}, {args.layers} layers,"
        f" {args.heads}/{args.kv_heads} heads, vocab {params['vocab']}, {args.dtype} weights, "
        f"train.precision {args.precision}: "
        f"{params['total_unique']:,}"
        f" parameters, {n_body:,} non-embedding, output layer {n_head:,} (tied); "
        f"N = non-embedding + output layer = {params['matmul_per_token']:,}"
    )
    beta = config.algo.beta
    print(
        f"{args.steps} steps of {args.prompts} prompts x {args.generations} completions, "
        f"≤ {args.max_tokens} tokens, β = {beta} (reference forward "
        f"{'counted' if any(s['reference_forward'] for s in steps) else 'not run'}); "
        f"mean over steps {measured[0]['step']}-{measured[-1]['step']}: completion length "
        f"{sum(s['completion_length_mean'] for s in measured) / k:.1f}, trained fraction "
        f"{sum(s['trained_fraction'] for s in measured) / k:.2f}; "
        f"prompts in the data: {sum(prompt_lengths) / len(prompt_lengths):.1f} tokens on average"
    )
    print(
        "FLOPs: 2·N per token generated or prefilled, 6·N per trained token per pass, 2·N per "
        "token for a reference / old-log-prob forward; the output layer only where logits are "
        "computed; attention scores and padding not counted"
    )
    print(
        f"| {'phase':<46} | {'tokens/step':>11} | {'GFLOP/step':>10} | {'s/step':>7} "
        f"| {'GFLOP/s':>8} | {'MFU':>6} |"
    )
    print(f"|{'-' * 48}|{'-' * 13}|{'-' * 12}|{'-' * 9}|{'-' * 10}|{'-' * 8}|")
    for r in rows:
        tokens = "" if r["tokens_per_step"] is None else f"{r['tokens_per_step']:.0f}"
        print(
            f"| {r['phase']:<46} | {tokens:>11} | {r['gflop_per_step']:>10.1f} | "
            f"{r['seconds_per_step']:>7.2f} | {r['gflop_per_second']:>8.1f} | "
            f"{100 * r['mfu']:>5.1f}% |"
        )
    step_mfu = rows[-1]["mfu"]
    print(
        f"step time {rows[-1]['seconds_per_step']:.2f} s (mean of steps "
        f"{measured[0]['step']}-{measured[-1]['step']}); peak memory ({memory_measure}) "
        f"{peak_memory:,.0f} MiB"
    )
    print(
        f"whole-step MFU {100 * step_mfu:.1f}%: {'PASS' if step_mfu >= goal else 'FAIL'} "
        f"(goal ≥ {100 * goal:.0f}% of the {str(dtype).removeprefix('torch.')} peak)"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "benchmark": "mfu",
                    "device": str(device),
                    "dtype": args.dtype,
                    "precision": args.precision,
                    "peak_dtype": str(dtype).removeprefix("torch."),
                    "peak_memory_mib": peak_memory,
                    "peak_memory_measure": memory_measure,
                    "threads": threads,
                    "matmul_gflops": {str(n): r for n, r in peaks.items()},
                    "peak_gflops": peak / 1e9,
                    "model": {
                        "hidden": args.hidden,
                        "intermediate": args.intermediate,
                        "layers": args.layers,
                        "heads": args.heads,
                        "kv_heads": args.kv_heads,
                        "vocab": params["vocab"],
                        "parameters": params,
                    },
                    "run": {
                        "steps": args.steps,
                        "prompts": args.prompts,
                        "generations": args.generations,
                        "max_tokens": args.max_tokens,
                        "beta": beta,
                        "micro_batch_size": config.train.micro_batch_size,
                    },
                    "per_step": steps,
                    "phases": rows,
                    "goal_mfu": goal,
                    "pass": step_mfu >= goal,
                },
                indent=2,
            )
            + "\n"
        )


if __name__ == "__main__":
    main()
