"""`frugalrl report DIR ...`: side-by-side tables, the accuracy-vs-tokens plot, the frontier."""

import json

import pytest

from frugalrl.errors import UserError
from frugalrl.report.compare import compare_report, load_entries, pareto_frontier

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stats(accuracy, ci, tokens, k=4, problems=10):
    return {
        "num_problems": problems,
        "samples_per_problem": k,
        "num_samples": problems * k,
        "accuracy": accuracy,
        "accuracy_ci95": list(ci),
        "pass_at_k": {"1": accuracy, "2": accuracy + 0.1, "4": accuracy + 0.2},
        "maj_at_k": accuracy + 0.05,
        "mean_tokens": tokens,
        "median_tokens": tokens,
        "tokens_per_correct": None if tokens is None else tokens / accuracy,
        "truncated_fraction": None if tokens is None else 0.1,
        "ungraded": 0,
    }


def _summary(aime, math500):
    """Two benchmarks; overall is their macro average (CI just widened by hand)."""
    acc = (aime[0] + math500[0]) / 2
    tokens = (aime[1] + math500[1]) / 2
    return {
        "benchmarks": {
            "aime24": _stats(aime[0], (aime[0] - 0.1, aime[0] + 0.1), aime[1]),
            "math500": _stats(math500[0], (math500[0] - 0.05, math500[0] + 0.05), math500[1]),
        },
        "overall": _stats(acc, (acc - 0.05, acc + 0.05), tokens, problems=20),
    }


def _write(path, summary):
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps(summary))
    return path


@pytest.fixture
def dirs(tmp_path):
    base = _write(tmp_path / "base-model", _summary((0.2, 1000), (0.4, 800)))  # 30%, 900 tok
    alpha = _write(tmp_path / "alpha-0.1", _summary((0.3, 700), (0.5, 500)))  # 40%, 600 tok
    run = tmp_path / "run1"
    _write(run, {"recipe": "grpo", "steps": 100})  # the training summary: no "benchmarks"
    _write(run / "eval" / "final", _summary((0.35, 1300), (0.55, 1100)))  # 45%, 1200 tok
    _write(run / "eval" / "base", _summary((0.1, 2000), (0.3, 1800)))  # 20%, 1900 tok
    return tmp_path, base, alpha, run


def _table_rows(markdown, header_start):
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(line.strip("| ").split(" | "))
    return rows


def test_pareto_frontier_by_hand():
    points = [
        (100, 40),  # 0: on the frontier
        (200, 50),  # 1: on the frontier
        (150, 30),  # 2: 0 has more accuracy for fewer tokens
        (300, 50),  # 3: 1 has equal accuracy for fewer tokens
        (100, 40),  # 4: identical to 0: neither dominates the other
        (50, 10),  # 5: the cheapest
        (200, 45),  # 6: 1 has equal tokens and more accuracy
    ]
    assert pareto_frontier(points) == [5, 0, 4, 1]
    assert pareto_frontier([(1.0, 1.0)]) == [0]
    assert pareto_frontier([]) == []


def test_compare_eval_dirs_and_run_dir(dirs):
    tmp_path, base, alpha, run = dirs
    out = tmp_path / "cmp"
    markdown, png = compare_report([base, alpha, run], out)

    rows = _table_rows(markdown, "| entry | problems")
    assert [r[0] for r in rows] == ["base-model", "alpha-0.1", "run1/base", "run1/final"]
    # overall of alpha-0.1: 40% (35–45), pass@4 60%, maj@4 45%, 600 tokens, 600/0.4 = 1500
    assert rows[1] == ["alpha-0.1", "20", "4", "40.0 (35.0–45.0)", "60.0", "45.0", "600", "1500", "10.0"]  # fmt: skip
    assert rows[3][3] == "45.0 (40.0–50.0)"

    per_benchmark = _table_rows(markdown, "| entry | aime24")
    assert per_benchmark[0] == ["base-model", "20.0", "40.0", "30.0"]
    assert per_benchmark[3] == ["run1/final", "35.0", "55.0", "45.0"]

    # base-model (900, 30%) loses to alpha-0.1 (600, 40%); run1/base (1900, 20%) to all.
    assert "Pareto frontier: alpha-0.1, run1/final." in markdown

    assert png == out / "frontier.png"
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert (out / "report.md").read_text(encoding="utf-8") == markdown


def test_compare_one_benchmark_skips_entries_without_it(dirs):
    tmp_path, base, alpha, _ = dirs
    only_math = _summary((0.1, 100), (0.9, 100))
    del only_math["benchmarks"]["aime24"]
    other = _write(tmp_path / "math-only", only_math)
    markdown, png = compare_report([base, alpha, other], tmp_path / "cmp", benchmark="aime24")

    rows = _table_rows(markdown, "| entry | problems")
    assert [r[0] for r in rows] == ["base-model", "alpha-0.1"]
    assert rows[0][3] == "20.0 (10.0–30.0)"
    assert "no `aime24` results): math-only." in markdown
    assert "Pareto frontier: alpha-0.1." in markdown  # 700 tokens, 30% beats 1000, 20%
    assert png.read_bytes()[:8] == PNG_MAGIC


def test_compare_entries_without_tokens_stay_out_of_the_plot(tmp_path):
    summary = _summary((0.2, 10), (0.4, 10))
    summary["overall"] = _stats(0.3, (0.2, 0.4), None)
    no_tokens = _write(tmp_path / "regraded", summary)
    markdown, png = compare_report([no_tokens], tmp_path / "cmp")
    assert png is None
    assert not (tmp_path / "cmp" / "frontier.png").exists()
    assert "Not in the plot (no mean token count): regraded." in markdown
    assert _table_rows(markdown, "| entry | problems")[0][6:] == ["n/a", "n/a", "n/a"]


def test_compare_default_out_is_next_to_first_input(dirs):
    _, base, alpha, _ = dirs
    _, png = compare_report([base, alpha], None)
    assert png == base / "compare" / "frontier.png"
    assert (base / "compare" / "report.md").is_file()


def test_summary_json_path_and_repeated_labels(dirs):
    _, _, _, run = dirs
    entries = load_entries(run / "eval" / "final" / "summary.json")
    assert [e.label for e in entries] == ["run1/final"]
    markdown, _ = compare_report([run / "eval" / "final" / "summary.json", run], run / "cmp")
    rows = _table_rows(markdown, "| entry | problems")
    assert [r[0] for r in rows] == ["run1/final", "run1/base", "run1/final #2"]


def test_single_benchmark_has_no_per_benchmark_table(tmp_path):
    summary = _summary((0.2, 10), (0.4, 10))
    del summary["benchmarks"]["aime24"]
    markdown, _ = compare_report([_write(tmp_path / "m", summary)], tmp_path / "cmp")
    assert "Accuracy per benchmark" not in markdown


@pytest.mark.parametrize("make", ["empty", "missing", "run-without-evals", "not-eval-json"])
def test_bad_paths_raise_user_error(tmp_path, make):
    path = tmp_path / make
    if make == "empty":
        path.mkdir()
    elif make == "run-without-evals":
        _write(path, {"recipe": "grpo"})
        (path / "eval" / "final").mkdir(parents=True)  # an eval that never finished
    elif make == "not-eval-json":
        path = _write(path, {"recipe": "grpo"}) / "summary.json"
    with pytest.raises(UserError) as err:
        compare_report([path], tmp_path / "cmp")
    message = str(err.value)
    assert "\n" not in message
    assert str(path) in message
    if make in ("empty", "run-without-evals"):
        assert "eval/<label>/summary.json" in message
