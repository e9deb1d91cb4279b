"""The vLLM engine's CPU-testable parts: output conversion, weight names, the missing package.
The engine itself needs vLLM and CUDA; its test is skipped without them."""

import importlib.util
from types import SimpleNamespace

import pytest
import torch

from frugalrl.errors import UserError
from frugalrl.policy import add_adapters, load_policy
from frugalrl.rollout import ROLLOUT_ENGINES
from frugalrl.rollout.base import SamplingParams
from frugalrl.rollout.vllm_engine import completion_from_output, merged_weights, vllm_weight_name

HAS_VLLM = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()
EOS = 2


def decode(ids, skip_special_tokens=True):
    return " ".join(str(i) for i in ids)


def output(token_ids, logprobs, finish_reason):
    steps = None
    if logprobs is not None:
        steps = [
            {t: SimpleNamespace(logprob=lp)} for t, lp in zip(token_ids, logprobs, strict=True)
        ]
    return SimpleNamespace(token_ids=token_ids, logprobs=steps, finish_reason=finish_reason)


def test_completion_from_output():
    done = completion_from_output(output([5, 6, EOS], [-0.1, -0.2, -0.3], "stop"), EOS, decode)
    assert done.token_ids == (5, 6, EOS) and done.finished and done.text == "5 6"
    assert done.logprobs == (-0.1, -0.2, -0.3)
    # vLLM left the stop token out: it is put back, its log-prob unknown
    bare = completion_from_output(output([5, 6], [-0.1, -0.2], "stop"), EOS, decode)
    assert bare.token_ids == (5, 6, EOS) and bare.text == "5 6"
    assert bare.logprobs[:2] == (-0.1, -0.2) and bare.logprobs[2] != bare.logprobs[2]  # NaN
    cut = completion_from_output(output([5, 6, 7], None, "length"), EOS, decode)
    assert cut.token_ids == (5, 6, 7) and not cut.finished and cut.logprobs is None


def test_vllm_weight_names():
    assert vllm_weight_name("model.layers.0.mlp.up_proj.weight") == (
        "model.layers.0.mlp.up_proj.weight"
    )
    assert vllm_weight_name(
        "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"
    ) == ("model.layers.0.self_attn.q_proj.weight")
    assert (
        vllm_weight_name("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight")
        is None
    )
    assert vllm_weight_name("base_model.model.lm_head.modules_to_save.default.weight") == (
        "lm_head.weight"
    )
    assert vllm_weight_name("base_model.model.lm_head.original_module.weight") is None


def test_merged_weights_of_a_lora_policy_are_the_merged_model(tiny_model_dir):
    model, _ = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    names = {n for n, _ in model.named_parameters()}
    lora = add_adapters(model, 4, 8.0, 0.0, "all-linear")
    with torch.no_grad():
        for name, p in lora.named_parameters():
            if "lora_B" in name:
                p.normal_()  # adapters that change the weights
    sent = dict((n, t.clone()) for n, t in merged_weights(lora))
    assert set(sent) == names
    merged = lora.merge_and_unload()
    for name, p in merged.named_parameters():
        torch.testing.assert_close(sent[name], p.data)


def test_vllm_engine_without_vllm_is_a_clear_error(tiny_model_dir):
    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vLLM is installed")
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    with pytest.raises(UserError, match=r"pip install 'frugalrl\[vllm\]'"):
        ROLLOUT_ENGINES.get("vllm")(model, tokenizer)


@pytest.mark.skipif(not HAS_VLLM, reason="needs vLLM and a CUDA GPU")
def test_vllm_samples_with_the_policy_weights(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cuda"))
    engine = ROLLOUT_ENGINES.get("vllm")(model, tokenizer, gpu_memory_utilization=0.2)
    groups = engine.generate([[5, 6, 7], [8, 9]], 3, SamplingParams(1.0, 1.0, 16))
    assert [len(g) for g in groups] == [3, 3]
    for c in (c for g in groups for c in g):
        assert c.logprobs is not None and len(c.logprobs) == c.num_tokens
