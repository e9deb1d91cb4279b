"""`frugalrl rewards`: score saved completions with a recipe's rewards, no training."""

import json

import pytest

from frugalrl.cli import main


def write_rows(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


ROWS = [
    {
        "group": "p1",
        "completion": "<think>\nok\n</think>\n\\boxed{12}",
        "answer": "12",
        "tokens": 9,
    },
    {"group": "p2", "completion": "\\boxed{3}", "answer": "4", "tokens": 4, "finished": True},
    {
        "group": "p1",
        "completion": "<think>\nhm\n</think>\n\\boxed{11}",
        "answer": "12",
        "tokens": 9,
    },
]


def test_scores_every_row_with_each_reward_and_total(tmp_path, capsys):
    src = write_rows(tmp_path / "in.jsonl", ROWS)
    out = tmp_path / "out.jsonl"
    code = main(
        ["rewards", "--recipe", "recipes/demo.yaml", "--input", str(src), "--out", str(out)]
    )
    assert code == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["accuracy"] for r in scored] == [1.0, 0.0, 0.0]
    assert [r["format"] for r in scored] == [1.0, 0.0, 1.0]
    assert [r["reward"] for r in scored] == [2.0, 0.0, 1.0]
    assert [r["group"] for r in scored] == ["p1", "p2", "p1"]  # input order kept
    table = capsys.readouterr().err
    assert "accuracy" in table and "0.3333" in table  # mean accuracy over the 3 rows


def test_counts_tokens_with_the_recipe_tokenizer(tmp_path, tiny_model_dir):
    rows = [{k: v for k, v in r.items() if k != "tokens"} for r in ROWS]
    src = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    args = ["rewards", "--recipe", "recipes/demo.yaml", "--input", str(src), "--out", str(out)]
    assert main([*args, "--set", f"model.name_or_path={tiny_model_dir}"]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert all(isinstance(r["tokens"], int) and r["tokens"] > 0 for r in scored)


def test_bad_rows_are_one_line_errors(tmp_path, capsys):
    src = write_rows(tmp_path / "in.jsonl", [{"group": "a", "completion": "x", "tokens": 1}])
    assert main(["rewards", "--recipe", "recipes/demo.yaml", "--input", str(src)]) == 2
    assert "in.jsonl: row 1: missing field 'answer'" in capsys.readouterr().err
    assert main(["rewards", "--recipe", "recipes/demo.yaml", "--input", "nope.jsonl"]) == 2
    assert "file not found: nope.jsonl" in capsys.readouterr().err


def test_the_group_length_rewards_score_from_the_command_line(tmp_path):
    # p1: 9-token right and 9-token wrong (equal lengths: kimi 0); p2 alone (kimi 0); p3 below.
    rows = [
        *ROWS,
        {"group": "p3", "completion": "\\boxed{12}", "answer": "12", "tokens": 10},
        {"group": "p3", "completion": "\\boxed{12}", "answer": "12", "tokens": 30},
        {"group": "p3", "completion": "\\boxed{13}", "answer": "12", "tokens": 50},
    ]
    src = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    rewards = "rewards=[{name: kimi_length}, {name: shorterbetter}]"
    recipe = ["--recipe", "recipes/demo.yaml", "--set", rewards]
    assert main(["rewards", *recipe, "--input", str(src), "--out", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kimi_length"] for r in scored] == [0.0, 0.0, 0.0, 0.5, 0.0, -0.5]
    # ℓ*: 9 in p1, the mean 4 in p2 (none correct), 10 in p3
    sb = [r["shorterbetter"] for r in scored]
    assert sb == pytest.approx([2.0, 0.0, 0.0, 2.0, 1.98, -0.04])


def test_the_l1_rewards_read_each_rows_target_from_the_command_line(tmp_path):
    rows = [
        {
            "group": "p",
            "completion": "\\boxed{12}",
            "answer": "12",
            "tokens": 700,
            "target_tokens": 1000,
        },
        {
            "group": "p",
            "completion": "\\boxed{12}",
            "answer": "12",
            "tokens": 1200,
            "target_tokens": 1000,
        },
        {
            "group": "p",
            "completion": "\\boxed{13}",
            "answer": "12",
            "tokens": 1000,
            "target_tokens": 1000,
        },
        {
            "group": "p",
            "completion": "\\boxed{12}",
            "answer": "12",
            "tokens": 9000,
        },  # no target: correctness
    ]
    src = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    recipe = [
        "--recipe",
        "recipes/demo.yaml",
        "--set",
        "rewards=[{name: l1_exact}, {name: l1_max}]",
    ]
    assert main(["rewards", *recipe, "--input", str(src), "--out", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["l1_exact"] for r in scored] == pytest.approx([0.9, 1 - 200 / 3000, 0.0, 1.0])
    assert [r["l1_max"] for r in scored] == pytest.approx([0.8, 0.3, 0.0, 1.0])


def test_the_target_length_rewards_score_from_the_command_line(tmp_path):
    # p3: right at 10 and 30 tokens, wrong at 50; accuracy 2/3 → Laser-D's high band
    rows = [
        {"group": "p3", "completion": "\\boxed{12}", "answer": "12", "tokens": 10},
        {"group": "p3", "completion": "\\boxed{12}", "answer": "12", "tokens": 30},
        {"group": "p3", "completion": "\\boxed{13}", "answer": "12", "tokens": 50},
    ]
    src = write_rows(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    rewards = (
        "rewards=[{name: thinkprune, max_tokens: 20}, {name: laser, target_tokens: 30},"
        " {name: laser_d, targets: {low: null, medium: null, high: 10}},"
        " {name: alp, beta: 1.0, max_tokens: 100}]"
    )
    recipe = ["--recipe", "recipes/demo.yaml", "--set", rewards]
    assert main(["rewards", *recipe, "--input", str(src), "--out", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["thinkprune"] for r in scored] == [1.0, 0.0, 0.0]
    assert [r["laser"] for r in scored] == [1.5, 1.5, 0.0]
    assert [r["laser_d"] for r in scored] == [1.5, 1.0, 0.0]
    # p = 2/3: each token costs (2/3)/100
    assert [r["alp"] for r in scored] == pytest.approx([1 - 0.2 / 3, 0.8, -1 / 3])
