"""Curation stages on small hand-made inputs (frugalrl.curate), and the whole pipeline."""

import json

import pytest

from frugalrl.curate import CurateConfig, curate, load_curate_config, run_curation
from frugalrl.curate.answers import answers, strip_choice_label, strip_delimiters
from frugalrl.curate.config import (
    AnswersConfig,
    DecontaminateConfig,
    DedupConfig,
    LoadConfig,
    MixConfig,
)
from frugalrl.curate.decontaminate import decontaminate
from frugalrl.curate.dedup import dedup
from frugalrl.curate.load import load
from frugalrl.curate.mix import mix
from frugalrl.curate.stage import StageContext
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import load_benchmark


@pytest.fixture
def ctx(tmp_path):
    return StageContext(tmp_path, progress=False)


def row(problem, answer="1", solution="", **extra):
    return {"problem": problem, "answer": answer, "solution": solution, **extra}


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


# ---- load ----------------------------------------------------------------------------------


def test_load_drops_malformed_rows_with_file_and_line(tmp_path, ctx):
    path = write_lines(
        tmp_path / "d.jsonl",
        [
            json.dumps({"q": "What is 1+1?", "a": 2}),  # numeric answer: kept as "2"
            json.dumps({"q": "What is 2+2?", "a": "4", "sol": "so \\boxed{4}"}),
            '{"q": "truncated", "a": ',  # line 3: bad JSON
            json.dumps({"a": "5"}),  # line 4: no problem
            json.dumps({"q": "No answer", "sol": "no box either"}),  # answer missing, kept
            json.dumps({"q": "Listy", "a": [1, 2]}),  # line 6: answer is a list
            json.dumps([1, 2]),  # line 7: not an object
            "",
            json.dumps({"q": "   ", "a": "3"}),  # line 9: blank problem
            json.dumps({"q": "Nothing at all"}),  # line 10: no answer, no solution
        ],
    )
    config = LoadConfig.model_validate(
        {
            "sources": [
                {
                    "name": "d",
                    "path": str(path),
                    "problem_field": "q",
                    "answer_field": "a",
                    "solution_field": "sol",
                }
            ]
        }
    )
    result = load([], config, ctx)
    assert [r["answer"] for r in result.kept] == ["2", "4", ""]
    assert [r["_origin"] for r in result.kept] == ["d.jsonl:1", "d.jsonl:2", "d.jsonl:5"]
    assert result.kept[2]["solution"] == "no box either"
    got = [(d.row["_origin"], d.reason) for d in result.dropped]
    assert got == [
        ("d.jsonl:3", "bad JSON"),
        ("d.jsonl:4", "no problem"),
        ("d.jsonl:6", "bad answer type"),
        ("d.jsonl:7", "not a JSON object"),
        ("d.jsonl:9", "no problem"),
        ("d.jsonl:10", "no answer"),
    ]


def test_load_reads_json_parquet_and_saved_dataset(tmp_path, ctx):
    import datasets

    rows = [{"problem": "P1", "answer": "1"}, {"problem": "P2", "answer": "2"}]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "b.parquet"))
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "c"))
    sources = [
        {"name": n, "path": str(tmp_path / p), "solution_field": None}
        for n, p in [("a", "a.json"), ("b", "b.parquet"), ("c", "c")]
    ]
    result = load([], LoadConfig.model_validate({"sources": sources}), ctx)
    assert [(r["_source"], r["problem"]) for r in result.kept] == [
        ("a", "P1"),
        ("a", "P2"),
        ("b", "P1"),
        ("b", "P2"),
        ("c", "P1"),
        ("c", "P2"),
    ]
    assert result.kept[3]["_origin"] == "b.parquet[row 2]"
    with pytest.raises(UserError, match="file not found"):
        load([], LoadConfig.model_validate({"sources": [{"path": str(tmp_path / "x.jsonl")}]}), ctx)


# ---- answers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw, clean",
    [
        ("\\( \\frac{1}{2} \\)", "\\frac{1}{2}"),
        ("$3 \\sqrt{2}$", "3 \\sqrt{2}"),
        ("\\[ 1979 \\]", "1979"),
        ("$0.10", "0.10"),  # a stray delimiter
        ("\\boxed{5}", "5"),
        ("$a=0$ and $b=1$", "$a=0$ and $b=1$"),  # inner delimiters stay
        ("\\$306", "\\$306"),  # an escaped dollar is a dollar sign
    ],
)
def test_strip_delimiters(raw, clean):
    assert strip_delimiters(raw) == clean


def test_strip_choice_label():
    assert strip_choice_label("\\textbf{(B)}\\ 4") == "4"
    assert strip_choice_label("\\mathrm{(C) \\ } 600") == "600"
    assert strip_choice_label("\\text{C}") == ""
    assert strip_choice_label("x+1") == "x+1"


ANSWER_ROWS = [
    row("p0", "$\\frac{1}{2}$", "so \\boxed{\\frac{1}{2}}"),  # cleaned, agrees
    row("p1", "", "hence \\boxed{7}"),  # missing: taken from the solution
    row("p2", "21", "thus \\boxed{41}"),  # disagrees
    row("p3", "0.5", "\\boxed{\\frac12}"),  # agrees by value
    row("p4", "3 \\mid n", ""),  # unparseable
    row("p5", "", "no box"),  # no answer at all
    row("p6", "4", "\\boxed{\\textbf{(B)}\\ 4}"),  # choice label stripped: agrees
    row("p7", "4", "\\boxed{\\text{B}}"),  # letter only: cannot compare, kept
]


def test_answers_drops_disagreements_and_unparseable(ctx):
    result = answers(ANSWER_ROWS, AnswersConfig(workers=0), ctx)
    assert [(r["problem"], r["answer"]) for r in result.kept] == [
        ("p0", "\\frac{1}{2}"),
        ("p1", "7"),
        ("p3", "0.5"),
        ("p6", "4"),
        ("p7", "4"),
    ]
    assert result.dropped_by_reason() == {
        "answer disagrees with solution": 1,
        "unparseable answer": 1,
        "no answer": 1,
    }
    assert result.stats["taken from solution"] == 1
    assert result.stats["cleaned"] == 1
    assert result.stats["choice letter only"] == 1
    disagreement = next(d for d in result.dropped if d.reason.startswith("answer disagrees"))
    assert "'41'" in disagreement.detail


def test_answers_keeps_disagreements_when_asked(ctx):
    config = AnswersConfig(workers=0, on_disagreement="keep", drop_unparseable=False)
    result = answers(ANSWER_ROWS, config, ctx)
    assert len(result.kept) == 7  # only the row without any answer goes
    assert result.flagged_by_reason() == {
        "answer disagrees with solution": 1,
        "unparseable answer": 1,
    }


# ---- dedup ---------------------------------------------------------------------------------

BASE = (
    "A bag holds 3 red and 5 blue marbles. Two marbles are drawn at random without "
    "replacement. What is the probability that both are red?"
)


def test_dedup_exact_and_near(ctx):
    rows = [
        row(BASE, id="a"),
        row("  " + BASE.upper() + " ", id="b"),  # exact after case/space normalisation
        # 28 tokens, 26 word-3-shingles; a 2-token prefix adds 2: Jaccard 26/28 = 0.93
        row("Problem: " + BASE, id="c"),
        # one number changed: 3 shingles out, 3 in: Jaccard 23/29 = 0.79
        row(BASE.replace("3 red", "4 red"), id="d"),
        row("Compute 2+3.", id="e"),
    ]
    result = dedup(rows, DedupConfig(threshold=0.8), ctx)
    assert [r["id"] for r in result.kept] == ["a", "d", "e"]
    assert [(d.row["id"], d.reason) for d in result.dropped] == [
        ("b", "exact duplicate"),
        ("c", "near duplicate"),
    ]
    assert result.dropped[1].detail.startswith("Jaccard 0.93 with a")
    lower = dedup(rows, DedupConfig(threshold=0.7), ctx)  # now "d" counts as a copy too
    assert [r["id"] for r in lower.kept] == ["a", "e"]
    exact_only = dedup(rows, DedupConfig(near=False), ctx)
    assert [r["id"] for r in exact_only.kept] == ["a", "c", "d", "e"]


# ---- decontaminate -------------------------------------------------------------------------


def test_decontaminate_ngram_exact_and_near(ctx):
    math500 = load_benchmark("math500").problems
    long_one = next(p["problem"] for p in math500 if len(p["problem"].split()) > 30)
    words = long_one.split()
    rows = [
        row("Original question: " + " ".join(words[:16]) + " ... and more."),  # 13-gram
        row(math500[0]["problem"].upper()),  # exact after normalisation
        row("Compute the value of 17 times 23 in base 10."),  # clean
    ]
    config = DecontaminateConfig(benchmarks=["math500", "aime24"], ngram=13)
    result = decontaminate(rows, config, ctx)
    assert [r["problem"] for r in result.kept] == [rows[2]["problem"]]
    assert result.dropped_by_reason() == {"in math500": 2}
    assert result.stats["overlaps by check"] == {"13-gram": 1, "exact": 1}
    longer_n = decontaminate(
        rows[:1], DecontaminateConfig(benchmarks=["math500"], ngram=40, near=False), ctx
    )
    assert len(longer_n.kept) == 1  # no 40-token run shared: kept


# ---- mix -----------------------------------------------------------------------------------


def _levels():
    return [row(f"p{i}", level="Hard" if i < 12 else "Easy", id=i) for i in range(16)]


def test_mix_counts_proportions_and_seed(ctx):
    config = MixConfig.model_validate(
        {
            "seed": 1,
            "sources": [
                {"name": "hard", "where": {"level": "Hard"}, "count": 6},
                {"name": "easy", "where": {"level": "Easy"}, "count": 10},
            ],
        }
    )
    result = mix(_levels(), config, ctx)
    assert len(result.kept) == 10  # 6 hard + all 4 easy (10 asked)
    assert sum(r["mix_source"] == "hard" for r in result.kept) == 6
    assert result.stats["short parts"] == ["easy"]
    assert result.dropped_by_reason() == {"not in the mix": 6}
    again = mix(_levels(), config, ctx)
    assert [r["id"] for r in again.kept] == [r["id"] for r in result.kept]
    other = mix(_levels(), config.model_copy(update={"seed": 2}), ctx)
    assert [r["id"] for r in other.kept] != [r["id"] for r in result.kept]
    weighted = MixConfig.model_validate(
        {
            "total": 7,
            "sources": [
                {"name": "hard", "where": {"level": "Hard"}, "weight": 6},
                {"name": "easy", "where": {"level": "Easy"}, "weight": 1},
            ],
        }
    )
    parts = mix(_levels(), weighted, ctx).stats["parts"]
    assert (parts["hard"]["taken"], parts["easy"]["taken"]) == (6, 1)


# ---- config --------------------------------------------------------------------------------


def test_config_errors_are_one_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("dedup: {treshold: 0.5}\n")
    with pytest.raises(UserError, match="unknown key 'dedup.treshold'; valid keys: near"):
        load_curate_config(path)
    path.write_text("stages: [dedup]\n")
    with pytest.raises(UserError, match="first stage must be 'load'"):
        load_curate_config(path)
    path.write_text("load: {sources: [{path: data.jsonl}]}\n")
    config = load_curate_config(path, ["dedup.threshold=0.9", "load.sources.0.name=x"])
    assert config.load.sources[0].path == str(tmp_path / "data.jsonl")  # against the config dir
    assert (config.dedup.threshold, config.load.sources[0].name) == (0.9, "x")
    with pytest.raises(UserError, match="unknown curation stage 'nope'"):
        curate(CurateConfig(stages=["load", "nope"], progress=False), tmp_path / "o")


# ---- the whole pipeline --------------------------------------------------------------------


def test_pipeline_writes_dataset_report_and_summary(tmp_path):
    import datasets

    data = write_lines(
        tmp_path / "train.jsonl",
        [
            json.dumps(
                row(BASE, "\\frac{15}{56}", "\\boxed{\\frac{15}{56}}", id="a", level="Hard")
            ),
            json.dumps(row(BASE, "\\frac{15}{56}", id="b", level="Hard")),  # exact duplicate
            json.dumps(row("What is 6 times 7?", "$42$", "\\boxed{42}", id="c", level="Easy")),
            json.dumps(row("What is 2 + 2?", "5", "\\boxed{4}", id="d", level="Easy")),  # disagrees
            '{"problem": "cut off',
            json.dumps(
                row(load_benchmark("math500").problems[0]["problem"], "1", id="e", level="Hard")
            ),  # in MATH-500
        ],
    )
    config = tmp_path / "curate.yaml"
    config.write_text(
        "name: t\nprogress: false\nstages: [load, answers, dedup, decontaminate, mix]\n"
        "load: {sources: [{name: t, path: train.jsonl}]}\nanswers: {workers: 0}\n"
        "decontaminate: {benchmarks: [math500]}\n"
        "mix: {sources: [{name: hard, where: {level: Hard}}, {name: easy, where: {level: Easy}}]}\n"
    )
    out = tmp_path / "out"
    summary = run_curation(config, ["load.sources.0.path=" + str(data)], out)
    counts = [
        (s["stage"], s["rows_in"], s["dropped_by_reason"], s["rows_out"]) for s in summary["stages"]
    ]
    assert counts == [
        ("load", 6, {"bad JSON": 1}, 5),
        ("answers", 5, {"answer disagrees with solution": 1}, 4),
        ("dedup", 4, {"exact duplicate": 1}, 3),
        ("decontaminate", 3, {"in math500": 1}, 2),
        ("mix", 2, {}, 2),
    ]
    written = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert sorted((r["id"], r["answer"], r["mix_source"]) for r in written) == [
        ("a", "\\frac{15}{56}", "hard"),
        ("c", "42", "easy"),
    ]
    assert not any(k.startswith("_") for r in written for k in r)
    hf = datasets.load_from_disk(str(out / "hf"))
    assert sorted(hf["id"]) == ["a", "c"]
    saved = json.loads((out / "curation_summary.json").read_text())
    assert saved["rows_in"] == 6 and saved["rows_out"] == 2
    assert saved["dropped_by_stage"] == {
        "load": 1,
        "answers": 1,
        "dedup": 1,
        "decontaminate": 1,
        "mix": 0,
    }
    report = (out / "curation_report.md").read_text()
    assert "| dedup | 4 | 1 | 3 | exact duplicate: 1 |" in report
    assert "train.jsonl:5" in report  # the bad line, by file and line
    assert "'4'" in report  # the disagreement's solution answer
    assert len((out / "dropped.jsonl").read_text().splitlines()) == 4
