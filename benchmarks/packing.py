"""The training update with padded against packed micro-batches (``train.packing``), side by side.

    python benchmarks/packing.py [--hidden 512 --layers 9] [--completions 128] [--repeats 3]
        [--precisions fp32 bf16] [--micro-batch-tokens 4096] [--threads 2] [--json PATH]

One rollout batch of ``--completions`` completions of varied length (prompts 20-80 tokens,
completions 4 to ``--max-tokens``, a quarter of them at the cap, as truncated samples are in
real runs; random tokens, since the cost of a forward does not depend on them) trains on a
Qwen2 built and loaded through ``from_pretrained`` (default: the 28.5M config of
benchmarks/mfu.py and step_vs_trl.py). ``frugalrl.train.update.policy_update``, the loop's own
update (forward, backward, AdamW step), runs with ``train.packing`` off and on, alternately
``--repeats`` times each after one warm-up, in one process; the table gives the median time,
the positions the micro-batches hold and the fraction of them that is padding. The gradient
must agree between the two layouts (same batch, same weights): its norm is printed for each
(μ = 1 on-policy, the loss itself is the same whatever the log-probs, so it checks nothing).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch
import transformers

from frugalrl.config import Config
from frugalrl.demo.model import build_model, build_trace_tokenizer, save_pretrained
from frugalrl.demo.task import make_split
from frugalrl.rollout import Completion
from frugalrl.train.update import RolloutBatch, policy_update


def rollout_batch(n: int, max_tokens: int, vocab: int, seed: int) -> RolloutBatch:
    rng = random.Random(seed)
    prompts = [[rng.randrange(3, vocab) for _ in range(rng.randint(20, 80))] for _ in range(n)]
    lengths = [max_tokens if rng.random() < 0.25 else rng.randint(4, max_tokens) for _ in range(n)]
    completions = [
        Completion(tuple(rng.randrange(3, vocab) for _ in range(k)), "", k < max_tokens)
        for k in lengths
    ]
    advantages = torch.tensor([rng.choice([-1.0, 1.0]) * rng.random() for _ in range(n)])
    return RolloutBatch(prompts, completions, advantages, torch.ones(n, dtype=torch.bool))


def timed_update(model, batch: RolloutBatch, config: Config, pad_id: int) -> tuple[float, dict]:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-9)  # the weights barely move
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    start = time.perf_counter()
    metrics = policy_update(model, None, optimizer, scheduler, batch, pad_id, config, "cpu")
    return time.perf_counter() - start, metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1536)
    parser.add_argument("--layers", type=int, default=9)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--completions", type=int, default=128)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--micro-batch", type=int, default=64, help="completions per micro-batch")
    parser.add_argument("--micro-batch-tokens", type=int, default=4096)
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()

    tokenizer = build_trace_tokenizer(make_split("train", 300, 0, with_traces=True))
    built = build_model(
        len(tokenizer),
        hidden_size=args.hidden,
        intermediate_size=args.intermediate,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
    )
    params = sum(p.numel() for p in built.parameters())
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = save_pretrained(built, tokenizer, Path(tmp) / "model")
        model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    batch = rollout_batch(args.completions, args.max_tokens, len(tokenizer), args.seed)
    pairs = zip(batch.prompt_ids, batch.completions, strict=True)
    tokens = sum(len(p) + c.num_tokens for p, c in pairs)
    print(
        f"{params / 1e6:.1f}M parameters, {args.completions} completions, {tokens} tokens, "
        f"micro-batches of ≤ {args.micro_batch_tokens} positions, {args.threads} threads, "
        f"attention {model.config._attn_implementation}"
    )
    rows = []
    for precision in args.precisions:
        figures = {}
        for packing in (False, True):
            config = Config.model_validate(
                {
                    "algo": {"beta": 0.0},
                    "rollout": {"max_completion_tokens": args.max_tokens},
                    "train": {
                        "precision": precision,
                        "packing": packing,
                        "micro_batch_size": args.micro_batch,
                        "micro_batch_tokens": args.micro_batch_tokens,
                    },
                }
            )
            figures[packing] = {"config": config, "times": []}
        for repeat in range(args.repeats + 1):  # the first of each is a warm-up
            for f in figures.values():
                seconds, metrics = timed_update(model, batch, f["config"], tokenizer.pad_token_id)
                if repeat:
                    f["times"].append(seconds)
                f["metrics"] = metrics
        padded, packed = figures[False], figures[True]
        norms = padded["metrics"]["train/grad_norm"], packed["metrics"]["train/grad_norm"]
        norm_gap = abs(norms[0] - norms[1]) / norms[0]
        for packing, f in figures.items():
            m = f["metrics"]
            rows.append(
                {
                    "precision": precision,
                    "layout": "packed" if packing else "padded",
                    "seconds": statistics.median(f["times"]),
                    "tokens_per_second": tokens / statistics.median(f["times"]),
                    "padding_fraction": m["train/padding_fraction"],
                    "micro_batches": m["train/micro_batches"],
                    "grad_norm": m["train/grad_norm"],
                    "speedup": statistics.median(padded["times"]) / statistics.median(f["times"]),
                    "grad_norm_relative_gap": norm_gap,
                }
            )

    print(
        f"\n| precision | layout | update s (median of {args.repeats}) | tokens/s | padding "
        "| micro-batches | speed-up | gradient norm |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['precision']} | {r['layout']} | {r['seconds']:.2f} | "
            f"{r['tokens_per_second']:,.0f} | {r['padding_fraction']:.1%} | "
            f"{r['micro_batches']:.0f} | {r['speedup']:.2f}× | {r['grad_norm']:.6f} |"
        )
    for precision in args.precisions:
        gap = next(r["grad_norm_relative_gap"] for r in rows if r["precision"] == precision)
        print(f"{precision}: gradient norm, packed vs padded: relative difference {gap:.2e}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
