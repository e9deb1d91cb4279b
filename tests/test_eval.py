"""`frugalrl eval`: grading with answer groups, re-grading other tools' files, end to end."""

import json

import pytest

from frugalrl.cli import main
from frugalrl.errors import UserError
from frugalrl.eval.grading import grade_problem, grade_rows
from frugalrl.eval.regrade import read_generations
from frugalrl.eval.runner import resolve_model_dir


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROW_FIELDS = {
    "benchmark",
    "id",
    "sample",
    "completion",
    "answer",
    "extracted",
    "correct",
    "ungraded",
    "tokens",
    "finished",
    "answer_group",
}


def test_grade_problem_groups_equivalent_answers():
    completions = [
        r"so \boxed{\frac{1}{2}}",
        r"\boxed{0.5}",
        r"\boxed{3}",
        "no answer here",
        r"\boxed{1/2}",
        r"\boxed{3}",
    ]
    grades = grade_problem([(c, "1/2") for c in completions])
    assert [g.correct for g in grades] == [True, True, False, False, True, False]
    assert [g.answer_group for g in grades] == [0, 0, 1, None, 0, 1]
    assert [g.extracted for g in grades][2:4] == ["3", None]
    assert not any(g.ungraded for g in grades)


def test_unparseable_gold_is_ungraded_and_wrong():
    (g,) = grade_problem([(r"\boxed{12}", "{")])
    assert (g.correct, g.ungraded, g.extracted) == (False, True, "12")


def _rows():
    answers = {"p1": "12", "p2": "1/2", "p3": "7"}
    completions = {
        "p1": [r"\boxed{12}", r"\boxed{11}", r"\boxed{12}"],
        "p2": [r"\boxed{0.5}", r"\boxed{2}", r"\boxed{2}"],
        "p3": ["I give up", r"\boxed{7}", r"\boxed{7.0}"],
    }
    return [
        {"benchmark": "toy", "id": p, "completion": c, "answer": answers[p]}
        for p in answers
        for c in completions[p]
    ]


def test_grade_rows_in_workers_equals_in_process():
    local = grade_rows(_rows(), workers=0)
    pooled = grade_rows(_rows(), workers=2)
    assert local == pooled
    assert [r["correct"] for r in local] == [True, False, True, True, False, False] + [
        False,
        True,
        True,
    ]
    assert [r["answer_group"] for r in local][3:] == [0, 1, 1, None, 0, 0]


def test_read_generations_accepts_other_tools_rows(tmp_path):
    path = write_jsonl(
        tmp_path / "theirs.jsonl",
        [
            {"problem": "1+1?", "answer": 2, "response": r"\boxed{2}"},
            {"problem": "1+1?", "answer": 2, "response": r"\boxed{3}"},
            {"problem": "2+2?", "answer": "4", "completion": "answer: 4", "tokens": 3},
        ],
    )
    rows = read_generations(path)
    assert [(r["benchmark"], r["id"], r["sample"]) for r in rows] == [
        ("theirs", "1+1?", 0),
        ("theirs", "1+1?", 1),
        ("theirs", "2+2?", 0),
    ]
    assert rows[0]["answer"] == "2" and rows[2]["tokens"] == 3 and rows[0]["tokens"] is None


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "completion": "x"}, "row 2: missing field 'answer'"),
        ({"id": "a", "answer": "1"}, "row 2: missing field 'completion' (or 'response')"),
        ({"answer": "1", "completion": "x"}, "row 2: missing field 'id' (or 'problem')"),
    ],
)
def test_read_generations_names_the_bad_row(tmp_path, row, message):
    path = write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "answer": "1", "completion": "1"}, row])
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_generations(path)


def test_regrade_command_writes_and_prints_the_table(tmp_path, capsys):
    src = write_jsonl(tmp_path / "gen.jsonl", _rows())
    out = tmp_path / "regraded"
    assert main(["eval", "--regrade", str(src), "--out", str(out), "--workers", "0"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    toy = summary["benchmarks"]["toy"]
    # per-problem fractions correct: 2/3, 1/3, 2/3 -> avg@3 = 5/9
    assert toy["accuracy"] == pytest.approx(5 / 9)
    # majority: p1 "12" (2 of 3, right), p2 "2" (2 of 3, wrong), p3 "7" (2 of 3, right)
    assert toy["maj_at_k"] == pytest.approx(2 / 3)
    assert toy["pass_at_k"]["3"] == pytest.approx(1.0)
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and set(rows[0]) >= ROW_FIELDS
    printed = capsys.readouterr().out
    assert "toy" in printed and "55.6" in printed


def test_eval_bad_input_is_one_line(tmp_path, capsys):
    assert main(["eval", "--model", str(tmp_path / "nope"), "--benchmarks", "aime24"]) == 2
    assert main(["eval", "--regrade", str(tmp_path / "missing.jsonl")]) == 2
    assert main(["eval", "--regrade", "x.jsonl", "--extraction", "last_number"]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 3 and all(e.startswith("frugalrl: error:") for e in errors)
    assert "boxed_or_anchored" in errors[2]


def test_resolve_model_dir(tmp_path, tiny_model_dir):
    assert resolve_model_dir(tiny_model_dir) == str(tiny_model_dir)
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "config.json").write_text("{}")
    assert resolve_model_dir(run) == str(run / "final")
    assert resolve_model_dir("Qwen/Qwen2.5-0.5B") == "Qwen/Qwen2.5-0.5B"  # hub names pass


def test_eval_end_to_end_on_every_shipped_benchmark(tmp_path, tiny_model_dir):
    out = tmp_path / "eval"
    code = main(
        [
            "eval",
            "--model",
            str(tiny_model_dir),
            "--benchmarks",
            "all",
            "--limit",
            "2",
            "--samples",
            "2",
            "--max-new-tokens",
            "6",
            "--out",
            str(out),
            "--workers",
            "0",
            "--no-progress",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in (out / "generations.jsonl").read_text().splitlines()]
    names = [
        "aime24",
        "amc23",
        "math500",
        "minerva",
        "olympiadbench",
        "gsm8k",
        "aime25",
        "hmmt_feb25",
    ]
    assert len(rows) == len(names) * 2 * 2
    assert {r["benchmark"] for r in rows} == set(names)
    for r in rows:
        assert set(r) >= ROW_FIELDS
        assert 1 <= r["tokens"] <= 6 and isinstance(r["finished"], bool)
        assert r["finished"] or r["tokens"] == 6
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["benchmarks"]) == set(names)
    for name in names:
        stats = summary["benchmarks"][name]
        assert stats["num_problems"] == 2 and stats["samples_per_problem"] == 2
        assert 0.0 <= stats["accuracy"] <= 1.0 and set(stats["pass_at_k"]) == {"1", "2"}
    assert summary["model"] == str(tiny_model_dir)
    assert summary["settings"]["prompt_template"] == "open-rs-eval"
    assert "overall" in (out / "summary.md").read_text()
