"""open-rs's experiment 1 vs 2 in miniature: hard problems only vs hard + easy mixed 6:1.

    python benchmarks/curated_mix_demo.py [--demo-dir runs/demo] [--steps N] [--threads 1]
        [--set train.seed=1 --tag=-seed1]

1. the demo's data and SFT base in ``DIR`` (built as ``frugalrl demo`` builds them if missing);
2. ``frugalrl curate src/frugalrl/recipes/curate-demo.yaml`` twice, ``mix.select=exp1-hard``
   and ``mix.select=exp2-mix``, into ``DIR/curated/`` (the base's pass rates on the 4,000 RL
   problems, k = 8, are estimated once and cached in ``DIR/curated/difficulty_cache.jsonl``);
3. the recipes ``demo-exp1-hard`` and ``demo-exp2-mix`` trained from the same base on each set,
   into ``DIR/exp1-hard`` and ``DIR/exp2-mix``, held-out accuracy every 10 steps;
4. a markdown table of held-out accuracy and mean tokens against step, both runs side by side
   (printed, and saved as ``DIR/curated_mix_demo.md``), and the curves as
   ``DIR/curated_mix_demo.png``.

``--steps`` shortens both runs alike (the schedule follows ``train.steps``); ``--set k=v`` adds
training overrides to both; ``--tag`` suffixes the run directories and the table/plot names (another
seed beside the first). The table is rebuilt from the runs' files by ``--table-only``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CURATE_CONFIG = ROOT / "src" / "frugalrl" / "recipes" / "curate-demo.yaml"
EXPERIMENTS = {  # run name -> (mix set, training recipe)
    "exp1-hard": ("exp1-hard", "demo-exp1-hard"),
    "exp2-mix": ("exp2-mix", "demo-exp2-mix"),
}


def ensure_base(out: Path) -> bool:
    """The demo's data and SFT base in ``out`` (built if missing or stale); True if cached."""
    from frugalrl.demo.run import SFT, _fingerprint, build_base, prepare_data

    data_dir, base_dir = out / "data", out / "sft-base"
    stamp = base_dir / "demo_fingerprint.json"
    if stamp.is_file() and json.loads(stamp.read_text()) == _fingerprint(SFT):
        return True
    print(f"building the demo data and SFT base in {out} (as `frugalrl demo` does)")
    prepare_data(data_dir)
    build_base(data_dir, base_dir, SFT)
    stamp.write_text(json.dumps(_fingerprint(SFT)))
    return False


def curate_overrides(out: Path, mix_set: str) -> list[str]:
    return [
        f"load.sources.0.path={out / 'data' / 'train.jsonl'}",
        f"difficulty.model={out / 'sft-base'}",
        f"difficulty.cache_path={out / 'curated' / 'difficulty_cache.jsonl'}",
        f"mix.select={mix_set}",
        "progress=false",
    ]


def held_out_curve(run_dir: Path) -> list[dict]:
    """``{step, accuracy, mean_tokens}`` rows: the base (step 0), then every periodic eval."""
    summary = json.loads((run_dir / "summary.json").read_text())
    base = summary["eval"]["base"]
    rows = [{"step": 0, "accuracy": base["accuracy"], "mean_tokens": base["mean_tokens"]}]
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("eval/accuracy") is not None and record["step"] > 0:  # 0: the base
            rows.append(
                {
                    "step": record["step"],
                    "accuracy": record["eval/accuracy"],
                    "mean_tokens": record.get("eval/mean_tokens"),
                }
            )
    return rows


def final_eval(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())["eval"]["final"]


def table(curves: dict[str, list[dict]], finals: dict[str, dict]) -> str:
    names = list(curves)
    head = "| step | " + " | ".join(f"{n} acc. % | {n} tokens" for n in names) + " |"
    lines = [head, "|---:|" + "---:|---:|" * len(names)]
    by_step = {n: {r["step"]: r for r in rows} for n, rows in curves.items()}
    for step in sorted({s for rows in by_step.values() for s in rows}):
        cells = []
        for n in names:
            r = by_step[n].get(step)
            tokens = r and r["mean_tokens"]
            cells += (
                [f"{100 * r['accuracy']:.1f}", f"{tokens:.1f}" if tokens is not None else "–"]
                if r
                else ["–", "–"]
            )
        label = f"{step} (base)" if step == 0 else str(step)
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    cells = []
    for n in names:
        f = finals[n]
        lo, hi = f["accuracy_ci95"]
        cells += [
            f"{100 * f['accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]",
            f"{f['mean_tokens']:.1f}",
        ]
    lines.append("| final, 95% CI | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(curves: dict[str, list[dict]], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (acc, tok) = plt.subplots(1, 2, figsize=(10, 4))
    for name, rows in curves.items():
        steps = [r["step"] for r in rows]
        acc.plot(steps, [100 * r["accuracy"] for r in rows], marker="o", label=name)
        tok.plot(steps, [r["mean_tokens"] for r in rows], marker="o", label=name)
    acc.set(xlabel="step", ylabel="held-out accuracy (%)", title="Held-out accuracy")
    tok.set(xlabel="step", ylabel="mean completion tokens", title="Held-out mean tokens")
    for ax in (acc, tok):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Demo task: hard only (open-rs exp. 1) vs hard + easy 6:1 (exp. 2)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def curation_counts(curated: Path) -> dict[str, dict]:
    """Per set: difficulty bands over all problems and the mix's parts."""
    counts = {}
    for name in EXPERIMENTS:
        summary = json.loads((curated / name / "curation_summary.json").read_text())
        stages = {s["stage"]: s for s in summary["stages"]}
        counts[name] = {
            "bands": stages["difficulty"]["stats"].get("bands"),
            "parts": stages["mix"]["stats"]["parts"],
            "rows_out": summary["rows_out"],
            "seconds": summary["wall_seconds"],
        }
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo-dir", default="runs/demo", help="demo directory (data, base)")
    parser.add_argument("--steps", type=int, help="train.steps for both runs (default: recipe's)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    parser.add_argument(
        "--tag", default="", help="suffix of the run directories, e.g. --tag=-seed1"
    )
    parser.add_argument("--table-only", action="store_true", help="only re-read finished runs")
    args = parser.parse_args()
    runs = {name: f"{name}{args.tag}" for name in EXPERIMENTS}
    out = Path(args.demo_dir).resolve()
    curated = out / "curated"
    walls: dict[str, float] = {}
    if not args.table_only:
        import torch

        from frugalrl.curate import run_curation, summary_lines
        from frugalrl.demo.run import run_demo

        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        cached = ensure_base(out)
        walls["base"] = time.perf_counter() - t0
        print(f"demo base: {out / 'sft-base'} ({'cached' if cached else 'built'})")
        for name, (mix_set, _) in EXPERIMENTS.items():
            overrides = curate_overrides(out, mix_set)
            sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
            print(
                f"\n$ frugalrl curate {CURATE_CONFIG.relative_to(ROOT)} {sets} --out {curated / name}"
            )
            t0 = time.perf_counter()
            print("\n".join(summary_lines(run_curation(CURATE_CONFIG, overrides, curated / name))))
            walls[f"curate {name}"] = time.perf_counter() - t0
        for name, (_, recipe) in EXPERIMENTS.items():
            overrides = [
                f"data.path={curated / name / 'data.jsonl'}",
                f"train.threads={args.threads}",
                *([f"train.steps={args.steps}"] if args.steps else []),
                *args.overrides,
            ]
            sets = " ".join(f"--set {shlex.quote(o)}" for o in overrides)
            print(f"\n$ frugalrl demo --out {out} --recipe {recipe} --run {runs[name]} {sets}")
            t0 = time.perf_counter()
            run_demo(out, overrides=overrides, recipe=recipe, run_name=runs[name])
            walls[f"train {name}"] = time.perf_counter() - t0
    counts = curation_counts(curated)
    curves = {run: held_out_curve(out / run) for run in runs.values()}
    finals = {run: final_eval(out / run) for run in runs.values()}
    print("\n## Curated sets\n")
    for name, c in counts.items():
        parts = ", ".join(f"{p} {v['taken']} of {v['available']}" for p, v in c["parts"].items())
        print(f"- {name}: {c['rows_out']} problems ({parts}); bands over all: {c['bands']}")
    text = table(curves, finals)
    print("\n## Held-out accuracy (%) and mean tokens against step\n")
    print(text)
    for name in runs.values():
        s = json.loads((out / name / "summary.json").read_text())
        print(f"- {name}: train {s['train_seconds']:.0f} s, run {s['wall_seconds']:.0f} s")
    for what, seconds in walls.items():
        print(f"- wall, {what}: {seconds:.0f} s")
    md = out / f"curated_mix_demo{args.tag}.md"
    md.write_text("# Held-out accuracy (%) and mean tokens against step\n\n" + text + "\n")
    print(f"\ntable: {md}\nplot: {plot(curves, out / f'curated_mix_demo{args.tag}.png')}")
    print("runs: " + ", ".join(str(out / n / "report.md") for n in runs.values()))


if __name__ == "__main__":
    main()
