"""Reward-scoring throughput: 1,024 math-style completions (~300 tokens), accuracy + format +
efficiency, frugalrl's batch scorer against the way open-rs/TRL reward functions grade
(math-verify parse + verify, one completion after another, in the trainer's process).

    python benchmarks/rewards_throughput.py [--n 1024] [--workers 0 2]

Prints one table; the goal (issue 3) is ≤ 2 s for 1,024 completions on 2 cores.
"""

from __future__ import annotations

import argparse
import random
import time

from math_verify import LatexExtractionConfig, parse, verify
from math_verify.parser import NormalizationConfig

from frugalrl.rewards import RewardSpec
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.sample import Sample

FILLER = [
    "First, let me restate the problem in my own words.",
    "We are asked to find the value of the expression under the given constraints.",
    "Let $x$ and $y$ be the two unknowns, so that $x + y = {a}$ and $x - y = {b}$.",
    "Adding the two equations gives $2x = {a} + {b}$, so $x = \\frac{{{a} + {b}}}{{2}}$.",
    "Wait, let me double-check this step by substituting back into the original equation.",
    "Using the identity $\\sin^2\\theta + \\cos^2\\theta = 1$, we simplify the numerator.",
    "The discriminant is $b^2 - 4ac = {a}^2 - 4 \\cdot {b}$, which is positive.",
    "Therefore the sum of the roots is $-\\frac{{b}}{{a}}$ by Vieta's formulas.",
    "Hmm, but we should also consider the case where the denominator vanishes.",
    "So the area is $\\frac{{1}}{{2}} \\cdot {a} \\cdot {b} = {c}$ square units.",
]


def make_answer(rng: random.Random) -> str:
    kind = rng.randrange(4)
    a, b = rng.randint(1, 99), rng.randint(2, 50)
    return [str(a), f"\\frac{{{a}}}{{{b}}}", f"{a}\\sqrt{{{b}}}", f"{a}\\pi"][kind]


def make_groups(n: int, group_size: int = 8, seed: int = 0) -> list[list[Sample]]:
    rng = random.Random(seed)
    groups = []
    for g in range(n // group_size):
        gold = make_answer(rng)
        group = []
        for _ in range(group_size):
            a, b, c = rng.randint(2, 99), rng.randint(2, 99), rng.randint(2, 999)
            lines = [rng.choice(FILLER).format(a=a, b=b, c=c) for _ in range(rng.randint(8, 16))]
            answer = gold if rng.random() < 0.5 else make_answer(rng)
            text = "\n".join(lines) + f"\n</think>\nThe final answer is $\\boxed{{{answer}}}$."
            tokens = len(text) // 3  # ~300 tokens, the length a Qwen2 tokenizer gives this text
            group.append(Sample(text, tokens, True, {"id": f"p{g}", "answer": gold}))
        groups.append(group)
    return groups


def peer_accuracy(groups: list[list[Sample]]) -> list[float]:
    """What open-rs's accuracy_reward does per completion (their normalisation settings)."""
    out = []
    for group in groups:
        for s in group:
            gold = parse(f"${s.example['answer']}$", extraction_config=[LatexExtractionConfig()])
            pred = parse(
                s.completion,
                extraction_config=[
                    LatexExtractionConfig(
                        normalization_config=NormalizationConfig(
                            nits=False,
                            malformed_operators=False,
                            basic_latex=True,
                            boxed="all",
                            units=True,
                        ),
                        boxed_match_priority=0,
                        try_extract_without_anchor=False,
                    )
                ],
                extraction_mode="first_match",
            )
            out.append(float(verify(gold, pred)) if gold else 1.0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    args = parser.parse_args()
    groups = make_groups(args.n)
    specs = [
        RewardSpec("accuracy", 1.0),
        RewardSpec("format", 1.0, {"schema": "open-rs"}),
        RewardSpec("efficiency", 1.0, {"alpha": 0.2}),
    ]
    peer_accuracy(groups[:2])  # warm up imports and caches on both sides alike
    t0 = time.perf_counter()
    peer = peer_accuracy(groups)
    peer_s = time.perf_counter() - t0
    rows = [("open-rs style: math-verify per completion (accuracy only)", peer_s, sum(peer))]
    for workers in args.workers:
        with RewardScorer(specs, workers=workers) as scorer:
            scorer.score(groups[:2])  # start the pool, as a training run does once
            t0 = time.perf_counter()
            batch = scorer.score(groups)
            seconds = time.perf_counter() - t0
        correct = sum(v or 0 for g in batch.per_reward["accuracy"] for v in g)
        rows.append(
            (f"frugalrl RewardScorer, workers={workers} (acc+format+eff)", seconds, correct)
        )
    print(
        f"{args.n} completions, ~{sum(s.num_tokens for g in groups for s in g) // args.n} tokens each"
    )
    print(f"| {'scorer':<60} | {'seconds':>8} | {'completions/s':>13} | {'vs peer':>8} | correct |")
    print(f"|{'-' * 62}|{'-' * 10}|{'-' * 15}|{'-' * 10}|---------|")
    for name, seconds, correct in rows:
        print(
            f"| {name:<60} | {seconds:>8.2f} | {args.n / seconds:>13.0f} | "
            f"{peer_s / seconds:>7.2f}x | {int(correct):>7} |"
        )


if __name__ == "__main__":
    main()
