"""Stability guards: each monitor on hand-made metric rows, and the actions in real runs."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from frugalrl.cli import main
from frugalrl.config import MonitorConfig, load_config
from frugalrl.errors import UserError
from frugalrl.monitors import MONITORS
from frugalrl.policy import load_policy
from frugalrl.report import write_run_report
from frugalrl.train import loop
from frugalrl.train import update as update_module
from frugalrl.train.checkpoint import restore_weights, save_checkpoint
from frugalrl.train.distributed import DataParallel
from frugalrl.train.guards import Guards
from frugalrl.train.metrics import read_metrics
from frugalrl.train.schedule import lr_multiplier


def monitor(name, **params):
    return MonitorConfig(name=name, **params)


def trips(name, rows, window=3, **params):
    return MONITORS.get(name)(rows, monitor(name, **params), window)


def test_accuracy_drop_on_heldout_evaluations():
    rows = [{"eval/accuracy": a} for a in (0.40, 0.55, 0.50)] + [{"train/accuracy": 0.1}]
    assert trips("accuracy_drop", rows, threshold=0.1) is None  # 0.55 → 0.50: 0.05
    rows.append({"eval/accuracy": 0.42})  # 0.13 below the best
    assert "fell to 0.420, 0.130 below its best 0.550" in trips(
        "accuracy_drop", rows, threshold=0.1
    )


def test_accuracy_drop_on_training_accuracy_window_means():
    values = [0.2, 0.5, 0.8, 0.5, 0.2, 0.2]
    rows = [{"train/accuracy": v} for v in values]
    # 3-step means: 0.5, 0.6, 0.5, 0.3; best 0.6, now 0.3 → 0.3 below
    assert trips("accuracy_drop", rows[:5], threshold=0.25) is None  # now 0.5
    assert "0.300 below its best 0.600" in trips("accuracy_drop", rows, threshold=0.25)
    assert trips("accuracy_drop", rows[:2], threshold=0.0) is None  # less than a window


def test_window_monitors():
    rows = [{"completion/truncated_fraction": v} for v in (0.9, 0.2, 0.4, 0.6)]
    assert trips("truncation", rows, threshold=0.45) is None  # mean of the last 3: 0.4
    assert "40.0% of completions hit the length cap" in trips("truncation", rows, threshold=0.3)
    drift = [{"language/drift_fraction": v} for v in (0.0, 0.3, 0.3)]
    assert trips("language_drift", drift, threshold=0.25) is None  # 0.2
    assert trips("language_drift", drift, window=2, threshold=0.25) is not None  # 0.3
    kl = [{"train/kl": v} for v in (0.1, None, 0.5, 0.6)]  # None (a NaN) is skipped
    assert "above 0.3" in trips("kl", kl, high=0.3)  # (0.1 + 0.5 + 0.6) / 3 = 0.4
    assert trips("kl", kl, low=0.01, high=0.5) is None
    entropy = [{"train/entropy": v} for v in (0.02, 0.01, 0.03)]
    assert "entropy (3-step mean) 0.02 is below 0.05" in trips("entropy", entropy, low=0.05)
    assert trips("nonfinite", [{"train/nonfinite_updates": 0.0}]) is None
    assert "NaN/inf" in trips("nonfinite", [{"train/nonfinite_updates": 1.0}])


def test_rollbacks_are_bounded_then_stop():
    guards = Guards([monitor("kl", high=0.1, action="rollback")], window=1, max_rollbacks=1)
    assert [a.action for a in guards.observe({"train/kl": 0.2})] == ["rollback"]
    guards.rolled_back({"eval/accuracy": 0.5})
    assert guards.rows == [{"eval/accuracy": 0.5}]
    alarms = guards.observe({"train/kl": 0.3})
    assert [a.action for a in alarms] == ["stop"] and "(after 1 rollbacks)" in alarms[0].message


def test_guard_config_errors():
    with pytest.raises(UserError, match="monitor 'kl' needs low and/or high"):
        load_config("recipes/demo.yaml", ["guards.monitors=[{name: kl}]"])
    with pytest.raises(UserError, match="unknown guard monitor 'nan'"):
        load_config("recipes/demo.yaml", ["guards.monitors=[{name: nan}]"])
    with pytest.raises(UserError, match="rollback .* needs eval.path and eval.every_steps"):
        load_config(
            "recipes/demo.yaml", ["guards.monitors=[{name: kl, high: 1, action: rollback}]"]
        )


def test_restore_weights_full_and_lora(tiny_model_dir, tmp_path):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    restore_weights(model, tiny_model_dir, DataParallel())
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[name], rtol=0, atol=0)

    from frugalrl.policy import add_adapters

    lora = add_adapters(model, 4, 8, 0.0, "all-linear")
    save_checkpoint(tmp_path, 1, lora, tokenizer, {}, keep=1, name="best")
    adapters = load_file(tmp_path / "checkpoints" / "best" / "adapter_model.safetensors")
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_" in name:
                p.add_(1.0)
    restore_weights(lora, tmp_path / "checkpoints" / "best", DataParallel())
    restored = {n: p for n, p in lora.named_parameters() if "lora_" in n}
    assert len(restored) == len(adapters)
    for name, value in adapters.items():
        match = [p for n, p in restored.items() if n.replace(".default", "") == name]
        torch.testing.assert_close(match[0].detach(), value, rtol=0, atol=0)


def guarded(tiny_overrides, *extra):
    return load_config("recipes/demo.yaml", [*tiny_overrides, "eval.after=false", *extra])


def test_rollback_restores_the_best_checkpoint_and_lowers_the_learning_rate(
    tiny_overrides, tmp_path, monkeypatch
):
    """KL above 1e-12 trips from step 2 on (the policy has moved from the reference). With
    held-out evaluation every step, the best checkpoint is the starting policy's (step 0: an
    untrained model scores 0 and later evaluations do not beat it). Step 2 rolls back to it at
    half the learning rate; step 3 starts from the reference weights again (KL 0), step 4
    trips with no rollback left, and the run stops, saved and reported."""
    config = guarded(
        tiny_overrides,
        "train.steps=6",
        "eval.every_steps=1",
        "guards.max_rollbacks=1",
        "guards.window=1",
        "algo.entropy_coef=0.05",  # the untrained policy earns nothing: this moves it
        "guards.monitors=[{name: kl, high: 1.0e-12, action: rollback}]",
    )
    restored = []
    real = loop.restore_weights

    def record(model, directory, dp):
        real(model, directory, dp)
        restored.append({k: v.clone() for k, v in model.state_dict().items()})

    monkeypatch.setattr(loop, "restore_weights", record)
    summary = loop.train(config, report=write_run_report)
    run = tmp_path / "run"
    assert summary["stopped"]["step"] == 4 and summary["stopped"]["monitor"] == "kl"
    assert summary["guards"] == {"warnings": 0, "rollbacks": 1}
    assert summary["best"]["step"] == 0
    best = AutoModelForCausalLM.from_pretrained(run / "checkpoints" / "best").state_dict()
    start = AutoModelForCausalLM.from_pretrained(config.model.name_or_path).state_dict()
    assert len(restored) == 1
    for name, value in best.items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=0)
        torch.testing.assert_close(restored[0][name], value, rtol=0, atol=0)
    rows = read_metrics(run / "metrics.jsonl")[1:]  # after the step-0 evaluation
    assert [r["guards/rollbacks"] for r in rows] == [0, 1, 1, 1]
    total, warmup = 6, round(config.optim.warmup_ratio * 6)

    def scheduled(step):  # the lr the optimizer uses at update `step` (counted from 0)
        o = config.optim
        return o.lr * lr_multiplier(step, total, warmup, o.lr_scheduler, o.min_lr_ratio)

    assert math.isclose(rows[1]["train/lr"], scheduled(1), rel_tol=1e-9)
    assert math.isclose(rows[2]["train/lr"], 0.5 * scheduled(2), rel_tol=1e-9)
    assert math.isclose(rows[3]["train/lr"], 0.5 * scheduled(3), rel_tol=1e-9)
    assert (run / "checkpoints" / "step-000004").is_dir()  # stopped: saved first
    assert (run / "final").is_dir() and (run / "report.md").is_file()


def test_stop_exits_3_after_saving(tiny_overrides, tmp_path, capsys):
    args = ["train", "recipes/demo.yaml", *sum((["--set", o] for o in tiny_overrides), [])]
    args += ["--set", "eval.before=false", "--set", "eval.after=false"]
    args += ["--set", "guards.monitors=[{name: entropy, low: 1.0e9, action: stop}]"]
    assert main(args) == 3
    out = capsys.readouterr()
    assert "stopped early after step 1: guard 'entropy' (stop)" in out.out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopped"]["step"] == 1
    assert (tmp_path / "run" / "checkpoints" / "step-000001").is_dir()


def test_nonfinite_gradient_skips_the_update_and_warns(tiny_overrides, tmp_path, monkeypatch):
    """A NaN loss at step 2: that update is skipped (weights stay finite and equal to step 1's
    checkpoint), the default nonfinite monitor warns, and training goes on."""
    real = update_module.PolicyObjective.__call__
    calls = []

    def nan_on_second_step(*args, **kwargs):
        out = real(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:  # one micro-batch per step with this config
            out.loss = out.loss * math.nan
        return out

    monkeypatch.setattr(update_module.PolicyObjective, "__call__", nan_on_second_step)
    config = guarded(
        tiny_overrides,
        "eval.before=false",
        "train.save_every=1",
        "train.save_total_limit=5",
        "train.micro_batch_size=64",
        "algo.entropy_coef=0.05",  # a gradient every step, whatever the rewards
        "guards.monitors=[{name: nonfinite}]",
    )
    summary = loop.train(config)
    rows = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["train/nonfinite_updates"] for r in rows] == [0, 1, 0, 0]
    assert [r["guards/warnings"] for r in rows] == [0, 1, 1, 1]
    assert summary["guards"]["warnings"] == 1
    ckpt = tmp_path / "run" / "checkpoints"
    one = load_file(ckpt / "step-000001" / "model.safetensors")
    two = load_file(ckpt / "step-000002" / "model.safetensors")
    four = load_file(ckpt / "step-000004" / "model.safetensors")
    for name in one:
        assert torch.isfinite(four[name]).all()
        torch.testing.assert_close(one[name], two[name], rtol=0, atol=0)
