"""Time the shipped curation config on the full open-rs training set; print counts per stage.

    python benchmarks/curate_open_rs.py [--data /work/shared/train/open_rs.jsonl] [--out DIR]

Runs src/frugalrl/recipes/curate-open-rs.yaml (load, answers, dedup, decontaminate, mix) and
prints rows in/dropped/out per stage with the reasons, the overlap per benchmark, and wall time.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from frugalrl.curate import run_curation, summary_lines

RECIPE = (
    Path(__file__).resolve().parents[1] / "src" / "frugalrl" / "recipes" / "curate-open-rs.yaml"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/train/open_rs.jsonl")
    parser.add_argument("--out", help="output directory (default: a temporary one)")
    args = parser.parse_args()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="curate-open-rs-"))
    t0 = time.perf_counter()
    summary = run_curation(RECIPE, [f"load.sources.0.path={args.data}", "progress=false"], out)
    wall = time.perf_counter() - t0
    print("\n".join(summary_lines(summary)))
    by_stage = {s["stage"]: s for s in summary["stages"]}
    answers = by_stage["answers"]["stats"]
    print(
        f"answers cleaned of stray delimiters: {answers['cleaned']}, "
        f"solution boxes holding only a choice letter: {answers['choice letter only']}"
    )
    print(f"benchmark overlaps by check: {by_stage['decontaminate']['stats']['overlaps by check']}")
    print(f"mix parts: {by_stage['mix']['stats']['parts']}")
    print(f"rows in {summary['rows_in']}, rows out {summary['rows_out']}, wall {wall:.1f} s")


if __name__ == "__main__":
    main()
