"""Model cards: README.md in a run's final/ and checkpoints/best/ and in `frugalrl export`'s
output, with Hub metadata that parses, every number taken from the run's own files, and the
folders still loading with transformers."""

import json
import shutil

import pytest
import yaml
from transformers import AutoModelForCausalLM, AutoTokenizer

from frugalrl.cli import main
from frugalrl.config import load_config
from frugalrl.report.model_card import (
    Hardware,
    hub_dataset_id,
    hub_model_id,
    write_model_cards,
)
from frugalrl.train import loop

TAGS = {"frugalrl", "grpo", "reinforcement-learning", "math", "reasoning"}


def read_card(path):
    """(front matter, body) of a card, the front matter as the Hub reads it: YAML between
    the first two '---' lines."""
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    header, body = text.removeprefix("---\n").split("\n---\n", 1)
    return yaml.safe_load(header), body


def read_json(path):
    return json.loads(path.read_text())


def pct(fraction):
    return f"{100 * fraction:.1f}"


def table_row(benchmark, model, stats):
    """The results row the card states for ``stats``: percent with one decimal, the 95% CI,
    mean tokens with one decimal."""
    lo, hi = stats["accuracy_ci95"]
    return (
        f"| {benchmark} | {model} | {stats['num_problems']} × {stats['samples_per_problem']} | "
        f"{pct(stats['accuracy'])} ({pct(lo)}–{pct(hi)}) | {stats['mean_tokens']:.1f} |"
    )


def cli_args(overrides):
    return [arg for o in overrides for arg in ("--set", o)]


def test_train_command_writes_cards_for_final_and_best_and_resume_rewrites_them(
    tiny_overrides, tiny_model_dir, task_files, tmp_path, capsys
):
    overrides = [
        *tiny_overrides,
        "train.steps=2",
        "eval.every_steps=1",  # periodic evaluations: checkpoints/best
        "eval.benchmarks=[gsm8k]",
        "eval.num_problems=3",
    ]
    assert main(["train", "recipes/demo.yaml", *cli_args(overrides)]) == 0
    run = tmp_path / "run"
    assert f"model card: {run / 'final' / 'README.md'}" in capsys.readouterr().out
    summary = read_json(run / "summary.json")
    base, final = summary["eval"]["base"], summary["eval"]["final"]

    meta, body = read_card(run / "final" / "README.md")
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-generation"
    assert set(meta["tags"]) >= TAGS and "lora" not in meta["tags"]
    assert "base_model" not in meta and "license" not in meta  # a local base; no license known
    assert f"`{tiny_model_dir}` trained with reinforcement learning" in body
    (index,) = meta["model-index"]
    assert index["name"] == "run"
    heldout, gsm8k = index["results"]
    assert heldout["dataset"] == {
        "type": "heldout",
        "name": f"held-out problems (heldout.jsonl, {final['num_problems']} problems)",
    }
    assert heldout["metrics"] == [
        {
            "type": "accuracy",
            "value": round(100 * final["accuracy"], 1),
            "name": "avg@2 accuracy (%)",
        },
        {"type": "mean_tokens", "value": round(final["mean_tokens"], 1), "name": "mean tokens"},
    ]
    assert gsm8k["dataset"]["type"] == "gsm8k"
    assert table_row("heldout", "base", base) in body
    assert table_row("heldout", "this model", final) in body
    final_eval = read_json(run / "eval" / "final" / "summary.json")["benchmarks"]
    assert table_row("gsm8k", "this model", final_eval["gsm8k"]) in body
    assert f"| steps | {summary['steps']} of 2 planned |" in body
    assert "| prompts per step × generations | 2 × 3 |" in body
    assert "| rewards | `accuracy` × 1.0, `format` × 1.0 (schema=open-rs) |" in body
    assert f"`{task_files[0]}`: 40 problems" in body
    assert (
        f"{summary['wall_seconds']:.1f} s" in body and f"{summary['train_seconds']:.1f} s" in body
    )
    assert "- Device: 1 × CPU" in body and "GPU-hours" not in body
    assert AutoModelForCausalLM.from_pretrained(run / "final") is not None  # still loads
    assert AutoTokenizer.from_pretrained(run / "final") is not None

    best = summary["best"]
    periodic = read_json(run / "eval" / f"step-{best['step']:06d}" / "summary.json")
    meta, body = read_card(run / "checkpoints" / "best" / "README.md")
    assert meta["model-index"][0]["name"] == "run-best"
    assert periodic["benchmarks"]["heldout"]["accuracy"] == best["heldout_accuracy"]
    assert (
        table_row("heldout", f"this model (step {best['step']})", periodic["benchmarks"]["heldout"])
        in body
    )

    (run / "final" / "README.md").unlink()
    assert main(["train", "--resume", str(run), "--set", "train.steps=3"]) == 0
    _, body = read_card(run / "final" / "README.md")
    assert "| steps | 3 of 3 planned |" in body


def test_lora_card_without_evaluation_and_export_card_with_an_eval_dir(
    tiny_overrides, tmp_path, capsys
):
    lora = ["peft.r=4", "peft.alpha=8", "eval.before=false", "eval.after=false"]
    loop.train(load_config("recipes/demo.yaml", [*tiny_overrides, "train.steps=2", *lora]))
    run = tmp_path / "run"
    assert write_model_cards(run) == [run / "final" / "README.md"]  # no periodic eval: no best
    meta, body = read_card(run / "final" / "README.md")
    assert meta["library_name"] == "peft" and "lora" in meta["tags"]
    assert "model-index" not in meta and "## Results" not in body
    assert "AutoPeftModelForCausalLM.from_pretrained" in body
    assert "(`train.device: auto`), so no GPU-hours are given" in body

    generations = tmp_path / "toy.jsonl"  # graded by `frugalrl eval --regrade`: a real eval dir
    rows = [
        {"id": p, "answer": "12", "completion": f"\\boxed{{{c}}}", "tokens": t}
        for p, c, t in [("a", 12, 30), ("a", 11, 50), ("b", 12, 20), ("b", 12, 40)]
        + [("c", 12, 25), ("c", 12, 35), ("d", 12, 60), ("d", 5, 70)]
    ]  # right on 1/2, 2/2, 2/2, 1/2 samples: avg@2 75%
    generations.write_text("".join(json.dumps(r) + "\n" for r in rows))
    evals = tmp_path / "evals"
    assert main(["eval", "--regrade", str(generations), "--out", str(evals), "--workers", "0"]) == 0

    assert main(["export", str(run), "--eval", str(tmp_path / "missing")]) == 2
    assert not (run / "merged").exists()  # a bad --eval fails before the merge
    assert main(["export", str(run), "--dtype", "float32", "--eval", str(evals)]) == 0
    assert f"model card: {run / 'merged' / 'README.md'}" in capsys.readouterr().out
    stats = read_json(evals / "summary.json")["benchmarks"]["toy"]
    meta, body = read_card(run / "merged" / "README.md")
    assert meta["library_name"] == "transformers"
    ((entry,),) = [m["results"] for m in meta["model-index"]]
    assert entry["dataset"] == {"type": "toy", "name": "toy (4 problems)"}
    assert entry["metrics"][0]["value"] == round(100 * stats["accuracy"], 1) == 75.0
    assert table_row("toy", "this model", stats) in body
    assert 0 < stats["accuracy_ci95"][0] < stats["accuracy_ci95"][1]  # a CI worth printing
    assert "merged into the base model by `frugalrl export`" in body
    assert AutoModelForCausalLM.from_pretrained(run / "merged") is not None


def test_card_names_a_hub_base_model_the_curation_and_gpu_hours(
    tiny_overrides, tiny_model_dir, task_files, tmp_path
):
    base = tmp_path / "hub" / "models--frugalrl-tests--tiny-qwen2" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model_dir, base)  # as the Hub's download cache lays a model out
    curate = tmp_path / "curate.yaml"
    source = {"path": str(task_files[0]), "solution_field": None}
    curate.write_text(
        yaml.safe_dump(
            {
                "name": "t",
                "progress": False,
                "stages": ["load", "dedup"],
                "load": {"sources": [source]},
            }
        )
    )
    assert main(["curate", str(curate), "--out", str(tmp_path / "curated")]) == 0
    curation = read_json(tmp_path / "curated" / "curation_summary.json")
    overrides = [
        *tiny_overrides,
        "train.steps=1",
        f"model.name_or_path={base}",
        f"data.path={tmp_path / 'curated' / 'data.jsonl'}",
        "eval.before=false",
        "eval.after=false",
    ]
    loop.train(load_config("recipes/demo.yaml", overrides))
    run = tmp_path / "run"
    (card,) = write_model_cards(run, Hardware("cuda", 2, "NVIDIA H100 80GB HBM3"))
    meta, body = read_card(card)
    assert meta["base_model"] == "frugalrl-tests/tiny-qwen2"
    assert f"{curation['rows_in']:,} rows read, {curation['rows_out']:,} kept" in body
    assert f"data.jsonl`: {curation['rows_out']:,} problems" in body
    wall = read_json(run / "summary.json")["wall_seconds"]
    assert "- Device: 2 × CUDA GPU (NVIDIA H100 80GB HBM3)" in body
    assert f"- GPU-hours: {2 * wall / 3600:.3f} (2 × wall time)" in body


@pytest.mark.parametrize(
    ("name", "hub_id"),
    [
        ("deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B", "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B"),
        ("gpt2", "gpt2"),
        ("runs/demo/sft-base", None),  # a relative path, not an org/name id
        (
            "/home/u/.cache/huggingface/hub/models--Qwen--Qwen2.5-0.5B/snapshots/abc",
            "Qwen/Qwen2.5-0.5B",
        ),
    ],
)
def test_hub_model_id(name, hub_id):
    assert hub_model_id(name) == hub_id


def test_local_paths_are_never_hub_ids(tmp_path):
    assert hub_model_id(str(tmp_path)) is None
    assert hub_dataset_id("knoveleng/open-rs") == "knoveleng/open-rs"
    assert hub_dataset_id("open-rs.jsonl") is None
    assert hub_dataset_id(str(tmp_path)) is None


def test_demo_command_writes_the_card_with_its_end_to_end_time(tmp_path, monkeypatch, capsys):
    from frugalrl.demo import run as demo

    monkeypatch.setattr(demo, "SFT", {"steps": 3, "batch_size": 4, "lr": 5e-3})  # toy scale
    overrides = [
        "train.steps=1",
        "train.prompts_per_step=2",
        "eval.num_problems=4",
        "eval.samples_per_problem=2",
        "rollout.max_completion_tokens=24",
        "eval.max_new_tokens=24",
        "logging.progress=false",
        "logging.tensorboard=false",
    ]
    assert main(["demo", "--out", str(tmp_path / "demo"), *cli_args(overrides)]) == 0
    card = tmp_path / "demo" / "run" / "final" / "README.md"
    assert f"model card: {card}" in capsys.readouterr().out
    summary = read_json(tmp_path / "demo" / "run" / "summary.json")
    _, body = read_card(card)
    end_to_end = next(line for line in body.splitlines() if "`frugalrl demo` end to end" in line)
    assert f"{summary['demo_wall_seconds']:.1f} s" in end_to_end
    assert table_row("heldout", "this model", summary["eval"]["final"]) in body
