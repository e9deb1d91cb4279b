"""Packing without padding (train.packing): layouts by hand, the same log-probs and gradients
as the padded layout on real models, and a model whose attention would mix packed sequences
falling back to padding."""

import random
import warnings

import pytest
import torch
import transformers.masking_utils
from transformers import AutoModelForCausalLM, Qwen2Config, Qwen2ForCausalLM

from frugalrl.algo.logprobs import completion_logprobs, pack_batch
from frugalrl.algo.packing import first_fit_rows, pack_rows, packed_size, supports_packing
from frugalrl.config import Config
from frugalrl.rollout import Completion
from frugalrl.train.distributed import DataParallel
from frugalrl.train.loop import runnable_config
from frugalrl.train.micro_batches import layout_of, layout_positions, plan_micro_batches
from frugalrl.train.update import RolloutBatch


def test_first_fit_rows_by_hand():
    # longest first: 9 (1) fills a row; 5 (0) opens one, 4 (3) fills it; 3 (2) opens one, 2 (4)
    assert first_fit_rows([5, 9, 3, 4, 2], 9) == [[1], [0, 3], [2, 4]]
    assert first_fit_rows([5, 9, 3, 4, 2], 23) == [[1, 0, 3, 2, 4]]
    assert first_fit_rows([4, 4, 4], 4) == [[0], [1], [2]]
    assert packed_size([5, 9, 3, 4, 2], one_row=False) == 3 * 9
    assert packed_size([5, 9, 3, 4, 2], one_row=True) == 23


def test_pack_rows_by_hand():
    prompts, completions = [[5, 6], [7], [3]], [[8, 9, 10], [11], [12, 13]]  # lengths 5, 2, 3
    packed = pack_rows(prompts, completions, pad_id=0)
    # width 5 (the longest): sequence 0 alone, then 2 and 1 share the second row
    assert packed["input_ids"].tolist() == [[5, 6, 8, 9, 10], [3, 12, 13, 7, 11]]
    assert packed["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 1]]
    assert packed["completion_mask"].tolist() == [
        [True, True, True],
        [True, False, False],
        [True, True, False],
    ]
    # outputs at flat positions 1, 2, 3 predict 8, 9, 10; 8 (row 1, column 3) predicts 11;
    # 5 and 6 (row 1, columns 0 and 1) predict 12 and 13
    assert packed["predict_index"].tolist() == [1, 2, 3, 8, 5, 6]
    flat = packed["input_ids"].flatten()
    assert flat[packed["predict_index"] + 1].tolist() == [8, 9, 10, 11, 12, 13]

    one = pack_rows(prompts + [[4]], completions + [[14]], pad_id=0, one_row=True)
    assert one["input_ids"].tolist() == [[5, 6, 8, 9, 10, 3, 12, 13, 7, 11, 4, 14]]
    assert one["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 0, 1]]

    tail = pack_rows([[5, 6], [7]], [[8, 9, 10], [11, 12]], pad_id=0)  # 5 and 3: two rows
    assert tail["input_ids"].tolist() == [[5, 6, 8, 9, 10], [7, 11, 12, 0, 0]]
    # the unused tail continues its row's last sequence: causal attention keeps it out
    assert tail["position_ids"].tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 3, 4]]


def qwen2(attn_implementation: str) -> Qwen2ForCausalLM:
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=384,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        tie_word_embeddings=False,
        attn_implementation=attn_implementation,
    )
    return Qwen2ForCausalLM(config)


def random_pairs(n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 9, (n,), generator=g).tolist()
    completion_lengths = torch.randint(1, 14, (n,), generator=g).tolist()
    prompts = [torch.randint(1, 384, (k,), generator=g).tolist() for k in lengths]
    completions = [torch.randint(1, 384, (k,), generator=g).tolist() for k in completion_lengths]
    return prompts, completions


def logprobs_and_grads(model, batch, **kwargs):
    model.zero_grad()
    logp, entropy = completion_logprobs(model, batch, 0.7, entropy_grad=True, **kwargs)
    mask = batch["completion_mask"]
    weights = torch.linspace(-1, 1, int(mask.sum()))
    ((logp[mask] + 0.1 * entropy[mask]) * weights).sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    return logp[mask].detach(), entropy[mask].detach(), grads


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("chunk_tokens", [None, 7])
@pytest.mark.parametrize("one_row", [False, True])
def test_packed_log_probs_and_gradients_equal_the_padded_ones(
    attn_implementation, chunk_tokens, one_row
):
    model = qwen2(attn_implementation)
    assert supports_packing(model)
    prompts, completions = random_pairs(7, seed=2)
    padded = pack_batch(prompts, completions, 0)
    packed = pack_rows(prompts, completions, 0, one_row=one_row)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()  # it packed something
    assert one_row or packed["input_ids"].shape[0] < len(prompts)
    logp, entropy, grads = logprobs_and_grads(model, padded, chunk_tokens=chunk_tokens)
    p_logp, p_entropy, p_grads = logprobs_and_grads(model, packed, chunk_tokens=chunk_tokens)
    torch.testing.assert_close(p_logp, logp, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(p_entropy, entropy, atol=2e-6, rtol=1e-5)
    for a, b in zip(p_grads, grads, strict=True):
        torch.testing.assert_close(a, b, atol=2e-6, rtol=1e-4)


def test_a_model_that_mixes_packed_sequences_is_not_packed(monkeypatch):
    model = qwen2("sdpa")
    prompts, completions = random_pairs(5, seed=3)
    padded, packed = pack_batch(prompts, completions, 0), pack_rows(prompts, completions, 0)
    # attention that ignores where packed sequences start (as a model with its own masking
    # code might): every token sees the row before it, and packing would be wrong
    monkeypatch.setattr(transformers.masking_utils, "find_packed_sequence_indices", lambda p: None)
    with torch.no_grad():
        mixed, _ = completion_logprobs(model, packed)
        alone, _ = completion_logprobs(model, padded)
    mask = padded["completion_mask"]
    assert (mixed[mask] - alone[mask]).abs().max() > 1e-3
    assert not supports_packing(model)
    config = Config.model_validate({"model": {"name_or_path": "mixing"}})
    assert config.train.packing
    with pytest.warns(UserWarning, match="train.packing ignored"):
        assert not runnable_config(config, model, DataParallel(device="cpu")).train.packing
    assert config.train.packing  # the recipe itself is left as it was


def test_layouts_follow_the_config_and_the_attention_kernel():
    model = qwen2("sdpa")
    assert layout_of(model, Config()) == "packed"
    assert layout_of(model, Config.model_validate({"train": {"packing": False}})) == "padded"
    model.config._attn_implementation = "flash_attention_2"  # varlen kernel: one row
    assert layout_of(model, Config()) == "one_row"
    wrapped = torch.nn.Module()
    wrapped.module = model  # as DDP and DeepSpeed hold the model
    assert layout_of(wrapped, Config()) == "one_row"


def test_padding_fraction_counts_the_positions_each_layout_makes():
    prompts = [[5, 6], [7], [3]]
    completions = [Completion(tuple(c), "", True) for c in ([8, 9, 10], [11], [12, 13])]
    batch = RolloutBatch(prompts, completions, torch.zeros(3), torch.ones(3, dtype=torch.bool))
    # padded: 3 rows x (2 + 3) = 15 positions for 10 tokens; packed: 2 rows x 5 = 10
    assert layout_positions(batch, [[0, 1, 2]], "padded") == (15, 10)
    assert layout_positions(batch, [[0, 1, 2]], "packed") == (10, 10)
    # [1, 2]: rows as wide as its longest (3 tokens), which it fills: 5 + 2 x 3 positions
    assert layout_positions(batch, [[0], [1, 2]], "packed") == (5 + 2 * 3, 10)
    assert layout_positions(batch, [[0, 1, 2]], "one_row") == (10, 10)


@pytest.mark.parametrize("layout", ["packed", "one_row"])
def test_packed_plans_cover_every_row_within_the_budget(layout):
    rng = random.Random(1)
    one_row = layout == "one_row"
    for _ in range(200):
        n = rng.randint(1, 30)
        prompts = [rng.randint(1, 20) for _ in range(n)]
        completions = [rng.randint(0, 50) for _ in range(n)]
        rows = rng.sample(range(n), rng.randint(1, n))
        max_rows, budget = rng.randint(1, 8), rng.randint(1, 300)
        plan = plan_micro_batches(prompts, completions, rows, max_rows, budget, layout)
        assert sorted(i for mb in plan for i in mb) == sorted(rows)
        for mb in plan:
            lengths = [prompts[i] + completions[i] for i in mb]
            padded = len(mb) * (max(prompts[i] for i in mb) + max(completions[i] for i in mb))
            size = packed_size(lengths, one_row)
            assert len(mb) <= max_rows and (len(mb) == 1 or size <= budget)
            assert size <= padded  # packing never lays out more than padding would
        # a packed budget fits at least as many sequences per micro-batch as a padded one
        assert len(plan) <= len(plan_micro_batches(prompts, completions, rows, max_rows, budget))


def test_the_tiny_model_loaded_from_pretrained_is_packed(tiny_model_dir):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # it keeps packed sequences apart: no warning
        assert runnable_config(Config(), model, DataParallel(device="cpu")).train.packing


def test_the_attention_kernel_is_a_recipe_choice(tiny_model_dir):
    from frugalrl.errors import UserError
    from frugalrl.policy import load_policy

    model, _ = load_policy(
        tiny_model_dir, "float32", torch.device("cpu"), attn_implementation="eager"
    )
    assert model.config._attn_implementation == "eager"
    for bad, reason in (("bogus", "is not supported"), ("flash_attention_2", "installed")):
        with pytest.raises(UserError, match=f"model.attn_implementation '{bad}': .*{reason}"):
            load_policy(tiny_model_dir, "float32", torch.device("cpu"), attn_implementation=bad)
