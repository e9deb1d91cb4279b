"""Answer extraction and verification around math-verify.

math-verify's timeouts use ``signal.alarm``, which only works in the main thread: elsewhere we
call it with timeouts disabled (so a pathological answer such as ``10^{10^{10}}`` can then run
for a long time; grade in the main thread, or in worker processes, to stay protected).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from collections.abc import Sequence
from typing import Any

from latex2sympy2_extended import NormalizationConfig
from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse, verify
from math_verify.errors import TimeoutException
from sympy import Basic, MatrixBase

from frugalrl.sample import Sample

log = logging.getLogger(__name__)

PARSE_TIMEOUT_S = 2  # seconds per math-verify parse (signal.alarm takes whole seconds)
VERIFY_TIMEOUT_S = 2  # seconds per math-verify comparison

# As open-rs: boxed answers first, no LaTeX extraction without an anchor ("final answer is ...").
# Expressions (plain "12") are also only taken after an anchor such as "answer:", so a completion
# without a boxed or announced answer is wrong, not graded on whatever number comes last.
_COMPLETION_CONFIG = (
    LatexExtractionConfig(
        normalization_config=NormalizationConfig(
            nits=False,
            malformed_operators=False,
            basic_latex=True,
            equations=False,  # deprecated in math-verify 0.9: equations are handled by the parser
            boxed="all",
            units=True,
        ),
        boxed_match_priority=0,
        try_extract_without_anchor=False,
    ),
    ExprExtractionConfig(try_extract_without_anchor=False),
)
_GOLD_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())

_BOX_START = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\\\|\\[{}]|[{}]")  # "\\" and escaped braces are skipped below
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_NO_ANCHOR_TAIL = 4000  # without a boxed answer, only the end of a completion is searched


class GradingTimeout(Exception):
    """math-verify ran out of time (an ``Exception``, unlike math-verify's own BaseException)."""


def _timeout(seconds: int) -> int | None:
    return seconds if threading.current_thread() is threading.main_thread() else None


def _matching_braces(text: str) -> dict[int, int]:
    """Map the index of each balanced ``{`` to its ``}``, in one linear pass."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for m in _BRACE_TOKEN.finditer(text):
        token = m.group()
        if token == "{":
            stack.append(m.start())
        elif token == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``) whose braces balance, else None.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``), escaped braces
    ``\\{``/``\\}`` do not count, and an unclosed box (a truncated completion) is skipped in
    favour of the previous closed one. Linear time, whatever the input.
    """
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    pairs = _matching_braces(text)
    for m in reversed(list(_BOX_START.finditer(text))):
        open_at = m.end() - 1
        if open_at in pairs:
            return text[open_at + 1 : pairs[open_at]]
    return None


def _has_math(parsed: Sequence[Any]) -> bool:
    return any(isinstance(p, (Basic, MatrixBase)) for p in parsed)


@functools.lru_cache(maxsize=65536)
def parse_gold(answer: str) -> tuple[Any, ...] | None:
    """Parse a gold answer with math-verify; None when it yields no math object.

    Plain strings ("12", "025", "\\frac{1}{2}", "x+1") are wrapped in ``$...$`` first: parsed
    bare, math-verify's expression extractor reads "2\\sqrt{3}" as 2 and misses "x+1". Answers
    that already hold ``$...$`` are parsed as they are, and one with a ``\\boxed{}`` is reduced
    to its last boxed content. Only a string fallback (e.g. for "{") counts as unparseable.
    Cached on the string; the result is a tuple so that the cached value cannot be mutated.
    """
    answer = answer.strip()
    boxed = extract_boxed(answer)
    if boxed is not None:
        candidates = [f"${boxed}$"]
    elif _UNESCAPED_DOLLAR.search(answer):
        candidates = [answer]
    else:
        candidates = [f"${answer}$", answer]
    for candidate in candidates:
        parsed = parse(
            candidate,
            extraction_config=_GOLD_CONFIG,
            extraction_mode="first_match",
            parsing_timeout=_timeout(PARSE_TIMEOUT_S),
        )
        if _has_math(parsed):
            return tuple(parsed)
    return None


def parse_completion(completion: str) -> list[Any]:
    """What math-verify reads as the completion's final answer ([] when there is none).

    The last closed ``\\boxed{}``/``\\fbox{}`` wins (math-verify alone would join all boxed
    answers into a set); without one, the tail of the completion is searched for an announced
    answer ("final answer is $...$", "answer: ..."). Raises GradingTimeout on timeout.
    """
    boxed = extract_boxed(completion)
    if boxed is not None and not boxed.strip():
        return []
    text = f"\\boxed{{{boxed}}}" if boxed is not None else completion[-_NO_ANCHOR_TAIL:]
    try:
        return parse(
            text,
            extraction_config=_COMPLETION_CONFIG,
            extraction_mode="first_match",
            parsing_timeout=_timeout(PARSE_TIMEOUT_S),
            raise_on_error=True,
        )
    except TimeoutException as e:
        raise GradingTimeout("math-verify timed out parsing a completion") from e


def is_correct(completion: str, gold_parsed: Sequence[Any]) -> bool:
    """True iff math-verify finds the completion's final answer equivalent to the gold one.

    ``gold_parsed`` comes from :func:`parse_gold`. Comparison errors count as "not equivalent"
    (as in math-verify); a timeout raises GradingTimeout unless another comparison succeeded.
    """
    predicted = parse_completion(completion)
    timed_out = False
    for gold in gold_parsed:
        for pred in predicted:
            try:
                if verify(
                    gold, pred, timeout_seconds=_timeout(VERIFY_TIMEOUT_S), raise_on_error=True
                ):
                    return True
            except TimeoutException:
                timed_out = True
            except Exception:
                pass
    if timed_out:
        raise GradingTimeout("math-verify timed out comparing answers")
    return False


@functools.lru_cache(maxsize=65536)
def grade(completion: str, gold: str) -> bool | None:
    """Is ``completion`` correct for the gold answer string ``gold``? None iff ``gold`` is unparseable.

    Memoised on (completion, gold) so that accuracy, cosine and efficiency, scoring the same
    group, run math-verify once per completion. Raises GradingTimeout (or a math-verify error)
    like :func:`is_correct`; a raise is not cached, so the next reward retries it.
    """
    gold_parsed = parse_gold(gold)
    if gold_parsed is None:
        return None
    return is_correct(completion, gold_parsed)


def grade_sample(sample: Sample, truncated_is_wrong: bool = False) -> bool | None:
    """Correctness of one sample against ``sample.example["answer"]``, or None if unscorable.

    None when the gold answer cannot be parsed (logged) or grading raises or times out.
    With ``truncated_is_wrong``, a completion without EOS is False without being graded.
    A missing ``"answer"`` key raises KeyError (a data error, counted by score_group).
    """
    gold = str(sample.example["answer"])
    if parse_gold(gold) is None:
        log.warning("unparseable gold answer %r, sample not scored", gold)
        return None
    if truncated_is_wrong and not sample.finished:
        return False
    try:
        return grade(sample.completion, gold)
    except Exception as e:  # a timeout, or a math-verify failure
        log.debug("grading failed: %r", e)
        return None
