"""Every length-control reward on one frontier: same demo base, data, steps and seed.

    python benchmarks/efficiency_frontier.py [--demo-dir runs/frontier] [--parallel 2]
        [--steps N] [--only NAME,NAME] [--table-only]

1. the demo's data and SFT base in ``DIR`` (built as ``frugalrl demo`` builds them if missing);
2. one ``frugalrl demo --recipe R --run NAME`` per method (the table below), ``--parallel``
   at a time, each on one torch thread, into ``DIR/NAME`` (log: ``DIR/NAME.log``; a finished
   run is kept and not trained again); the base is evaluated once, in the ``accuracy`` run;
3. ``frugalrl report`` over the runs into ``DIR/compare``: ``report.md`` (held-out avg@4 on
   200 problems with 95% CIs, mean tokens) and ``frontier.png`` (accuracy vs mean tokens,
   the Pareto front joined); then a table of each method against the base, printed and
   saved as ``DIR/efficiency_frontier.md``.

Each method runs at its paper's defaults, with lengths scaled to the demo (its base answers
in ~90 tokens, the cap is 256) as each recipe's header says. The held-out evaluation asks for
no length, so L1's models are scored without their instruction.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from curated_mix_demo import ensure_base

ROOT = Path(__file__).resolve().parents[1]
FRUGALRL = str(Path(sys.executable).with_name("frugalrl"))
GRPO = ["algo.advantage=grpo", "algo.beta=0.04", "algo.num_iterations=1"]  # the demo's
METHODS = {  # run name -> (recipe, overrides)
    "accuracy": ("demo", []),
    # the efficiency rows run the paper's algorithm (RLOO, 2 passes, KL 0.001); these two put
    # it beside the others': accuracy alone under RLOO, and α = 0.2 under the shared GRPO setup
    "accuracy-rloo": ("demo-efficiency", ["rewards.0.alpha=0.0"]),
    "efficiency-0.2-grpo": ("demo-efficiency", [*GRPO, "rewards.0.alpha=0.2"]),
    "efficiency-0.05": ("demo-efficiency", ["rewards.0.alpha=0.05"]),
    "efficiency-0.1": ("demo-efficiency", ["rewards.0.alpha=0.1"]),
    "efficiency-0.2": ("demo-efficiency", ["rewards.0.alpha=0.2"]),
    "efficiency-0.4": ("demo-efficiency", ["rewards.0.alpha=0.4"]),
    "kimi": ("demo-kimi", []),
    "shorterbetter": ("demo-shorterbetter", []),
    "l1-exact": ("demo-l1-exact", []),
    "l1-max": ("demo-l1-max", []),
    "thinkprune": ("demo-thinkprune", []),
    "laser": ("demo-laser", []),
    "laser-d": ("demo-laser-d", []),
    "alp": ("demo-alp", []),
}


def finished(run_dir: Path) -> bool:
    summary = run_dir / "summary.json"
    return summary.is_file() and "final" in json.loads(summary.read_text()).get("eval", {})


def command(out: Path, name: str, steps: int | None) -> list[str]:
    recipe, overrides = METHODS[name]
    overrides = [
        *overrides,
        "train.threads=1",
        "logging.progress=false",
        *([] if name == "accuracy" else ["eval.before=false"]),  # one base evaluation
        *([f"train.steps={steps}"] if steps else []),
    ]
    sets = [a for o in overrides for a in ("--set", o)]
    return [FRUGALRL, "demo", "--out", str(out), "--recipe", recipe, "--run", name, *sets]


def train_all(out: Path, names: list[str], parallel: int, steps: int | None) -> dict[str, float]:
    """Run the methods not finished yet, ``parallel`` at a time; wall seconds per run."""
    todo = [n for n in names if not finished(out / n)]
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    walls: dict[str, float] = {}
    while todo or running:
        while todo and len(running) < parallel:
            name = todo.pop(0)
            cmd = command(out, name, steps)
            print("$", " ".join(cmd[1:]), flush=True)
            log = (out / f"{name}.log").open("w")
            running[name] = (
                subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT),
                time.time(),
            )
        time.sleep(5)
        for name, (proc, t0) in list(running.items()):
            if proc.poll() is not None:
                del running[name]
                walls[name] = time.time() - t0
                state = "done" if proc.returncode == 0 else f"FAILED ({out / name}.log)"
                print(f"{name}: {state} in {walls[name] / 60:.1f} min", flush=True)
    return walls


def frontier_table(out: Path, names: list[str]) -> str:
    """Each method's final held-out result beside the base's, as ratios."""
    base = json.loads((out / "accuracy" / "summary.json").read_text())["eval"]["base"]
    lines = [
        "| method | recipe | accuracy % [95% CI] | mean tokens | Δ accuracy (points) | tokens vs base |",
        "|---|---|---:|---:|---:|---:|",
    ]
    lo, hi = base["accuracy_ci95"]
    lines.append(
        f"| base (SFT) | – | {100 * base['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
        f"| {base['mean_tokens']:.1f} | – | 1.00 |"
    )
    for name in names:
        if not finished(out / name):
            lines.append(f"| {name} | {METHODS[name][0]} | not run | | | |")
            continue
        final = json.loads((out / name / "summary.json").read_text())["eval"]["final"]
        lo, hi = final["accuracy_ci95"]
        lines.append(
            f"| {name} | {METHODS[name][0]} "
            f"| {100 * final['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] "
            f"| {final['mean_tokens']:.1f} "
            f"| {100 * (final['accuracy'] - base['accuracy']):+.1f} "
            f"| {final['mean_tokens'] / base['mean_tokens']:.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="runs/frontier", help="demo directory (data, base)")
    parser.add_argument("--parallel", type=int, default=2, help="runs at a time (one thread each)")
    parser.add_argument("--steps", type=int, help="train.steps for every run (default: recipes')")
    parser.add_argument("--only", help="comma-separated run names (default: all)")
    parser.add_argument("--table-only", action="store_true", help="only re-read finished runs")
    args = parser.parse_args()
    out = Path(args.demo_dir).resolve()
    names = args.only.split(",") if args.only else list(METHODS)
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        parser.error(f"unknown run names {unknown}; valid: {', '.join(METHODS)}")
    if not args.table_only:
        t0 = time.perf_counter()
        cached = ensure_base(out)
        print(
            f"demo base: {out / 'sft-base'} ({'cached' if cached else 'built'}, "
            f"{time.perf_counter() - t0:.0f} s)"
        )
        train_all(
            out, ["accuracy", *[n for n in names if n != "accuracy"]], args.parallel, args.steps
        )
    done = [str(out / n) for n in names if finished(out / n)]
    report = [FRUGALRL, "report", *done, "--out", str(out / "compare")]
    print("$", " ".join(report[1:]), flush=True)
    subprocess.run(report, check=True)
    table = frontier_table(out, names)
    (out / "efficiency_frontier.md").write_text(table + "\n")
    print(table)
    print(f"\nfrontier plot: {out / 'compare' / 'frontier.png'}")


if __name__ == "__main__":
    main()
