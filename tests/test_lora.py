"""LoRA runs: only adapters train and are saved, resume exactly, and export to a full model."""

import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from frugalrl.cli import main
from frugalrl.config import load_config
from frugalrl.eval.runner import resolve_model_dir
from frugalrl.policy import is_adapter_dir, load_policy
from frugalrl.train import loop
from frugalrl.train.metrics import read_metrics

LORA = ["peft.r=4", "peft.alpha=8", "optim.lr=5e-3", "eval.before=false", "eval.after=false"]
# A random policy earns no reward: the entropy bonus gives the adapters a gradient to follow.
LORA += ["algo.entropy_coef=0.05"]


def lora_config(tiny_overrides, out):
    return load_config(
        "recipes/demo.yaml", [*tiny_overrides, *LORA, f"train.output_dir={out}", "algo.beta=0.04"]
    )


def test_lora_run_saves_adapters_that_export_to_a_full_model(
    tiny_overrides, tiny_model_dir, tmp_path, capsys
):
    config = lora_config(tiny_overrides, tmp_path / "run")
    summary = loop.train(config)
    assert 0 < summary["saved_weights_bytes"] < summary["base_weights_bytes"] / 2
    final = tmp_path / "run" / "final"
    assert is_adapter_dir(final) and not (final / "model.safetensors").exists()
    for checkpoint in (tmp_path / "run" / "checkpoints").iterdir():
        assert is_adapter_dir(checkpoint)
    adapters = load_file(final / "adapter_model.safetensors")
    assert adapters and all("lora_" in name for name in adapters)
    full_size = (tiny_model_dir / "model.safetensors").stat().st_size
    assert (final / "adapter_model.safetensors").stat().st_size < full_size / 2

    assert resolve_model_dir(tmp_path / "run") == str(final)  # eval takes a LoRA run as it is
    assert main(["export", str(tmp_path / "run"), "--dtype", "float32"]) in (0, None)
    assert "merged model" in capsys.readouterr().out
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "merged")
    with_adapters, _ = load_policy(final, "float32", torch.device("cpu"), adapters="train")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits
        adapter_logits = with_adapters.eval()(input_ids=ids).logits
        base_logits = base(input_ids=ids).logits
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=0, atol=1e-5)
    assert (merged_logits - base_logits).abs().max() > 1e-4  # the adapters learnt something


def test_lora_run_resumes_like_an_uninterrupted_one(tiny_overrides, tmp_path, train_with_crash):
    loop.train(lora_config(tiny_overrides, tmp_path / "a"))
    crashing = lora_config(tiny_overrides, tmp_path / "b")
    train_with_crash(crashing)
    a = load_file(tmp_path / "a" / "final" / "adapter_model.safetensors")
    b = load_file(tmp_path / "b" / "final" / "adapter_model.safetensors")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    rows_a = read_metrics(tmp_path / "a" / "metrics.jsonl")
    rows_b = read_metrics(tmp_path / "b" / "metrics.jsonl")
    assert [r["train/loss"] for r in rows_a] == [r["train/loss"] for r in rows_b]
