"""Shared fixtures: a tiny untrained Qwen2 policy and demo-task data, built offline."""

import json

import pytest
import torch

from frugalrl.demo.model import build_model, build_trace_tokenizer, save_pretrained
from frugalrl.demo.task import make_split

torch.set_num_threads(1)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A randomly initialised ~0.1M-parameter Qwen2 + BPE tokenizer, saved in HF format."""
    rows = make_split("train", 300, 0, with_traces=True)
    tokenizer = build_trace_tokenizer(rows)
    model = build_model(
        len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return save_pretrained(model, tokenizer, tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def task_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("task")
    return (
        write_jsonl(root / "train.jsonl", make_split("train", 40, 1)),
        write_jsonl(root / "heldout.jsonl", make_split("heldout", 6, 1)),
    )


@pytest.fixture
def tiny_overrides(tiny_model_dir, task_files, tmp_path):
    train, heldout = task_files
    return [
        f"model.name_or_path={tiny_model_dir}",
        f"data.path={train}",
        f"eval.path={heldout}",
        f"train.output_dir={tmp_path / 'run'}",
        "train.steps=4",
        "train.prompts_per_step=2",
        "train.micro_batch_size=3",
        "train.save_every=2",
        "rollout.num_generations=3",
        "rollout.max_completion_tokens=12",
        "eval.samples_per_problem=2",
        "eval.max_new_tokens=12",
        "optim.lr=1e-3",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]


@pytest.fixture
def train_with_crash(monkeypatch):
    """``run(config)``: train, crash as the third step starts sampling, then resume to the end."""
    from frugalrl.train import loop, rollout_source

    def run(config):
        real, calls = rollout_source.collect_rollouts, []

        def crash_on_third_step(*args, **kwargs):
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("simulated crash")
            return real(*args, **kwargs)

        monkeypatch.setattr(rollout_source, "collect_rollouts", crash_on_third_step)
        with pytest.raises(RuntimeError, match="simulated crash"):
            loop.train(config)
        monkeypatch.setattr(rollout_source, "collect_rollouts", real)
        loop.train(config, resume=True)

    return run
