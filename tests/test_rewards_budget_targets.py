"""ThinkPrune, Laser and Laser-D: the rewards by hand, Laser-D's target choice by hand, its
adapter in the scorer (targets passed on, state saved), edge cases and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frugalrl.errors import UserError
from frugalrl.rewards import REWARDS, RewardSpec
from frugalrl.rewards.laser import LaserTargets, choose_targets, group_band, thresholds
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.sample import Sample

RIGHT, WRONG = r"so \boxed{12}", r"so \boxed{13}"


def s(completion, num_tokens, finished=True, answer="12"):
    return Sample(completion, num_tokens=num_tokens, finished=finished, example={"answer": answer})


def run(name, samples, **params):
    return REWARDS.get(name)(samples, **params)


# --- thinkprune: r = 1[correct ∧ finished ∧ n ≤ L] ---------------------------------------------


def test_thinkprune_by_hand():
    samples = [s(RIGHT, 100), s(RIGHT, 4000), s(RIGHT, 4001), s(WRONG, 10), s(RIGHT, 50, False)]
    assert run("thinkprune", samples) == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert run("thinkprune", samples, max_tokens=99) == [0.0, 0.0, 0.0, 0.0, 0.0]
    assert run("thinkprune", samples, max_tokens=100) == [1.0, 0.0, 0.0, 0.0, 0.0]


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "4000"])
def test_thinkprune_rejects_a_bad_limit(bad):
    with pytest.raises(UserError, match="max_tokens"):
        run("thinkprune", [s(RIGHT, 1)], max_tokens=bad)


# --- laser: r = 1[correct]·(1 + λ·1[n ≤ L]) ----------------------------------------------------


def test_laser_by_hand():
    samples = [s(RIGHT, 4096), s(RIGHT, 4097), s(WRONG, 10), s(RIGHT, 10, False)]
    assert run("laser", samples) == pytest.approx([1.5, 1.0, 0.0, 0.0])
    assert run("laser", samples, target_tokens=5000, bonus=1.0) == pytest.approx([2, 2, 0, 0])
    assert run("laser", samples, target_tokens=None) == pytest.approx([1.5, 1.5, 0.0, 0.0])
    with pytest.raises(UserError, match="bonus"):
        run("laser", samples, bonus=-0.1)


@pytest.mark.parametrize("name", ["thinkprune", "laser", "laser_d"])
def test_edge_cases(name):
    # no correct completion; all lengths equal; an unparseable gold answer; an empty group
    assert run(name, [s(WRONG, 5), s(WRONG, 9)]) == [0.0, 0.0]
    same = run(name, [s(RIGHT, 7), s(RIGHT, 7)])
    assert same[0] == same[1] > 0
    assert run(name, [s(RIGHT, 7, answer="{")]) == [None]
    assert run(name, []) == []


# --- laser_d: the band from the group's accuracy, the target from ``targets`` ----------------


def test_group_bands_follow_the_authors_training_rule():
    assert [group_band(a) for a in (0, 0.25, 1 / 3, 0.5, 2 / 3, 0.7, 1)] == [
        "low", "low", "medium", "medium", "high", "high", "high"
    ]  # fmt: skip


def test_laser_d_scores_each_band_against_its_target():
    targets = {"low": None, "medium": 200, "high": 100}
    high = [s(RIGHT, 90), s(RIGHT, 150), s(RIGHT, 60), s(WRONG, 80)]  # accuracy 3/4
    assert run("laser_d", high, targets=targets) == pytest.approx([1.5, 1.0, 1.5, 0.0])
    medium = [s(RIGHT, 150), s(RIGHT, 250), s(WRONG, 80), s(WRONG, 80)]  # 1/2
    assert run("laser_d", medium, targets=targets) == pytest.approx([1.5, 1.0, 0.0, 0.0])
    low = [s(RIGHT, 9000), s(WRONG, 80), s(WRONG, 80), s(WRONG, 80)]  # 1/4, no limit
    assert run("laser_d", low, targets=targets) == pytest.approx([1.5, 0.0, 0.0, 0.0])
    # before the first targets: target_tokens for every band (none: no limit)
    assert run("laser_d", high) == pytest.approx([1.5, 1.5, 1.5, 0.0])
    assert run("laser_d", high, target_tokens=100) == pytest.approx([1.5, 1.0, 1.5, 0.0])


def test_thresholds_follow_the_authors_rule():
    assert thresholds(4096, 16384, 1024) == list(range(4096, 16385, 1024))
    assert thresholds(512, 4096, 1024) == [512, 1024, 2048, 3072, 4096]
    with pytest.raises(UserError, match="lower"):
        thresholds(100, 50, 10)


def test_choose_targets_by_hand():
    # G = 6: m = ⌊2·6/3⌋ = 4 for high, ⌊6/3⌋ = 2 for medium, 1 for low; thresholds 10, 20, 30.
    groups = [
        (5 / 6, [5, 8, 12, 15, 25, 40]),  # high: coverage 2/6 at 10 (⌊4/3⌋ = 1 ≥ 1) → 10
        (0.5, [15, 15, 25, 25, 35, 35]),  # medium: 2/6 at 20 → ⌊2/3⌋ = 0; 4/6 at 30 → 1 → 30
        (1 / 6, [5, 10, 20, 25, 30, 31]),  # low: needs every length ≤ L; 31 > 30 → no limit
    ]
    targets = choose_targets(groups, 6, [10, 20, 30])
    assert targets == {"high": 10, "medium": 30, "low": None}
    # two expected: 2/6 at 10 gives ⌊4/3⌋ = 1; 4/6 at 20 gives ⌊8/3⌋ = 2
    assert choose_targets(groups, 6, [10, 20, 30], expected_correct=2)["high"] == 20
    # a band without groups gets no limit (the authors' coverage of an empty band is 0)
    assert choose_targets(groups[:1], 6, [10, 20, 30])["medium"] is None


def test_the_scorer_passes_laser_d_its_targets_and_keeps_them_in_its_state():
    spec = RewardSpec("laser_d", 1.0, {"lower": 10, "upper": 30, "interval": 10})
    scorer = RewardScorer([spec])
    group = [s(RIGHT, 9), s(RIGHT, 19), s(RIGHT, 29)]  # accuracy 1: high, m = 2
    assert scorer.at(0).score([group]).totals == [pytest.approx([1.5, 1.5, 1.5])]
    # step 0's rollouts choose the first targets: coverage at 10 is 1/3 → ⌊2/3⌋ = 0; at 20, 2/3
    scorer.observe(0, [[9, 19, 29]], {"laser_d": [[1.5, 1.5, 1.5]]})
    assert scorer.at(1).specs[0].params["targets"]["high"] == 20
    assert scorer.at(1).score([group]).totals == [pytest.approx([1.5, 1.5, 1.0])]
    assert scorer.at(1).scheduled_values() == {"reward/laser_d/target_high": 20.0}
    # later steps only collect, until the next multiple of update_every (20)
    scorer.observe(1, [[5, 6, 7]], {"laser_d": [[1.5, 1.5, math.nan]]})
    assert scorer.at(2).specs[0].params["targets"]["high"] == 20
    resumed = RewardScorer([spec])
    resumed.load_state_dict(scorer.state_dict())
    assert resumed.state_dict() == scorer.state_dict()
    for step in range(2, 20):
        for sc in (scorer, resumed):
            sc.observe(step, [[5, 6, 7]], {"laser_d": [[1.5, 1.5, 1.5]]})
    assert scorer.at(20).specs[0].params["targets"]["high"] == 10
    assert resumed.at(20).specs == scorer.at(20).specs


def test_laser_targets_count_a_score_of_at_least_one_as_right():
    targets = LaserTargets({"lower": 10, "upper": 10, "interval": 10})
    targets.observe(0, [[5, 5, 50]], [[1.0, 0.0, math.nan]])  # accuracy 1/2 → medium
    assert targets.window == [] and targets.targets["medium"] is None  # m = ⌊3/3⌋·(1/3) → 0


# --- properties --------------------------------------------------------------------------------


@given(
    n=st.integers(0, 10**5),
    limit=st.integers(1, 10**5),
    bonus=st.floats(0, 10),
    right=st.booleans(),
    finished=st.booleans(),
)
def test_bounds_and_monotone_in_length(n, limit, bonus, right, finished):
    sample = s(RIGHT if right else WRONG, n, finished)
    longer = s(RIGHT if right else WRONG, n + 1, finished)
    tp = run("thinkprune", [sample, longer], max_tokens=limit)
    assert all(v in (0.0, 1.0) for v in tp) and tp[0] >= tp[1]
    la = run("laser", [sample, longer], target_tokens=limit, bonus=bonus)
    assert all(0.0 <= v <= 1.0 + bonus for v in la) and la[0] >= la[1]
    assert (la[0] > 0) == (tp[0] > 0 or (right and finished))  # right answers always score


@given(
    groups=st.lists(
        st.tuples(st.floats(0, 1), st.lists(st.integers(0, 200), min_size=1, max_size=8)),
        min_size=1,
        max_size=6,
    ),
    size=st.integers(1, 8),
)
def test_targets_are_thresholds_or_no_limit_and_looser_when_more_is_expected(groups, size):
    lengths = thresholds(16, 160, 16)
    one = choose_targets(groups, size, lengths, expected_correct=1)
    two = choose_targets(groups, size, lengths, expected_correct=2)
    for band in one:
        assert one[band] is None or one[band] in lengths
        # asking for more right answers under the target never tightens it
        if two[band] is not None:
            assert one[band] is not None and one[band] <= two[band]


# --- alp: r = 1[correct] − β·max(p, 1/K)·n/N ---------------------------------------------------


def test_alp_by_hand():
    # K = 4, p = 3/4: scale 0.1·0.75/4096 per token
    group = [s(RIGHT, 4096), s(RIGHT, 2048), s(RIGHT, 0), s(WRONG, 1024)]
    assert run("alp", group) == pytest.approx([0.925, 0.9625, 1.0, -0.01875])
    # nobody right: the floor 1/K; a truncated answer is wrong and pays for its length
    hard = [s(WRONG, 4096), s(RIGHT, 4096, finished=False)]
    assert run("alp", hard) == pytest.approx([-0.05, -0.05])
    assert run("alp", group, beta=1.0, max_tokens=1024) == pytest.approx([-2, -0.5, 1, -0.75])
    with pytest.raises(UserError, match="beta"):
        run("alp", group, beta=-1.0)


def test_alp_edge_cases():
    assert run("alp", [s(RIGHT, 7), s(RIGHT, 7)]) == pytest.approx([1 - 0.1 * 7 / 4096] * 2)
    assert run("alp", [s(RIGHT, 7, answer="{")]) == [None]
    assert run("alp", []) == []


@given(
    lengths=st.lists(st.integers(0, 8192), min_size=1, max_size=8),
    right=st.lists(st.booleans(), min_size=8, max_size=8),
    beta=st.floats(0, 1),
)
def test_alp_bounds_and_the_easier_prompt_pays_more(lengths, right, beta):
    group = [s(RIGHT if ok else WRONG, n) for n, ok in zip(lengths, right, strict=False)]
    values = run("alp", group, beta=beta, max_tokens=8192)
    for v, sample in zip(values, group, strict=True):
        correct = sample.completion == RIGHT
        assert correct - beta - 1e-9 <= v <= correct
    # the same completions with one more right answer: each pays at least as much per token
    if not all(sample.completion == RIGHT for sample in group):
        i = next(i for i, sample in enumerate(group) if sample.completion != RIGHT)
        easier = [*group[:i], s(RIGHT, group[i].num_tokens), *group[i + 1 :]]
        more = run("alp", easier, beta=beta, max_tokens=8192)
        for j in range(len(group)):
            if j != i:
                assert more[j] <= values[j] + 1e-12
