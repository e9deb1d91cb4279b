"""Never lose work: SIGTERM saves and exits 0; SIGKILL at random points, resumed each time,
ends with the parameters of an uninterrupted run."""

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from frugalrl.config import load_config
from frugalrl.train import loop
from frugalrl.train.checkpoint import list_checkpoints
from frugalrl.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]
# One thread everywhere: the launched runs and the in-process reference compute alike.
COMMON = ["eval.before=false", "eval.after=false", "train.threads=1", "train.steps=10"]


def overrides(tiny_overrides, out: Path, *extra: str) -> list[str]:
    return [*tiny_overrides, *COMMON, *extra, f"train.output_dir={out}"]


def launch(sets: list[str], resume: Path | None = None) -> subprocess.Popen:
    args = ["--resume", str(resume)] if resume else ["recipes/demo.yaml"]
    command = [sys.executable, "-m", "frugalrl", "train", *args, *(f"--set={s}" for s in sets)]
    return subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def last_step(run: Path) -> int:
    try:
        rows = read_metrics(run / "metrics.jsonl")
    except Exception:  # not there yet, or being written
        return 0
    return rows[-1]["step"] if rows else 0


def wait_for_step(process: subprocess.Popen, run: Path, step: int, timeout: float = 300) -> bool:
    """True once ``run`` has logged ``step``; False if the process ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if last_step(run) >= step:
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.01)
    raise TimeoutError(f"step {step} not reached")


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(run / "final" / "model.safetensors")


def assert_same_weights(a: dict, b: dict, atol: float) -> None:
    assert a.keys() == b.keys()
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= atol


def reference(tiny_overrides, tmp_path, *extra: str) -> dict[str, torch.Tensor]:
    config = load_config("recipes/demo.yaml", overrides(tiny_overrides, tmp_path / "ref", *extra))
    loop.train(config)
    return final_weights(tmp_path / "ref")


SAMPLING_AHEAD = (
    "rollout.max_staleness=1",
    "rollout.engine=hf-process",
    "rollout.importance_sampling=token_truncate",
)


@pytest.mark.parametrize("extra", [(), SAMPLING_AHEAD], ids=["sync", "sampling-ahead"])
def test_sigterm_saves_exits_0_and_resumes_exactly(tiny_overrides, tmp_path, extra):
    # sampling ahead, the checkpoint holds the round queued for the next step: the resumed run
    # trains it, as the uninterrupted run does
    run = tmp_path / "run"
    sets = overrides(tiny_overrides, run, "train.save_every=0", *extra)  # no scheduled save
    process = launch(sets)
    assert wait_for_step(process, run, 3)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    summary = json.loads((run / "summary.json").read_text())
    step = summary["interrupted"]["step"]
    assert 3 <= step < 10 and summary["interrupted"]["signal"] == "SIGTERM"
    assert f"interrupted by SIGTERM after step {step}; checkpoint saved" in out
    assert "Traceback" not in err
    assert [c.name for c in list_checkpoints(run)] == [f"step-{step:06d}"]
    assert not (run / "final").exists()

    resumed = launch([], resume=run)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    expected = reference(tiny_overrides, tmp_path, *extra)
    assert_same_weights(final_weights(run), expected, atol=1e-6)
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == list(range(1, 11))


def test_sigkill_at_random_points_then_resume_ends_like_an_uninterrupted_run(
    tiny_overrides, tmp_path
):
    """SIGKILL three times, each at a random moment of a random step (sampling, the update,
    writing a checkpoint...), resuming after each; the last run goes to the end."""
    run = tmp_path / "run"
    sets = overrides(tiny_overrides, run, "train.save_every=1", "train.save_total_limit=2")
    rng = random.Random(0)
    kills = []
    for target in sorted(rng.sample(range(1, 10), 3)):
        process = launch(sets, resume=run if list_checkpoints(run) else None)
        if wait_for_step(process, run, target):
            time.sleep(rng.uniform(0.0, 0.4))  # somewhere inside the next step (or after)
        process.send_signal(signal.SIGKILL)
        process.communicate(timeout=60)
        kills.append((target, process.returncode))
    assert [code for _, code in kills] == [-signal.SIGKILL] * 3
    final = launch(sets, resume=run if list_checkpoints(run) else None)
    _, err = final.communicate(timeout=300)
    assert final.returncode == 0, err[-2000:]
    assert not list((run / "checkpoints").glob(".*"))  # no half-written checkpoint left
    assert_same_weights(final_weights(run), reference(tiny_overrides, tmp_path), atol=1e-6)
    rows = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 11))
