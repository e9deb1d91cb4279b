"""Held-out evaluation: avg@k accuracy (with a bootstrap CI) and completion tokens."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from frugalrl.eval.stats import bootstrap_ci
from frugalrl.rewards import RewardSpec
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.rollout import RolloutEngine, SamplingParams
from frugalrl.sample import Sample


def evaluate_problems(
    engine: RolloutEngine,
    problems: Sequence[dict[str, Any]],
    prompt_ids: Sequence[Sequence[int]],
    samples_per_problem: int,
    params: SamplingParams,
    generations_path: Path | None = None,
    scoring_workers: int = 0,
    scoring_timeout: float = 30.0,
) -> dict[str, Any]:
    """Sample k completions per problem and grade them with the accuracy reward.

    Grading goes through the training loop's RewardScorer (same workers and watchdog).
    accuracy = avg@k: the mean over problems of the fraction of correct samples. Samples the
    grader cannot score (unparseable gold, timeout) count as wrong here and are counted.
    """
    groups = engine.generate(prompt_ids, samples_per_problem, params)
    with RewardScorer([RewardSpec("accuracy")], scoring_workers, scoring_timeout) as scorer:
        graded = scorer.score(
            [
                [Sample(c.text, c.num_tokens, c.finished, problem) for c in group]
                for problem, group in zip(problems, groups, strict=True)
            ]
        ).per_reward["accuracy"]
    per_problem, tokens, truncated, ungraded, rows = [], [], [], 0, []
    for problem, group, scores in zip(problems, groups, graded, strict=True):
        ungraded += sum(s is None for s in scores)
        correct = [bool(s) for s in scores]
        per_problem.append(np.mean(correct))
        for i, (c, ok) in enumerate(zip(group, correct, strict=True)):
            tokens.append(c.num_tokens)
            truncated.append(not c.finished)
            rows.append(
                {
                    "id": problem.get("id"),
                    "sample": i,
                    "completion": c.text,
                    "answer": problem["answer"],
                    "correct": ok,
                    "tokens": c.num_tokens,
                    "finished": c.finished,
                }
            )
    if generations_path is not None:
        generations_path.parent.mkdir(parents=True, exist_ok=True)
        with generations_path.open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
    lo, hi = bootstrap_ci(np.array(per_problem))
    return {
        "accuracy": float(np.mean(per_problem)),
        "accuracy_ci95": [lo, hi],
        "mean_tokens": float(np.mean(tokens)),
        "median_tokens": float(np.median(tokens)),
        "truncated_fraction": float(np.mean(truncated)),
        "ungraded": ungraded,
        "num_problems": len(problems),
        "samples_per_problem": samples_per_problem,
    }
