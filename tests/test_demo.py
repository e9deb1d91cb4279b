"""`frugalrl demo`: the plumbing at toy scale by default; the full claim as a slow test."""

import json

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from frugalrl.demo.run import run_demo
from frugalrl.demo.task import TaskSpec, make_split, solution_trace


def test_splits_are_disjoint_and_answers_are_right():
    train = make_split("train", 2000, 0)
    heldout = make_split("heldout", 200, 0)
    assert not {r["problem"] for r in train} & {r["problem"] for r in heldout}
    for row in heldout[:50]:
        assert int(row["answer"]) == eval(row["problem"])  # noqa: S307 - digits and +/- only


def test_traces_slip_recheck_and_overthink_at_the_configured_rates():
    import random

    rng = random.Random(0)
    spec = TaskSpec(slip_rate=0.25, verbose_rate=0.5)
    wrong = verbose = overthought = 0
    for _ in range(2000):
        start, steps = (5, [("+", 3), ("-", 2), ("+", 1)])
        trace, value = solution_trace(start, steps, rng, spec)
        wrong += value != 7
        verbose += "\ncheck " in trace
        overthought += "wait, let me double check. the answer is" in trace
        assert trace.startswith("<think>\n5+3-2+1\n") and trace.endswith(f"\\boxed{{{value}}}")
    # Slips are ±1 and carried, so two opposite slips cancel: P(right) = 0.75^3 (none)
    # + 3 * 0.25^2 * 0.75 * 1/2 (an opposite pair) = 0.4219 + 0.0703; P(wrong) = 0.508.
    assert 0.47 < wrong / 2000 < 0.55
    assert 0.45 < verbose / 2000 < 0.55
    assert 0.65 < overthought / 2000 < 0.75  # overthink_rate 0.7


def test_demo_pipeline_at_toy_scale(tmp_path):
    out = tmp_path / "demo"
    overrides = [
        "train.steps=2",
        "train.prompts_per_step=2",
        "eval.num_problems=4",
        "eval.samples_per_problem=2",
        "rollout.max_completion_tokens=24",
        "eval.max_new_tokens=24",
        "logging.progress=false",
    ]
    summary = run_demo(out, overrides, sft={"steps": 3, "batch_size": 4})
    assert not summary["sft_cached"]
    base = out / "sft-base"
    AutoModelForCausalLM.from_pretrained(base)
    assert AutoTokenizer.from_pretrained(base).decode([0]) == "<|endoftext|>"
    assert summary["eval"]["base"]["num_problems"] == 4
    assert (out / "run" / "report.md").is_file()
    again = run_demo(out, overrides, sft={"steps": 3, "batch_size": 4})
    assert again["sft_cached"]  # same settings: the base is reused, not retrained


@pytest.mark.slow
def test_full_demo_improves_heldout_accuracy_by_15_points(tmp_path):
    summary = run_demo(tmp_path / "demo", ["logging.progress=false"])
    base, final = summary["eval"]["base"], summary["eval"]["final"]
    assert base["num_problems"] >= 200 and base["samples_per_problem"] >= 4
    assert 0.2 <= base["accuracy"] <= 0.7
    assert final["accuracy"] - base["accuracy"] >= 0.15, json.dumps(summary["eval"])


def test_bad_override_fails_before_any_training(tmp_path):
    from frugalrl.errors import UserError

    with pytest.raises(UserError, match="unknown key 'train.stepz'"):
        run_demo(tmp_path / "demo", ["train.stepz=3"])
    assert not (tmp_path / "demo" / "sft-base").exists()
