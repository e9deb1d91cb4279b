"""Length, language and repetition rewards: hand-computed values and properties."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from frugalrl.errors import UserError
from frugalrl.rewards import REWARDS, RewardSpec, drift_fraction, score_group
from frugalrl.rewards.answer import grade
from frugalrl.sample import Sample

RIGHT = r"so \boxed{12}"  # gold "12": correct
WRONG = r"so \boxed{13}"


def s(completion: str, num_tokens: int = 10, finished: bool = True, answer: str = "12") -> Sample:
    return Sample(completion, num_tokens=num_tokens, finished=finished, example={"answer": answer})


def run(name: str, samples, **params):
    return REWARDS.get(name)(samples, **params)


def approx(values):
    return pytest.approx(values, abs=1e-6)


# --- grade -----------------------------------------------------------------------------------


def test_grade():
    assert grade(RIGHT, "12") is True
    assert grade(WRONG, "12") is False
    assert grade(RIGHT, "{") is None  # unparseable gold


def test_grade_is_memoised_across_rewards():
    samples = [s(r"memo \boxed{12}", 5)]
    run("accuracy", samples)
    hits = grade.cache_info().hits
    run("cosine", samples)
    run("efficiency", samples)
    assert grade.cache_info().hits == hits + 2


# --- cosine ----------------------------------------------------------------------------------
# r(L) = v_L + ½(v_0 − v_L)(1 + cos(π·min(L, Lmax)/Lmax)), Lmax = 3584.


@pytest.mark.parametrize(
    ("completion", "length", "finished", "reward"),
    [
        (RIGHT, 0, True, 1.0),  # 0.5 + ½(0.5)(1 + 1) = 1.0
        (RIGHT, 3584, True, 0.5),  # 0.5 + ½(0.5)(1 − 1) = 0.5
        (RIGHT, 1792, True, 0.75),  # 0.5 + ½(0.5)(1 + 0) = 0.75
        (RIGHT, 7168, True, 0.5),  # clipped to Lmax (open-rs: cos(2π) = 1 → 1.0)
        (WRONG, 0, True, -1.0),  # −0.5 + ½(−0.5)(2) = −1.0
        (WRONG, 1792, True, -0.75),  # −0.5 + ½(−0.5)(1) = −0.75
        (WRONG, 3584, True, -0.5),
        (WRONG, 10_000, True, -0.5),  # clipped
        (RIGHT, 1792, False, -0.75),  # truncated: wrong branch even with a correct box
    ],
)
def test_cosine(completion, length, finished, reward):
    assert run("cosine", [s(completion, length, finished)]) == approx([reward])


def test_cosine_third_of_max_len():
    # L = Lmax/3: cos(π/3) = 0.5 → 0.5 + ½(0.5)(1.5) = 0.875; wrong: −0.5 + ½(−0.5)(1.5) = −0.875
    assert run("cosine", [s(RIGHT, 100), s(WRONG, 100)], max_len=300) == approx([0.875, -0.875])


def test_cosine_open_rs_wrong_values():
    # open-rs ran wrong values 0.0 at L=0 → −0.5 at Lmax: −0.5 + ½(0.5)(1 + cos(π/2)) = −0.25
    samples = [s(WRONG, 0), s(WRONG, 1792), s(WRONG, 3584), s(RIGHT, 0)]
    assert run("cosine", samples, wrong_at_zero=0.0, wrong_at_max=-0.5) == approx(
        [0.0, -0.25, -0.5, 1.0]
    )


def test_cosine_unparseable_gold_and_bad_max_len():
    assert run("cosine", [s(RIGHT, answer="{"), s(WRONG, answer="{")]) == [None, None]
    with pytest.raises(UserError, match="max_len"):
        run("cosine", [s(RIGHT)], max_len=0)


endpoint = st.floats(-2.0, 2.0)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 3 * 200), min_size=1, max_size=8),
    v0=endpoint,
    v_max=endpoint,
    correct=st.booleans(),
)
def test_cosine_bounded_and_monotone(lengths, v0, v_max, correct):
    lengths = sorted(lengths)
    params = {"max_len": 200, "correct_at_zero": v0, "correct_at_max": v_max}
    params |= {"wrong_at_zero": v0, "wrong_at_max": v_max}
    r = run("cosine", [s(RIGHT if correct else WRONG, n) for n in lengths], **params)
    lo, hi = min(v0, v_max) - 1e-12, max(v0, v_max) + 1e-12
    assert all(lo <= v <= hi for v in r)
    sign = 1 if v_max >= v0 else -1  # towards v_max as L grows
    assert all(sign * (b - a) >= -1e-12 for a, b in pairwise(r))


# --- efficiency ------------------------------------------------------------------------------
# r = 1[correct]·(1 − α·σ((L − mean)/(std + 1e-7))), statistics over correct finished ones.


def test_efficiency_group_normalisation():
    # correct lengths 10, 20, 30: mean 20, pop std √(200/3) = 8.164966; z = ∓1.224745, 0
    # σ(−1.224745) = 0.227103, σ(0) = 0.5, σ(1.224745) = 0.772897
    # α = 0.2: 1 − 0.2·0.227103 = 0.954579; 1 − 0.1 = 0.9; 1 − 0.2·0.772897 = 0.845421
    samples = [s(RIGHT, 10), s(RIGHT, 20), s(RIGHT, 30), s(WRONG, 40)]
    assert run("efficiency", samples, alpha=0.2) == approx([0.954579, 0.9, 0.845421, 0.0])


def test_efficiency_truncated_excluded():
    # finished correct 10, 30: mean 20, std 10, z = ∓1; σ(1) = 0.731059
    # 1 − 0.2·0.268941 = 0.946212, 1 − 0.2·0.731059 = 0.853788; truncated (even correct) 0
    samples = [s(RIGHT, 10), s(RIGHT, 20, finished=False), s(RIGHT, 30), s(WRONG, 5)]
    assert run("efficiency", samples, alpha=0.2) == approx([0.946212, 0.0, 0.853788, 0.0])


def test_efficiency_single_correct_and_edge_cases():
    # one correct: std 0, z = 0/(0 + 1e-7) = 0, σ = 0.5 → 1 − 0.2/2 = 0.9 (default α 0.1: 0.95)
    samples = [s(RIGHT, 500), s(WRONG, 10), s(WRONG, 20)]
    assert run("efficiency", samples, alpha=0.2) == approx([0.9, 0.0, 0.0])
    assert run("efficiency", samples) == approx([0.95, 0.0, 0.0])
    assert run("efficiency", samples, alpha=0.0) == [1.0, 0.0, 0.0]  # plain accuracy
    assert run("efficiency", [s(WRONG), s(WRONG, finished=False)]) == [0.0, 0.0]
    assert run("efficiency", [s(RIGHT, answer="{"), s(WRONG, answer="{")]) == [None, None]
    with pytest.raises(UserError, match="alpha"):
        run("efficiency", samples, alpha=-0.1)


@settings(max_examples=40, deadline=None)
@given(
    group=st.lists(
        st.tuples(st.integers(1, 5000), st.booleans(), st.booleans()), min_size=1, max_size=8
    ),
    alpha=st.floats(0.0, 1.0),
)
def test_efficiency_bounded_and_shorter_is_better(group, alpha):
    samples = [s(RIGHT if ok else WRONG, n, finished) for n, ok, finished in group]
    r = run("efficiency", samples, alpha=alpha)
    good = sorted((n, v) for (n, ok, finished), v in zip(group, r, strict=True) if ok and finished)
    assert all(1 - alpha <= v <= 1 for _, v in good)
    assert all(b[1] <= a[1] for a, b in pairwise(good))  # non-increasing in length
    assert all(
        v == 0.0 for (_, ok, finished), v in zip(group, r, strict=True) if not (ok and finished)
    )


# --- overlong --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "reward"),
    [
        (0, 0.0),
        (80, 0.0),  # L = Lmax − Lcache: still free
        (81, -0.05),  # (80 − 81)/20
        (90, -0.5),  # (80 − 90)/20
        (100, -1.0),  # L = Lmax: (80 − 100)/20
        (101, -1.0),  # beyond Lmax
    ],
)
def test_overlong(length, reward):
    assert run("overlong", [s("x", length)], max_len=100, cache_len=20) == approx([reward])


def test_overlong_defaults_and_validation():
    # DAPO: 20480 − 4096 = 16384 free; 18432 → (16384 − 18432)/4096 = −0.5
    assert run("overlong", [s("x", 16384), s("x", 18432)]) == [0.0, -0.5]
    for bad in (0, -1, 101):
        with pytest.raises(UserError, match="cache_len"):
            run("overlong", [s("x")], max_len=100, cache_len=bad)
    assert run("overlong", [s("x", 0), s("x", 50)], max_len=100, cache_len=100) == [0.0, -0.5]


@settings(max_examples=50, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 3000), min_size=1, max_size=10),
    max_len=st.integers(1, 2000),
    cache_frac=st.floats(0.01, 1.0),
)
def test_overlong_bounded_and_non_increasing(lengths, max_len, cache_frac):
    cache_len = max(1, int(cache_frac * max_len))
    r = run("overlong", [s("x", n) for n in sorted(lengths)], max_len=max_len, cache_len=cache_len)
    assert all(-1.0 <= v <= 0.0 for v in r)
    assert all(b <= a for a, b in pairwise(r))


# --- language --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "params", "reward"),
    [
        ("The answer is 12.", {}, 0.0),
        ("所以答案是 12", {}, -1.0),  # every letter Han
        # 29 Latin letters + 1 Han: 1/30 = 0.033 ≤ 0.05, but > 0.01
        ("The final answer is clearly twelve 是", {}, 0.0),
        ("The final answer is clearly twelve 是", {"threshold": 0.01}, -1.0),
        (r"The area is $\pi r^2$, so π times r squared: \boxed{4\pi}", {}, 0.0),
        (r"Let θ be the angle \(\theta = \frac{\pi}{2}\) and \[x = 𝑥\]", {}, 0.0),
        (r"<think>\nokay\n</think>\n\boxed{\text{yes}}", {}, 0.0),
        ("12 + 7 = 19", {}, 0.0),  # no letters
        ("Ответ: 12", {"script": "cyrillic"}, 0.0),
        ("Ответ: 12", {}, -1.0),
        ("Ответ: $x = 12$", {"script": "cyrillic"}, 0.0),  # the x is math
        ("Ответ x = 12", {"script": "cyrillic"}, -1.0),  # 1 Latin of 6 letters = 0.167
        ("答案是12", {"script": "han"}, 0.0),
        ("Η απάντηση είναι 12", {"script": "greek"}, 0.0),
        ("Η απάντηση είναι 12", {}, 0.0),  # Greek is read as maths: no letters counted
    ],
)
def test_language(completion, params, reward):
    assert run("language", [s(completion)], **params) == [reward]


def test_language_validation_and_drift_fraction():
    with pytest.raises(UserError, match="latin, cyrillic, greek, han"):
        run("language", [s("x")], script="klingon")
    with pytest.raises(UserError, match="threshold"):
        run("language", [s("x")], threshold=1.5)
    assert drift_fraction([-1.0, 0.0, None, -1.0, math.nan]) == pytest.approx(2 / 3)
    assert math.isnan(drift_fraction([None]))
    per, _ = score_group([s("hello"), s("你好")], [RewardSpec("language")])
    assert drift_fraction(per["language"]) == 0.5


# --- repetition ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "params", "reward"),
    [
        # trigrams (a b c)(b c a)(c a b)(a b c): 4 in all, 3 distinct → (1 − 3/4)·(−1) = −0.25
        ("a b c A B C", {}, -0.25),
        ("the cat sat", {}, 0.0),  # one trigram, distinct
        ("hi there", {}, 0.0),  # fewer words than n
        ("", {}, 0.0),
        # bigrams (a a) ×4: 1 distinct → (1 − 1/4)·(−0.5) = −0.375
        ("a a a a a", {"ngram_size": 2, "max_penalty": -0.5}, -0.375),
        # unigrams x y x y x: 5, distinct 2 → (1 − 2/5)·(−1) = −0.6
        ("x y x y x", {"ngram_size": 1}, -0.6),
    ],
)
def test_repetition(completion, params, reward):
    assert run("repetition", [s(completion)], **params) == approx([reward])


def test_repetition_validation():
    with pytest.raises(UserError, match="max_penalty"):
        run("repetition", [s("x")], max_penalty=0.5)
    with pytest.raises(UserError, match="ngram_size"):
        run("repetition", [s("x")], ngram_size=0)


# --- kimi_length -----------------------------------------------------------------------------


def test_kimi_length_by_hand():
    # lengths 10, 20, 30, 50: λ = 0.5 − (L − 10)/40 = 0.5, 0.25, 0.0, −0.5
    samples = [s(RIGHT, 10), s(WRONG, 20), s(RIGHT, 30), s(WRONG, 50)]
    assert run("kimi_length", samples) == approx([0.5, 0.0, 0.0, -0.5])
    # a wrong short answer is not rewarded; a correct long one is penalised
    samples = [s(WRONG, 10), s(RIGHT, 50), s(RIGHT, 30)]
    assert run("kimi_length", samples) == approx([0.0, -0.5, 0.0])


def test_kimi_length_edge_cases():
    # all lengths equal: 0 for everyone, right or wrong
    assert run("kimi_length", [s(RIGHT, 7), s(WRONG, 7)]) == [0.0, 0.0]
    # no correct completion: penalties only, the long half below 0
    assert run("kimi_length", [s(WRONG, 10), s(WRONG, 30), s(WRONG, 20)]) == approx([0, -0.5, 0])
    # truncated: wrong, but its length still spans the group (the shortest is at +0.5)
    samples = [s(RIGHT, 10), s(RIGHT, 100, finished=False)]
    assert run("kimi_length", samples) == approx([0.5, -0.5])
    # unscorable gold: None, its length still counts
    samples = [s(RIGHT, 10), s(RIGHT, 30, answer="{"), s(RIGHT, 20)]
    assert run("kimi_length", samples) == approx([0.5, None, 0.0])
    assert run("kimi_length", []) == []


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 500), st.booleans()), min_size=1, max_size=8)
)
def test_kimi_length_bounded_and_monotone(group):
    samples = [s(RIGHT if ok else WRONG, n, finished) for ok, n, finished in group]
    r = run("kimi_length", samples)
    assert all(-0.5 - 1e-9 <= v <= 0.5 + 1e-9 for v in r)
    for (ok, _n, fin), v in zip(group, r, strict=True):
        if not (ok and fin):
            assert v <= 0.0  # a wrong answer is never rewarded
    # among correct finished completions, shorter never scores lower
    correct = sorted((n, v) for (ok, n, fin), v in zip(group, r, strict=True) if ok and fin)
    for (n1, v1), (n2, v2) in pairwise(correct):
        assert n1 == n2 or v1 >= v2


# --- shorterbetter ---------------------------------------------------------------------------


def test_shorterbetter_by_hand():
    # ℓ* = 30, the shortest correct; r = 2·c − 0.001·|L − 30|
    samples = [s(RIGHT, 50), s(WRONG, 10), s(RIGHT, 30), s(WRONG, 130)]
    assert run("shorterbetter", samples) == approx([1.98, -0.02, 2.0, -0.1])
    assert run("shorterbetter", samples, alpha=1.0, beta=0.01) == approx([0.8, -0.2, 1.0, -1.0])


def test_shorterbetter_edge_cases():
    # none correct: ℓ* is the mean of all lengths, (10 + 20 + 60) / 3 = 30
    samples = [s(WRONG, 10), s(WRONG, 20), s(WRONG, 60)]
    assert run("shorterbetter", samples, beta=0.1) == approx([-2.0, -1.0, -3.0])
    # all lengths equal: no length term, plain α·accuracy
    assert run("shorterbetter", [s(RIGHT, 7), s(WRONG, 7)]) == approx([2.0, 0.0])
    # a truncated right answer is wrong: not a candidate for ℓ*, and it keeps its distance
    samples = [s(RIGHT, 5, finished=False), s(RIGHT, 40)]
    assert run("shorterbetter", samples, beta=0.1) == approx([-3.5, 2.0])
    # unscorable gold: None; its length is not a candidate for ℓ* but counts in the mean
    samples = [s(RIGHT, 10, answer="{"), s(WRONG, 30), s(WRONG, 50)]
    assert run("shorterbetter", samples, beta=0.1) == approx([None, -0.0, -2.0])
    assert run("shorterbetter", []) == []
    with pytest.raises(UserError, match="alpha and beta must be >= 0"):
        run("shorterbetter", samples, beta=-1.0)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.integers(1, 500), st.booleans()), min_size=1, max_size=8)
)
def test_shorterbetter_bounds_and_the_optimum(group):
    samples = [s(RIGHT if ok else WRONG, n, finished) for ok, n, finished in group]
    r = run("shorterbetter", samples)
    assert all(v <= 2.0 + 1e-9 for v in r)
    correct = [(n, v) for (ok, n, fin), v in zip(group, r, strict=True) if ok and fin]
    if correct:
        shortest = min(n for n, _ in correct)
        # the shortest correct completion scores exactly α, the group's best
        assert all(v == pytest.approx(2.0) for n, v in correct if n == shortest)
        assert max(r) == pytest.approx(2.0)
        # among correct completions, longer never scores higher
        ranked = sorted(correct)
        for (n1, v1), (n2, v2) in pairwise(ranked):
            assert n1 == n2 or v1 >= v2
