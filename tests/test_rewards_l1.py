"""L1 / LCPO: the per-problem targets in the data, and the l1_exact / l1_max rewards, by hand."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frugalrl.config import load_config
from frugalrl.data.length_targets import TARGET_FIELD, with_length_targets
from frugalrl.errors import UserError
from frugalrl.rewards import REWARDS, RewardSpec, score_group
from frugalrl.sample import Sample

RIGHT, WRONG = r"so \boxed{12}", r"so \boxed{13}"


def s(completion, num_tokens, target=None, finished=True):
    example = {"answer": "12"} if target is None else {"answer": "12", TARGET_FIELD: target}
    return Sample(completion, num_tokens=num_tokens, finished=finished, example=example)


def test_l1_exact_by_hand():
    samples = [
        s(RIGHT, 1000, 1000),
        s(RIGHT, 400, 1000),
        s(WRONG, 1300, 1000),
        s(RIGHT, 4000, 1000),
    ]
    values = REWARDS.get("l1_exact")(samples)
    # 1 − |N − n| / 3000; a wrong answer starts from 0
    assert values == pytest.approx([1.0, 1 - 600 / 3000, -300 / 3000, 0.0])
    assert REWARDS.get("l1_exact")(samples[:2], alpha=0.001) == pytest.approx([1.0, 0.4])


def test_l1_max_by_hand():
    samples = [
        s(RIGHT, 1000, 1000),  # at the budget: δ = 0.5
        s(RIGHT, 700, 1000),  # 300 under: 0.5 + 0.3
        s(RIGHT, 200, 1000),  # 800 under: clipped to 1
        s(RIGHT, 1200, 1000),  # 200 over: 0.3
        s(RIGHT, 1600, 1000),  # 600 over: clipped to 0
        s(WRONG, 100, 1000),  # wrong: 0 at any length
    ]
    assert REWARDS.get("l1_max")(samples) == pytest.approx([0.5, 0.8, 1.0, 0.3, 0.0, 0.0])
    assert REWARDS.get("l1_max")(samples[:2], alpha=0.0, delta=1.0) == pytest.approx([1.0, 1.0])


@pytest.mark.parametrize("name", ["l1_exact", "l1_max"])
def test_edge_cases(name):
    fn = REWARDS.get(name)
    # a budget-free row: correctness alone; a truncated completion is wrong
    assert fn([s(RIGHT, 5000), s(RIGHT, 900, 1000, finished=False)])[0] == 1.0
    assert fn([s(RIGHT, 900, 1000, finished=False)]) == pytest.approx(
        [-100 / 3000] if name == "l1_exact" else [0.0]
    )
    assert fn([Sample(RIGHT, 10, True, {"answer": "{", TARGET_FIELD: 10})]) == [None]
    with pytest.raises(UserError, match="alpha"):
        fn([s(RIGHT, 1, 1)], alpha=-1.0)
    # a bad target is a data error: the group scores None and the failure is counted
    failures = Counter()
    _, totals = score_group([s(RIGHT, 10, "many")], [RewardSpec(name=name)], failures)
    assert totals == [None] and failures[name] == 1


@given(
    target=st.integers(1, 5000),
    a=st.integers(0, 8000),
    b=st.integers(0, 8000),
    right=st.booleans(),
)
def test_l1_properties(target, a, b, right):
    """Both lie in their ranges; closer to the target (exact) or shorter (max) never scores less;
    a right answer never scores below a wrong one of the same length."""
    text = RIGHT if right else WRONG
    ea, eb = REWARDS.get("l1_exact")([s(text, a, target), s(text, b, target)])
    ma, mb = REWARDS.get("l1_max")([s(text, a, target), s(text, b, target)])
    assert -10 <= ea <= 1 and 0 <= ma <= 1
    if abs(target - a) <= abs(target - b):
        assert ea >= eb
    if a <= b:
        assert ma >= mb
    (wrong_e,) = REWARDS.get("l1_exact")([s(WRONG, a, target)])
    (wrong_m,) = REWARDS.get("l1_max")([s(WRONG, a, target)])
    assert ea >= wrong_e and ma >= wrong_m and wrong_m == 0.0


def test_targets_in_the_data():
    rows = [{"problem": f"p{i}", "answer": "1"} for i in range(400)]
    out = with_length_targets(rows, kind="max", low=100, high=200, budget_free=0.5, seed=3)
    assert len(out) == 400 and rows[0] == {"problem": "p0", "answer": "1"}  # copies
    with_target = [r for r in out if TARGET_FIELD in r]
    assert 150 < len(with_target) < 250  # about half are budget-free
    for r in with_target:
        assert 100 <= r[TARGET_FIELD] <= 200
        assert r["problem"].endswith(f" Think for maximum {r[TARGET_FIELD]} tokens.")
    for r in out:
        if TARGET_FIELD not in r:
            assert not r["problem"].endswith("tokens.")
    again = with_length_targets(rows, kind="max", low=100, high=200, budget_free=0.5, seed=3)
    assert again == out  # the same draws on resume
    exact = with_length_targets(rows[:1], kind="exact", low=7, high=7)
    assert exact == [{"problem": "p0 Think for 7 tokens.", "answer": "1", TARGET_FIELD: 7}]


def test_length_targets_config(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {path: x.jsonl, length_targets: {kind: max, low: 16, high: 48}}\n")
    assert load_config(recipe).data.length_targets.high == 48
    with pytest.raises(UserError, match="low"):
        load_config(recipe, ["data.length_targets.low=64"])
    with pytest.raises(UserError, match="kind"):
        load_config(recipe, ["data.length_targets.kind=min"])
