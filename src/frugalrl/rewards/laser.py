"""Laser and Laser-D: a bonus for right answers within a target length, the target fixed
(Laser) or chosen per difficulty band from the lengths the policy currently produces (Laser-D)
(Liu et al. 2025, "Learn to Reason Efficiently with Adaptive Length-based Reward Shaping",
arXiv 2505.15612; the authors' code, hkust-nlp/Laser ``verl/utils/reward_score/length_penalty.py``).

A group's band is its accuracy: ``high`` above 2/3, ``medium`` above 1/3, ``low`` otherwise.
Laser-D's targets come from :class:`LaserTargets`, which the reward scorer keeps in the main
process: it watches the training rollouts and, every ``update_every`` steps, sets each band's
target to the shortest threshold under which enough of the band's completions fall.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from frugalrl.errors import UserError
from frugalrl.rewards.answer import DEFAULT_EXTRACTION, grade_sample
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample

BANDS = ("low", "medium", "high")


def _check(name: str, bonus: float, target_tokens: int | None) -> None:
    if bonus < 0:
        raise UserError(f"reward '{name}': bonus must be >= 0, got {bonus}")
    if target_tokens is not None and (
        isinstance(target_tokens, bool) or not isinstance(target_tokens, int) or target_tokens < 1
    ):
        raise UserError(f"reward '{name}': target_tokens must be a positive integer or null")


def _bonus_scores(
    samples: Sequence[Sample], target: int | None, bonus: float, extraction: str
) -> list[float | None]:
    """1[correct]·(1 + bonus·1[n ≤ target]); no target: every right answer earns the bonus."""
    values: list[float | None] = []
    for s in samples:
        ok = grade_sample(s, truncated_is_wrong=True, extraction=extraction)
        if ok is None:
            values.append(None)
        else:
            within = target is None or s.num_tokens <= target
            values.append(float(ok) * (1.0 + bonus * within))
    return values


@REWARDS.register("laser")
def laser(
    samples: Sequence[Sample],
    target_tokens: int = 4096,
    bonus: float = 0.5,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[float | None]:
    """Laser: r = 1[correct]·(1 + λ·1[n ≤ L]), n = ``num_tokens``, L = ``target_tokens``,
    λ = ``bonus``.

    λ 0.5 and L 4,096 (of a 16,384-token cap) are the authors' main 1.5B run (they also ran
    2,048 and 8,192). Truncated completions are wrong. It includes the correctness term: use
    it instead of ``accuracy``. Deviations: a wrong answer scores 0 (the authors' base score
    is −0.5 for a wrong boxed answer and −1 for no box or no thinking delimiters, a format
    term: add the ``format`` reward for it); math-verify grades the answer. None when the
    gold answer cannot be parsed or grading fails. docs/algorithms.md#laser."""
    _check("laser", bonus, target_tokens)
    return _bonus_scores(samples, target_tokens, bonus, extraction)


def group_band(accuracy: float) -> str:
    """The band Laser-D trains a group in, by its accuracy (the authors' training rule)."""
    return "high" if accuracy >= 2 / 3 else "medium" if accuracy >= 1 / 3 else "low"


@REWARDS.register("laser_d")
def laser_d(
    samples: Sequence[Sample],
    bonus: float = 0.5,
    target_tokens: int | None = None,
    targets: Mapping[str, int | None] | None = None,
    lower: int = 4096,
    upper: int = 16384,
    interval: int = 1024,
    expected_correct: int = 1,
    update_every: int = 20,
    extraction: str = DEFAULT_EXTRACTION,
) -> list[float | None]:
    """Laser-D: r = 1[correct]·(1 + λ·1[n ≤ L_band]), the band the group's accuracy
    (:func:`group_band`), L_band from ``targets`` (set during training by
    :class:`LaserTargets`; null: no limit); before the first targets, L = ``target_tokens``
    for every band (null: no limit).

    ``lower``, ``upper``, ``interval`` (the thresholds a target is chosen from),
    ``expected_correct`` and ``update_every`` are read by :class:`LaserTargets`; the defaults
    are the authors' 1.5B Laser-D run (4,096..16,384 by 1,024; 1; their monitor every 20
    steps). Truncated completions are wrong; includes correctness, use it instead of
    ``accuracy``. Deviations: the coverage is measured on the last ``update_every`` steps'
    training rollouts (the authors sample a separate 500-problem monitor set every 20 steps
    and once before training; here the first targets come from the first step's rollouts);
    wrong answers score 0, as in :func:`laser`; Laser-DE's exploration bonus for wrong
    answers is not implemented. docs/algorithms.md#laser_d."""
    _check("laser_d", bonus, target_tokens)
    graded = [grade_sample(s, truncated_is_wrong=True, extraction=extraction) for s in samples]
    scored = [ok for ok in graded if ok is not None]
    if not scored:
        return [None] * len(samples)
    band = group_band(sum(scored) / len(scored))
    target = target_tokens if targets is None else targets.get(band)
    return _bonus_scores(samples, target, bonus, extraction)


def thresholds(lower: int, upper: int, interval: int) -> list[int]:
    """The lengths a target is chosen from: ``lower``, ``lower + interval``, ... up to
    ``upper``; a ``lower`` below ``interval`` is followed by ``interval``, ``2·interval``, ...
    (the authors' rule: 4,096, 5,120, ..., 16,384; or 512, 1,024, 2,048, ...)."""
    if not 1 <= lower <= upper or interval < 1:
        raise UserError(
            f"reward 'laser_d': need 1 <= lower <= upper and interval >= 1, got lower={lower}, "
            f"upper={upper}, interval={interval}"
        )
    if lower < interval:
        return [lower, *range(interval, upper + 1, interval)]
    return list(range(lower, upper + 1, interval))


def monitor_band(accuracy: float) -> str:
    """The band a group's lengths are counted in when targets are chosen (the authors'
    monitor rule: low ≤ 1/3 < medium ≤ 2/3 < high)."""
    return "low" if accuracy <= 1 / 3 else "medium" if accuracy <= 2 / 3 else "high"


def choose_targets(
    groups: Sequence[tuple[float, Sequence[int]]],
    group_size: int,
    lengths: Sequence[int],
    expected_correct: int = 1,
) -> dict[str, int | None]:
    """Each band's target from (accuracy, completion lengths) of observed groups.

    coverage_b(L) = share of band b's completions (right or wrong) of at most L tokens;
    L_b = the smallest threshold L with ⌊coverage_b(L)·m_b⌋ ≥ ``expected_correct``, where
    m_b = ⌊2G/3⌋, ⌊G/3⌋, 1 for high, medium, low (G = ``group_size``): the target under
    which a group of that band can still expect its right answers. None (no limit) when no
    threshold qualifies, as the authors fall back to the longest completion."""
    by_band: dict[str, list[int]] = {b: [] for b in BANDS}
    for accuracy, group_lengths in groups:
        by_band[monitor_band(accuracy)].extend(group_lengths)
    need = {"high": int(group_size * 2 / 3), "medium": int(group_size / 3), "low": 1}
    targets: dict[str, int | None] = {}
    for band in BANDS:
        band_lengths = by_band[band]
        targets[band] = None
        for limit in sorted(lengths):
            covered = (
                sum(n <= limit for n in band_lengths) / len(band_lengths) if band_lengths else 0.0
            )
            if math.floor(covered * need[band] + 1e-9) >= expected_correct:
                targets[band] = limit
                break
    return targets


class LaserTargets:
    """Laser-D's per-band targets during a run: observes each step's groups (their lengths
    and ``laser_d`` scores, a score ≥ 1 being a right answer) and, after the first step and
    then every ``update_every`` steps, re-chooses the targets from what it saw since."""

    def __init__(self, params: Mapping[str, Any]):
        self.lengths = thresholds(
            int(params.get("lower", 4096)),
            int(params.get("upper", 16384)),
            int(params.get("interval", 1024)),
        )
        self.expected_correct = int(params.get("expected_correct", 1))
        self.update_every = int(params.get("update_every", 20))
        if self.update_every < 1 or self.expected_correct < 1:
            raise UserError("reward 'laser_d': update_every and expected_correct must be >= 1")
        self.targets: dict[str, int | None] | None = None
        self.window: list[tuple[float, list[int]]] = []
        self.group_size = 0

    def params(self) -> dict[str, Any]:
        """What the reward scores with now (nothing before the first targets)."""
        return {} if self.targets is None else {"targets": dict(self.targets)}

    def observe(
        self, step: int, lengths: Sequence[Sequence[int]], values: Sequence[Sequence[float]]
    ) -> None:
        for group_lengths, group_values in zip(lengths, values, strict=True):
            graded = [v for v in group_values if v is not None and not math.isnan(v)]
            if graded:
                self.window.append((sum(v >= 1 for v in graded) / len(graded), list(group_lengths)))
                self.group_size = max(self.group_size, len(group_lengths))
        if self.window and (self.targets is None or (step + 1) % self.update_every == 0):
            self.targets = choose_targets(
                self.window, self.group_size, self.lengths, self.expected_correct
            )
            self.window = []

    def metrics(self) -> dict[str, float]:
        if self.targets is None:
            return {}
        return {f"target_{b}": float(t) for b, t in self.targets.items() if t is not None}

    def state_dict(self) -> dict[str, Any]:
        return {"targets": self.targets, "window": self.window, "group_size": self.group_size}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.targets = state["targets"]
        self.window = [(a, list(n)) for a, n in state["window"]]
        self.group_size = state["group_size"]


laser_d.adapter = LaserTargets  # the scorer keeps one per run and passes its params on
