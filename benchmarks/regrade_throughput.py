"""`frugalrl eval --regrade` throughput: 1,000 saved generations, re-graded without a model.

The rows are MATH-500's 500 reference solutions used as completions, twice each: once as
written (right) and once with the final boxed answer replaced (wrong), so the grader sees real
LaTeX of every MATH subject. Each grader runs as a fresh process, as a user runs it (imports, worker start-up and
math-verify's parser warm-up included): ``frugalrl eval --regrade`` with 2 workers and
in-process (it also forms the maj@k answer groups and writes the summary files), and the peer
way (math-verify parse + verify per row, one after another, as lighteval grades).

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
from frugalrl.rewards.answer import extract_boxed


def make_rows(n: int) -> list[dict]:
    problems = load_benchmark("math500").problems
    rows = []
    for i in range(n):
        p = problems[(i // 2) % len(problems)]
        text = p["solution"]
        if i % 2:  # the wrong twin: same solution, another final answer in its last box
            boxed = extract_boxed(text)
            cut = text.rfind("\\boxed{" + boxed + "}") + len("\\boxed{")
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


def peer_grade(path: Path) -> int:
    """The peer way, as lighteval grades: math-verify parse + verify per row, in one process."""
    correct = 0
    for line in path.read_text().splitlines():
        r = json.loads(line)
        gold = parse(f"${r['answer']}$")
        correct += bool(verify(gold, parse(r["completion"])))
    return correct


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds of a fresh process (imports and warm-up included, as a user pays them)."""
    t0 = time.perf_counter()
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return time.perf_counter() - t0, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000)
    parser.add_argument("--peer", type=Path, help=argparse.SUPPRESS)  # run the peer on a file
    args = parser.parse_args()
    if args.peer:
        print(peer_grade(args.peer))
        return
    rows = make_rows(args.rows)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "generations.jsonl"
        src.write_text("".join(json.dumps(r) + "\n" for r in rows))
        for workers in (2, 0):
            out = Path(tmp) / f"out-{workers}"
            seconds, _ = timed(
                [sys.executable, "-m", "frugalrl.cli", "eval", "--regrade", str(src)]
                + ["--out", str(out), "--workers", str(workers)]
            )
            summary = json.loads((out / "summary.json").read_text())
            n_correct = round(summary["benchmarks"]["math500"]["accuracy"] * 2 * len(rows) / 2)
            name = f"frugalrl eval --regrade, workers={workers}"
            results.append((name, seconds, n_correct))
        peer_s, stdout = timed([sys.executable, __file__, "--peer", str(src)])
        results.append(("peer: math-verify parse+verify per row", peer_s, int(stdout)))
    print(f"{args.rows} rows (MATH-500 solutions, half with a wrong final answer); each grader")
    print("timed as a fresh process, start-up and math-verify's parser warm-up included")
    print(f"| {'grader':<40} | {'seconds':>7} | {'rows/s':>7} | {'vs peer':>7} | correct |")
    print(f"|{'-' * 42}|{'-' * 9}|{'-' * 9}|{'-' * 9}|---------|")
    for name, seconds, n_correct in results:
        print(
            f"| {name:<40} | {seconds:>7.2f} | {args.rows / seconds:>7.0f} | "
            f"{peer_s / seconds:>6.2f}x | {n_correct:>7} |"
        )


if __name__ == "__main__":
    main()
