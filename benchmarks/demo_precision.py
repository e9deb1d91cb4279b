"""The demo in fp32 and in bf16 mixed precision, one after the other on the same machine.

    python benchmarks/demo_precision.py [--demo-dir runs/frontier] [--threads 2] [--steps N]

From the demo's cached SFT base (built as ``frugalrl demo`` builds it if missing), one
``frugalrl demo --run precision-<p> --set train.precision=<p>`` per precision, run one at a
time so each has the machine to itself; then a table: held-out avg@4 before and after with
95% CIs, the gain, mean tokens, the wall time of each run and its ratio to fp32's, and the
sampler-trainer log-prob gap (``train/rollout_logprob_abs_diff``, mean over steps).

Goal (issue 19): bf16 at most half fp32's wall time with the same >= +15-point gain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from curated_mix_demo import ensure_base

from frugalrl.train.metrics import read_metrics

FRUGALRL = str(Path(sys.executable).with_name("frugalrl"))
PRECISIONS = ("fp32", "bf16")


def run_demo(out: Path, precision: str, threads: int, steps: int | None) -> float:
    """Train and evaluate one precision; its wall seconds."""
    sets = [f"train.precision={precision}", f"train.threads={threads}", "logging.progress=false"]
    sets += [f"train.steps={steps}"] if steps else []
    cmd = [FRUGALRL, "demo", "--out", str(out), "--run", f"precision-{precision}"]
    cmd += [a for s in sets for a in ("--set", s)]
    print("$", " ".join(cmd[1:]), flush=True)
    t0 = time.perf_counter()
    with (out / f"precision-{precision}.log").open("w") as log:
        subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - t0


def row(out: Path, precision: str, wall: float, fp32_wall: float) -> str:
    run = out / f"precision-{precision}"
    ev = json.loads((run / "summary.json").read_text())["eval"]
    base, final = ev["base"], ev["final"]
    lo, hi = final["accuracy_ci95"]
    gap_key = "train/rollout_logprob_abs_diff"
    gaps = [m[gap_key] for m in read_metrics(run / "metrics.jsonl") if gap_key in m]
    gap = statistics.mean(gaps) if gaps else float("nan")
    return (
        f"| {precision} | {100 * base['accuracy']:.1f} | {100 * final['accuracy']:.1f} "
        f"[{100 * lo:.1f}, {100 * hi:.1f}] | {100 * (final['accuracy'] - base['accuracy']):+.1f} "
        f"| {final['mean_tokens']:.1f} | {wall / 60:.1f} | {wall / fp32_wall:.2f} | {gap:.2e} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="runs/frontier", help="demo directory (data, base)")
    parser.add_argument("--threads", type=int, default=2, help="train.threads of each run")
    parser.add_argument("--steps", type=int, help="train.steps (default: the demo's 100)")
    args = parser.parse_args()
    out = Path(args.demo_dir).resolve()
    ensure_base(out)
    walls = {p: run_demo(out, p, args.threads, args.steps) for p in PRECISIONS}
    lines = [
        "| precision | base % | final % [95% CI] | gain (points) | mean tokens | wall (min) "
        "| wall vs fp32 | sampler gap |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        *(row(out, p, walls[p], walls["fp32"]) for p in PRECISIONS),
    ]
    table = "\n".join(lines)
    (out / "demo_precision.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
