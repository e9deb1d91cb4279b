"""Loop features: DAPO dynamic sampling, KL folded into the reward, entropy bonus, dual-clip."""

import copy
import hashlib

import pytest
import torch
from transformers import AutoModelForCausalLM

from frugalrl.algo.logprobs import completion_logprobs, pack_batch
from frugalrl.config import config_from_dict, load_config
from frugalrl.data.sampler import PromptSampler
from frugalrl.policy import load_policy
from frugalrl.rewards import RewardSpec
from frugalrl.rewards.scoring import RewardScorer
from frugalrl.rollout import Completion
from frugalrl.train import loop, rollout_source, update
from frugalrl.train.metrics import read_metrics

# ---------------------------------------------------------------- rewards named by dotted path


def flagged_reward(samples):
    """Informative (0, 1, 2, ...) where the row says so, else constant: a zero-variance group."""
    if samples[0].example.get("informative"):
        return [float(i) for i in range(len(samples))]
    return [1.0] * len(samples)


def half_informative(samples):
    """For the real loop: about half the demo problems give groups that vary, the rest constant."""
    digest = hashlib.md5(samples[0].example["problem"].encode()).digest()
    if digest[0] % 2:
        return [float(i) for i in range(len(samples))]
    return [0.5] * len(samples)


def constant_reward(samples):
    return [1.0] * len(samples)


# ---------------------------------------------------------------- dynamic sampling, unit level


class FakeEngine:
    """Two-token completions for every prompt; records how many prompts each call drew."""

    def __init__(self):
        self.calls: list[int] = []

    def generate(self, prompt_ids, n, params, seeds=None):
        self.calls.append(len(prompt_ids))
        return [[Completion((1, 2), "x", True) for _ in range(n)] for _ in prompt_ids]


def sampling_setup(informative_positions, prompts_per_step=4, max_rounds=3):
    """12 problems; those drawn at ``informative_positions`` of the sampler's order vary."""
    sampler = PromptSampler(12, seed=0)
    order = list(sampler._order)
    informative = {order[p] for p in informative_positions}
    problems = [
        {"problem": str(i), "answer": "0", "informative": i in informative} for i in range(12)
    ]
    config = config_from_dict(
        {
            "rollout": {"num_generations": 3},
            "train": {"prompts_per_step": prompts_per_step},
            "algo": {"dynamic_sampling": True, "max_sampling_rounds": max_rounds},
        }
    )
    scorer = RewardScorer([RewardSpec("test_loop_features:flagged_reward", 1.0, {})], workers=0)
    return sampler, problems, [[i] for i in range(12)], config, scorer, order


def sampled(engine, sampler, problems, ids, config, scorer):
    """A step's (kept, generated, metrics), sampled synchronously."""
    source = rollout_source.SynchronousRounds(engine, sampler, problems, ids, config)
    step = loop.sample_step(source, config, scorer, step=0)
    return step.kept, step.generated, step.metrics


def test_dynamic_sampling_drops_constant_groups_and_refills():
    # Round 1 (order[0:4]) has one informative group; 1 kept of 4 drawn, 3 missing, so round 2
    # draws min(4, ceil(3 / (1/4))) = 4 (order[4:8]), of which 3 are informative: batch full.
    sampler, problems, ids, config, scorer, order = sampling_setup([0, 5, 6, 7])
    engine = FakeEngine()
    kept, generated, metrics = sampled(engine, sampler, problems, ids, config, scorer)
    assert engine.calls == [4, 4]
    assert [p[0] for p in kept.prompt_ids] == [order[0], order[5], order[6], order[7]]
    assert len(generated) == 8 and loop.informative_groups(kept.rewards).all()
    assert metrics == {
        "rollout/staleness": 0.0,
        "train/dynamic_sampling_dropped_groups": 4.0,
        "train/dynamic_sampling_rounds": 1.0,
        "train/dynamic_sampling_kept_groups": 4.0,
    }
    assert sampler.state_dict() == {"epoch": 0, "cursor": 8}  # advanced by what was drawn


def test_dynamic_sampling_trims_surplus_groups():
    sampler, problems, ids, config, scorer, order = sampling_setup([0, 4, 5, 6, 7])
    kept, _, metrics = sampled(FakeEngine(), sampler, problems, ids, config, scorer)
    assert [p[0] for p in kept.prompt_ids] == [order[0], order[4], order[5], order[6]]
    assert metrics["train/dynamic_sampling_dropped_groups"] == 3.0


def test_dynamic_sampling_gives_up_after_max_rounds():
    sampler, problems, ids, config, scorer, _ = sampling_setup([], max_rounds=2)
    engine = FakeEngine()
    kept, generated, metrics = sampled(engine, sampler, problems, ids, config, scorer)
    assert engine.calls == [4, 4, 4] and len(kept) == 0 and len(generated) == 12
    assert metrics["train/dynamic_sampling_rounds"] == 2.0
    assert metrics["train/dynamic_sampling_dropped_groups"] == 12.0


def test_without_dynamic_sampling_every_group_is_kept():
    sampler, problems, ids, config, scorer, _ = sampling_setup([])
    config.algo.dynamic_sampling = False
    kept, generated, metrics = sampled(FakeEngine(), sampler, problems, ids, config, scorer)
    assert len(kept) == 4 and kept is generated and metrics == {"rollout/staleness": 0.0}


# ---------------------------------------------------------------- dynamic sampling, real loop


def no_eval(tiny_overrides):
    return [*tiny_overrides, "eval.before=false", "eval.after=false", "scoring.workers=0"]


def test_dynamic_sampling_run_resumes_exactly(tiny_overrides, tmp_path, monkeypatch):
    base = [
        *no_eval(tiny_overrides),
        "rewards=[{name: 'test_loop_features:half_informative'}]",
        "algo.dynamic_sampling=true",
        "algo.beta=0",
    ]
    straight = load_config("recipes/demo.yaml", [*base, f"train.output_dir={tmp_path / 'a'}"])
    loop.train(straight)
    rows_a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    assert any(r["train/dynamic_sampling_dropped_groups"] > 0 for r in rows_a)
    assert any(r["train/dynamic_sampling_rounds"] > 0 for r in rows_a)
    assert all(r["train/dynamic_sampling_kept_groups"] == 2 for r in rows_a)

    # Crash mid-step 3 (after the step-2 checkpoint), once the sampler and the RNG have moved.
    crashing = load_config("recipes/demo.yaml", [*base, f"train.output_dir={tmp_path / 'b'}"])
    real_step, real_collect, steps = loop.sample_step, rollout_source.collect_rollouts, []

    def counting_step(*args, **kwargs):
        steps.append(1)
        return real_step(*args, **kwargs)

    def crash_in_step_3(*args, **kwargs):
        out = real_collect(*args, **kwargs)
        if len(steps) == 3:
            raise RuntimeError("simulated crash")
        return out

    monkeypatch.setattr(loop, "sample_step", counting_step)
    monkeypatch.setattr(rollout_source, "collect_rollouts", crash_in_step_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        loop.train(crashing)
    monkeypatch.setattr(loop, "sample_step", real_step)
    monkeypatch.setattr(rollout_source, "collect_rollouts", real_collect)
    loop.train(crashing, resume=True)

    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "final").state_dict()
    b = AutoModelForCausalLM.from_pretrained(tmp_path / "b" / "final").state_dict()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    rows_b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    keys = ["reward/total/mean", "train/dynamic_sampling_rounds", "train/loss"]
    assert [[r[k] for k in keys] for r in rows_a] == [[r[k] for k in keys] for r in rows_b]


def test_step_without_informative_group_skips_the_update(tiny_overrides, monkeypatch):
    config = load_config(
        "recipes/demo.yaml",
        [
            *no_eval(tiny_overrides),
            "rewards=[{name: 'test_loop_features:constant_reward'}]",
            "algo.dynamic_sampling=true",
            "algo.max_sampling_rounds=1",
            "train.steps=2",
        ],
    )
    monkeypatch.setattr(loop, "policy_update", lambda *a, **k: pytest.fail("no update expected"))
    before = AutoModelForCausalLM.from_pretrained(config.model.name_or_path).state_dict()
    summary = loop.train(config)
    assert summary["steps"] == 2
    rows = read_metrics(config.run_dir / "metrics.jsonl")
    assert [r["train/dynamic_sampling_kept_groups"] for r in rows] == [0, 0]
    assert [r["train/dynamic_sampling_rounds"] for r in rows] == [1, 1]
    after = AutoModelForCausalLM.from_pretrained(config.run_dir / "final").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------- KL in the reward


def tiny_policy(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    return model, tokenizer


def perturbed(model, seed=1):
    ref = copy.deepcopy(model)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in ref.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return ref.eval().requires_grad_(False)


def test_kl_in_reward_penalises_rewards_before_the_advantage(tiny_model_dir):
    model, tokenizer = tiny_policy(tiny_model_dir)
    ref = perturbed(model)
    prompt = [5, 6, 7]
    comps = [(10, 11, 12), (13, 14, 15, 16, 17), (18, 19, 20, 21)]  # different lengths
    rollouts = rollout_source.ScoredGroups(
        [prompt],
        [[Completion(c, "", True) for c in comps]],
        [[1.0, 0.0, 1.0]],
        {"r": [[1.0, 0.0, 1.0]]},
    )
    beta = 0.1
    config = config_from_dict(
        {
            "rollout": {"num_generations": 3, "temperature": 0.7},
            "train": {"micro_batch_size": 2},  # two micro-batches of different widths
            "algo": {
                "advantage": "rloo",
                "kl_in_reward": True,
                "beta": beta,
                "kl_estimator": "k1",
            },
        }
    )
    batch = loop.build_batch(rollouts, model, ref, tokenizer.pad_token_id, config, "cpu")

    # By hand, one completion at a time: r' = r - β Σ_t (log π - log π_ref), then RLOO.
    penalty = []
    with torch.no_grad():
        for c in comps:
            packed = pack_batch([prompt], [c], tokenizer.pad_token_id)
            logp, _ = completion_logprobs(model, packed, 0.7)
            ref_logp, _ = completion_logprobs(ref, packed, 0.7)
            penalty.append(beta * float((logp - ref_logp).sum()))
    assert min(abs(p) for p in penalty) > 1e-4  # the reference really differs
    r = [1.0 - penalty[0], 0.0 - penalty[1], 1.0 - penalty[2]]
    expected = torch.tensor([r[i] - (sum(r) - r[i]) / 2 for i in range(3)])
    torch.testing.assert_close(batch.advantages, expected, rtol=0, atol=1e-5)
    assert batch.metrics["train/kl_in_reward"] == pytest.approx(sum(penalty) / 3, abs=1e-5)
    assert batch.ref_logps is not None and batch.old_logps is None  # μ = 1: no old log-probs


# ---------------------------------------------------------------- what reaches the loss


def test_algo_options_reach_the_loss(tiny_overrides, monkeypatch):
    config = load_config(
        "recipes/demo.yaml",
        [
            *no_eval(tiny_overrides),
            "train.steps=1",
            "algo.dual_clip_c=3",
            "algo.entropy_coef=0.01",
            "algo.kl_in_reward=true",
            "algo.beta=0.1",
            "algo.kl_estimator=k1",
            "algo.kl_ratio_correction=true",
        ],
    )
    seen = []
    real = update.PolicyObjective.__call__

    def spy(objective, *args, **kwargs):
        seen.append((objective, kwargs))
        return real(objective, *args, **kwargs)

    monkeypatch.setattr(update.PolicyObjective, "__call__", spy)
    loop.train(config)
    assert seen
    for objective, kwargs in seen:
        assert objective.loss == "ppo_clip" and objective.params["dual_clip_c"] == 3.0
        assert objective.entropy_coef == 0.01 and kwargs["entropy"].requires_grad
        assert objective.kl_ratio_correction is True
        assert objective.beta == 0.0  # the KL is in the reward, not the loss
        assert kwargs["ref_logp"] is not None  # still given: it feeds train/kl
    (row,) = read_metrics(config.run_dir / "metrics.jsonl")
    assert "train/kl_in_reward" in row and "train/dual_clip_fraction" in row


def test_a_model_without_plain_logits_trains_on_full_logits(tiny_overrides, monkeypatch):
    config = load_config("recipes/demo.yaml", [*no_eval(tiny_overrides), "train.steps=1"])
    monkeypatch.setattr(loop, "supports_chunked_logprobs", lambda model: False)
    chunks = []
    real = update.completion_logprobs

    def spy(*args, **kwargs):
        chunks.append(kwargs.get("chunk_tokens"))
        return real(*args, **kwargs)

    monkeypatch.setattr(update, "completion_logprobs", spy)
    with pytest.warns(UserWarning, match="logprob_chunk_tokens ignored"):
        loop.train(config)
    assert chunks and set(chunks) == {None}
    assert config.train.logprob_chunk_tokens == 512  # the caller's config is left alone
