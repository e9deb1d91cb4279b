"""Mixed precision (train.precision bf16): bf16 products over fp32 masters, fp32 log-probs, the
sampler-trainer gap measured, and the importance-sampling correction that keeps it on target."""

import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from frugalrl.algo.importance import importance_weights
from frugalrl.algo.logprobs import completion_logprobs, pack_batch
from frugalrl.config import load_config
from frugalrl.errors import UserError
from frugalrl.precision import autocast
from frugalrl.rollout import HFEngine, SamplingParams
from frugalrl.train import loop
from frugalrl.train.distributed import DataParallel
from frugalrl.train.metrics import read_metrics


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=384,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
    )
    return Qwen2ForCausalLM(config).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(1, 384, (n,), generator=g).tolist() for n in (5, 3, 7)]
    completions = [torch.randint(1, 384, (n,), generator=g).tolist() for n in (9, 4, 12)]
    return pack_batch(prompts, completions, 0)


def logprobs_and_grad(model, batch, precision, **kwargs):
    model.zero_grad()
    with autocast(precision, "cpu"):
        logp, _ = completion_logprobs(model, batch, 0.7, **kwargs)
    mask = batch["completion_mask"]
    (logp[mask] * torch.linspace(-1, 1, int(mask.sum()))).sum().backward()
    return logp[mask].detach(), model.lm_head.weight.grad.clone(), model.lm_head.weight.grad.dtype


def test_bf16_log_probs_are_fp32_and_differ_from_fp32_by_bf16_rounding_only(model, batch):
    fp32, fp32_grad, _ = logprobs_and_grad(model, batch, "fp32")
    for chunk in (None, 5):
        bf16, bf16_grad, grad_dtype = logprobs_and_grad(model, batch, "bf16", chunk_tokens=chunk)
        assert bf16.dtype == torch.float32 and grad_dtype == torch.float32  # fp32 masters
        gap = (bf16 - fp32).abs()
        # bf16 keeps 8 bits of mantissa: log-probs of ~-6 move by ~1e-3, never by 0.1
        assert 1e-4 < gap.mean() < 2e-2 and gap.max() < 0.1, (chunk, gap.mean(), gap.max())
        relative = (bf16_grad - fp32_grad).norm() / fp32_grad.norm()
        assert 1e-4 < relative < 5e-2, (chunk, relative)


def test_the_chunked_bf16_path_equals_the_plain_one(model, batch):
    plain, plain_grad, _ = logprobs_and_grad(model, batch, "bf16")
    chunked, chunked_grad, _ = logprobs_and_grad(model, batch, "bf16", chunk_tokens=4)
    torch.testing.assert_close(chunked, plain, atol=1e-5, rtol=1e-5)
    # the chunked backward multiplies in bf16 and sums chunks in fp32; autograd's sums once
    torch.testing.assert_close(chunked_grad, plain_grad, atol=2e-3, rtol=2e-2)


def test_an_fp32_output_layer_computes_the_logits_from_bf16_hidden_states_in_fp32(model, batch):
    bf16, _, _ = logprobs_and_grad(model, batch, "bf16")
    head32, _, _ = logprobs_and_grad(model, batch, "bf16", head_dtype=torch.float32)
    head32_chunked, _, _ = logprobs_and_grad(
        model, batch, "bf16", head_dtype=torch.float32, chunk_tokens=3
    )
    torch.testing.assert_close(head32_chunked, head32, atol=1e-5, rtol=1e-5)
    mask, width = batch["completion_mask"], batch["completion_mask"].shape[1]
    with torch.no_grad(), autocast("bf16", "cpu"):  # independently: the decoder in bf16 ...
        hidden = model.get_decoder()(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            position_ids=batch["position_ids"],
        ).last_hidden_state[:, -width - 1 : -1]
    logits = hidden.float() @ model.lm_head.weight.float().T / 0.7  # ... the head in fp32
    targets = batch["input_ids"][:, -width:]
    expected = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    torch.testing.assert_close(head32, expected[mask], atol=1e-5, rtol=1e-5)
    assert (head32 - bf16).abs().max() > 1e-4  # and the bf16 head really is another number


def test_importance_sampling_keeps_a_bf16_sampled_update_on_target(model):
    """One-token completions, every token enumerated, so expectations are exact sums: the
    policy gradient the trainer wants is g* = Σ_y π(y) A(y) ∇log π(y), π the fp32 trainer's
    distribution; the samples come from q, the bf16 sampler's (checked against what the hf
    engine reports). Σ_y q(y) w(y) A(y) ∇log π(y) with w = π/q (token_truncate, clip wide)
    is g*; without the correction the update aims at Σ_y q A ∇log π."""
    prompt = [5, 17, 42, 9]
    ids = torch.tensor([prompt])
    with torch.no_grad(), autocast("bf16", "cpu"):
        q_logits = model(input_ids=ids).logits[0, -1].float()
    log_q = torch.log_softmax(q_logits, -1)
    engine = HFEngine(model, _TokenizerStub(eos=0))
    with autocast("bf16", "cpu"):
        [samples] = engine.generate([prompt], 16, SamplingParams(1.0, 1.0, 1), seeds=[3])
    for c in samples:  # what the engine reports is q
        assert c.logprobs[0] == pytest.approx(log_q[c.token_ids[0]].item(), abs=1e-5)

    vocab = log_q.shape[0]
    advantages = torch.linspace(-1, 1, vocab)[torch.randperm(vocab, generator=_gen(4))]
    log_pi = torch.log_softmax(model(input_ids=ids).logits[0, -1].float(), -1)  # fp32, grad
    mask = torch.ones(vocab, 1, dtype=torch.bool)
    w = importance_weights(
        "token_truncate", log_pi.unsqueeze(-1), log_q.unsqueeze(-1), mask, None, 1e9
    ).squeeze(-1)

    def gradient(objective):
        model.zero_grad()
        objective.backward(retain_graph=True)
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])

    target = gradient((log_pi.exp().detach() * advantages * log_pi).sum())
    corrected = gradient((log_q.exp() * w * advantages * log_pi).sum())
    uncorrected = gradient((log_q.exp() * advantages * log_pi).sum())
    err = (corrected - target).norm() / target.norm()
    bias = (uncorrected - target).norm() / target.norm()
    assert bias > 1e-4  # bf16 sampling really is off-policy
    assert err < bias / 100, (err, bias)


class _TokenizerStub:
    """What HFEngine needs of a tokenizer for one-token completions."""

    def __init__(self, eos: int) -> None:
        self.eos_token_id = eos
        self.pad_token_id = eos

    def decode(self, tokens, skip_special_tokens=True):
        return " ".join(map(str, tokens))


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_a_bf16_run_trains_fp32_masters_and_logs_the_sampler_gap(tiny_overrides):
    logs = {}
    for precision in ("fp32", "bf16"):
        overrides = [o for o in tiny_overrides if not o.startswith("train.output_dir")]
        out = Path(next(o for o in tiny_overrides if o.startswith("train.output_dir"))[17:])
        run_dir = out.parent / f"run-{precision}"
        overrides += [f"train.output_dir={run_dir}", f"train.precision={precision}"]
        overrides += ["train.steps=2", "algo.beta=0.04", "train.save_every=0"]
        loop.train(load_config("recipes/demo.yaml", overrides))
        logs[precision] = read_metrics(run_dir / "metrics.jsonl")
        saved = AutoModelForCausalLM.from_pretrained(run_dir / "final")
        assert {p.dtype for p in saved.parameters()} == {torch.float32}
        assert json.loads((run_dir / "summary.json").read_text())["steps"] == 2
    fp32_gap = max(r["train/rollout_logprob_abs_diff"] for r in logs["fp32"])
    bf16_gap = min(r["train/rollout_logprob_abs_diff"] for r in logs["bf16"])
    assert fp32_gap < 1e-4  # the same fp32 arithmetic, with and without a KV cache
    assert 10 * fp32_gap < bf16_gap < 0.05, (fp32_gap, bf16_gap)
    for r in logs["bf16"]:
        assert r["train/rollout_logprob_abs_diff_max"] >= r["train/rollout_logprob_abs_diff"]


def test_bf16_loads_fp32_masters_and_a_bf16_reference(tiny_overrides):
    config = load_config("recipes/demo.yaml", [*tiny_overrides, "train.precision=bf16"])
    assert config.algo.beta > 0  # the demo recipe keeps a reference model
    model, ref_model, _ = loop.load_models(config, None, DataParallel(device=torch.device("cpu")))
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert {p.dtype for p in ref_model.parameters()} == {torch.bfloat16}


def test_precision_choices_are_checked_when_the_recipe_loads():
    with pytest.raises(UserError, match="fp32 master weights"):
        load_config("recipes/demo.yaml", ["train.precision=bf16", "model.dtype=bfloat16"])
    with pytest.raises(UserError, match="lm_head_fp32 only applies"):
        load_config("recipes/demo.yaml", ["train.lm_head_fp32=true"])
    with pytest.raises(UserError, match="precision"):
        load_config("recipes/demo.yaml", ["train.precision=fp16"])
    assert load_config("recipes/demo.yaml", ["train.precision=bf16"]).train.precision == "bf16"
