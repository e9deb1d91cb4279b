"""The demo's synthetic task: chained integer arithmetic, solved step by step.

A problem is a left-to-right chain such as ``4+7-9+3``; its solution writes one step per
line inside ``<think> ... </think>`` and the result in ``\\boxed{}``, the format of real reasoning
models. Two properties make it a faithful miniature of the open-rs setting:

* **partially right base policy**: the SFT traces contain a slip (a result off by one, carried
  to the end) with probability ``slip_rate`` per step, so the warm-started policy is right on
  only part of the problems and RL with a verifiable reward has something to fix;
* **verbose base policy**: with probability ``verbose_rate`` a trace re-checks each step once or
  more ("check 4+7=11 ok"), tokens that change nothing, which a length-aware reward
  can learn to cut. These checks do help a small model (the operands sit next to the result),
  so plain RL *keeps* them: the demo's accuracy gain comes partly from checking more;
* **overthinking base policy**: with probability ``overthink_rate`` a trace, having found its
  answer, re-confirms it one or more times ("wait, let me double check. the answer is 11. yes.")
  before closing ``</think>``, the redundant post-answer verification that makes up much of
  real reasoning models' output (Chen et al. 2024, "Do NOT think that much for 2+3=?"). These
  tokens only restate the answer already written, so accuracy alone gives no reason to drop
  them, and a length-aware reward should.

Splits are disjoint by construction: a problem belongs to ``heldout`` iff a hash of its text
falls in the held-out bucket, so no held-out problem text is ever trained on.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass

OPS = ("+", "-")


@dataclass(frozen=True)
class TaskSpec:
    min_steps: int = 2
    max_steps: int = 4
    max_value: int = 9  # every start, intermediate and final value stays in [0, max_value]
    slip_rate: float = 0.25
    verbose_rate: float = 0.5
    max_rechecks: int = 2
    overthink_rate: float = 0.7
    max_overthink: int = 6


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def is_heldout(problem: str, heldout_fraction: float = 0.1) -> bool:
    digest = hashlib.sha256(problem.encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < heldout_fraction


def random_problem(rng: random.Random, spec: TaskSpec) -> tuple[int, list[tuple[str, int]]]:
    """A start value and (op, operand) steps whose running values stay in [0, max_value]."""
    while True:
        start = rng.randint(1, spec.max_value)
        steps, value = [], start
        for _ in range(rng.randint(spec.min_steps, spec.max_steps)):
            op, operand = rng.choice(OPS), rng.randint(1, 9)
            value = _apply(value, op, operand)
            if not 0 <= value <= spec.max_value:
                break
            steps.append((op, operand))
        else:
            return start, steps


def problem_text(start: int, steps: list[tuple[str, int]]) -> str:
    return str(start) + "".join(f"{op}{b}" for op, b in steps)


def solution_trace(
    start: int, steps: list[tuple[str, int]], rng: random.Random, spec: TaskSpec
) -> tuple[str, int]:
    """A reasoning trace and the answer it reaches (wrong when a slip happened).

    Each line rewrites the expression with its first operation done (``=11-9+3``), so every
    step is local: compute from the line above, copy the rest.
    """
    verbose = rng.random() < spec.verbose_rate
    lines, value = [problem_text(start, steps)], start
    for i, (op, b) in enumerate(steps):
        result = _apply(value, op, b)
        if rng.random() < spec.slip_rate:
            result += rng.choice((-1, 1))
        if verbose:
            for _ in range(rng.randint(1, spec.max_rechecks)):
                lines.append(f"check {value}{op}{b}={result} ok")
        lines.append("=" + problem_text(result, steps[i + 1 :]))
        value = result
    if rng.random() < spec.overthink_rate:
        for _ in range(rng.randint(1, spec.max_overthink)):
            lines.append(f"wait, let me double check. the answer is {value}. yes.")
    return "<think>\n" + "\n".join(lines) + "\n</think>\n" + f"\\boxed{{{value}}}", value


def make_split(
    split: str, n: int, seed: int, spec: TaskSpec = TaskSpec(), with_traces: bool = False
) -> list[dict]:
    """``n`` distinct problems of one split ('train' or 'heldout') as dataset rows.

    With ``with_traces`` each row also gets an SFT ``completion`` (noisy and sometimes verbose).
    """
    rng = random.Random(f"{seed}-{split}")
    rows, seen = [], set()
    while len(rows) < n:
        start, steps = random_problem(rng, spec)
        problem = problem_text(start, steps)
        if problem in seen or is_heldout(problem) != (split == "heldout"):
            continue
        seen.add(problem)
        answer = start
        for op, b in steps:
            answer = _apply(answer, op, b)
        row = {"id": f"demo-{split}-{len(rows)}", "problem": problem, "answer": str(answer)}
        if with_traces:
            row["completion"], _ = solution_trace(start, steps, rng, spec)
        rows.append(row)
    return rows
