"""The HF rollout engines: the KV-cache sampling loop against ``model.generate``."""

import collections
import inspect
import warnings

import pytest
import torch
from peft import LoraConfig, get_peft_model

from frugalrl.policy import load_policy
from frugalrl.rollout import ROLLOUT_ENGINES, hf
from frugalrl.rollout.base import SamplingParams

PROMPTS = [[5, 6, 7, 8], [9, 10], [11, 12, 13, 14, 15, 16], [20], [30, 31], [40, 41, 42], [50]]


@pytest.fixture
def eos_prone_policy(tiny_model_dir):
    """The tiny random policy with EOS made likelier, so samples end at different steps."""
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        head = model.get_output_embeddings().weight
        head[tokenizer.eos_token_id] += 0.08 * torch.randn(head.shape[1], generator=g)
    return model, tokenizer


def generate_greedy(model, tokenizer, prompts, max_new_tokens):
    width = max(len(p) for p in prompts)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
    out = model.generate(
        input_ids=ids,
        attention_mask=attention,
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    return out[:, width:].tolist()


@pytest.mark.parametrize("batch_size", [3, 64])
def test_sampling_loop_follows_generate_token_for_token(eos_prone_policy, monkeypatch, batch_size):
    # With argmax in place of sampling both must produce the same tokens: shared prefill,
    # cache copies and the early exit of finished rows must not change a single logit.
    model, tokenizer = eos_prone_policy
    monkeypatch.setattr(
        hf, "sample_next", lambda logits, t, p, u: (logits.argmax(-1), torch.zeros(len(logits)))
    )
    engine = hf.HFEngine(model, tokenizer, batch_size=batch_size)
    groups = engine.generate(PROMPTS, 3, SamplingParams(1.0, 1.0, 40))
    expected = generate_greedy(model, tokenizer, PROMPTS, 40)
    lengths = set()
    for group, row in zip(groups, expected, strict=True):
        reference = engine._completion(row, tokenizer.eos_token_id)
        assert [c.token_ids for c in group] == [reference.token_ids] * 3
        assert all(c.finished == reference.finished for c in group)
        lengths.add((reference.num_tokens, reference.finished))
    # rows ended early, late and not at all: the early exit really ran
    assert (40, False) in lengths and any(n < 40 for n, f in lengths if f) and len(lengths) >= 3


def test_sample_next_draws_from_the_tempered_nucleus():
    torch.manual_seed(0)
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(20000, 1)
    counts = collections.Counter(hf.sample_next(logits, 1.0, 0.8)[0].tolist())
    # top_p 0.8 keeps {0.5, 0.3}: renormalised 0.625 / 0.375
    assert set(counts) == {0, 1}
    assert counts[0] / 20000 == pytest.approx(0.625, abs=0.015)
    counts = collections.Counter(hf.sample_next(logits, 2.0, 1.0)[0].tolist())
    # temperature 2: p ∝ sqrt(p) = 0.707, 0.548, 0.387, 0.224 (sum 1.866)
    assert counts[3] / 20000 == pytest.approx(0.224 / 1.866, abs=0.01)


@pytest.mark.parametrize("engine", ["hf", "hf-generate"])
def test_engines_return_groups_of_completions_in_prompt_order(eos_prone_policy, engine):
    model, tokenizer = eos_prone_policy
    model.train()
    torch.manual_seed(0)
    groups = ROLLOUT_ENGINES.get(engine)(model, tokenizer, batch_size=4).generate(
        PROMPTS, 2, SamplingParams(1.0, 0.9, 12)
    )
    assert model.training  # restored
    assert [len(g) for g in groups] == [2] * len(PROMPTS)
    for group in groups:
        for c in group:
            assert 1 <= c.num_tokens <= 12
            assert c.finished == (c.token_ids[-1] == tokenizer.eos_token_id)
            assert tokenizer.eos_token_id not in c.token_ids[:-1]


def test_sampling_loop_passes_the_cache_under_the_name_the_model_takes(eos_prone_policy):
    # transformers 5 renamed `past_key_values` to `cache` (the old name goes in 5.40): the loop
    # must use whichever this release's forward declares, plain or wrapped by peft.
    model, tokenizer = eos_prone_policy
    declared = inspect.signature(type(model).forward).parameters
    expected = "cache" if "cache" in declared else "past_key_values"
    assert hf.cache_keyword(model) == expected
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"]))
    assert hf.cache_keyword(lora) == expected
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # a deprecated keyword fails here
        groups = hf.HFEngine(lora, tokenizer).generate(PROMPTS[:2], 2, SamplingParams(1.0, 1.0, 8))
    assert [len(g) for g in groups] == [2, 2]
