"""Inference-time budgets: s1 budget forcing and the target stated in the prompt, as sweeps."""

import json

import pytest

from frugalrl.cli import main
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import Benchmark
from frugalrl.eval.sweep import BudgetSweep
from frugalrl.rollout.base import Completion, SamplingParams
from frugalrl.rollout.budget_forcing import BudgetForcing

EOS, CLOSE = 0, 9
WORDS = {0: "", 1: "x", 5: "\\boxed{5}", 7: "\n</", 8: "think>\n", CLOSE: "</think>"}


class ScriptedTokenizer:
    def encode(self, text, add_special_tokens=False):
        assert text == "\n</think>\n"
        return [7, 8]


class ScriptedEngine:
    """Each prompt writes its script (continuations write ``answer``), cut at max_new_tokens."""

    def __init__(self, scripts, answer):
        self.scripts, self.answer, self.calls = scripts, answer, []

    def generate(self, prompt_ids, n, params, seeds=None):
        self.calls.append(([tuple(p) for p in prompt_ids], n, params.max_new_tokens, seeds))
        groups = []
        for p in prompt_ids:
            full = self.scripts.get(tuple(p), self.answer)
            cut = full[: params.max_new_tokens]
            finished = len(full) <= params.max_new_tokens
            text = "".join(WORDS[t] for t in (cut[:-1] if finished else cut))
            groups.append([Completion(tuple(cut), text, finished) for _ in range(n)])
        return groups


def test_budget_forcing_cuts_the_thinking_and_makes_the_model_answer():
    scripts = {
        (1,): [1, 1, EOS],  # finishes inside the budget: untouched
        (2,): [1] * 10,  # still thinking at the budget: "\n</think>\n" appended, then answers
        (3,): [CLOSE, 1, 1, 1, 1, 1],  # closed its thinking already: only continued
    }
    engine = ScriptedEngine(scripts, answer=[5, EOS])
    forcing = BudgetForcing(engine, ScriptedTokenizer(), think_tokens=4, answer_tokens=6)
    groups = forcing.generate([[1], [2], [3]], 2, SamplingParams(1.0, 1.0, 100), seeds=[10, 20, 30])

    assert engine.calls[0] == ([(1,), (2,), (3,)], 2, 4, [10, 20, 30])
    prompts, n, max_new, seeds = engine.calls[1]
    assert prompts == [(2, 1, 1, 1, 1, 7, 8)] * 2 + [(3, CLOSE, 1, 1, 1)] * 2
    assert (n, max_new) == (1, 6)
    assert seeds == [20 + 7919, 20 + 2 * 7919, 30 + 7919, 30 + 2 * 7919]
    assert groups[0] == [Completion((1, 1, EOS), "xx", True)] * 2
    assert (
        groups[1]
        == [Completion((1, 1, 1, 1, 7, 8, 5, EOS), "xxxx\n</think>\n\\boxed{5}", True)] * 2
    )
    assert groups[2] == [Completion((CLOSE, 1, 1, 1, 5, EOS), "</think>xxx\\boxed{5}", True)] * 2
    assert forcing.forced == 2  # the delimiter was appended twice (prompt 2's two samples)


def test_nothing_is_continued_when_everything_finishes_in_budget():
    engine = ScriptedEngine({(1,): [1, EOS]}, answer=[5, EOS])
    forcing = BudgetForcing(engine, ScriptedTokenizer(), think_tokens=4)
    forcing.generate([[1]], 3, SamplingParams(max_new_tokens=2))
    assert len(engine.calls) == 1 and engine.calls[0][2] == 2  # the smaller cap wins
    assert forcing.forced == 0


@pytest.mark.parametrize(("think", "answer"), [(0, 10), (10, 0)])
def test_a_budget_below_one_token_is_refused(think, answer):
    with pytest.raises(UserError, match="must be >= 1 token"):
        BudgetForcing(ScriptedEngine({}, []), ScriptedTokenizer(), think, answer)


def test_a_stated_budget_ends_every_prompt_and_rides_in_the_row():
    bench = [Benchmark("b", [{"id": "1", "problem": "2+2?", "answer": "4"}])]
    engine = object()
    same, (asked,) = BudgetSweep("budget", (64,), "exact").point(64, engine, None, bench)
    assert same is engine
    assert asked.problems == [
        {"id": "1", "problem": "2+2? Think for 64 tokens.", "answer": "4", "target_tokens": 64}
    ]
    _, (asked,) = BudgetSweep("budget", (64,)).point(32, engine, None, bench)
    assert asked.problems[0]["problem"] == "2+2? Think for maximum 32 tokens."
    assert bench[0].problems[0]["problem"] == "2+2?"  # the benchmark itself is not changed


def eval_args(tiny_model_dir, task_files, out):
    _, heldout = task_files
    return [
        "eval",
        "--model",
        str(tiny_model_dir),
        "--benchmarks",
        f"heldout={heldout}",
        "--samples",
        "2",
        "--max-new-tokens",
        "12",
        "--prompt-template",
        "demo",
        "--workers",
        "0",
        "--out",
        str(out),
        "--no-progress",
    ]


def test_the_forcing_sweep_on_the_tiny_model(tmp_path, tiny_model_dir, task_files, capsys):
    out = tmp_path / "ev"
    args = eval_args(tiny_model_dir, task_files, out)
    assert main([*args, "--budget-forcing", "3,6", "--answer-tokens", "2"]) == 0
    table = json.loads((out / "forcing.json").read_text())
    assert [r["budget"] for r in table["rows"]] == [3, 6]
    assert (out / "forcing.png").stat().st_size > 10_000
    assert "| 3 |" in capsys.readouterr().out
    for budget, row in zip((3, 6), table["rows"], strict=True):
        rows = [json.loads(line) for line in (out / f"forcing-{budget}/generations.jsonl").open()]
        assert row["num_samples"] == len(rows) == 12
        forced = [r for r in rows if r["tokens"] > budget]
        # cut at the budget, the delimiter's tokens appended, at most 2 answer tokens
        assert all(r["tokens"] <= budget + 5 + 2 for r in rows)
        assert (
            row["forced_fraction"] == len([r for r in forced if "</think>" in r["completion"]]) / 12
        )
        assert row["mean_tokens"] == pytest.approx(sum(r["tokens"] for r in rows) / 12)


def test_the_stated_budget_sweep_on_the_tiny_model(tmp_path, tiny_model_dir, task_files):
    out = tmp_path / "ev"
    assert main([*eval_args(tiny_model_dir, task_files, out), "--budget", "8,4"]) == 0
    table = json.loads((out / "budget.json").read_text())
    assert [r["budget"] for r in table["rows"]] == [8, 4]
    summary = json.loads((out / "budget-4" / "summary.json").read_text())
    assert summary["budget"] == 4 and summary["sweep"] == "budget"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--budget", "8", "--budget-forcing", "8"], "give one"),
        (["--budget", "0,8"], "every budget must be >= 1"),
        (["--budget-forcing", "lots"], "expected token counts"),
    ],
)
def test_bad_budgets_are_one_line(tmp_path, tiny_model_dir, task_files, capsys, flags, message):
    assert main([*eval_args(tiny_model_dir, task_files, tmp_path), *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
