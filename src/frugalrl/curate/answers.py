"""The ``answers`` stage: clean gold answers and check them against their own solutions.

Per row: strip delimiters that wrap the whole answer (``$…$``, ``\\(…\\)``, ``\\[…\\]``, a
lone ``\\boxed{}``, a stray unmatched ``$``); take the solution's last ``\\boxed{}`` when the
answer is missing; check the answer parses with math-verify (as the accuracy reward parses
it: :func:`frugalrl.rewards.answer.parse_gold`) and equals the solution's boxed answer where
there is one. A multiple-choice label in the box (``\\textbf{(B)}\\ 4``) is not part of the
answer; a box holding only a letter cannot be compared and is counted as such.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from tqdm.auto import tqdm

from frugalrl.curate.config import AnswersConfig
from frugalrl.curate.stage import CURATION_STAGES, Dropped, Row, StageContext, StageResult
from frugalrl.group_pool import GroupPool, default_workers
from frugalrl.rewards.answer import GradingTimeout, answers_match, extract_boxed, parse_gold

_WRAPPERS = [("$$", "$$"), ("\\(", "\\)"), ("\\[", "\\]"), ("$", "$")]
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_BOX_OPEN = re.compile(r"\\(?:boxed|fbox|framebox)\s*\{")
_SPACING = r"(?:\s|~|\\[ ,;:!]|\\quad|\\qquad)*"
_STYLE = r"\\(?:text|textbf|mathrm|mathbf|rm|bf)\s*"
# "\textbf{(B)}", "\text{(B) }", "\mathrm{(C) \ }", "(\textbf{E})", "(B)": a choice label
_CHOICE_LABEL = re.compile(
    r"^(?:" + _STYLE + r"\{\s*\(?[A-E]\)?" + _SPACING + r"\}"
    r"|\(\s*(?:" + _STYLE + r"\{\s*[A-E]\s*\}|[A-E])\s*\))" + _SPACING
)
CHUNK_ROWS = 64  # rows per worker task: small, so a stalled chunk costs few rows


def strip_delimiters(answer: str) -> str:
    """``answer`` without math delimiters around the whole of it, nor a stray ``$`` at an end.

    Inner delimiters stay (``$a=0$ and $b=1$`` is two formulas, not one); an escaped ``\\$``
    is a dollar sign, not a delimiter.
    """
    text = answer.strip()
    changed = True
    while changed:
        changed = False
        for left, right in _WRAPPERS:
            inner = text[len(left) : -len(right)]
            if (
                len(text) >= len(left) + len(right)
                and text.startswith(left)
                and text.endswith(right)
                and not _UNESCAPED_DOLLAR.search(inner)
            ):
                text, changed = inner.strip(), True
                break
        box = _BOX_OPEN.match(text)
        if box and text.endswith("}") and extract_boxed(text) == text[box.end() : -1]:
            text, changed = text[box.end() : -1].strip(), True
    if len(_UNESCAPED_DOLLAR.findall(text)) == 1:
        if text.startswith("$"):
            text = text[1:].strip()
        elif text.endswith("$") and not text.endswith("\\$"):
            text = text[:-1].strip()
    return text


def strip_choice_label(boxed: str) -> str:
    """The value in a multiple-choice box: ``\\textbf{(B)}\\ 4`` -> ``4``, ``\\text{C}`` -> ``""``."""
    text = boxed.strip()
    m = _CHOICE_LABEL.match(text)
    if m is None:
        letter_only = re.fullmatch(r"\\(?:text|textbf|mathrm|mathbf)\s*\{\s*\(?[A-E]\)?\s*\}", text)
        return "" if letter_only or re.fullmatch(r"\(?[A-E]\)?", text) else text
    return text[m.end() :].strip()


@dataclass(frozen=True)
class AnswerCheck:
    answer: str  # the cleaned gold answer ("" when there is none)
    from_solution: bool  # taken from the solution's \boxed{} because the answer was missing
    status: str  # ok | no answer | unparseable | disagrees | choice letter only | timed out
    solution_answer: str | None  # the solution's boxed answer, label stripped; None: no box


def _same(a: str, b: str) -> bool:
    return "".join(a.split()) == "".join(b.split())


@functools.lru_cache(maxsize=65536)
def check_answer(answer: str, solution: str) -> AnswerCheck:
    """Clean ``answer`` and check it against ``solution``'s boxed answer (see module doc)."""
    boxed = extract_boxed(solution) if solution else None
    solution_answer = None if boxed is None else strip_choice_label(strip_delimiters(boxed))
    cleaned = strip_delimiters(answer)
    from_solution = not cleaned
    if from_solution:
        cleaned = solution_answer or ""
        if not cleaned:
            return AnswerCheck("", True, "no answer", solution_answer)
    gold = parse_gold(cleaned)
    if gold is None:
        return AnswerCheck(cleaned, from_solution, "unparseable", solution_answer)
    if from_solution or solution_answer is None or _same(cleaned, solution_answer):
        return AnswerCheck(cleaned, from_solution, "ok", solution_answer)
    if not solution_answer:
        return AnswerCheck(cleaned, from_solution, "choice letter only", solution_answer)
    other = parse_gold(solution_answer)
    if other is None:  # the solution's box is prose or a statement: nothing to compare with
        return AnswerCheck(cleaned, from_solution, "solution box unparseable", solution_answer)
    try:
        agree = answers_match(gold, other)
    except GradingTimeout:
        return AnswerCheck(cleaned, from_solution, "timed out", solution_answer)
    return AnswerCheck(cleaned, from_solution, "ok" if agree else "disagrees", solution_answer)


def check_pairs(pairs: list[tuple[str, str]]) -> list[AnswerCheck]:
    """:func:`check_answer` over ``(answer, solution)`` pairs (one worker task)."""
    return [check_answer(answer, solution) for answer, solution in pairs]


def check_all(
    pairs: list[tuple[str, str]], workers: int, timeout: float, progress: bool
) -> list[AnswerCheck | None]:
    """Checks in input order; None for a pair whose chunk the watchdog gave up on."""
    chunks = [pairs[i : i + CHUNK_ROWS] for i in range(0, len(pairs), CHUNK_ROWS)]
    out: list[AnswerCheck | None] = []
    with (
        GroupPool(check_pairs, workers, timeout) as pool,
        tqdm(total=len(pairs), desc="answers", unit="row", disable=not progress) as bar,
    ):
        # a few map calls, not one, so the bar moves; the pool's processes persist between them
        step = max(1, workers) * 8
        for start in range(0, len(chunks), step):
            part = chunks[start : start + step]
            results, _ = pool.map(part)
            for g, chunk in enumerate(part):
                out += results.get(g) or [None] * len(chunk)
                bar.update(len(chunk))
    return out


@CURATION_STAGES.register("answers")
def answers(rows: list[Row], config: AnswersConfig, context: StageContext) -> StageResult:
    """Rows with cleaned answers; unparseable and disagreeing ones dropped or flagged."""
    workers = default_workers() if config.workers == "auto" else int(config.workers)
    if len(rows) < 2 * CHUNK_ROWS:
        workers = 0  # starting worker processes costs more than a few rows do
    pairs = [(str(r["answer"]), str(r.get("solution") or "")) for r in rows]
    checks = check_all(pairs, workers, config.timeout_seconds, context.progress)
    result = StageResult(kept=[])
    counts = {
        "cleaned": 0,
        "taken from solution": 0,
        "choice letter only": 0,
        "solution box unparseable": 0,
        "unchecked (timed out)": 0,
    }
    for row, check in zip(rows, checks, strict=True):
        if check is None or check.status == "timed out":
            counts["unchecked (timed out)"] += 1
            result.kept.append(row)
            continue
        new_row = {**row, "answer": check.answer}
        counts["cleaned"] += check.answer != row["answer"] and not check.from_solution
        counts["taken from solution"] += check.from_solution and check.status != "no answer"
        if check.status in ("choice letter only", "solution box unparseable"):
            counts[check.status] += 1
        detail = f"answer {row['answer']!r}"
        if check.solution_answer is not None:
            detail += f", solution boxed {check.solution_answer!r}"
        if check.status == "no answer":
            result.dropped.append(
                Dropped(row, "no answer", "empty answer, no \\boxed{} in solution")
            )
        elif check.status == "unparseable":
            bad = Dropped(new_row, "unparseable answer", detail)
            (result.dropped if config.drop_unparseable else result.flagged).append(bad)
            if not config.drop_unparseable:
                result.kept.append(new_row)
        elif check.status == "disagrees":
            bad = Dropped(new_row, "answer disagrees with solution", detail)
            if config.on_disagreement == "drop":
                result.dropped.append(bad)
            else:
                result.flagged.append(bad)
                result.kept.append(new_row)
        else:
            result.kept.append(new_row)
    result.stats = counts
    return result
