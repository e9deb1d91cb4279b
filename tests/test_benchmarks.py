"""Shipped benchmarks: the loader, and the grader on their gold answers and reference solutions."""

import importlib.resources
import json
import math
import re

import pytest

from frugalrl.curate.config import DecontaminateConfig
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import BENCHMARKS, Benchmark, load_benchmark, parse_benchmark_list
from frugalrl.rewards.answer import grade

COUNTS = {
    "aime24": 30,
    "amc23": 40,
    "math500": 500,
    "minerva": 272,
    "olympiadbench": 675,
    "gsm8k": 1319,
    "aime25": 30,
    "hmmt_feb25": 30,
}


@pytest.fixture(scope="module")
def shipped():
    return {name: load_benchmark(name) for name in BENCHMARKS}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def row(shipped, problem_id):
    return next(p for b in shipped.values() for p in b.problems if p["id"] == problem_id)


# --- loading ---------------------------------------------------------------------------------


def test_shipped_files_are_package_data():
    data = importlib.resources.files("frugalrl") / "eval" / "data"
    assert (data / "SOURCES.md").is_file()
    for file_name, description in BENCHMARKS.values():
        assert (data / file_name).is_file()
        assert description and "\n" not in description


@pytest.mark.parametrize(("name", "count"), COUNTS.items())
def test_shipped_counts_ids_and_fields(shipped, name, count):
    bench = shipped[name]
    assert isinstance(bench, Benchmark) and bench.name == name
    assert len(bench.problems) == count
    assert str(count) in BENCHMARKS[name][1]
    assert len({p["id"] for p in bench.problems}) == count
    for p in bench.problems:
        assert all(isinstance(p[k], str) and p[k].strip() for k in ("id", "problem", "answer"))


def test_shipped_rows_keep_their_other_fields(shipped):
    amc = row(shipped, "amc23-0")
    assert amc["answer"] == "27" and amc["answer_source"] == 27.0
    assert row(shipped, "test/precalculus/807.json")["level"] == 2
    assert row(shipped, "gsm8k-146")["answer_raw"] == "2,125"
    aime25 = row(shipped, "aime25-II-1")
    assert (aime25["contest"], aime25["problem_number"]) == ("AIME 2025 II", 1)
    assert aime25["source_id"] == "aime_2025_II/1"
    assert row(shipped, "hmmt_feb25-17")["source_id"] == 17


def test_2025_sets_as_the_source_gives_them(shipped):
    aime25 = shipped["aime25"].problems
    assert [p["id"] for p in aime25[:2]] == ["aime25-I-1", "aime25-I-2"]
    assert aime25[-1]["id"] == "aime25-II-15"
    assert all(p["answer"].isdigit() and 0 <= int(p["answer"]) <= 999 for p in aime25)
    assert not any(p["answer"] != "0" and p["answer"].startswith("0") for p in aime25)
    hmmt = [p["id"] for p in shipped["hmmt_feb25"].problems]
    assert hmmt == [f"hmmt_feb25-{n}" for n in range(1, 31)]


def test_decontamination_defaults_to_every_shipped_benchmark():
    # training data is checked against the 2025 sets too, by name from eval/data
    assert DecontaminateConfig().benchmarks == list(BENCHMARKS)
    assert {"aime25", "hmmt_feb25"} <= set(DecontaminateConfig().benchmarks)


def test_limit(shipped):
    bench = load_benchmark("math500", limit=3)
    assert bench.problems == shipped["math500"].problems[:3]
    with pytest.raises(UserError, match="limit"):
        load_benchmark("math500", limit=0)


def test_user_file_with_custom_fields(tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [
            {"key": "a", "q": "1+1?", "sol": 2, "extra": [1]},
            {"key": 7, "q": "Half of 3?", "sol": 1.5},
            {"q": "27.0 as an integer?", "sol": 27.0},
        ],
    )
    bench = load_benchmark(str(path), problem_field="q", answer_field="sol", id_field="key")
    assert bench.name == "mine"
    assert [p["id"] for p in bench.problems] == ["a", "7", "mine-2"]
    assert [p["answer"] for p in bench.problems] == ["2", "1.5", "27"]
    assert bench.problems[0]["problem"] == "1+1?" and bench.problems[0]["extra"] == [1]
    assert grade(r"\boxed{27}", bench.problems[2]["answer"])


def test_name_equals_path_form(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [{"problem": "p", "answer": "3"}])
    bench = load_benchmark(f"probe={path}")
    assert bench.name == "probe"
    assert bench.problems == [{"problem": "p", "answer": "3", "id": "probe-0"}]


def test_field_names_do_not_apply_to_shipped_benchmarks():
    assert len(load_benchmark("aime24", problem_field="q", answer_field="a").problems) == 30


def one_line_error(spec, *words, **kwargs):
    with pytest.raises(UserError) as info:
        load_benchmark(spec, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    return message


def test_unknown_benchmark_lists_the_valid_names():
    one_line_error("aime26", "aime26", *BENCHMARKS)


def test_missing_file(tmp_path):
    one_line_error(str(tmp_path / "nope.jsonl"), "not found", "nope.jsonl")
    one_line_error(f"x={tmp_path / 'nope.jsonl'}", "not found", "nope.jsonl")


@pytest.mark.parametrize("field", ["problem", "answer"])
def test_row_missing_a_field(tmp_path, field):
    good = {"id": "a", "problem": "p", "answer": "1"}
    bad = {k: v for k, v in good.items() if k != field} | {"id": "b"}
    path = tmp_path / "bad.jsonl"
    # the blank line counts: the message gives the line in the file, not the row index
    path.write_text(f"{json.dumps(good)}\n\n{json.dumps(bad)}\n")
    one_line_error(str(path), f"{path}:3", f"'{field}'")


def test_custom_answer_field_missing(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "answer": "1"}])
    one_line_error(str(path), f"{path}:1", "'gold'", answer_field="gold")


def test_answer_of_the_wrong_type(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"problem": "p", "answer": ["1"]}])
    one_line_error(str(path), f"{path}:1", "'answer'", "list")


def test_duplicate_id(tmp_path):
    rows = [{"id": i, "problem": "p", "answer": "1"} for i in ("a", "b", "a")]
    path = write_jsonl(tmp_path / "dup.jsonl", rows)
    one_line_error(str(path), f"{path}:3", "duplicate id 'a'", "line 1")


def test_generated_id_clashing_with_a_given_one(tmp_path):
    rows = [{"id": "d-1", "problem": "p", "answer": "1"}, {"problem": "q", "answer": "2"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    one_line_error(str(path), f"{path}:2", "duplicate id 'd-1'")


def test_bad_json_and_empty_file(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text('{"problem": "p", "answer": "1"}\n{"problem": \n')
    one_line_error(str(path), f"{path}:2", "JSON")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    one_line_error(str(empty), "empty.jsonl", "no problems")


def test_parse_benchmark_list(tmp_path):
    assert parse_benchmark_list("aime24,amc23,math500") == ["aime24", "amc23", "math500"]
    assert parse_benchmark_list(" gsm8k , aime24,gsm8k,") == ["gsm8k", "aime24"]
    assert parse_benchmark_list("all") == list(BENCHMARKS)
    mine = str(tmp_path / "mine.jsonl")
    assert parse_benchmark_list(f"all,{mine},x={mine}") == [*BENCHMARKS, mine, f"x={mine}"]
    for bad in ("aime24,aime2024", "", " , "):
        with pytest.raises(UserError) as info:
            parse_benchmark_list(bad)
        assert "aime24, amc23" in str(info.value) and "\n" not in str(info.value)


# --- the grader on the shipped data ----------------------------------------------------------
#
# Two checks per row, with the default extraction (boxed_or_anchored):
# - its gold answer, boxed as a completion would box it, grades correct against itself; and
# - its reference solution, used as the completion, grades correct (where there is one).
# Rows listed below cannot pass, each for the reason given; the tests assert that exactly these
# fail, so a row that starts passing (or failing) shows up.
#
# OlympiadBench has reference solutions but they are proofs that state the answer in prose
# ("The required maximum is $\frac{1}{2 n+2}$."), never boxed or announced at the end: only
# 42/675 grade correct, by chance. They say nothing about the grader, so only its gold answers
# are checked. AMC23 has no solutions.

# The gold answer itself is not gradable: a completion with the right answer is graded wrong
# (False) or not at all (None: unparseable gold, the sample is unscorable).
BAD_GOLD = {
    "minerva-5": "gold is Python code, 'np.arcsin(10/13)': unparseable",
    "minerva-27": r"gold is an equation in \odot units, 'dM/dt=...': unparseable",
    "minerva-72": "gold holds a stray '$ $' from the source's LaTeX: unparseable",
    "minerva-261": r"latex2sympy cannot read \hbar: the gold falls back to the number 2",
    "minerva-268": "latex2sympy reads E as e: the gold falls back to the number 2/3",
    "minerva-269": "latex2sympy reads E as e, 'E_{1},E_{2}': unparseable",
    "olympiadbench-1782": r"'m_{\max }=n^{2}-n-1': unparseable",
    "olympiadbench-1965": "gold is a sentence (a family of functions with conditions)",
    "olympiadbench-2045": "gold '$t(0,4]$' has a stray 't' in the source: unparseable",
    "olympiadbench-2349": "gold '$221,$8$' is garbled in the source: unparseable",
}
# The reference solution does not end in an answer the grader (or math-verify) can read.
BAD_SOLUTION = {
    "aime24-75": r"boxes \textbf{(073)}: math-verify reads the symbol '073', not 73",
}
SOLUTIONS = ["aime24", "math500", "minerva", "gsm8k"]  # aime25 and hmmt_feb25 have none
_DOLLAR = re.compile(r"(?<!\\)\$")


def boxed_gold(answer):
    """The gold answer as a model would box it: without its $...$ and a trailing full stop."""
    return rf"The final answer is \boxed{{{_DOLLAR.sub('', answer).strip().rstrip('.')}}}."


@pytest.mark.parametrize("name", COUNTS)
def test_boxed_gold_answers_grade_correct(shipped, name):
    failing = {
        p["id"]
        for p in shipped[name].problems
        if grade(boxed_gold(p["answer"]), p["answer"]) is not True
    }
    assert failing == {i for i in BAD_GOLD if i.startswith(name)}


@pytest.mark.parametrize("name", SOLUTIONS)
def test_reference_solutions_grade_correct(shipped, name):
    failing = {
        p["id"] for p in shipped[name].problems if grade(p["solution"], p["answer"]) is not True
    }
    expected = {i for i in {**BAD_GOLD, **BAD_SOLUTION} if i.startswith(name)}
    assert failing == expected


def test_math500_reference_solutions_all_correct(shipped):
    problems = shipped["math500"].problems
    assert sum(grade(p["solution"], p["answer"]) is True for p in problems) == 500


# --- gold answers that need normalising ------------------------------------------------------


@pytest.mark.parametrize(
    ("problem_id", "completion", "correct"),
    [
        # AMC answers were floats (27.0) in the source
        ("amc23-0", r"\boxed{27}", True),
        ("amc23-0", r"\boxed{27.0}", True),
        ("amc23-0", r"\boxed{28}", False),
        # OlympiadBench golds come in $...$
        ("olympiadbench-1610", r"\boxed{\frac{1}{2n+2}}", True),
        ("olympiadbench-1610", r"\boxed{\frac{1}{2(n+1)}}", True),
        ("olympiadbench-1610", r"\boxed{\frac{1}{2n+1}}", False),
        # a multiple-answer row, '$(1,8,19), (2,7,13), (4,5,7)$': the order does not matter,
        # every tuple must be there
        ("olympiadbench-1618", r"\boxed{(1,8,19), (2,7,13), (4,5,7)}", True),
        ("olympiadbench-1618", r"\boxed{(4,5,7), (1,8,19), (2,7,13)}", True),
        ("olympiadbench-1618", r"\boxed{(1,8,19), (2,7,13)}", False),
        ("olympiadbench-1618", r"\boxed{(1,8,19), (2,7,13), (4,5,8)}", False),
        # multiple answers in separate $...$, '$69$,$84$'
        ("olympiadbench-1664", r"\boxed{69, 84}", True),
        ("olympiadbench-1664", r"\boxed{69}", False),
        # AIME golds keep leading zeros ("025")
        ("aime24-67", r"\boxed{25}", True),
        ("aime24-67", r"\boxed{025}", True),
        ("aime24-67", r"\boxed{250}", False),
        # GSM8K golds have their thousands commas removed ("2,125" -> "2125")
        ("gsm8k-146", r"\boxed{2,125}", True),
        ("gsm8k-146", r"\boxed{2125}", True),
        ("gsm8k-146", "So she pays 2,125 dollars.\n#### 2,125", True),
        ("gsm8k-146", r"\boxed{2,126}", False),
        # AIME 2025 golds have no leading zeros ("70"), unlike aime24's
        ("aime25-I-1", r"\boxed{70}", True),
        ("aime25-I-1", r"\boxed{070}", True),
        ("aime25-I-1", r"\boxed{700}", False),
        # HMMT February 2025: LaTeX golds, graded as values, not as strings
        ("hmmt_feb25-3", r"\boxed{1/576}", True),
        ("hmmt_feb25-3", r"\boxed{\frac{1}{567}}", False),
        ("hmmt_feb25-7", r"\boxed{\frac{9}{\sqrt{23}}}", True),
        ("hmmt_feb25-7", r"\boxed{\frac{9\sqrt{23}}{24}}", False),
        ("hmmt_feb25-8", r"\boxed{\frac{\pi-2}{\pi}}", True),
        ("hmmt_feb25-8", r"\boxed{1-\frac{1}{\pi}}", False),
        ("hmmt_feb25-17", r"\boxed{26! \cdot 2^{25}}", True),
        ("hmmt_feb25-17", r"\boxed{2^{25} \times 26!}", True),
        ("hmmt_feb25-17", rf"\boxed{{{2**25 * math.factorial(26)}}}", True),
        ("hmmt_feb25-17", r"\boxed{2^{24} \cdot 26!}", False),
        ("hmmt_feb25-17", r"\boxed{2^{25} \cdot 25!}", False),
        ("hmmt_feb25-25", r"\boxed{\sqrt{23}-\sqrt{12}}", True),
        ("hmmt_feb25-25", r"\boxed{\sqrt{23}+2\sqrt{3}}", False),
        ("hmmt_feb25-30", r"\boxed{\frac{\sqrt{570}}{12}}", True),
        ("hmmt_feb25-30", r"\boxed{\sqrt{\frac{95}{23}}}", False),
        # problem 10 asks for two values: both are needed, in any order or notation
        ("hmmt_feb25-10", r"\boxed{\frac{-1-\sqrt{17}}{2}, \frac{-1+\sqrt{17}}{2}}", True),
        (
            "hmmt_feb25-10",
            r"\boxed{\frac{-1+\sqrt{17}}{2} \text{ and } \frac{-1-\sqrt{17}}{2}}",
            True,
        ),
        ("hmmt_feb25-10", r"\boxed{\frac{-1\pm\sqrt{17}}{2}}", True),
        ("hmmt_feb25-10", r"\boxed{\frac{-1+\sqrt{17}}{2}}", False),
        ("hmmt_feb25-10", r"\boxed{\frac{-1+\sqrt{17}}{2}, \frac{-1-\sqrt{17}}{2}, 3}", False),
        ("hmmt_feb25-10", r"\boxed{\frac{1\pm\sqrt{17}}{2}}", False),
        # LaTeX shorthand in a MATH-500 gold ('\frac43')
        ("test/intermediate_algebra/515.json", r"\boxed{\frac43}", True),
        ("test/intermediate_algebra/515.json", r"\boxed{\frac{4}{3}}", True),
        ("test/intermediate_algebra/515.json", r"\boxed{\frac34}", False),
    ],
)
def test_gold_normalisation(shipped, problem_id, completion, correct):
    assert grade(completion, row(shipped, problem_id)["answer"]) is correct


def test_gold_answers_as_the_snapshot_describes_them(shipped):
    assert row(shipped, "amc23-0")["answer"] == "27"
    assert row(shipped, "olympiadbench-1610")["answer"] == r"$\frac{1}{2 n+2}$"
    assert row(shipped, "olympiadbench-1618")["is_multiple_answer"] is True
    assert row(shipped, "aime24-67")["answer"] == "025"
    assert row(shipped, "gsm8k-146")["answer"] == "2125"
    assert row(shipped, "aime25-I-1")["answer"] == "70"
    assert row(shipped, "hmmt_feb25-10")["answer"] == (
        r"\frac{-1+\sqrt{17}}{2}, \frac{-1-\sqrt{17}}{2}"
    )
    assert row(shipped, "hmmt_feb25-17")["answer"] == r"2^{25} \cdot 26!"


# --- the "#### N" answer line (GSM8K's format) -----------------------------------------------


@pytest.mark.parametrize(
    ("completion", "extraction", "correct"),
    [
        ("3 + 4 = <<3+4=7>>7\n#### 7", "boxed_or_anchored", True),
        ("3 + 4 = <<3+4=7>>7\n#### 7", "boxed_latex_expr", True),
        ("3 + 4 = <<3+4=7>>7\n#### 7", "boxed", False),  # strict: a \boxed{} or nothing
        ("####7\n", "boxed_or_anchored", True),
        ("#### 8\nno, wait\n#### 7", "boxed_or_anchored", True),  # the last line wins
        (r"#### 7" + "\n" + r"so \boxed{8}", "boxed_or_anchored", False),  # a box wins
        ("#### 8", "boxed_or_anchored", False),
        ("#### Step 7", "boxed_or_anchored", False),  # a Markdown heading is no answer
        ("#### 7,7", "boxed_or_anchored", False),  # commas only as thousands separators
        ("#### -7.0", "boxed_or_anchored", False),
        ("#### 7.0", "boxed_or_anchored", True),
        ("the sum is #### 7", "boxed_or_anchored", False),  # only at the start of a line
    ],
)
def test_hash_answer_line(completion, extraction, correct):
    assert grade(completion, "7", extraction) is correct
