"""Reward parameters that change during training (``rewards[i].schedule``)."""

import pytest

from frugalrl.config import load_config
from frugalrl.errors import UserError
from frugalrl.rewards import RewardSpec
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.sample import Sample
from frugalrl.train import loop
from frugalrl.train.metrics import read_metrics

# overlong: 0 up to max_len − cache_len tokens, then a ramp down to −1 at max_len
RAMP = RewardSpec(
    "overlong",
    1.0,
    {"max_len": 20, "cache_len": 10},
    ((8, {"max_len": 12, "cache_len": 4}), (4, {"max_len": 16})),  # out of order on purpose
)


def test_each_stage_replaces_the_parameters_from_its_first_step_on():
    params = {step: RAMP.at(step).params for step in (0, 3, 4, 7, 8, 100)}
    assert params[0] == params[3] == {"max_len": 20, "cache_len": 10}
    assert params[4] == params[7] == {"max_len": 16, "cache_len": 10}
    assert params[8] == params[100] == {"max_len": 12, "cache_len": 4}
    assert RAMP.at(8).schedule == ()


@pytest.mark.parametrize("workers", [0, 1])
def test_the_scorer_scores_by_the_stage_of_the_step(workers):
    group = [Sample("x", n, True, {"answer": "1"}) for n in (5, 11, 14)]
    with RewardScorer([RAMP], workers=workers) as scorer:
        # step 0: start 10 → 0, −0.1, −0.4; step 4: max_len 16, start 6 → 0, −0.5, −0.8;
        # step 9: max_len 12, start 8 → 0, −0.75, −1
        assert scorer.score([group]).totals == [[0.0, -0.1, -0.4]]
        assert scorer.at(4).score([group]).totals == [[0.0, -0.5, -0.8]]
        assert scorer.at(9).score([group]).totals == [[0.0, -0.75, -1.0]]
        assert scorer.at(9).scheduled_values() == {
            "reward/overlong/cache_len": 4.0,
            "reward/overlong/max_len": 12.0,
        }
        assert scorer.at(4).scheduled_values()["reward/overlong/max_len"] == 16.0


def recipe(tmp_path, schedule: str) -> str:
    path = tmp_path / "r.yaml"
    path.write_text(
        "rewards:\n"
        f"  - {{name: overlong, weight: 1.0, max_len: 20, cache_len: 10, schedule: {schedule}}}\n"
    )
    return str(path)


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("{-1: {max_len: 3}}", "starts at a step >= 0"),
        ("{5: {weight: 2.0}}", "sets parameters only, not 'weight'"),
        ("{5: {max_length: 3}}", "reward 'overlong' at step 5: bad parameters"),
        ("{5: 3}", "rewards.0.schedule.5"),
    ],
)
def test_a_bad_schedule_is_one_line_naming_it(tmp_path, schedule, message):
    with pytest.raises(UserError, match=message) as err:
        load_config(recipe(tmp_path, schedule))
    assert "\n" not in str(err.value)


def test_a_bad_fixed_parameter_fails_when_the_recipe_loads(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("rewards:\n  - {name: overlong, max_length: 3}\n")
    with pytest.raises(UserError, match="reward 'overlong': bad parameters"):
        load_config(str(path))


def test_training_logs_each_steps_stage(tmp_path, tiny_overrides):
    config = load_config(
        recipe(tmp_path, "{1: {max_len: 8, cache_len: 4}}"),
        [
            *tiny_overrides,
            f"train.output_dir={tmp_path}/run",
            "train.steps=2",
            "train.save_every=0",
            "scoring.workers=0",
            "eval.before=false",
            "eval.after=false",
            "eval.benchmarks=[]",
        ],
    )
    loop.train(config)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["reward/overlong/max_len"] for r in rows] == [20.0, 8.0]
    assert [r["reward/overlong/cache_len"] for r in rows] == [10.0, 4.0]


def test_laser_d_targets_are_logged_and_resume_exactly(tmp_path, tiny_overrides, train_with_crash):
    """The adapter's state travels in the checkpoint: a run crashed at step 3 and resumed logs
    the targets an uninterrupted one does (without the state, step 3 would have none)."""
    path = tmp_path / "laser.yaml"
    path.write_text(
        "rewards:\n"
        "  - {name: laser_d, weight: 1.0, lower: 2, upper: 12, interval: 2, update_every: 2}\n"
        "  - {name: format, weight: 1.0}\n"
    )
    rows = {}
    for name in ("straight", "crashed"):
        config = load_config(
            str(path),
            [
                *tiny_overrides,
                f"train.output_dir={tmp_path / name}",
                "scoring.workers=0",
                "eval.before=false",
                "eval.after=false",
                "eval.benchmarks=[]",
            ],
        )
        loop.train(config) if name == "straight" else train_with_crash(config)
        rows[name] = read_metrics(tmp_path / name / "metrics.jsonl")
    targets = [
        {k: v for k, v in r.items() if k.startswith("reward/laser_d/target_")}
        for r in rows["straight"]
    ]
    assert targets[0] == {} and all(targets[1:])  # chosen after the first step
    assert all(2 <= v <= 12 for t in targets for v in t.values())
    assert targets == [
        {k: v for k, v in r.items() if k.startswith("reward/laser_d/target_")}
        for r in rows["crashed"]
    ]
