"""Statistics of per-problem scores."""

from __future__ import annotations

import numpy as np


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
