"""The demo's spread over seeds: the same command with ``train.seed`` changed, from one base.

    python benchmarks/demo_seeds.py [--demo-dir runs/seeds] [--seeds 42 1 2 3]

The SFT base is built once (as ``frugalrl demo`` builds it, or reused when cached); each seed
is a ``frugalrl demo --set train.seed=S`` run: the RL prompt order and every sampling stream
change, the base and the held-out set do not. The table: held-out avg@4 of the base and after
100 steps per seed (95% bootstrap CI), then the mean and standard deviation over seeds of the
final accuracy and of the gain. A rerun of one seed on the same machine with the same thread
count gives the same figures; another CPU may not (see the README's Demo section).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from curated_mix_demo import ensure_base

FRUGALRL = str(Path(sys.executable).with_name("frugalrl"))


def run_seed(out: Path, seed: int) -> dict:
    name = f"seed-{seed}"
    if not (out / name / "summary.json").is_file():
        cmd = [FRUGALRL, "demo", "--out", str(out), "--run", name]
        cmd += ["--set", f"train.seed={seed}", "--set", "logging.progress=false"]
        print("$", " ".join(cmd[1:]), flush=True)
        with (out / f"{name}.log").open("w") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads((out / name / "summary.json").read_text())


def seeds_table(summaries: dict[int, dict]) -> str:
    """Per-seed rows, then mean ± standard deviation over the seeds (percent, points)."""
    lines = [
        "| seed | base % [95% CI] | after 100 steps % [95% CI] | gain (points) | mean tokens |",
        "|---|---:|---:|---:|---:|",
    ]
    finals, gains = [], []
    for seed, s in summaries.items():
        base, final = s["eval"]["base"], s["eval"]["final"]
        finals.append(100 * final["accuracy"])
        gains.append(100 * (final["accuracy"] - base["accuracy"]))
        lines.append(
            f"| {seed} | {pct(base)} | {pct(final)} | {gains[-1]:+.1f} "
            f"| {final['mean_tokens']:.1f} |"
        )
    spread = statistics.stdev if len(finals) > 1 else (lambda _: 0.0)
    lines.append(
        f"| mean ± sd ({len(finals)} seeds) | | {statistics.mean(finals):.1f} ± "
        f"{spread(finals):.1f} | {statistics.mean(gains):+.1f} ± {spread(gains):.1f} | |"
    )
    return "\n".join(lines)


def pct(result: dict) -> str:
    lo, hi = result["accuracy_ci95"]
    return f"{100 * result['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="runs/seeds", help="demo directory (data, base)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 1, 2, 3])
    args = parser.parse_args()
    out = Path(args.demo_dir).resolve()
    ensure_base(out)
    table = seeds_table({seed: run_seed(out, seed) for seed in args.seeds})
    (out / "demo_seeds.md").write_text(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
