"""Statistics of per-problem scores: pass@k, majority vote, bootstrap confidence intervals."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of one problem from n samples, c of them correct (Chen et al. 2021).

        pass@k = 1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1}^{n} (1 - k/i)

    The product form never builds the binomials, which overflow floats for n in the hundreds.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return 1.0 - float(np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def majority_correct(groups: Sequence[int | None], correct: Sequence[bool]) -> float:
    """maj@k of one problem: 1.0 if the most common answer is right, else 0.0.

    ``groups[i]`` is the answer group of sample i (math-equivalent answers share a group),
    None when it has no extracted answer: such samples never vote, and with no vote at all
    the problem scores 0. A tie goes to the group that appears first among the samples. We
    chose that over splitting credit between tied groups because it is what a real voter
    outputs (one answer, a 0/1 score), and as samples are i.i.d. it is an unbiased random
    tie-break; splitting credit would only lower the variance.

    The winning group counts as correct if any of its samples was graded correct: its
    answers are equivalent, so they can only disagree when one could not be graded (a grader
    timeout is recorded as wrong, which is not a judgement on the answer).
    """
    if len(groups) != len(correct):
        raise ValueError(f"{len(groups)} groups but {len(correct)} correctness flags")
    votes = Counter(g for g in groups if g is not None)
    if not votes:
        return 0.0
    # Counter keeps first-insertion order and max() returns the first maximum: ties go to
    # the group seen first.
    winner = max(votes, key=votes.__getitem__)
    return float(any(ok for g, ok in zip(groups, correct, strict=True) if g == winner))


def bootstrap_ci(
    per_problem: np.ndarray, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap over problems of the mean score (e.g. avg@k accuracy).

    Problems are resampled with replacement; each problem keeps its own k samples, so the
    interval reflects the spread across problems, the dominant source of variance.
    """
    per_problem = np.asarray(per_problem, dtype=float)
    if per_problem.size == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, per_problem.size, size=(resamples, per_problem.size))
    means = per_problem[idx].mean(axis=1)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(means, [tail, 100 - tail])
    return float(lo), float(hi)


def stratified_bootstrap_ci(
    per_problem_by_benchmark: Mapping[str, np.ndarray],
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap of the macro average over benchmarks, resampling within each.

        macro = (1/B) sum_b mean(scores_b)

    Each resample draws every benchmark's problems with replacement from that benchmark
    only, so each keeps its size and its weight 1/B, as in the statistic itself. With one
    benchmark this gives exactly ``bootstrap_ci`` (same seed, same draws).
    """
    scores = [np.asarray(s, dtype=float) for s in per_problem_by_benchmark.values()]
    if not scores or any(s.size == 0 for s in scores):
        return float("nan"), float("nan")  # a benchmark without problems has no mean
    rng = np.random.default_rng(seed)
    macro = np.zeros(resamples)
    for s in scores:
        macro += s[rng.integers(0, s.size, size=(resamples, s.size))].mean(axis=1)
    macro /= len(scores)
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(macro, [tail, 100 - tail])
    return float(lo), float(hi)


def short_m_at_k(
    lengths: Sequence[int], groups: Sequence[int | None], correct: Sequence[bool], m: int
) -> tuple[float, float]:
    """short-m@k of one problem from its k samples (Hassid et al. 2025, "Don't Overthink It:
    Preferring Shorter Thinking Chains for Improved LLM Reasoning"): (1.0 if right else 0.0,
    tokens spent).

    Decoding all k in parallel and stopping once m have finished, the m that finish are the m
    shortest (equal lengths: the earlier sample). They vote as in :func:`majority_correct`; a
    tie goes to the group holding the shortest of them. Tokens spent: Σ_i min(n_i, n_(m)),
    each sample decoded until it finished or the m-th one did. docs/algorithms.md#short-m-at-k.
    """
    if not 1 <= m <= len(lengths):
        raise ValueError(f"need 1 <= m <= k, got m={m}, k={len(lengths)}")
    if not len(lengths) == len(groups) == len(correct):
        raise ValueError("lengths, groups and correctness flags differ in number")
    first = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))[:m]
    stop = lengths[first[-1]]
    spent = float(sum(min(n, stop) for n in lengths))
    # first is ordered shortest first, and majority_correct breaks ties by first appearance
    won = majority_correct([groups[i] for i in first], [correct[i] for i in first])
    return won, spent
