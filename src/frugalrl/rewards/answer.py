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
from sympy import Basic, MatrixBase, Mul, Number, Rational, UnevaluatedExpr

from frugalrl.errors import UserError
from frugalrl.sample import Sample

log = logging.getLogger(__name__)

PARSE_TIMEOUT_S = 2  # seconds per math-verify parse (signal.alarm takes whole seconds)
VERIFY_TIMEOUT_S = 2  # seconds per math-verify comparison

# As open-rs: boxed answers first, no LaTeX extraction without an anchor ("final answer is ...").
# Expressions (plain "12") are also only taken after an anchor such as "answer:", so a completion
# without a boxed or announced answer is wrong, not graded on whatever number comes last.
# Unlike open-rs, malformed_operators is on, as it is for gold answers (_GOLD_CONFIG): without
# it LaTeX shorthand such as \frac43 or 11\sqrt2 parses to no math object, so a completion that
# copies such a gold answer exactly was graded wrong (8 of the MATH-500 reference solutions).
_ANCHORED_CONFIG = (
    LatexExtractionConfig(
        normalization_config=NormalizationConfig(
            nits=False,
            malformed_operators=True,
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
# math-verify's own lenient defaults (the lighteval/open-rs evaluation): boxed first, then any
# LaTeX, then any plain expression, anchored or not.
_LENIENT_CONFIG = (LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig())
_GOLD_CONFIG = (LatexExtractionConfig(), ExprExtractionConfig())

EXTRACTIONS: dict[str, tuple | None] = {
    # the last closed \boxed{} only: a completion without one has no answer (strictest)
    "boxed": None,
    # the last \boxed{}, else a "#### 3" line, else an announced answer ("the final answer is $3$")
    "boxed_or_anchored": _ANCHORED_CONFIG,
    # the last \boxed{}, else a "#### 3" line, else any LaTeX, else any expression (for models
    # that do not box)
    "boxed_latex_expr": _LENIENT_CONFIG,
}
"""How a completion's final answer is found when it has no closed ``\\boxed{}``, by name."""
DEFAULT_EXTRACTION = "boxed_or_anchored"


def check_extraction(name: str) -> str:
    """``name`` if it is a known extraction, else a UserError listing the valid ones."""
    if name not in EXTRACTIONS:
        raise UserError(
            f"unknown answer extraction {name!r}; choose from: {', '.join(EXTRACTIONS)}"
        )
    return name


_BOX_START = re.compile(r"\\(?:boxed|fbox|framebox)\s*\{")
_BRACE_TOKEN = re.compile(r"\\\\|\\[{}]|[{}]")  # "\\" and escaped braces are skipped below
_UNESCAPED_DOLLAR = re.compile(r"(?<!\\)\$")
_NO_ANCHOR_TAIL = 4000  # without a boxed answer, only the end of a completion is searched
# GSM8K's answer format, "#### 1,234" on a line of its own (its reference solutions, and models
# tuned or prompted on them, end so). Only a bare number counts (commas as thousands separators
# only): a Markdown heading such as "#### Step 2" is not an answer, nor is "#### 1,2".
_HASH_ANSWER = re.compile(
    r"^####[ \t]*(-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?)[ \t]*$", re.MULTILINE
)


# --- answer-text normalisation (before math-verify) -------------------------------------------
# Forms the common math harnesses normalise away (Qwen2.5-Math's strip_string, the Minerva /
# lighteval math normaliser) that math-verify misreads. Each rule fires only where the text can
# mean one thing, so that no wrong answer becomes a right one (tests/test_grader_edge_cases.py
# pins the wrong answers that must stay wrong next to the forms that are now accepted).
# What math-verify already handles (trailing \text{...} units, "cm", "\$", "35\%", "35 percent",
# "1,000" and "1{,}000" as one number, "1,2" as a list, "^\circ") is left to it.

# A digit group of three after a LaTeX space ("1\,000", "1\ 000", SI style): read as one number.
# math-verify reads it as a product (1*000 = 0), so "0" would grade correct against "1\,000".
_SPACED_THOUSANDS = re.compile(r"(?<![\d.])\d{1,3}(?:(?:\\,|\\ )\d{3})+(?![\d])")
_LATEX_SPACE = re.compile(r"\\[, ]")
# The same with plain spaces ("1 000"), only when that number is the whole answer: inside an
# expression a space may separate two factors or two list items.
_PLAIN_SPACED_NUMBER = re.compile(r"^(-?\d{1,3})((?: \d{3})+)(\.\d+)?$")
# Spelled-out units math-verify's own unit list lacks: without this "12 dollars" parses to the
# product 12*a*do*l*l*r*s. Only after a number (or a closing brace), only at the very end, only
# these words (plural, "square"/"cubic" and a "per <unit>" tail allowed): a trailing variable
# such as "5 x" is never taken for a unit.
_UNIT_WORD = (
    r"(?:(?:dollar|euro|yuan|yen|usd|centimet(?:er|re)|millimet(?:er|re)|kilomet(?:er|re)|gram"
    r"|kilogram|ounce|tonne|ton|millilit(?:er|re)|week|radian|point|meter|metre|mile|yard"
    r"|second|minute|hour|day|year|person)s?|inch(?:es)?|foot|feet|people)"
)
_TRAILING_UNIT = re.compile(
    rf"(?<=[\d}}])\s*(?:(?:square|sq\.?|cubic|cu\.?)\s+)?{_UNIT_WORD}"
    rf"(?:\s*(?:per|/)\s*{_UNIT_WORD})?\s*\.?\s*$",
    re.IGNORECASE,
)
# LaTeX spacing between a number and its percent sign ("35\,\%"): math-verify cannot parse it.
_SPACE_BEFORE_PERCENT = re.compile(r"(?<=[\d}])(?:\s|~|\\[,;:! ])+(?=\\?%)")
# A Celsius/Fahrenheit letter after a degree mark at the end ("30^\circ C"): math-verify drops
# "^\circ" but reads the "C" as a variable (and a "°" as text: it becomes "^{\circ}" first).
_DEGREE_SCALE = re.compile(
    r"(\^\s*\{?\s*\\circ\s*\}?)\s*(?:\\text\{\s*[CF]\s*\}|\\mathrm\{\s*[CF]\s*\}|[CF])\s*$"
)
_PLUS_MINUS = re.compile(r"\\pm(?![a-zA-Z])|±")  # not the \pm of \pmod


def normalize_answer_text(text: str) -> str:
    """``text`` (a bare final answer, no ``$``) with the forms math-verify misreads rewritten.

    Grouped thousands ("1\\,000", "1 000"), spelled-out units ("12 dollars", "5 centimeters"),
    "°" and a degree scale ("30^\\circ C"), LaTeX space before "\\%". Percentages themselves
    are left as they are: math-verify parses them, and :func:`answers_match` compares them.
    Everything else is returned unchanged.
    """
    text = text.strip().replace("°", "^{\\circ}")
    text = _DEGREE_SCALE.sub(r"\1", text)
    text = _SPACE_BEFORE_PERCENT.sub("", text)
    unitless = _TRAILING_UNIT.sub("", text).rstrip()
    text = unitless or text
    text = _SPACED_THOUSANDS.sub(lambda m: _LATEX_SPACE.sub("", m.group()), text)
    plain = _PLAIN_SPACED_NUMBER.match(text)
    if plain:
        text = "".join(g or "" for g in plain.groups()).replace(" ", "")
    return text


def _expand_plus_minus(text: str) -> str | None:
    """``"a \\pm b"`` as the two-value list ``"a + b, a - b"``; None unless ``\\pm`` occurs once.

    math-verify reads a top-level ``\\pm`` itself but not one nested in a fraction
    ("\\frac{-1\\pm\\sqrt{17}}{2}", HMMT February 2025 problem 10's two roots); with two or
    more the sign pairing is ambiguous, so they are left alone.
    """
    signs = _PLUS_MINUS.findall(text)
    if len(signs) != 1:
        return None
    return f"{_PLUS_MINUS.sub('+', text)}, {_PLUS_MINUS.sub('-', text)}"


class GradingTimeout(Exception):
    """math-verify ran out of time (an ``Exception``, unlike math-verify's own BaseException)."""


def main_thread_timeout(seconds: int) -> int | None:
    """``seconds`` in the main thread; None (no limit) elsewhere, where signal.alarm cannot work."""
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
    """Content of the last ``\\boxed{...}`` (also ``\\fbox``, ``\\framebox``) whose braces
    balance, else None.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``), escaped braces
    ``\\{``/``\\}`` do not count, and an unclosed box (a truncated completion) is skipped in
    favour of the previous closed one. Linear time, whatever the input.
    """
    if "box" not in text:
        return None
    pairs = _matching_braces(text)
    for m in reversed(list(_BOX_START.finditer(text))):
        open_at = m.end() - 1
        if open_at in pairs:
            return text[open_at + 1 : pairs[open_at]]
    return None


def _has_math(parsed: Sequence[Any]) -> bool:
    return any(isinstance(p, (Basic, MatrixBase)) for p in parsed)


_WHOLE_DOLLAR_MATH = re.compile(r"^\$([^$]*)\$$")


def _gold_candidates(answer: str) -> list[tuple[str, tuple]]:
    """The texts (with extraction configs) :func:`parse_gold` tries in turn, normalised."""
    boxed = extract_boxed(answer)
    if boxed is not None:
        return [(f"${normalize_answer_text(boxed)}$", _GOLD_CONFIG)]
    if _UNESCAPED_DOLLAR.search(answer):
        whole = _WHOLE_DOLLAR_MATH.match(answer)  # one "$...$": its content is normalised
        return [(f"${normalize_answer_text(whole[1])}$" if whole else answer, _GOLD_CONFIG)]
    answer = normalize_answer_text(answer)
    if "\\" in answer:
        # LaTeX that math-verify cannot parse ("3 \\mid n") must not fall back to the plain
        # expression reader, which would pick a stray number out of it (3) as the gold value;
        # bare, it is read as LaTeX only (display math such as "\\[ 1979 \\]").
        return [(f"${answer}$", _GOLD_CONFIG), (answer, _GOLD_CONFIG[:1])]
    return [(f"${answer}$", _GOLD_CONFIG), (answer, _GOLD_CONFIG)]


@functools.lru_cache(maxsize=65536)
def parse_gold(answer: str) -> tuple[Any, ...] | None:
    """Parse a gold answer with math-verify; None when it yields no math object.

    Plain strings ("12", "025", "\\frac{1}{2}", "x+1") are wrapped in ``$...$`` first: parsed
    bare, math-verify's expression extractor reads "2\\sqrt{3}" as 2 and misses "x+1". Answers
    that already hold ``$...$`` are parsed as they are, and one with a ``\\boxed{}`` is reduced
    to its last boxed content; plain text without LaTeX commands is also tried bare. The text is
    normalised as a completion's is (:func:`normalize_answer_text`), and a lone nested ``\\pm``
    is read as two values as a last resort. Only a string fallback (e.g. for "{" or
    "3 \\mid n") counts as unparseable.
    Cached on the string; the result is a tuple so that the cached value cannot be mutated.
    """
    answer = answer.strip()
    candidates = _gold_candidates(answer)
    whole = _WHOLE_DOLLAR_MATH.match(candidates[0][0])
    expanded = _expand_plus_minus(whole[1]) if whole else None
    if expanded is not None:
        candidates.append((f"${expanded}$", _GOLD_CONFIG))
    for candidate, config in candidates:
        parsed = parse(
            candidate,
            extraction_config=config,
            extraction_mode="first_match",
            parsing_timeout=main_thread_timeout(PARSE_TIMEOUT_S),
        )
        if _has_math(parsed):
            return tuple(parsed)
    return None


def _final_answer_text(completion: str, extraction: str) -> str | None:
    """The completion's boxed answer, else its last ``#### N`` number (unless ``"boxed"``)."""
    boxed = extract_boxed(completion)
    if boxed is not None:  # "\\boxed{104.}": a period that ends the sentence is not the answer's
        return boxed.strip().removesuffix(".").rstrip()
    if EXTRACTIONS[extraction] is None:
        return None
    hashed = _HASH_ANSWER.findall(completion[-_NO_ANCHOR_TAIL:])
    return hashed[-1] if hashed else None


def _parse_boxed(answer: str) -> list[Any]:
    """math-verify's parse of a final answer, normalised (:func:`normalize_answer_text`).

    A lone ``\\pm`` it cannot read ("\\frac{-1\\pm\\sqrt{17}}{2}") is retried as two values.
    """
    answer = normalize_answer_text(answer)
    parsed = _parse_anchored(f"\\boxed{{{answer}}}", _ANCHORED_CONFIG)
    expanded = None if _has_math(parsed) else _expand_plus_minus(answer)
    if expanded is None:
        return parsed
    return _parse_anchored(f"\\boxed{{{expanded}}}", _ANCHORED_CONFIG)


def _parse_anchored(text: str, config: tuple) -> list[Any]:
    """math-verify's parse of ``text`` under ``config``; a timeout raises GradingTimeout."""
    try:
        return parse(
            text,
            extraction_config=config,
            extraction_mode="first_match",
            parsing_timeout=main_thread_timeout(PARSE_TIMEOUT_S),
            raise_on_error=True,
        )
    except TimeoutException as e:
        raise GradingTimeout("math-verify timed out parsing a completion") from e


def parse_completion(completion: str, extraction: str = DEFAULT_EXTRACTION) -> list[Any]:
    """What math-verify reads as the completion's final answer ([] when there is none).

    The last closed ``\\boxed{}``/``\\fbox{}`` wins (math-verify alone would join all boxed
    answers into a set); without one, unless ``extraction`` is ``"boxed"``, the number on the
    last ``#### N`` line (GSM8K's format) stands for a boxed answer. That answer text is
    normalised first (:func:`normalize_answer_text`). Failing both, ``extraction`` (see
    :data:`EXTRACTIONS`) says what else is searched, in the completion's tail, as math-verify
    reads it. Raises GradingTimeout on timeout.
    """
    fallback = EXTRACTIONS[check_extraction(extraction)]
    answer = _final_answer_text(completion, extraction)
    if answer is not None:
        return _parse_boxed(answer) if answer.strip() else []
    if fallback is None:
        return []
    return _parse_anchored(completion[-_NO_ANCHOR_TAIL:], fallback)


_PERCENT = UnevaluatedExpr(Rational(1, 100))


def _percent_value(expr: Any) -> Any | None:
    """``X`` when ``expr`` is math-verify's parse of a number percentage "X%", else None."""
    if isinstance(expr, Mul) and len(expr.args) == 2 and expr.args[1] == _PERCENT:
        return expr.args[0] if isinstance(expr.args[0], Number) else None
    return None


def _percent_as_number(gold: Any, pred: Any) -> tuple[Any, Any] | None:
    """The two numbers to compare when one side is "X%" and the other a bare number, or None.

    math-verify takes "35%" for gold 35 only when both are integers, and "35.0%" compares as
    0.35. The gold says what is asked: a percentage gold ("62.5\\%") accepts its bare number
    ("62.5"), while against a bare-number gold only a whole-number percentage counts
    ("35.0\\%" for 35, as "35\\%"): gold 0.5 may be a probability, for which "0.5\\%" is wrong.
    """
    gold_pct, pred_pct = _percent_value(gold), _percent_value(pred)
    if gold_pct is not None and pred_pct is None and isinstance(pred, Number):
        return gold_pct, pred
    if pred_pct is not None and gold_pct is None and isinstance(gold, Number):
        return (gold, pred_pct) if float(pred_pct).is_integer() else None
    return None


def _equal(gold: Any, pred: Any) -> bool:
    """math-verify's verdict, then the percentage reading (raises math-verify's errors)."""
    timeout = main_thread_timeout(VERIFY_TIMEOUT_S)
    if verify(gold, pred, timeout_seconds=timeout, raise_on_error=True):
        return True
    numbers = _percent_as_number(gold, pred)
    return numbers is not None and verify(*numbers, timeout_seconds=timeout, raise_on_error=True)


def answers_match(gold_parsed: Sequence[Any], predicted: Sequence[Any]) -> bool:
    """True iff math-verify finds a predicted answer equivalent to a gold one.

    Both come from math-verify's ``parse`` (:func:`parse_gold`, :func:`parse_completion`).
    A percentage also matches its bare number where :func:`_percent_as_number` allows.
    Comparison errors count as "not equivalent" (as in math-verify); a timeout raises
    GradingTimeout unless another comparison succeeded.
    """
    timed_out = False
    for gold in gold_parsed:
        for pred in predicted:
            try:
                if _equal(gold, pred):
                    return True
            except TimeoutException:
                timed_out = True
            except Exception:
                pass
    if timed_out:
        raise GradingTimeout("math-verify timed out comparing answers")
    return False


def is_correct(
    completion: str, gold_parsed: Sequence[Any], extraction: str = DEFAULT_EXTRACTION
) -> bool:
    """True iff math-verify finds the completion's final answer equivalent to the gold one."""
    return answers_match(gold_parsed, parse_completion(completion, extraction))


@functools.lru_cache(maxsize=65536)
def grade(completion: str, gold: str, extraction: str = DEFAULT_EXTRACTION) -> bool | None:
    """Is ``completion`` correct for the gold answer string ``gold``? None iff ``gold`` is unparseable.

    Memoised on (completion, gold) so that accuracy, cosine and efficiency, scoring the same
    group, run math-verify once per completion. Raises GradingTimeout (or a math-verify error)
    like :func:`is_correct`; a raise is not cached, so the next reward retries it.
    """
    gold_parsed = parse_gold(gold)
    if gold_parsed is None:
        return None
    return is_correct(completion, gold_parsed, extraction)


def grade_sample(
    sample: Sample, truncated_is_wrong: bool = False, extraction: str = DEFAULT_EXTRACTION
) -> bool | None:
    """Correctness of one sample against ``sample.example["answer"]``, or None if unscorable.

    None when the gold answer cannot be parsed (logged) or grading raises or times out.
    With ``truncated_is_wrong``, a completion without EOS is False without being graded.
    A missing ``"answer"`` key raises KeyError (a data error, counted by score_group); an
    unknown ``extraction`` raises UserError (a recipe error, stops the run).
    """
    check_extraction(extraction)
    gold = str(sample.example["answer"])
    if parse_gold(gold) is None:
        log.warning("unparseable gold answer %r, sample not scored", gold)
        return None
    if truncated_is_wrong and not sample.finished:
        return False
    try:
        return grade(sample.completion, gold, extraction)
    except Exception as e:  # a timeout, or a math-verify failure
        log.debug("grading failed: %r", e)
        return None
