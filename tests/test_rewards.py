"""Rewards on known strings: extraction, math-verify grading, format schemas, composition."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from frugalrl.errors import UserError
from frugalrl.rewards import REWARDS, RewardSpec, score_group
from frugalrl.rewards.answer import extract_boxed, is_correct, parse_gold
from frugalrl.sample import Sample


def group(completions, answer="12", finished=True):
    return [
        Sample(c, num_tokens=len(c), finished=finished, example={"answer": answer})
        for c in completions
    ]


def acc(completion, answer, **params):
    return REWARDS.get("accuracy")(group([completion], answer), **params)[0]


def fmt(completion, schema):
    return REWARDS.get("format")(group([completion]), schema=schema)[0]


# --- extract_boxed ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so \boxed{12}.", "12"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{3} then \boxed{12}", "12"),  # last wins
        (r"\fbox{7}", "7"),
        (r"\boxed {7}", "7"),
        (r"\boxed{\{1,2\}}", r"\{1,2\}"),  # escaped braces do not count
        (r"\boxed{12} and then \boxed{1", "12"),  # unclosed last box is skipped
        (r"\boxed{", None),
        ("no box", None),
        (r"\boxed{}", ""),
    ],
)
def test_extract_boxed(text, expected):
    assert extract_boxed(text) == expected


def test_huge_inputs_do_not_hang():
    gold = parse_gold("12")
    start = time.monotonic()
    assert extract_boxed("{" * 200_000) is None
    assert extract_boxed("\\boxed{" * 50_000) is None
    assert not is_correct("{" * 200_000, gold)
    assert not is_correct("\\boxed{" * 50_000, gold)
    assert acc("}" * 200_000 + r"\boxed{12}", "12") == 1.0
    assert time.monotonic() - start < 5


# --- gold parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "value"),
    [("12", 12), (r"\frac{1}{2}", 0.5), (r"$\frac12$", 0.5), ("025", 25), (r"\boxed{3}", 3)],
)
def test_parse_gold(answer, value):
    parsed = parse_gold(answer)
    assert parsed is not None
    assert float(parsed[0]) == value


@pytest.mark.parametrize("answer", ["", "{", "$"])
def test_unparseable_gold(answer):
    assert parse_gold(answer) is None


# --- accuracy --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "answer", "reward"),
    [
        (r"The answer is \boxed{12}.", "12", 1.0),
        (r"The answer is \boxed{13}.", "12", 0.0),
        (r"\boxed{0.5}", r"\frac{1}{2}", 1.0),
        (r"\boxed{\frac{1}{2}}", "0.5", 1.0),
        (r"\boxed{\dfrac{1}{2}}", r"\frac{1}{2}", 1.0),
        (r"\boxed{\dfrac{1}{3}}", r"\frac{1}{2}", 0.0),
        (r"\boxed{25}", "025", 1.0),
        (r"\boxed{025}", "25", 1.0),
        (r"$\boxed{12}$", "$12$", 1.0),
        (r"\boxed{x = 12}", "12", 1.0),
        (r"\boxed{\frac{1}{\sqrt{4}}}", r"\frac12", 1.0),
        (r"\boxed{3} no wait \boxed{12}", "12", 1.0),  # last boxed wins ...
        (r"\boxed{12} no wait \boxed{3}", "12", 0.0),  # ... both ways
        (r"\fbox{12}", "12", 1.0),
        ("I think it is 7, or maybe 12", "12", 0.0),  # no boxed (nor announced) answer
        ("", "12", 0.0),
        (r"\boxed{}", "12", 0.0),
    ],
)
def test_accuracy(completion, answer, reward):
    assert acc(completion, answer) == reward


@pytest.mark.parametrize(
    ("completion", "boxed", "boxed_or_anchored", "boxed_latex_expr"),
    [
        (r"so \boxed{12}", 1.0, 1.0, 1.0),
        ("The final answer is $12$.", 0.0, 1.0, 1.0),  # announced, not boxed
        ("answer: 12", 0.0, 1.0, 1.0),
        ("adding them gives $12$ apples", 0.0, 0.0, 1.0),  # bare LaTeX, no anchor
        ("7 + 5 = 12", 0.0, 0.0, 1.0),  # bare expression, no anchor
        (r"\boxed{3}, though $12$ is also possible", 0.0, 0.0, 0.0),  # a box always wins
    ],
)
def test_accuracy_extraction(completion, boxed, boxed_or_anchored, boxed_latex_expr):
    expected = {
        "boxed": boxed,
        "boxed_or_anchored": boxed_or_anchored,
        "boxed_latex_expr": boxed_latex_expr,
    }
    got = {name: acc(completion, "12", extraction=name) for name in expected}
    assert got == expected
    assert acc(completion, "12") == boxed_or_anchored  # the default


def test_unknown_extraction_is_user_error():
    for name in ("accuracy", "efficiency", "cosine"):
        with pytest.raises(UserError, match="boxed, boxed_or_anchored, boxed_latex_expr"):
            REWARDS.get(name)(group([r"\boxed{12}"]), extraction="last")


@pytest.mark.parametrize("answer", [r"3 \mid n", r"p \equiv 1 \pmod{4}", r"7\sqrt{2}."])
def test_latex_gold_never_degrades_to_a_stray_number(answer):
    # read as plain text these would give 3, 1 and 7: a wrong gold is worse than none
    assert parse_gold(answer) is None
    assert acc(r"\boxed{3}", answer) is None


def test_display_math_gold():
    assert acc(r"\boxed{1979}", r"\[ 1979 \]") == 1.0


def test_accuracy_unparseable_gold_is_none():
    assert acc(r"\boxed{12}", "{") is None  # open-rs would give 1.0


def test_accuracy_truncated():
    samples = group([r"\boxed{12}"], finished=False)
    assert REWARDS.get("accuracy")(samples) == [1.0]
    assert REWARDS.get("accuracy")(samples, truncated_is_wrong=True) == [0.0]


def test_accuracy_timeout_is_none():
    # sympy would try to expand 10^(10^10) when comparing: math-verify's alarm stops it
    assert acc(r"\boxed{10^{10^{10}}}", "12") is None


def test_accuracy_off_main_thread():
    out = []
    worker = threading.Thread(target=lambda: out.append(acc(r"\boxed{\frac{2}{4}}", "0.5")))
    worker.start()
    worker.join()
    assert out == [1.0]


# --- format ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("completion", "schema", "reward"),
    [
        ("reasoning\n</think>\nanswer", "open-rs", 1.0),
        ("<think>\nreasoning\n</think>\n<answer>\n12\n</answer>", "open-rs", 1.0),
        ("reasoning</think>answer", "open-rs", 0.0),
        ("a\n</think>\nb\n</think>\nc", "open-rs", 0.0),
        ("no tags at all", "open-rs", 0.0),
        ("<think>\nreasoning\n</think>\n<answer>\n12\n</answer>", "open-r1", 1.0),
        ("reasoning\n</think>\n<answer>\n12\n</answer>", "open-r1", 0.0),
        ("<think>\nreasoning\n</think>\n<answer>\n12\n</answer> trailing", "open-r1", 0.0),
        ("<think>reasoning</think><answer>12</answer>", "open-r1", 0.0),
        (r"so \boxed{\frac{1}{2}}", "boxed", 1.0),
        (r"so \boxed{\frac{1}{2}", "boxed", 0.0),
        (r"so \boxed{}", "boxed", 0.0),
        ("so 12", "boxed", 0.0),
    ],
)
def test_format(completion, schema, reward):
    assert fmt(completion, schema) == reward


def test_format_unknown_schema():
    with pytest.raises(UserError, match="open-rs, open-r1, boxed"):
        fmt("x", "xml")


# --- score_group -----------------------------------------------------------------------------


def test_score_group_weights():
    samples = group(["r\n</think>\n\\boxed{12}", "r\n</think>\n\\boxed{1}", "\\boxed{12}"])
    specs = [RewardSpec("accuracy", 2.0), RewardSpec("format", 0.5, {"schema": "open-rs"})]
    per, total = score_group(samples, specs)
    assert per == {"accuracy": [1.0, 0.0, 1.0], "format": [1.0, 1.0, 0.0]}
    assert total == [2.5, 0.5, 2.0]


def test_score_group_none_propagates():
    samples = group(["r\n</think>\n\\boxed{12}"], answer="{")
    per, total = score_group(samples, [RewardSpec("accuracy"), RewardSpec("format")])
    assert per == {"accuracy": [None], "format": [1.0]}
    assert total == [None]
    # a zero-weight reward is only reported: its None does not void the total
    _, total = score_group(samples, [RewardSpec("accuracy", 0.0), RewardSpec("format")])
    assert total == [1.0]


def test_score_group_failure_is_none_and_counted(monkeypatch):
    def raises(samples):
        raise RuntimeError("boom")

    monkeypatch.setitem(REWARDS._items, "_test_raises", raises)
    failures: Counter[str] = Counter()
    samples = group(["a", "b"])
    per, total = score_group(samples, [RewardSpec("_test_raises"), RewardSpec("format")], failures)
    assert per["_test_raises"] == [None, None]
    assert total == [None, None]
    assert failures == {"_test_raises": 1}


def test_score_group_missing_answer_is_none_and_counted():
    samples = [Sample(r"\boxed{1}", 3, True, {})]
    failures: Counter[str] = Counter()
    per, _ = score_group(samples, [RewardSpec("accuracy")], failures)
    assert per["accuracy"] == [None]
    assert failures["accuracy"] == 1


def test_unknown_reward_lists_choices():
    with pytest.raises(UserError, match="accuracy.*format"):
        score_group(group(["x"]), [RewardSpec("acuracy")])


def test_duplicate_reward_is_user_error():
    with pytest.raises(UserError):
        score_group(group(["x"]), [RewardSpec("format"), RewardSpec("format")])


def test_bad_reward_parameter_is_user_error():
    with pytest.raises(UserError, match="shema"):
        score_group(group(["x"]), [RewardSpec("format", params={"shema": "boxed"})])
