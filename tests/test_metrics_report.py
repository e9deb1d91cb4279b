"""MetricsLogger, read_metrics and write_run_report on small synthetic run directories."""

from __future__ import annotations

import json
import sys

import pytest

from frugalrl.errors import UserError
from frugalrl.report import write_run_report
from frugalrl.train.metrics import MetricsLogger, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ("reward.png", "accuracy.png", "completion_length.png")

SUMMARY = {
    "recipe": "demo",
    "model": "tiny-model",
    "run_dir": "runs/demo",
    "steps": 20,
    "wall_seconds": 612.3,
    "train_seconds": 400.1,
    "eval": {
        "base": {
            "accuracy": 0.41,
            "accuracy_ci95": [0.37, 0.45],
            "mean_tokens": 52.3,
            "median_tokens": 50,
            "truncated_fraction": 0.0,
            "num_problems": 200,
            "samples_per_problem": 4,
            "model": "tiny-model",
        },
        "final": {
            "accuracy": 0.712,
            "accuracy_ci95": [0.675, 0.749],
            "mean_tokens": 46.0,
            "median_tokens": 44,
            "truncated_fraction": 0.015,
            "num_problems": 200,
            "samples_per_problem": 4,
            "model": "runs/demo/final",
        },
    },
    "accuracy_gain_points": 30.2,
    "token_change_percent": -12.0,
}


def lines(path):
    return path.read_text().splitlines()


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def full_rows(n=20):
    return [
        {
            "step": s,
            "reward/total/mean": 0.3 + 0.03 * s,
            "reward/accuracy/mean": 0.2 + 0.03 * s,
            "reward/format/mean": 0.9,
            "train/accuracy": 0.2 + 0.03 * s,
            "completion/length_mean": 60.0 - s,
            "completion/length_max": 128,
            "completion/truncated_fraction": 0.1 / (s + 1),
            "loss": 0.01 * s,
            "kl": None,
        }
        for s in range(1, n + 1)
    ]


def assert_png(path):
    assert path.is_file()
    assert path.read_bytes()[:8] == PNG_MAGIC


# --- MetricsLogger -----------------------------------------------------------------------


def test_logger_writes_jsonl_and_tensorboard(tmp_path):
    with MetricsLogger(tmp_path, wandb=False) as logger:
        logger.log(1, {"loss": 0.5, "reward/total/mean": 1})
        # Flushed per row: readable while the logger is still open.
        assert json.loads(lines(tmp_path / "metrics.jsonl")[0]) == {
            "step": 1,
            "loss": 0.5,
            "reward/total/mean": 1,
        }
        logger.log(2, {"loss": 0.25})
    assert [json.loads(x)["step"] for x in lines(tmp_path / "metrics.jsonl")] == [1, 2]
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_logger_writes_nan_and_inf_as_null(tmp_path):
    with MetricsLogger(tmp_path, tensorboard=False, wandb=False) as logger:
        logger.log(3, {"a": float("nan"), "b": float("inf"), "c": None, "d": 2.0})
    text = lines(tmp_path / "metrics.jsonl")[0]
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"step": 3, "a": None, "b": None, "c": None, "d": 2.0}


def test_logger_rejects_step_key_and_log_after_close(tmp_path):
    logger = MetricsLogger(tmp_path, tensorboard=False, wandb=False)
    with pytest.raises(ValueError):
        logger.log(1, {"step": 1})
    logger.close()
    logger.close()  # idempotent
    with pytest.raises(RuntimeError):
        logger.log(1, {"a": 1.0})


def test_logger_wandb_off_without_env(tmp_path, monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT"):
        monkeypatch.delenv(var, raising=False)
    with MetricsLogger(tmp_path, tensorboard=False) as logger:
        assert logger._wandb is None


class FakeWandb:
    """Stands in for the wandb package: records calls, or fails at init."""

    def __init__(self, fail=False):
        self.fail, self.logged, self.init_kwargs, self.finished = fail, [], None, False

    def init(self, **kwargs):
        if self.fail:
            raise RuntimeError("no network")
        self.init_kwargs = kwargs
        return self

    def log(self, metrics, step):
        self.logged.append((step, metrics))

    def finish(self):
        self.finished = True


def test_logger_wandb_logs_offline_without_credentials(tmp_path, monkeypatch):
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    with MetricsLogger(tmp_path, tensorboard=False, wandb=True, config={"lr": 1e-6}) as logger:
        logger.log(1, {"a": 1.0, "b": None})
    assert fake.init_kwargs["mode"] == "offline"  # never an interactive login prompt
    assert fake.init_kwargs["config"] == {"lr": 1e-6}
    assert fake.logged == [(1, {"a": 1.0})] and fake.finished


def test_logger_survives_wandb_failure(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", FakeWandb(fail=True))
    with MetricsLogger(tmp_path, tensorboard=False, wandb=True) as logger:
        logger.log(1, {"a": 1.0})
    assert read_metrics(tmp_path) == [{"step": 1, "a": 1.0}]


def test_logger_appends_after_truncated_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a"')  # crashed mid-write
    with MetricsLogger(tmp_path, tensorboard=False, wandb=False) as logger:
        logger.log(2, {"a": 2.0})
    assert read_metrics(path) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]


# --- read_metrics ------------------------------------------------------------------------


def test_read_metrics_tolerates_truncated_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "a": 1.0}\n{"step": 2, "a": 2.0}\n{"step": 3, "a": 3.')
    assert read_metrics(path) == [{"step": 1, "a": 1.0}, {"step": 2, "a": 2.0}]
    assert read_metrics(tmp_path) == read_metrics(path)  # a run dir works too


def test_read_metrics_keeps_last_row_of_resumed_steps(tmp_path):
    path = tmp_path / "metrics.jsonl"
    first = [{"step": s, "a": float(s), "old": 1} for s in range(1, 6)]
    resumed = [{"step": s, "a": 10.0 * s} for s in range(3, 8)]  # resumed from step 2
    write_jsonl(path, first + resumed)
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == list(range(1, 8))
    assert rows[1] == {"step": 2, "a": 2.0, "old": 1}
    assert rows[2] == {"step": 3, "a": 30.0}  # the re-logged row replaces the old one entirely
    assert rows[-1] == {"step": 7, "a": 70.0}


def test_read_metrics_merges_rows_logged_in_the_same_step(tmp_path):
    path = tmp_path / "metrics.jsonl"
    write_jsonl(path, [{"step": 1, "loss": 0.5}, {"step": 1, "eval/acc": 0.3}, {"step": 2}])
    assert read_metrics(path)[0] == {"step": 1, "loss": 0.5, "eval/acc": 0.3}


def test_read_metrics_missing_file(tmp_path):
    with pytest.raises(UserError):
        read_metrics(tmp_path / "metrics.jsonl")


# --- write_run_report --------------------------------------------------------------------


def test_report_on_full_run(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", full_rows())
    (tmp_path / "summary.json").write_text(json.dumps(SUMMARY))
    report = write_run_report(tmp_path)
    assert report == tmp_path / "report.md"
    for name in PLOTS:
        assert_png(tmp_path / name)
    text = report.read_text()
    assert "demo" in text and "tiny-model" in text
    assert "| base | 41.0% (37.0–45.0) | 52.3 | 0.0% | 200 × 4 |" in text
    assert "| final | 71.2% (67.5–74.9) | 46.0 | 1.5% | 200 × 4 |" in text
    assert "+30.2 points" in text and "-12.0%" in text
    assert "10 min 12 s" in text  # wall time
    for name in PLOTS:
        assert f"]({name})" in text
    assert "| loss | 0.2 | 20 |" in text  # last logged value
    assert "| kl |" not in text  # only ever null


def test_report_with_partial_metrics_and_no_final_eval(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", [{"step": s, "train/accuracy": 0.5} for s in (1, 2)])
    summary = {k: v for k, v in SUMMARY.items() if k not in ("accuracy_gain_points", "eval")}
    summary["eval"] = {"base": SUMMARY["eval"]["base"]}
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = write_run_report(tmp_path).read_text()
    assert_png(tmp_path / "accuracy.png")
    assert not (tmp_path / "reward.png").exists()
    assert not (tmp_path / "completion_length.png").exists()
    assert "reward.png" not in text
    assert "| base |" in text and "| final |" not in text
    assert "points" not in text  # no gain without a final evaluation


def test_report_without_summary_and_recomputed_changes(tmp_path):
    write_jsonl(tmp_path / "metrics.jsonl", [{"step": 1, "completion/truncated_fraction": 0.5}])
    text = write_run_report(tmp_path).read_text()
    assert_png(tmp_path / "completion_length.png")
    assert "Held-out" not in text

    summary = {"eval": SUMMARY["eval"]}  # no precomputed gain: recomputed from the evals
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    text = write_run_report(tmp_path).read_text()
    gain = 100 * (0.712 - 0.41)
    assert f"{gain:+.1f} points" in text
    assert f"{100 * (46.0 / 52.3 - 1):+.1f}%" in text


def test_report_needs_a_run_dir(tmp_path):
    with pytest.raises(UserError):
        write_run_report(tmp_path)
    with pytest.raises(UserError):
        write_run_report(tmp_path / "missing")
