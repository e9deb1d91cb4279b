"""short-m@k (Hassid et al. 2025): the first m of k samples to finish vote; tokens spent."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from frugalrl.cli import main
from frugalrl.errors import UserError
from frugalrl.eval.stats import majority_correct, short_m_at_k
from frugalrl.eval.summary import parse_vote, summarize

LENGTHS, GROUPS, CORRECT = [10, 4, 7, 4], [0, 1, 0, 2], [True, False, True, False]


@pytest.mark.parametrize(
    ("m", "won", "spent"),
    [
        # the first to finish: sample 1 (4 tokens, before sample 3's 4); all stop at 4
        (1, 0.0, 16.0),
        # samples 1, 3, 2 finish (4, 4, 7): one vote each, the tie goes to the shortest,
        # sample 1's wrong answer; sample 0 is stopped at 7
        (3, 0.0, 7 + 4 + 7 + 4),
        # all four: group 0 has two votes, right; nothing is stopped early
        (4, 1.0, 25.0),
    ],
)
def test_short_m_at_k_hand_cases(m, won, spent):
    assert short_m_at_k(LENGTHS, GROUPS, CORRECT, m) == (won, spent)


def test_samples_without_an_answer_do_not_vote():
    assert short_m_at_k([3, 5, 6], [None, 0, 0], [False, True, True], 1) == (0.0, 9.0)
    assert short_m_at_k([3, 5, 6], [None, 0, 0], [False, True, True], 2) == (1.0, 13.0)


@pytest.mark.parametrize("m", [0, 5])
def test_m_outside_one_to_k_is_refused(m):
    with pytest.raises(ValueError, match="1 <= m <= k"):
        short_m_at_k(LENGTHS, GROUPS, CORRECT, m)


samples = st.lists(st.tuples(st.integers(1, 50), st.integers(0, 3)), min_size=1, max_size=12)


@given(samples)
def test_short_k_at_k_is_the_majority_vote_over_all_samples_by_length(drawn):
    lengths = [n for n, _ in drawn]
    groups = [g for _, g in drawn]
    correct = [g == 0 for g in groups]
    won, spent = short_m_at_k(lengths, groups, correct, len(drawn))
    order = sorted(range(len(drawn)), key=lambda i: (lengths[i], i))
    assert won == majority_correct([groups[i] for i in order], [correct[i] for i in order])
    assert spent == sum(lengths)


@given(samples)
def test_spent_tokens_grow_with_m_and_never_pass_all_k(drawn):
    lengths = [n for n, _ in drawn]
    groups = [g for _, g in drawn]
    spent = [
        short_m_at_k(lengths, groups, [True] * len(drawn), m)[1] for m in range(1, len(drawn) + 1)
    ]
    assert spent == sorted(spent) and spent[-1] == sum(lengths)
    assert spent[0] == len(drawn) * min(lengths)


def rows():
    # p1: samples 0..3 with (tokens, answer group, correct); p2 likewise
    table = {
        "p1": [(10, 0, True), (4, 1, False), (7, 0, True), (4, 2, False)],
        "p2": [(5, 0, True), (9, 1, False), (3, 0, True), (8, 1, False)],
    }
    return [
        {"benchmark": "b", "id": p, "sample": i, "correct": c, "answer_group": g, "tokens": n}
        for p, samples in table.items()
        for i, (n, g, c) in enumerate(samples)
    ]


def test_the_summary_reports_each_vote():
    summary = summarize(rows(), votes=["short-1@k", "short-3@k", "short-1@2"])
    votes = summary["benchmarks"]["b"]["votes"]
    # p1: as above (0 and 16 tokens); p2: the shortest is sample 2 (3 tokens), right: 4 × 3
    assert votes["short-1@k"] == {
        "m": 1,
        "k": 4,
        "accuracy": 0.5,
        "tokens_spent": 14.0,
        "tokens_all_k": 25.0,
    }
    # p2, m=3: samples 2, 0, 3 (3, 5, 8): group 0 twice, right; spent 3+5+8+8
    assert votes["short-3@k"]["accuracy"] == 0.5
    assert votes["short-3@k"]["tokens_spent"] == (22 + 24) / 2
    # the first two samples only: p1 → sample 1 (wrong, 8 tokens), p2 → sample 0 (right, 10)
    assert votes["short-1@2"] == {
        "m": 1,
        "k": 2,
        "accuracy": 0.5,
        "tokens_spent": 9.0,
        "tokens_all_k": 14.0,
    }
    assert summary["overall"]["votes"]["short-1@2"] == {
        "accuracy": 0.5,
        "tokens_spent": 9.0,
        "tokens_all_k": 14.0,
    }


def test_a_vote_is_null_without_what_it_needs():
    no_tokens = [{**r, "tokens": None} for r in rows()]
    assert (
        summarize(no_tokens, ["short-1@k"])["benchmarks"]["b"]["votes"]["short-1@k"]["accuracy"]
        is None
    )
    assert summarize(rows(), ["short-1@8"])["overall"]["votes"]["short-1@8"]["accuracy"] is None


@pytest.mark.parametrize("spec", ["short3@k", "short-x@4", "short-3@2", "short-0@4", "maj@4"])
def test_a_bad_vote_is_a_user_error(spec):
    with pytest.raises(UserError, match="vote"):
        parse_vote(spec)


def test_the_eval_command_votes_on_saved_generations(tmp_path, capsys):
    path = tmp_path / "gen.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": "p", "answer": "12", "completion": c, "tokens": n}) + "\n"
            for c, n in [(r"\boxed{12}", 9), (r"\boxed{11}", 3), (r"\boxed{11}", 4)]
        )
    )
    argv = ["eval", "--regrade", str(path), "--workers", "0", "--vote", "short-1@k"]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["overall"]["votes"]["short-1@k"]["tokens_spent"] == 9.0
    assert summary["overall"]["maj_at_k"] == 0.0
    assert "| short-1@k | 0.0 | 9 | 16 |" in capsys.readouterr().out
    assert main([*argv[:-1], "short-1"]) == 2
