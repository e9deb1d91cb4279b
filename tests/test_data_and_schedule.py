"""Problem loading (with one-line errors), prompt templates, the sampler, the lr schedule."""

import math

import pytest

from frugalrl.data import build_messages, load_problems
from frugalrl.data.sampler import PromptSampler
from frugalrl.errors import UserError
from frugalrl.train.schedule import lr_multiplier


def test_load_problems_renames_fields_and_keeps_the_rest(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text(
        '{"question": "1+1", "final": 2, "id": "a"}\n\n{"question": "2+2", "final": "4"}\n'
    )
    rows = load_problems(str(path), problem_field="question", answer_field="final")
    assert [(r["problem"], r["answer"]) for r in rows] == [("1+1", "2"), ("2+2", "4")]
    assert rows[0]["id"] == "a"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"problem": "x", "answer": "1"}\n{"problem": "y"\n', r"p.jsonl:2: not valid JSON"),
        ('{"problem": "x", "answer": "1"}\n{"problem": "y"}\n', r"row 2: missing field 'answer'"),
        ('{"problem": "", "answer": "1"}\n', r"row 1: missing field 'problem'"),
        ("[1, 2]\n", r"p.jsonl:1: expected a JSON object, got list"),
        ("\n", r"no problems found"),
    ],
)
def test_malformed_rows_name_file_and_row(tmp_path, content, message):
    path = tmp_path / "p.jsonl"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        load_problems(str(path))


def test_missing_file_and_unsupported_format(tmp_path):
    with pytest.raises(UserError, match="data file not found"):
        load_problems(str(tmp_path / "nope.jsonl"))
    (tmp_path / "p.txt").write_text("hi")
    with pytest.raises(UserError, match="unsupported data format"):
        load_problems(str(tmp_path / "p.txt"))


def test_prompt_templates():
    assert build_messages("2+2", "plain") == [{"role": "user", "content": "2+2"}]
    open_rs = build_messages("2+2", "open-rs")
    assert open_rs[0]["role"] == "system" and "<think>" in open_rs[0]["content"]
    assert build_messages("2+2", "Solve {problem} in \\boxed{}", "be brief") == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "Solve 2+2 in \\boxed{}"},
    ]
    with pytest.raises(UserError, match="unknown prompt template 'nope'"):
        build_messages("2+2", "nope")


def test_sampler_covers_each_epoch_and_resumes_exactly():
    sampler = PromptSampler(5, seed=1)
    first = sampler.next(5)
    assert sorted(first) == [0, 1, 2, 3, 4]
    sampler.next(3)
    state = sampler.state_dict()
    rest = sampler.next(6)
    resumed = PromptSampler(5, seed=1)
    resumed.load_state_dict(state)
    assert resumed.next(6) == rest
    assert state == {"epoch": 1, "cursor": 3}


def test_lr_schedule_warmup_then_cosine_to_min_ratio():
    # 10 steps, 2 warm-up: 1/2, 2/2, then r + (1-r)/2 (1 + cos(pi (s-2)/8)), r = 0.1
    assert lr_multiplier(0, 10, 2) == 0.5
    assert lr_multiplier(1, 10, 2) == 1.0
    assert lr_multiplier(2, 10, 2) == pytest.approx(1.0)
    assert lr_multiplier(6, 10, 2) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 2)))
    assert lr_multiplier(10, 10, 2) == pytest.approx(0.1)
    assert lr_multiplier(5, 10, 0, kind="constant") == 1.0
