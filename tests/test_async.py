"""Asynchronous training (rollout.max_staleness): the hf sampler in its own process, batches
sampled ahead from weights at most K steps old, exact resume, and a sampler that dies."""

import re
import shutil
from importlib.resources import files
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from frugalrl.config import load_config
from frugalrl.errors import UserError
from frugalrl.policy import load_policy
from frugalrl.rollout import (
    EngineUnavailable,
    HFEngine,
    ProcessEngine,
    SamplingParams,
    VLLMServerEngine,
)
from frugalrl.train import loop, update
from frugalrl.train.metrics import read_metrics
from frugalrl.train.rollout_source import PrefetchedRounds

PARAMS = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=10)
DEMO = str(files("frugalrl").joinpath("recipes", "demo.yaml"))
ASYNC = ["rollout.engine=hf-process", "rollout.importance_sampling=token_truncate"]


def test_the_sampling_process_follows_the_weights_it_was_sent(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    prompts = [tokenizer("Compute 8-1+5")["input_ids"], tokenizer("Compute 3+4")["input_ids"]]
    local = HFEngine(model, tokenizer)
    engine = ProcessEngine(model, tokenizer)
    try:
        same = engine.generate(prompts, 3, PARAMS, seeds=[1, 2])
        assert same == local.generate(prompts, 3, PARAMS, seeds=[1, 2])  # same seeds, tokens
        before = engine.submit(prompts, 3, PARAMS, seeds=[1, 2])  # queued before the change
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5 * torch.randn_like(p))
        engine.sync()
        after = engine.submit(prompts, 3, PARAMS, seeds=[1, 2])
        old, new = engine.result(before), engine.result(after)
        assert (old.version, new.version) == (0, 1)
        assert old.groups == same  # sampled from the weights before the sync
        expected = local.generate(prompts, 3, PARAMS, seeds=[1, 2])
        assert tokens(new.groups) == tokens(expected) != tokens(same)
        for got, want in zip(logprobs(new.groups), logprobs(expected), strict=True):
            assert got == pytest.approx(want, abs=1e-4)  # one thread there, two here
    finally:
        engine.close()
    assert not engine.process.is_alive()


def tokens(groups):
    return [[c.token_ids for c in g] for g in groups]


def logprobs(groups):
    return [lp for g in groups for c in g for lp in c.logprobs]


def async_config(tiny_overrides, *extra):
    return load_config(DEMO, [*tiny_overrides, *ASYNC, *extra])


def trained_versions(monkeypatch) -> list[tuple[int, int, bool]]:
    """(weights version trained, version that sampled the batch, behaviour log-probs known)
    of every update (one update a step: the n-th trains the weights of n optimizer steps)."""
    seen, real = [], update.policy_update

    def recording(model, ref, opt, sched, batch, *args, **kwargs):
        known = all(c.logprobs is not None for c in batch.completions)
        seen.append((len(seen), batch.policy_version, known))
        return real(model, ref, opt, sched, batch, *args, **kwargs)

    monkeypatch.setattr(loop, "policy_update", recording)
    return seen


@pytest.mark.parametrize("staleness", [1, 2])
def test_batches_are_never_staler_than_k(tiny_overrides, monkeypatch, staleness):
    seen = trained_versions(monkeypatch)
    config = async_config(
        tiny_overrides,
        f"rollout.max_staleness={staleness}",
        "train.steps=5",
        "rollout.importance_sampling_clip_max=1.0",
        "algo.entropy_coef=0.05",  # the untrained policy earns no reward: this moves it
    )
    loop.train(config)
    assert [trained for trained, _, _ in seen] == [0, 1, 2, 3, 4]
    lags = [trained - sampled for trained, sampled, _ in seen]
    # the first K steps were all queued from the starting weights; then exactly K behind
    assert lags == [min(step, staleness) for step in range(5)]
    assert all(known for _, _, known in seen)  # behaviour log-probs travel with each batch
    rows = read_metrics(config.train.output_dir + "/metrics.jsonl")
    assert [r["rollout/staleness"] for r in rows] == lags
    for r in rows:
        assert r["time/rollout_wait_seconds"] >= 0 and r["time/sampler_idle_seconds"] >= 0
        if r["rollout/staleness"] == 0:  # sampled by the weights trained: ρ = 1 to rounding
            assert r["train/is_raw_weight_max"] == pytest.approx(1.0, abs=1e-3)
        else:  # the stale batch's raw ratios exceed the truncation at 1, which cuts them
            assert r["train/is_raw_weight_max"] > 1.01
            assert r["train/is_weight_mean"] <= 1.0 + 1e-6
            assert r["train/is_raw_weight_mean"] > r["train/is_weight_mean"]


def test_k0_is_the_synchronous_loop(tiny_overrides, tmp_path):
    # the same engine without sampling ahead trains the synchronous loop's run, bit for bit
    sync = load_config(DEMO, [*tiny_overrides, f"train.output_dir={tmp_path / 'sync'}"])
    proc = load_config(
        DEMO, [*tiny_overrides, "rollout.engine=hf-process", f"train.output_dir={tmp_path / 'p'}"]
    )
    loop.train(sync)
    loop.train(proc)
    a, b = (load_file(tmp_path / d / "final" / "model.safetensors") for d in ("sync", "p"))
    assert all(torch.equal(a[k], b[k]) for k in a)


def died_after_step_2(run) -> None:
    shutil.rmtree(run / "checkpoints" / "step-000004")
    shutil.rmtree(run / "final")
    rows = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text(
        "".join(r for r in rows if '"step": 3' not in r and '"step": 4' not in r)
    )


def test_resume_trains_the_batches_the_uninterrupted_run_would(tiny_overrides, tmp_path):
    whole = async_config(tiny_overrides, "rollout.max_staleness=1")
    loop.train(whole)
    run = tmp_path / "run"
    final = load_file(run / "final" / "model.safetensors")
    rows = read_metrics(run / "metrics.jsonl")
    died_after_step_2(run)
    loop.train(whole, resume=True)
    resumed = load_file(run / "final" / "model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final)
    again = read_metrics(run / "metrics.jsonl")
    for key in ("reward/total/mean", "completion/length_mean", "train/grad_norm"):
        assert [r[key] for r in again] == [r[key] for r in rows]


def test_a_sampling_process_that_dies_checkpoints_and_resumes(tiny_overrides, monkeypatch):
    config = async_config(tiny_overrides, "rollout.max_staleness=1", "train.save_every=0")
    real = PrefetchedRounds.first_round

    def dies_in_step_3(self, step, scorer):
        if step == 2:  # step 2's round may already be back: the failure shows by step 3
            self.engine.process.kill()
        return real(self, step, scorer)

    monkeypatch.setattr(PrefetchedRounds, "first_round", dies_in_step_3)
    with pytest.raises(EngineUnavailable, match="sampling process died") as failed:
        loop.train(config)
    saved = int(
        re.search(r"saved step (\d+): continue with frugalrl train --resume", str(failed.value))[1]
    )
    assert saved in (2, 3)
    monkeypatch.setattr(PrefetchedRounds, "first_round", real)
    summary = loop.train(config, resume=True)
    assert summary["steps"] == 4
    rows = read_metrics(config.train.output_dir + "/metrics.jsonl")
    # (a failure in the sync after step 3's update saves the step but not its metrics row)
    steps = [r["step"] for r in rows if "rollout/staleness" in r]
    assert steps == sorted(set(steps)) and steps[-1] == 4 and saved + 1 in steps
    # the rounds in flight were lost: drawn again, sampled from the saved weights
    assert next(r for r in rows if r["step"] == saved + 1)["rollout/staleness"] == 0


def test_staleness_needs_an_engine_beside_training_and_a_correction(tiny_overrides):
    with pytest.raises(UserError, match="use rollout.engine hf-process"):
        loop.train(
            load_config(
                DEMO,
                [*tiny_overrides, "rollout.max_staleness=1", ASYNC[1]],
            )
        )
    with pytest.raises(UserError, match="rollout.importance_sampling"):
        load_config(DEMO, [*tiny_overrides, "rollout.max_staleness=1"])
    several = SimpleNamespace(enabled=True, shard_weights=False, sharding=None)
    config = async_config(tiny_overrides, "rollout.max_staleness=1")
    loop.check_engine(config, ProcessEngine, several)  # each process has its own sampler
    with pytest.raises(UserError, match="trains in one process; with several, use .*hf-process"):
        loop.check_engine(config, VLLMServerEngine, several)  # one server for all


def test_resume_with_dynamic_sampling_kl_in_the_reward_and_lora(tiny_overrides, tmp_path):
    # extra dynamic-sampling rounds are sampled on the spot beside the queued ones; the KL
    # is folded into the reward against the reference; LoRA adapters reach the sampler merged
    whole = async_config(
        tiny_overrides,
        "rollout.max_staleness=1",
        "algo.dynamic_sampling=true",
        "algo.kl_in_reward=true",
        "algo.beta=0.04",
        "peft.r=4",
        "peft.alpha=8",
    )
    loop.train(whole)
    run = tmp_path / "run"
    final = load_file(run / "final" / "adapter_model.safetensors")
    rows = read_metrics(run / "metrics.jsonl")
    assert sum(r["train/dynamic_sampling_rounds"] for r in rows) > 0
    assert [r["rollout/staleness"] for r in rows] == [0, 1, 1, 1]
    died_after_step_2(run)
    loop.train(whole, resume=True)
    resumed = load_file(run / "final" / "adapter_model.safetensors")
    assert all(torch.equal(final[k], resumed[k]) for k in final)


def test_a_rollback_drops_the_rounds_sampled_ahead(tiny_overrides):
    # the guard trips on the KL from step 2 on (tests/test_guards.py): step 2 rolls back, so the
    # round queued for step 3 by step 2's weights is thrown away and its prompts drawn again,
    # sampled by the restored weights (staleness 0); step 4 trips again with no rollback left
    config = async_config(
        tiny_overrides,
        "rollout.max_staleness=1",
        "train.steps=6",
        "eval.after=false",
        "eval.every_steps=1",
        "guards.max_rollbacks=1",
        "guards.window=1",
        "algo.entropy_coef=0.05",
        "guards.monitors=[{name: kl, high: 1.0e-12, action: rollback}]",
    )
    drawn, real = [], PrefetchedRounds._queue

    def recording(self, version):
        real(self, version)
        drawn.append(self.queued[-1].indices)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PrefetchedRounds, "_queue", recording)
        summary = loop.train(config)
    assert summary["guards"]["rollbacks"] == 1 and summary["stopped"]["step"] == 4
    rows = [r for r in read_metrics(config.run_dir / "metrics.jsonl") if "rollout/staleness" in r]
    assert [r["rollout/staleness"] for r in rows] == [0, 1, 0, 1]
    # queued: for steps 1 and 2 at step 1; for 3 at step 2 (dropped); for 3 (the same
    # prompts, drawn again) and 4 at step 3; for 5 at step 4
    assert len(drawn) == 6 and drawn[3] == drawn[2] and drawn[4] != drawn[2]


def test_the_sampler_computes_the_reference_log_probs_beside_training(tiny_overrides, monkeypatch):
    # β > 0 (the demo's 0.04): the KL's reference log-probs come with the samples, computed in
    # the sampling process as the trainer computes them; the trainer runs no reference forward
    config = async_config(tiny_overrides, "rollout.max_staleness=1", "train.steps=2")
    assert config.algo.beta > 0
    forwards, updates = [], []
    real_logprobs, real_update = update.batch_logprobs, update.policy_update

    def counting(model, *args, **kwargs):
        forwards.append(model)
        return real_logprobs(model, *args, **kwargs)

    def recording(model, ref, opt, sched, batch, pad_id, *args, **kwargs):
        updates.append((ref, batch, pad_id))
        return real_update(model, ref, opt, sched, batch, pad_id, *args, **kwargs)

    monkeypatch.setattr(update, "batch_logprobs", counting)
    monkeypatch.setattr(loop, "policy_update", recording)
    loop.train(config)
    assert forwards == [] and len(updates) == 2
    for ref_model, batch, pad_id in updates:
        rows = range(len(batch.completions))
        trainer = real_logprobs(ref_model, batch, rows, pad_id, config, torch.device("cpu"))
        for i in rows:
            sampler = torch.tensor(batch.completions[i].ref_logprobs)
            torch.testing.assert_close(sampler, trainer[i], atol=1e-5, rtol=0)
            assert batch.ref_logps[i] is not None
