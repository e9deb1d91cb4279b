"""Grading evaluation samples: correctness, the extracted answer, and answer equivalence classes.

One problem's k samples are graded together (the unit the worker pool and its watchdog run),
so that majority voting can group answers that math-verify finds equivalent ("1/2", "0.5",
"\\frac{1}{2}") within the problem. Correctness comes from the same extraction and comparison
as the training rewards (:mod:`frugalrl.rewards.answer`), each completion parsed once.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from frugalrl.group_pool import GroupPool
from frugalrl.rewards.answer import (
    DEFAULT_EXTRACTION,
    GradingTimeout,
    answers_match,
    check_extraction,
    parse_completion,
    parse_gold,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grade:
    extracted: str | None  # the final answer as written, None when none was found
    correct: bool  # False also when ungraded
    ungraded: bool  # gold unparseable, or math-verify failed / timed out
    answer_group: int | None  # equivalence class among this problem's answers; None: no answer


def _extracted_text(parsed: Sequence[Any]) -> str | None:
    strings = [p for p in parsed if isinstance(p, str)]
    return strings[-1] if strings else (str(parsed[0]) if parsed else None)


def _equivalent(a: Sequence[Any], b: Sequence[Any]) -> bool:
    try:
        return answers_match(a, b)
    except GradingTimeout:  # undecided in time: kept apart, never merged
        return False


def grade_problem(
    samples: Sequence[tuple[str, str]], extraction: str = DEFAULT_EXTRACTION
) -> list[Grade]:
    """Grade ``(completion, gold answer)`` pairs that belong to ONE problem.

    ``answer_group`` numbers the distinct answers in order of first appearance; two answers
    share a group when their text is identical or math-verify finds them equivalent.
    """
    grades: list[Grade] = []
    groups: list[Sequence[Any]] = []  # one parsed representative per answer group
    texts: dict[str, int] = {}
    for completion, gold in samples:
        try:
            gold_parsed = parse_gold(gold)
            parsed = parse_completion(completion, extraction)
            correct = None if gold_parsed is None else answers_match(gold_parsed, parsed)
        except Exception as e:  # a math-verify timeout or failure: this sample is ungraded
            log.debug("grading failed: %r", e)
            grades.append(Grade(None, False, True, None))
            continue
        text = _extracted_text(parsed)
        group = None
        if text is not None:
            group = texts.get(text)
            if group is None:
                group = next(
                    (g for g, rep in enumerate(groups) if _equivalent(rep, parsed)), len(groups)
                )
                if group == len(groups):
                    groups.append(parsed)
                texts[text] = group
        grades.append(Grade(text, bool(correct), correct is None, group))
    return grades


def _grade_rows(rows: Sequence[dict[str, Any]], extraction: str) -> list[dict[str, Any]]:
    pairs = [(str(r["completion"]), str(r["answer"])) for r in rows]
    return [asdict(g) for g in grade_problem(pairs, extraction)]


def grade_rows(
    rows: Sequence[dict[str, Any]],
    extraction: str = DEFAULT_EXTRACTION,
    workers: int = 0,
    timeout: float = 30.0,
) -> list[dict[str, Any]]:
    """``rows`` (each with ``benchmark``, ``id``, ``completion``, ``answer``) with their grades.

    Rows are graded per problem in worker processes under the watchdog; a problem the watchdog
    gives up on has all its samples ungraded. Returns new row dicts with ``extracted``,
    ``correct``, ``ungraded`` and ``answer_group`` set, in the input order.
    """
    check_extraction(extraction)
    by_problem: dict[tuple[str, str], list[int]] = {}
    for i, row in enumerate(rows):
        by_problem.setdefault((str(row["benchmark"]), str(row["id"])), []).append(i)
    keys = list(by_problem)
    with GroupPool(functools.partial(_grade_rows, extraction=extraction), workers, timeout) as pool:
        results, timed_out = pool.map([[rows[i] for i in by_problem[k]] for k in keys])
    out = [dict(row) for row in rows]
    for g, key in enumerate(keys):
        grades = results.get(g) or [asdict(Grade(None, False, True, None))] * len(by_problem[key])
        for i, grade_fields in zip(by_problem[key], grades, strict=True):
            out[i].update(grade_fields)
    if timed_out:
        log.warning("grading: %d problem(s) timed out and count as ungraded", len(timed_out))
    return out
