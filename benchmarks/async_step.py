"""The demo trained synchronously and with batches sampled one step ahead (K = 1), in one run.

    python benchmarks/async_step.py [--demo-dir runs/frontier] [--steps N]

From the demo's cached SFT base (built as ``frugalrl demo`` builds it if missing), two
``frugalrl demo`` runs, one at a time so each has the machine to itself:

* ``sync``: today's loop, ``rollout.engine: hf``, sampling and training on both cores
  (``train.threads=2``);
* ``async-k1``: ``rollout.max_staleness: 1``, ``rollout.engine: hf-process``: the sampler in
  its own process pinned to core 1 with one thread, the trainer pinned to core 0 with one
  thread, corrected by ``rollout.importance_sampling: token_truncate``.

The table: training steps per second (steps ÷ the steps' own seconds, evaluation excluded),
the trainer's idle fraction (waiting for its batch ÷ step time) and the sampler's (waiting for
work ÷ step time; synchronously, the generation's share of the step and the rest), mean staleness, held-out avg@4 after with its 95% CI, and the
throughput ratio to ``sync``. Goal (issue 20): K = 1 ≥ 1.3× the synchronous throughput with
accuracy within the synchronous run's CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from curated_mix_demo import ensure_base

from frugalrl.train.metrics import read_metrics

FRUGALRL = str(Path(sys.executable).with_name("frugalrl"))
ASYNC = [
    "rollout.max_staleness=1",
    "rollout.engine=hf-process",
    "rollout.importance_sampling=token_truncate",
]
RUNS = {
    "sync": (["train.threads=2"], None),
    # one core each: neither waits for the other's threads
    "async-k1": (
        [*ASYNC, "train.threads=1", 'rollout.engine_options={"threads": 1, "cpu_cores": [1]}'],
        {0},
    ),
    # the trainer on both cores, the sampler's one thread wherever the kernel puts it
    "async-k1-shared": ([*ASYNC, "train.threads=2", 'rollout.engine_options={"threads": 1}'], None),
}


def run_demo(out: Path, name: str, steps: int | None) -> float:
    sets, cores = RUNS[name]
    sets = [*sets, "logging.progress=false", *([f"train.steps={steps}"] if steps else [])]
    cmd = [FRUGALRL, "demo", "--out", str(out), "--run", name]
    cmd += [a for s in sets for a in ("--set", s)]
    print("$", " ".join(cmd[1:]), flush=True)
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    t0 = time.perf_counter()
    with (out / f"{name}.log").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, preexec_fn=pin)
    return time.perf_counter() - t0


def figures(out: Path, name: str) -> dict[str, float]:
    run = out / name
    summary = json.loads((run / "summary.json").read_text())
    rows = [m for m in read_metrics(run / "metrics.jsonl") if "time/step_seconds" in m]
    step_seconds = sum(m["time/step_seconds"] for m in rows)

    def share(key: str) -> float:
        return sum(m.get(key, 0.0) for m in rows) / step_seconds

    # synchronous: one process, the trainer waits while it samples, the sampler while it trains
    generating = share("time/generation_seconds")
    asynchronous = "time/rollout_wait_seconds" in rows[0]

    final = summary["eval"]["final"]
    return {
        "steps_per_second": len(rows) / step_seconds,
        "trainer_idle": share("time/rollout_wait_seconds") if asynchronous else generating,
        "sampler_idle": share("time/sampler_idle_seconds") if asynchronous else 1 - generating,
        "staleness": statistics.mean(m.get("rollout/staleness", 0.0) for m in rows),
        "accuracy": final["accuracy"],
        "ci": final["accuracy_ci95"],
        "base": summary["eval"]["base"]["accuracy"],
    }


# Phase times measured elsewhere (benchmarks/README.md), for the 4-GPU estimate: seconds per
# synchronous step generating and training the whole batch on one GPU.
GPU_PHASES = {
    # one H200, Qwen2-0.5B shape, 16 x 8 completions of 128 tokens, hf engine, bf16 mixed
    # precision (mfu.py --precision bf16)
    "H200 0.5B, hf sampler": (3.74, 0.81),
    # the same, generation at the 2.2x of vllm-server over hf measured on the 28M and 0.5B
    # models (engines.py, CPU): what a vLLM sampler would leave of it
    "H200 0.5B, vLLM at 2.2x hf": (3.74 / 2.2, 0.81),
}
# Sending 494M parameters to a vllm-server over gloo, per step (engines.py, 0.5B: server
# minus colocated step time on the CPU); a GPU's NCCL transfer is faster: an upper bound.
WEIGHT_SYNC_SECONDS = 0.31
TRAINING_GPUS = 3  # open-rs's layout: three training GPUs, one vLLM GPU


def open_rs_estimate(measured: dict[str, tuple[float, float]]) -> str:
    """An estimate, not a measurement: the 4-GPU open-rs layout (one vLLM-server GPU, three
    training GPUs) from one GPU's phase times. Training is split over the three GPUs (taken
    as ideal data parallelism: an optimistic assumption, which only lowers the gain).
    Synchronously a step is generate + train + send weights; with K = 1 the server generates
    batch t + 1 while batch t trains, so a step is the longer of the two plus the transfer
    (the server takes weights between batches)."""
    lines = [
        f"| phase times from | generate (s) | train on {TRAINING_GPUS} GPUs (s) | sync step (s) "
        "| K = 1 step (s) | estimated speed-up |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for source, (gen, one_gpu_train) in measured.items():
        train = one_gpu_train / TRAINING_GPUS
        sync = gen + train + WEIGHT_SYNC_SECONDS
        ahead = max(gen, train) + WEIGHT_SYNC_SECONDS
        lines.append(
            f"| {source} | {gen:.2f} | {train:.2f} | {sync:.2f} | {ahead:.2f} "
            f"| {sync / ahead:.2f}× |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="runs/frontier", help="demo directory (data, base)")
    parser.add_argument("--steps", type=int, help="train.steps (default: the demo's 100)")
    parser.add_argument("--runs", nargs="+", choices=list(RUNS), default=list(RUNS))
    args = parser.parse_args()
    out = Path(args.demo_dir).resolve()
    ensure_base(out)
    names = ["sync", *(n for n in args.runs if n != "sync")]  # the baseline, always
    walls = {name: run_demo(out, name, args.steps) for name in names}
    got = {name: figures(out, name) for name in names}
    sync = got["sync"]["steps_per_second"]
    lines = [
        "| run | steps/s | vs sync | trainer idle | sampler idle | staleness | base % "
        "| final % [95% CI] | wall (min) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, f in got.items():
        lo, hi = f["ci"]
        lines.append(
            f"| {name} | {f['steps_per_second']:.3f} | {f['steps_per_second'] / sync:.2f}× "
            f"| {f['trainer_idle']:.1%} | {f['sampler_idle']:.1%} | {f['staleness']:.2f} "
            f"| {100 * f['base']:.1f} | {100 * f['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
            f"| {walls[name] / 60:.1f} |"
        )
    table = "\n".join(lines)
    estimate = open_rs_estimate(GPU_PHASES)
    (out / "async_step.md").write_text(f"{table}\n\n{estimate}\n")
    print(table, "", "Estimate, 4-GPU open-rs layout (not measured):", estimate, sep="\n")


if __name__ == "__main__":
    main()
