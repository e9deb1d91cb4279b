"""pass@k, majority vote, bootstrap CIs and the per-benchmark summary, against hand arithmetic."""

import math
import random
from fractions import Fraction

import numpy as np
import pytest

from frugalrl.eval.stats import (
    bootstrap_ci,
    majority_correct,
    pass_at_k,
    stratified_bootstrap_ci,
)
from frugalrl.eval.summary import summarize, summary_markdown

# --- pass@k ------------------------------------------------------------------------------


def test_pass_at_k_hand_cases():
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 0, 3) == 0.0
    assert pass_at_k(5, 4, 2) == 1.0  # n - c = 1 < k: every pair holds a correct sample
    assert pass_at_k(5, 5, 5) == 1.0


def test_pass_at_k_rejects_bad_arguments():
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 0)


def test_pass_at_k_matches_binomial_formula():
    for n in range(1, 17):
        for c in range(n + 1):
            for k in range(1, n + 1):
                expected = 1 - math.comb(n - c, k) / math.comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12), (n, c, k)


def test_pass_at_k_stable_for_large_n():
    # C(1000, 100) overflows a float; exact rationals give the reference.
    expected = 1 - Fraction(math.comb(1000 - 3, 100), math.comb(1000, 100))
    assert pass_at_k(1000, 3, 100) == pytest.approx(float(expected), rel=1e-12)
    assert pass_at_k(1000, 1, 500) == pytest.approx(0.5)  # 1 - C(999,500)/C(1000,500) = 500/1000


# --- majority vote -----------------------------------------------------------------------


def test_majority_clear_winner():
    assert majority_correct([0, 0, 1, None], [True, True, False, False]) == 1.0
    assert majority_correct([0, 1, 1, 1], [True, False, False, False]) == 0.0


def test_majority_tie_goes_to_first_group_seen():
    assert majority_correct([1, 0, 0, 1], [False, True, True, False]) == 0.0
    assert majority_correct([0, 1, 1, 0], [True, False, False, True]) == 1.0


def test_majority_without_answers_scores_zero():
    assert majority_correct([None, None, None], [False, False, False]) == 0.0
    assert majority_correct([], []) == 0.0


def test_majority_null_samples_do_not_vote():
    # Three samples without an answer cannot outvote one answer.
    assert majority_correct([None, None, None, 0], [False, False, False, True]) == 1.0


def test_majority_group_right_if_any_member_graded_right():
    # The second member of group 0 timed out in the grader (recorded as wrong).
    assert majority_correct([0, 0, 1], [True, False, False]) == 1.0


# --- bootstrap CIs -----------------------------------------------------------------------


def test_bootstrap_contains_mean_and_collapses_when_equal():
    scores = np.array([0.0, 0.25, 0.5, 1.0, 1.0, 0.75])
    lo, hi = bootstrap_ci(scores)
    assert lo <= scores.mean() <= hi
    lo, hi = bootstrap_ci(np.full(7, 0.3))
    assert lo == hi == pytest.approx(0.3)


def test_stratified_bootstrap_by_hand():
    # A's resampled mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4; B never moves, so
    # the macro mean is 0.25, 0.5 or 0.75 and the 2.5th / 97.5th percentiles are the ends.
    assert stratified_bootstrap_ci({"A": np.array([0.0, 1.0]), "B": np.array([0.5])}) == (
        0.25,
        0.75,
    )


def test_stratified_bootstrap_keeps_benchmarks_apart():
    # Within each benchmark all scores are equal, so resampling within benchmarks never
    # moves the macro mean (pooled resampling would).
    lo, hi = stratified_bootstrap_ci({"A": np.array([0.2]), "B": np.full(50, 0.6)})
    assert lo == hi == pytest.approx(0.4)


def test_stratified_bootstrap_of_one_benchmark_is_plain_bootstrap():
    scores = np.array([0.0, 0.25, 0.5, 1.0, 1.0])
    assert stratified_bootstrap_ci({"A": scores}) == bootstrap_ci(scores)


# --- summarize ---------------------------------------------------------------------------


def _rows(benchmark, pid, correct, groups, tokens, finished, ungraded=()):
    return [
        {
            "benchmark": benchmark,
            "id": pid,
            "sample": i,
            "completion": "...",
            "answer": "1",
            "extracted": None if g is None else str(g),
            "correct": ok,
            "tokens": t,
            "finished": f,
            "answer_group": g,
            **({"ungraded": True} if i in ungraded else {}),
        }
        for i, (ok, g, t, f) in enumerate(zip(correct, groups, tokens, finished, strict=True))
    ]


T, F = True, False

ROWS = [
    # A: 2 problems x 4 samples
    *_rows("A", "a1", [T, T, F, F], [0, 0, 1, None], [100, 200, 300, 400], [T, T, T, F]),
    *_rows("A", "a2", [F, F, F, T], [0, 0, 1, 2], [50, 50, 100, 200], [T] * 4, ungraded={0}),
    # B: 3 problems x 4 samples
    *_rows("B", "b1", [T] * 4, [0] * 4, [10, 20, 30, 40], [T] * 4),
    *_rows("B", "b2", [F] * 4, [None] * 4, [100] * 4, [F] * 4),
    *_rows("B", "b3", [F, T, T, F], [0, 1, 1, 0], [60] * 4, [T] * 4),  # tie: group 0 wins
]


def test_summarize_by_hand():
    s = summarize(ROWS)
    a, b, overall = s["benchmarks"]["A"], s["benchmarks"]["B"], s["overall"]
    assert list(s["benchmarks"]) == ["A", "B"]

    assert (a["num_problems"], a["samples_per_problem"], a["num_samples"]) == (2, 4, 8)
    assert a["accuracy"] == pytest.approx((2 / 4 + 1 / 4) / 2)  # 0.375
    # pass@2: a1 1 - C(2,2)/C(4,2) = 5/6, a2 1 - C(3,2)/C(4,2) = 1/2
    assert a["pass_at_k"] == pytest.approx({"1": 0.375, "2": (5 / 6 + 1 / 2) / 2, "4": 1.0})
    assert a["maj_at_k"] == pytest.approx(0.5)  # a1 group 0 (right), a2 group 0 (wrong)
    assert a["mean_tokens"] == pytest.approx(1400 / 8)
    assert a["median_tokens"] == pytest.approx((100 + 200) / 2)
    assert a["tokens_per_correct"] == pytest.approx(1400 / 3)
    assert a["truncated_fraction"] == pytest.approx(1 / 8)
    assert a["ungraded"] == 1
    lo, hi = a["accuracy_ci95"]
    assert 0.25 <= lo <= 0.375 <= hi <= 0.5

    assert (b["num_problems"], b["samples_per_problem"], b["num_samples"]) == (3, 4, 12)
    assert b["accuracy"] == pytest.approx((1 + 0 + 0.5) / 3)
    # pass@2 of b3 (2 of 4 right) is 5/6; pass@4: 1, 0, 1
    assert b["pass_at_k"] == pytest.approx({"1": 0.5, "2": (1 + 0 + 5 / 6) / 3, "4": 2 / 3})
    assert b["maj_at_k"] == pytest.approx(1 / 3)
    assert b["mean_tokens"] == pytest.approx(740 / 12)
    assert b["median_tokens"] == pytest.approx(60)
    assert b["tokens_per_correct"] == pytest.approx(740 / 6)
    assert b["truncated_fraction"] == pytest.approx(4 / 12)
    assert b["ungraded"] == 0

    assert (overall["num_problems"], overall["samples_per_problem"]) == (5, 4)
    assert (overall["num_samples"], overall["ungraded"]) == (20, 1)
    assert overall["accuracy"] == pytest.approx((0.375 + 0.5) / 2)
    assert overall["pass_at_k"] == pytest.approx(
        {"1": 0.4375, "2": (2 / 3 + 11 / 18) / 2, "4": (1 + 2 / 3) / 2}
    )
    assert overall["maj_at_k"] == pytest.approx((0.5 + 1 / 3) / 2)
    mean_tokens = (1400 / 8 + 740 / 12) / 2
    assert overall["mean_tokens"] == pytest.approx(mean_tokens)
    assert overall["median_tokens"] == pytest.approx((150 + 60) / 2)
    assert overall["tokens_per_correct"] == pytest.approx(mean_tokens / 0.4375)
    assert overall["truncated_fraction"] == pytest.approx((1 / 8 + 1 / 3) / 2)
    lo, hi = overall["accuracy_ci95"]
    assert lo <= 0.4375 <= hi


def test_summarize_ignores_row_order():
    shuffled = ROWS[:]
    random.Random(0).shuffle(shuffled)
    # Benchmark order follows first appearance; the numbers must not move.
    a, b = summarize(ROWS), summarize(shuffled)
    for name in ("A", "B"):
        assert a["benchmarks"][name] == b["benchmarks"][name]


def test_summarize_equal_scores_collapse_ci():
    rows = [*_rows("A", "p", [T, F], [0, 1], [5, 5], [T, T])]
    rows += _rows("A", "q", [F, T], [0, 1], [5, 5], [T, T])
    s = summarize(rows)
    assert s["benchmarks"]["A"]["accuracy_ci95"] == [0.5, 0.5]
    assert s["overall"]["accuracy_ci95"] == [0.5, 0.5]


def test_summarize_null_tokens():
    rows = _rows("A", "p", [T, F], [0, 1], [None, None], [None, None])
    rows += _rows("B", "q", [T, T], [0, 0], [10, 30], [T, F])
    s = summarize(rows)
    a = s["benchmarks"]["A"]
    for key in ("mean_tokens", "median_tokens", "tokens_per_correct", "truncated_fraction"):
        assert a[key] is None
        assert s["overall"][key] is None  # a macro average over a missing value is missing
    assert s["benchmarks"]["B"]["mean_tokens"] == 20
    assert a["accuracy"] == 0.5
    assert "n/a" in summary_markdown(s)


def test_summarize_partly_known_tokens_are_null():
    rows = _rows("A", "p", [T, F], [0, 1], [10, None], [T, T])
    assert summarize(rows)["benchmarks"]["A"]["mean_tokens"] is None


def test_summarize_uneven_samples_and_no_answer_groups():
    rows = _rows("A", "p", [T, F], [0, 1], [1, 1], [T, T])
    rows += _rows("A", "q", [T, T, F, F, F, F], [0] * 6, [1] * 6, [T] * 6)
    for r in rows:
        del r["answer_group"]  # re-graded rows without answer groups
    a = summarize(rows)["benchmarks"]["A"]
    assert a["samples_per_problem"] == 2
    assert a["num_samples"] == 8
    assert a["accuracy"] == pytest.approx((1 / 2 + 2 / 6) / 2)
    # pass@2: p has 2 of 2 samples with one right -> 1; q 1 - C(4,2)/C(6,2) = 1 - 6/15
    assert a["pass_at_k"] == pytest.approx({"1": a["accuracy"], "2": (1 + 9 / 15) / 2})
    assert a["maj_at_k"] is None
    assert a["tokens_per_correct"] == pytest.approx(8 / 3)


def test_summarize_pass_ks_are_powers_of_two_and_n():
    rows = _rows("A", "p", [T, F, F, F, F, F], [0] * 6, [1] * 6, [T] * 6)
    assert list(summarize(rows)["benchmarks"]["A"]["pass_at_k"]) == ["1", "2", "4", "6"]


def test_summary_markdown_rows():
    md = summary_markdown(summarize(ROWS), title="demo")
    lines = md.splitlines()
    assert lines[0] == "## demo"
    rows = [line for line in lines if line.startswith("| ") and "---" not in line]
    assert [r.split(" | ")[0] for r in rows] == ["| benchmark", "| A", "| B", "| **overall**"]
    a = rows[1].strip("| ").split(" | ")
    assert a[:3] == ["A", "2", "4"]
    assert a[3].startswith("37.5 (")
    # pass@4, maj@4, mean, median, tokens/correct, truncated %
    assert a[4:] == ["100.0", "50.0", "175", "150", "467", "12.5"]
