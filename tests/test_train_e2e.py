"""The training loop end to end on a tiny model: files, metrics, checkpoints, exact resume."""

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from frugalrl.cli import main
from frugalrl.config import load_config
from frugalrl.report import write_run_report
from frugalrl.train import loop
from frugalrl.train.metrics import read_metrics


def run_dir_of(overrides):
    return next(o.split("=", 1)[1] for o in overrides if o.startswith("train.output_dir="))


def test_train_writes_run_directory(tiny_overrides, capsys):
    from pathlib import Path

    assert (
        main(["train", "recipes/demo.yaml", *sum((["--set", o] for o in tiny_overrides), [])]) == 0
    )
    run = Path(run_dir_of(tiny_overrides))
    assert "report:" in capsys.readouterr().out
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in [
        "reward/accuracy/mean",
        "reward/format/std",
        "train/accuracy",
        "completion/length_mean",
        "completion/length_max",
        "completion/truncated_fraction",
        "train/zero_variance_groups",
        "train/kl",
        "train/entropy",
        "train/clip_fraction",
        "train/grad_norm",
        "train/lr",
        "time/step_seconds",
        "throughput/generated_tokens_per_second",
    ]:
        assert key in rows[-1], key
    assert rows[0]["train/kl"] == 0.0  # the policy equals the reference before the first update
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 4
    for label in ("base", "final"):
        ev = summary["eval"][label]
        assert ev["num_problems"] == 6 and ev["samples_per_problem"] == 2
        assert 0 <= ev["accuracy"] <= 1 and ev["mean_tokens"] > 0
        gens = (run / "eval" / label / "generations.jsonl").read_text().splitlines()
        assert len(gens) == 12
    assert (run / "report.md").is_file() and (run / "reward.png").is_file()
    assert load_config(run / "config.yaml").train.steps == 4  # the resolved config reproduces
    # Checkpoints and the final model load through the standard HF path.
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000002", "step-000004"]
    AutoModelForCausalLM.from_pretrained(run / "final")
    AutoTokenizer.from_pretrained(run / "checkpoints" / "step-000004")


def test_resume_after_crash_matches_uninterrupted_run(tiny_overrides, tmp_path, train_with_crash):
    no_eval = ["eval.before=false", "eval.after=false"]
    straight = load_config(
        "recipes/demo.yaml", [*tiny_overrides, *no_eval, f"train.output_dir={tmp_path / 'a'}"]
    )
    loop.train(straight)

    crashing = load_config(
        "recipes/demo.yaml", [*tiny_overrides, *no_eval, f"train.output_dir={tmp_path / 'b'}"]
    )
    train_with_crash(crashing)

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "final").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    rows_a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    rows_b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["reward/total/mean"] for r in rows_a] == [r["reward/total/mean"] for r in rows_b]


def test_existing_run_is_not_overwritten(tiny_overrides, capsys):
    args = ["train", "recipes/demo.yaml", *sum((["--set", o] for o in tiny_overrides), [])]
    args += ["--set", "train.steps=2", "--set", "eval.before=false", "--set", "eval.after=false"]
    assert main(args) == 0
    assert main(args) == 2
    assert "already holds a run; use --resume" in capsys.readouterr().err


def test_resume_without_checkpoint_is_a_user_error(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path)]) == 2
    assert "config.yaml not found" in capsys.readouterr().err


def length_reward(samples):
    """A user reward (named in the recipe as module:function) that varies within every group."""
    return [len(s.completion) / 50 for s in samples]


def test_several_passes_per_batch_use_old_logprobs(tiny_overrides):
    # μ = 2: the second pass sees a moved policy, so the PPO ratio leaves 1 and may clip.
    config = load_config(
        "recipes/demo.yaml",
        [
            *tiny_overrides,
            "rewards=[{name: 'test_train_e2e:length_reward'}]",
            "train.steps=2",
            "algo.num_iterations=2",
            "optim.lr=0.05",
            "algo.beta=0",
            "eval.before=false",
            "eval.after=false",
        ],
    )
    loop.train(config)
    rows = read_metrics(config.run_dir / "metrics.jsonl")
    assert len(rows) == 2 and all(r["train/kl"] == 0.0 for r in rows)
    assert rows[0]["reward/test_train_e2e:length_reward/std"] > 0
    assert any(r["train/clip_fraction"] > 0 for r in rows)


def test_language_reward_publishes_drift_metric(tiny_overrides):
    config = load_config(
        "recipes/demo.yaml",
        [
            *tiny_overrides,
            "rewards=[{name: accuracy}, {name: language, weight: 0.5}]",
            "train.steps=1",
            "eval.before=false",
            "eval.after=false",
        ],
    )
    loop.train(config)
    (row,) = read_metrics(config.run_dir / "metrics.jsonl")
    assert 0.0 <= row["language/drift_fraction"] <= 1.0
    assert row["language/drift_fraction"] == -row["reward/language/mean"]


def test_periodic_heldout_evaluation(tiny_overrides, tmp_path):
    """eval.every_steps=2 over 4 steps: held-out accuracy logged at steps 0, 2 and 4 (from the
    first 3 problems), each equal to that evaluation's own summary, and tabled in the report."""
    config = load_config(
        "recipes/demo.yaml",
        [*tiny_overrides, "eval.every_steps=2", "eval.every_num_problems=3", "eval.after=false"],
    )
    loop.train(config, report=write_run_report)
    run = tmp_path / "run"
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows if "eval/accuracy" in r] == [0, 2, 4]  # 0: the start
    for r in rows:
        if "eval/accuracy" not in r:
            continue
        saved = json.loads((run / "eval" / f"step-{r['step']:06d}" / "summary.json").read_text())
        heldout = saved["benchmarks"]["heldout"]
        assert heldout["num_problems"] == 3
        assert r["eval/accuracy"] == heldout["accuracy"]
        assert r["eval/mean_tokens"] == heldout["mean_tokens"]
    report = (run / "report.md").read_text()
    assert "## Held-out accuracy by step" in report
    assert "| 0 (base) |" in report and "| 2 |" in report and "| 4 |" in report


def test_an_engine_that_goes_away_checkpoints_and_resumes_exactly(
    tiny_overrides, tmp_path, monkeypatch
):
    """A rollout server that dies as step 3 samples: the run saves step 2 (the draw of step 3
    undone), stops with one line, and ``--resume`` ends with the uninterrupted run's weights."""
    from frugalrl.errors import UserError
    from frugalrl.rollout import EngineUnavailable, HFEngine

    no_eval = ["eval.before=false", "eval.after=false", "train.save_every=3"]
    straight = load_config(
        "recipes/demo.yaml", [*tiny_overrides, *no_eval, f"train.output_dir={tmp_path / 'a'}"]
    )
    loop.train(straight)

    real, calls = HFEngine.generate, []

    def dies_on_third_step(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            # what the server client raises when the server is gone
            raise EngineUnavailable("vllm-server http://127.0.0.1:1/generate: connection refused")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(HFEngine, "generate", dies_on_third_step)
    config = load_config(
        "recipes/demo.yaml", [*tiny_overrides, *no_eval, f"train.output_dir={tmp_path / 'b'}"]
    )
    try:
        loop.train(config)
        raise AssertionError("the run went on without its engine")
    except UserError as e:
        message = str(e)
    assert "\n" not in message and "connection refused" in message
    assert f"saved step 2: continue with frugalrl train --resume {tmp_path / 'b'}" in message
    assert [p.name for p in (tmp_path / "b" / "checkpoints").iterdir()] == ["step-000002"]
    monkeypatch.setattr(HFEngine, "generate", real)
    loop.train(config, resume=True)

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "final").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_an_engine_with_its_own_weights_is_refused_under_sharding(tiny_overrides, monkeypatch):
    """vLLM engines copy the full weights after each step; under ZeRO-3/FSDP a process holds a
    shard: a one-line error before anything is written."""
    import pytest

    from frugalrl.errors import UserError
    from frugalrl.rollout import HFEngine
    from frugalrl.train.distributed import DataParallel

    real = DataParallel.from_environment

    def zero3(*args, **kwargs):
        dp = real(*args, **kwargs)
        dp.zero_stage = 3  # as a DeepSpeed ZeRO-3 launch sets it
        return dp

    monkeypatch.setattr(DataParallel, "from_environment", staticmethod(zero3))
    monkeypatch.setattr(HFEngine, "copies_weights", True, raising=False)  # as the vLLM engines
    config = load_config("recipes/demo.yaml", tiny_overrides)
    with pytest.raises(
        UserError,
        match="copies the policy.s weights after each step, which DeepSpeed ZeRO-3 shards",
    ):
        loop.train(config)
    assert not (Path(run_dir_of(tiny_overrides)) / "config.yaml").exists()
