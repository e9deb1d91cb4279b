"""The answer grader on hand-written edge cases: percentages, units, thousands separators, ±.

Each case is (gold answer, boxed prediction, expected verdict). The accepting cases are forms
that the common math harnesses (Qwen2.5-Math's ``strip_string``, the Minerva/lighteval math
normaliser) also accept; the rejecting cases next to them check that the normalisation never
turns a wrong answer into a right one.
"""

from __future__ import annotations

import time

import pytest

from frugalrl.rewards.answer import grade, normalize_answer_text


def verdict(gold: str, prediction: str) -> bool | None:
    """The grader's verdict on ``prediction``, boxed at the end of a completion."""
    return grade(rf"So the answer is \boxed{{{prediction}}}.", gold)


def cases(*rows: tuple[str, str, bool]) -> list:
    """Parametrize rows with readable ids: ``gold | prediction``."""
    return [pytest.param(*row, id=f"{row[0]} | {row[1]}") for row in rows]


# --- percentages -----------------------------------------------------------------------------
# math-verify parses "35\%" as 35 * (1/100) and accepts it for gold 35 only when both are
# integers: "35.0\%" was compared as 0.35 and graded wrong. The gold says what is asked:
# - a bare-number gold accepts a whole-number percentage of it, however written;
# - a percentage gold accepts its number with or without the sign, or as a fraction;
# - a bare-number gold does NOT accept a fraction of 100 (Qwen2.5-Math's harness does: it also
#   tries gold/100 and gold*100), nor a non-whole percentage: gold 0.5 may be a probability, and
#   "0.5\%" is then wrong. So "35.5\%" against gold 35.5 stays rejected, as before.


@pytest.mark.parametrize(
    ("gold", "prediction", "correct"),
    cases(
        ("35", r"35\%", True),
        ("35", r"35.0\%", True),
        ("35", r"35.00\%", True),
        ("35", r"35 \%", True),
        ("35", "35 %", True),
        ("35", r"35\,\%", True),
        ("35", "35 percent", True),
        ("35", r"35\text{ percent}", True),
        ("35", r"35 \text{percent}", True),
        ("35", r"35\text{\%}", True),
        ("35", r"35.1\%", False),
        ("35", r"34.9\%", False),
        ("35", r"3.5\%", False),
        ("35", r"350\%", False),
        ("35", r"0.35\%", False),
        ("35", "0.35", False),
        ("35", "3500", False),
        ("0.5", r"50\%", True),  # 50% is 0.5 (math-verify's own rule)
        ("0.5", r"0.5\%", False),
        ("35.5", r"35.5\%", False),  # not whole: see above
        (r"35\%", "35", True),
        (r"35\%", "35.0", True),
        (r"35\%", "0.35", True),
        (r"35\%", r"35.0\%", True),
        (r"62.5\%", "62.5", True),
        ("62.5%", "0.625", True),
        (r"35\%", "36", False),
        (r"35\%", "0.36", False),
        (r"35\%", "3.5", False),
        (r"62.5\%", "6.25", False),
        (r"62.5\%", "625", False),
    ),
)
def test_percentages(gold, prediction, correct):
    assert verdict(gold, prediction) is correct


# --- units -----------------------------------------------------------------------------------
# A unit after the number is dropped, whether in \text{}, \mathrm{} or spelled out ("12
# dollars" used to parse as the product 12*a*do*l*l*r*s). Spelled-out units come from a fixed
# list, so a trailing variable ("5 y") is never taken for one. The grader compares numbers, not
# dimensions: "5 \text{ cm}^2" for gold "5 cm" is accepted (math-verify drops the unit with its
# exponent), and so is any unit for a plain-number gold. Degrees are dropped, not converted:
# "30^\circ" is 30, never pi/6.


@pytest.mark.parametrize(
    ("gold", "prediction", "correct"),
    cases(
        ("5", r"5 \text{ cm}", True),
        ("5", r"5\,\mathrm{m}", True),
        ("5", r"5\,\text{cm}", True),
        ("5", "5 cm", True),
        ("5", "5 centimeters", True),
        ("5", "5 square centimeters", True),
        ("5", "5 miles per hour", True),
        ("5", "5 days", True),
        ("5", r"5 \text{ cm}^2", True),
        ("5 cm", r"5 \text{ cm}^2", True),
        ("5 cm", "5", True),
        (r"5\text{ cm}", "5", True),
        ("12", "12 dollars", True),
        ("12", "12 Dollars", True),
        ("12", r"12 \text{ dollars}", True),
        ("12", r"\$12", True),
        ("12", r"\$12.00", True),
        ("12 dollars", "12", True),
        ("30", r"30^\circ", True),
        ("30", r"30^{\circ}", True),
        ("30", "30°", True),
        ("30", "30 degrees", True),
        ("30", r"30^\circ C", True),
        ("30", r"30^{\circ}\text{C}", True),
        (r"30^\circ", "30", True),
        ("5", r"6 \text{ cm}", False),
        ("5", "50 centimeters", False),
        ("12", "13 dollars", False),
        ("12", r"\$12.50", False),
        ("12", "1.2 dollars", False),
        ("30", r"31^\circ", False),
        ("30", "30°30", False),
        (r"\frac{\pi}{6}", r"30^\circ", False),
        ("5", "5 y", False),  # a variable, not a unit
        ("5", "5x", False),
        ("5", "5 dollars x", False),  # a unit word inside, not at the end
    ),
)
def test_units(gold, prediction, correct):
    assert verdict(gold, prediction) is correct


# --- thousands separators --------------------------------------------------------------------
# "1,000", "1{,}000", "1\,000" and "1 000" are 1000 (a LaTeX or plain space between digit
# groups used to parse as a product: "1\,000" was 1*000 = 0, so it graded correct for gold 0).
# A comma that does not group thousands ("1,2", "10,00") keeps a list a list, and parentheses
# keep a tuple a tuple: "(1,000)" is the pair (1, 0), not the number 1000, as a boxed "(1,2)"
# is a pair; the parentheses are the writer's own statement that it is a tuple.


@pytest.mark.parametrize(
    ("gold", "prediction", "correct"),
    cases(
        ("1000", "1,000", True),
        ("1000", "1{,}000", True),
        ("1000", r"1\,000", True),
        ("1000", r"1\!,\!000", True),
        ("1000", "1 000", True),
        ("1000", r"1\ 000", True),
        ("1000000", "1,000,000", True),
        ("1000000", r"1\,000\,000", True),
        ("1234.5", "1,234.5", True),
        ("1234.5", r"1\,234.5", True),
        ("1000", r"\$1,000", True),
        ("1000", "1,000 dollars", True),
        ("1,000", "1000", True),
        (r"1\,000", "1000", True),
        ("12", "1,2", False),
        ("1,2", "12", False),
        ("1,2", "1,2", True),
        ("1,2", "2, 1", True),
        ("(1,2)", "(1,2)", True),
        ("(1,2)", "12", False),
        ("1000", "(1,000)", False),
        ("1000", "10,00", False),
        ("1000", "1,000.5", False),
        ("1000", "10 100", False),  # was 10*100 = 1000
        ("0", r"1\,000", False),  # was 1*000 = 0
        ("0", "1 000", False),
        ("1001", "1 000", False),
    ),
)
def test_thousands_separators(gold, prediction, correct):
    assert verdict(gold, prediction) is correct


# --- a lone ± ------------------------------------------------------------------------------
# "a \pm b" is the two values a+b and a-b. math-verify reads a top-level \pm itself but not one
# inside a fraction (how a model would write HMMT February 2025 problem 10's two roots); the
# grader then expands it. Both values are needed, and \pmod is no \pm.

ROOTS = r"\frac{-1+\sqrt{17}}{2}, \frac{-1-\sqrt{17}}{2}"


@pytest.mark.parametrize(
    ("gold", "prediction", "correct"),
    cases(
        (ROOTS, r"\frac{-1\pm\sqrt{17}}{2}", True),
        (ROOTS, r"\frac{-1 \pm \sqrt{17}}{2}", True),
        (ROOTS, r"\frac{1\pm\sqrt{17}}{2}", False),
        (ROOTS, r"\frac{-1\pm\sqrt{15}}{2}", False),
        (r"\frac{-1+\sqrt{17}}{2}", r"\frac{-1\pm\sqrt{17}}{2}", False),
        (r"\frac{-1\pm\sqrt{17}}{2}", ROOTS, True),
        (r"\frac{-1\pm\sqrt{17}}{2}", r"\frac{-1+\sqrt{17}}{2}", False),
        (r"1 \pm \sqrt{19}", r"1+\sqrt{19}, 1-\sqrt{19}", True),
        (r"1 \pm \sqrt{19}", r"1+\sqrt{19}", False),
    ),
)
def test_plus_minus(gold, prediction, correct):
    assert verdict(gold, prediction) is correct


def test_pmod_is_not_plus_minus():
    assert verdict(r"p \equiv 1 \pmod{4}", "1") is None  # still an unparseable gold


# --- the normaliser itself -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("12 dollars", "12"),
        (r"\frac{1}{2} meters", r"\frac{1}{2}"),
        ("7 cubic feet.", "7"),
        (r"1\,000\,000", "1000000"),
        ("-1 234 567.5", "-1234567.5"),
        ("30°", r"30^{\circ}"),
        (r"30^\circ F", r"30^\circ"),
        (r"35\,\%", r"35\%"),
        # unchanged: math-verify's business, or not a unit / grouping at all
        (r"35\%", r"35\%"),
        (r"5 \text{ cm}", r"5 \text{ cm}"),
        ("1,000", "1,000"),
        ("(1,000)", "(1,000)"),
        ("1 2", "1 2"),
        ("x + 1 000", "x + 1 000"),
        ("5 y", "5 y"),
        ("yards", "yards"),
        (r"\text{(C)}", r"\text{(C)}"),
        (r"\text{Evelyn}", r"\text{Evelyn}"),
    ],
)
def test_normalize_answer_text(text, normalised):
    assert normalize_answer_text(text) == normalised


def test_normaliser_is_linear_on_long_inputs():
    start = time.monotonic()
    for text in (
        "1" + " " * 100_000 + "x",
        "1" + " " * 100_000 + r"\%",
        "1" + r"\," * 50_000,
        "12 " * 50_000 + "dollars x",
        "°" * 100_000,
        r"\pm" * 50_000,
    ):
        normalize_answer_text(text)
    assert time.monotonic() - start < 2
