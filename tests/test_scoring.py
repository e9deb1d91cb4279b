"""Batch scoring: workers agree with in-process scoring; hangs and crashes cost one group."""

import time

import pytest

from frugalrl.rewards import RewardSpec
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.sample import Sample


def group(answer, completions, id_="p"):
    return [Sample(c, len(c.split()), True, {"id": id_, "answer": answer}) for c in completions]


GROUPS = [
    group("12", ["<think>\nso\n</think>\n\\boxed{12}", "\\boxed{13}", "no answer"]),
    group("\\frac{1}{2}", ["<think>\nx\n</think>\n\\boxed{0.5}", "\\boxed{1/3}", ""]),
]
SPECS = [RewardSpec("accuracy", 1.0), RewardSpec("format", 0.5, {"schema": "open-rs"})]


def test_workers_agree_with_in_process():
    local = RewardScorer(SPECS, workers=0).score(GROUPS)
    assert local.per_reward["accuracy"] == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert local.per_reward["format"] == [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]
    assert local.totals == [[1.5, 0.0, 0.0], [1.5, 0.0, 0.0]]
    with RewardScorer(SPECS, workers=2) as scorer:
        assert scorer.score(GROUPS) == local
        assert scorer.score(GROUPS[:1]).totals == local.totals[:1]  # the pool is reused


def test_a_hanging_reward_times_out_only_its_group():
    specs = [RewardSpec("reward_fixtures:hangs_on_marked_problem")]
    groups = [group("1", ["a", "b"], id_=i) for i in ("a", "hang", "c", "d", "e")]
    with RewardScorer(specs, workers=2, timeout=2.0) as scorer:
        t0 = time.monotonic()
        batch = scorer.score(groups)
        elapsed = time.monotonic() - t0
        assert batch.timed_out == 1
        assert batch.totals == [[1.0, 1.0], [None, None], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]]
        assert elapsed < 15
        # After the watchdog rebuilt the pool, scoring goes on normally.
        assert scorer.score(groups[:1]).totals == [[1.0, 1.0]]


@pytest.mark.parametrize("workers", [0, 2])
def test_a_raising_reward_scores_its_group_none_and_is_counted(workers):
    specs = [RewardSpec("reward_fixtures:raises_on_marked_problem")]
    groups = [group("1", ["a"], id_="ok"), group("1", ["a", "b"], id_="raise")]
    with RewardScorer(specs, workers=workers) as scorer:
        batch = scorer.score(groups)
    assert batch.totals == [[0.5], [None, None]]
    assert batch.failures == {"reward_fixtures:raises_on_marked_problem": 1}


def test_adversarial_completions_never_crash():
    nasty = [
        "",
        "{" * 200_000,
        "\\boxed{" * 5_000 + "1" + "}" * 5_000,
        "\ud800\udfff broken surrogates \\boxed{\ud800}",
        "\\boxed{" + "9" * 20_000 + "}",
        "\x00\x01 \\boxed{}",
        "\\boxed{\\frac{1}{0}}",
    ]
    t0 = time.monotonic()
    batch = RewardScorer(SPECS, workers=0).score([group("12", nasty)])
    assert time.monotonic() - t0 < 30
    assert all(v in (0.0, None) for v in batch.per_reward["accuracy"][0])
