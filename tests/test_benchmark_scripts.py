"""The scripts in `benchmarks/` at toy size: they still run against the current training loop
(mfu.py wraps the loop's functions and once broke silently when their signatures grew), and
the figures they print are consistent with what they measured."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(script: str, out: Path, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, f"benchmarks/{script}", "--json", str(out), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(out.read_text())


def test_mfu_counts_the_tokens_it_generated_and_trained(tmp_path):
    prompts, generations, max_tokens = 2, 2, 8
    report = run_benchmark(
        "mfu.py",
        tmp_path / "mfu.json",
        *("--steps", "2", "--prompts", str(prompts), "--generations", str(generations)),
        *("--max-tokens", str(max_tokens), "--hidden", "32", "--intermediate", "64"),
        *("--layers", "1", "--heads", "2", "--kv-heads", "1", "--matmul-sizes", "64"),
        *("--threads", "1", "--vocab", "2000", "--dtype", "bfloat16"),
    )
    assert report["dtype"] == "bfloat16" and report["model"]["vocab"] == 2000
    assert report["peak_memory_mib"] > 0
    assert len(report["per_step"]) == 2
    rows = prompts * generations
    for step in report["per_step"]:
        assert step["generated_tokens"] == pytest.approx(rows * step["completion_length_mean"])
        # β > 0 (the demo recipe's 0.04): every completion is trained, with its prompt
        assert step["trained_fraction"] == 1.0
        assert (
            step["trained_tokens"] == generations * step["prompt_tokens"] + step["generated_tokens"]
        )
    phases = {p["phase"].split(" ")[0]: p for p in report["phases"]}
    whole = phases["whole"]
    assert whole["gflop_per_step"] == pytest.approx(
        phases["generation"]["gflop_per_step"] + phases["training"]["gflop_per_step"]
    )
    assert 0 < whole["mfu"] < 1


def test_step_vs_trl_replays_trls_first_batch_to_the_same_loss(tmp_path):
    # The small config with 2 steps at both precisions: both frameworks run, and frugalrl's
    # update on TRL's first batch gives TRL's loss and gradient norm (to bf16 rounding in bf16,
    # where the two compute the output layer differently).
    results = run_benchmark(
        "step_vs_trl.py", tmp_path / "step.json", "--configs", "small", "--steps", "2"
    )
    assert [(r["config"], r["precision"]) for r in results] == [
        ("small", "fp32"),
        ("small", "bf16"),
    ]
    for result, tolerance in zip(results, (1e-5, 1e-2), strict=True):
        assert result["trained_fraction"] > 0  # a real, non-zero loss is compared
        loss = result["first_loss"]
        assert loss["frugalrl"] == pytest.approx(loss["TRL"], abs=tolerance)
        assert loss["TRL"] != 0
        norms = result["first_grad_norm"]
        assert norms["frugalrl"] == pytest.approx(
            norms["TRL"], rel=1e-4 if tolerance < 1e-3 else 5e-2
        )
        for run in result["rows"].values():
            assert run["tokens_per_second"] > 0 and run["step_seconds"] > 0
    fp32, bf16 = results
    assert fp32["first_loss"]["TRL"] != bf16["first_loss"]["TRL"]  # TRL really ran in bf16


def test_logprob_memory_chunked_values_match_the_plain_ones(tmp_path):
    report = run_benchmark(
        "logprob_memory.py",
        tmp_path / "memory.json",
        *("--vocab", "500", "--hidden", "32", "--tokens", "64", "--chunk-tokens", "16"),
    )
    chunked = [v for v in report["variants"] if v["chunk_tokens"]]
    assert len(chunked) == 1 and chunked[0]["pass_values"]
    assert max(chunked[0]["max_abs_diff"].values()) <= 1e-5


def test_mfu_qwen2_shape_has_qwen2_0_5b_parameter_count():
    # The GPU measurement of issue 7 runs `mfu.py --shape qwen2-0.5b`: its model must be
    # Qwen2-0.5B's size (494,032,768 parameters, embedding tied), built here without memory.
    spec = importlib.util.spec_from_file_location("mfu", ROOT / "benchmarks" / "mfu.py")
    mfu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mfu)
    shape = mfu.SHAPES["qwen2-0.5b"]
    with torch.device("meta"):
        model = mfu.build_shaped_model(shape)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768


def load_benchmark(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))  # the script imports its neighbour
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_efficiency_frontier_runs_every_recipe_once_and_tabulates_against_the_base(tmp_path):
    frontier = load_benchmark("efficiency_frontier")
    recipes = {p.stem for p in (ROOT / "src" / "frugalrl" / "recipes").glob("demo-*.yaml")}
    assert {recipe for recipe, _ in frontier.METHODS.values()} - {"demo"} <= recipes
    cmd = frontier.command(tmp_path, "laser-d", 7)
    assert cmd[1:6] == ["demo", "--out", str(tmp_path), "--recipe", "demo-laser-d"]
    assert "eval.before=false" in cmd and "train.steps=7" in cmd  # the base once, in accuracy
    assert "eval.before=false" not in frontier.command(tmp_path, "accuracy", None)

    def summary(name, **evals):
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"eval": evals}))

    result = {"accuracy": 0.5, "accuracy_ci95": [0.4, 0.6], "mean_tokens": 100.0}
    summary("accuracy", base=result, final={**result, "accuracy": 0.6, "mean_tokens": 50.0})
    summary("alp", final={**result, "accuracy": 0.45, "mean_tokens": 25.0})
    summary("laser")  # not finished: no final evaluation
    table = frontier.frontier_table(tmp_path, ["accuracy", "alp", "laser"]).splitlines()
    assert table[2] == "| base (SFT) | – | 50.0 [40.0, 60.0] | 100.0 | – | 1.00 |"
    assert table[3] == "| accuracy | demo | 60.0 [40.0, 60.0] | 50.0 | +10.0 | 0.50 |"
    assert table[4] == "| alp | demo-alp | 45.0 [40.0, 60.0] | 25.0 | -5.0 | 0.25 |"
    assert table[5] == "| laser | demo-laser | not run | | | |"


def test_packing_benchmark_pads_less_for_the_same_gradient(tmp_path):
    rows = run_benchmark(
        "packing.py",
        tmp_path / "packing.json",
        *("--hidden", "32", "--intermediate", "64", "--layers", "1", "--heads", "1"),
        *("--kv-heads", "1", "--completions", "12", "--max-tokens", "24", "--repeats", "1"),
        *("--micro-batch-tokens", "256", "--precisions", "fp32"),
    )
    padded, packed = (next(r for r in rows if r["layout"] == k) for k in ("padded", "packed"))
    assert packed["padding_fraction"] < padded["padding_fraction"]
    assert packed["micro_batches"] <= padded["micro_batches"]
    assert packed["grad_norm"] > 0 and packed["grad_norm_relative_gap"] <= 1e-5
    assert padded["speedup"] == 1.0


def test_async_step_estimate_and_figures(tmp_path):
    bench = load_benchmark("async_step")
    table = bench.open_rs_estimate({"x": (3.0, 6.0)}).splitlines()
    # training split over 3 GPUs: 2 s; synchronous 3 + 2 + sync; ahead max(3, 2) + sync
    assert bench.TRAINING_GPUS == 3
    w = bench.WEIGHT_SYNC_SECONDS
    speedup = (5 + w) / (3 + w)
    assert table[2] == f"| x | 3.00 | 2.00 | {5 + w:.2f} | {3 + w:.2f} | {speedup:.2f}× |"
    run = tmp_path / "async"
    run.mkdir()
    rows = [
        {"step": s, "time/step_seconds": 2.0, "time/generation_seconds": 1.5,
         "time/rollout_wait_seconds": 0.5, "time/sampler_idle_seconds": 0.25,
         "rollout/staleness": float(s > 1)}
        for s in (1, 2)
    ]  # fmt: skip
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    final = {"accuracy": 0.7, "accuracy_ci95": [0.6, 0.8]}
    summary = {"eval": {"base": {"accuracy": 0.4}, "final": final}}
    (run / "summary.json").write_text(json.dumps(summary))
    got = bench.figures(tmp_path, "async")
    assert got["steps_per_second"] == 0.5 and got["staleness"] == 0.5
    assert got["trainer_idle"] == 0.25 and got["sampler_idle"] == 0.125


def test_demo_seeds_table_gives_mean_and_spread():
    bench = load_benchmark("demo_seeds")

    def summary(base, final):
        result = {"accuracy_ci95": [0.0, 1.0], "mean_tokens": 80.0}
        return {
            "eval": {"base": {**result, "accuracy": base}, "final": {**result, "accuracy": final}}
        }

    table = bench.seeds_table({1: summary(0.4, 0.7), 2: summary(0.4, 0.8)}).splitlines()
    assert table[2] == "| 1 | 40.0 [0.0, 100.0] | 70.0 [0.0, 100.0] | +30.0 | 80.0 |"
    # mean 75, sample standard deviation sqrt(((70-75)^2 + (80-75)^2) / 1) = 7.07
    assert table[4] == "| mean ± sd (2 seeds) | | 75.0 ± 7.1 | +35.0 ± 7.1 | |"
