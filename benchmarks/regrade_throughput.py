"""`frugalrl eval --regrade` throughput: 1,000 saved generations, re-graded without a model.

The rows are MATH-500's 500 reference solutions used as completions, twice each: once as
written (right) and once with the final boxed answer replaced (wrong), so the grader sees real
LaTeX of every MATH subject. Timed three ways:

* the whole command as a user runs it (a fresh process: imports, worker start-up, grading,
  maj@k answer groups, summary files);
* frugalrl's grading alone, in-process and with 2 workers;
* the peer way (math-verify parse + verify per row, one after another, as lighteval does).

    python benchmarks/regrade_throughput.py [--rows 1000]

The goal (issue 4) is ≤ 5 s for 1,000 rows on 2 cores, for the whole command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from math_verify import parse, verify

from frugalrl.eval.benchmarks import load_benchmark
from frugalrl.eval.grading import grade_rows
from frugalrl.rewards.answer import extract_boxed


def make_rows(n: int) -> list[dict]:
    problems = load_benchmark("math500").problems
    rows = []
    for i in range(n):
        p = problems[(i // 2) % len(problems)]
        text = p["solution"]
        if i % 2:  # the wrong twin: same solution, another final answer
            boxed = extract_boxed(text)
            cut = text.rfind(boxed)
            text = text[:cut] + "1234567" + text[cut + len(boxed) :]
        rows.append(
            {
                "benchmark": "math500",
                "id": f"{p['id']}#{i // (2 * len(problems))}",
                "completion": text,
                "answer": p["answer"],
            }
        )
    return rows


def peer_grade(rows: list[dict]) -> int:
    correct = 0
    for r in rows:
        gold = parse(f"${r['answer']}$")
        correct += bool(verify(gold, parse(r["completion"])))
    return correct


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    args = parser.parse_args()
    rows = make_rows(args.rows)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "generations.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        t0 = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "frugalrl.cli", "eval", "--regrade", str(src)]
            + ["--out", str(Path(tmp) / "out"), "--workers", "2"],
            check=True,
            capture_output=True,
        )
        seconds = time.perf_counter() - t0
        summary = json.loads((Path(tmp) / "out" / "summary.json").read_text())
        n_correct = round(summary["benchmarks"]["math500"]["accuracy"] * args.rows)
        results.append(("frugalrl eval --regrade (whole command, 2 workers)", seconds, n_correct))
    for workers in (0, 2):
        t0 = time.perf_counter()
        graded = grade_rows(rows, workers=workers)
        seconds = time.perf_counter() - t0
        results.append(
            (f"frugalrl grade_rows, workers={workers}", seconds, sum(r["correct"] for r in graded))
        )
    t0 = time.perf_counter()
    n_correct = peer_grade(rows)
    peer_s = time.perf_counter() - t0
    results.append(("peer: math-verify parse+verify per row", peer_s, n_correct))
    print(f"{args.rows} rows (MATH-500 solutions, half with a wrong final answer)")
    print(f"| {'grader':<52} | {'seconds':>7} | {'rows/s':>7} | {'vs peer':>7} | correct |")
    print(f"|{'-' * 54}|{'-' * 9}|{'-' * 9}|{'-' * 9}|---------|")
    for name, seconds, n_correct in results:
        print(
            f"| {name:<52} | {seconds:>7.2f} | {args.rows / seconds:>7.0f} | "
            f"{peer_s / seconds:>6.2f}x | {n_correct:>7} |"
        )


if __name__ == "__main__":
    main()
