"""Language drift: penalise completions whose letters leave the expected script."""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample

# Script -> prefixes of unicodedata.name() of its letters.
SCRIPTS: dict[str, tuple[str, ...]] = {
    "latin": ("LATIN", "FULLWIDTH LATIN"),
    "cyrillic": ("CYRILLIC",),
    "greek": ("GREEK",),
    "han": ("CJK UNIFIED IDEOGRAPH", "CJK COMPATIBILITY IDEOGRAPH"),
    "arabic": ("ARABIC",),
    "devanagari": ("DEVANAGARI",),
    "hangul": ("HANGUL",),
    "hebrew": ("HEBREW",),
}

# LaTeX math ($$..$$, $..$, \(..\), \[..\]) holds variables, not language; command names
# (\frac, \boxed) and format tags (<think>) are markup. All are removed before counting.
# A math span is at most 2000 characters: unbounded, every unclosed "\(" of a degenerate
# completion would scan to the end (quadratic time).
_MARKUP = re.compile(
    r"\$\$.{0,2000}?\$\$|(?<!\\)\$.{0,2000}?(?<!\\)\$|\\\(.{0,2000}?\\\)|\\\[.{0,2000}?\\\]"
    r"|\\[A-Za-z]+|</?[A-Za-z_]+>",
    re.DOTALL,
)
# Letters that are maths, not language, even outside $...$: Greek letters (π, θ; counted only
# when Greek is the expected script), the Mathematical Alphanumeric Symbols block (𝑥) and the
# Letterlike Symbols block (ℝ, ℓ, ℏ), and the micro sign µ.
_MATH_NAMES = ("MATHEMATICAL", "MICRO SIGN")
_LETTERLIKE = range(0x2100, 0x2150)


def foreign_share(text: str, script: str = "latin") -> float:
    """Share of the letters of ``text`` (markup and maths removed) that are not in ``script``."""
    prefixes = SCRIPTS[script]
    letters = foreign = 0
    for ch in _MARKUP.sub(" ", text):
        if ch.isascii():  # fast path: ASCII letters are Latin
            if ch.isalpha():
                letters += 1
                foreign += script != "latin"
            continue
        if not unicodedata.category(ch).startswith("L") or ord(ch) in _LETTERLIKE:
            continue
        name = unicodedata.name(ch, "")
        if name.startswith(_MATH_NAMES) or (script != "greek" and name.startswith("GREEK")):
            continue
        letters += 1
        foreign += not name.startswith(prefixes)
    return foreign / letters if letters else 0.0


@REWARDS.register("language")
def language(
    samples: Sequence[Sample], script: str = "latin", threshold: float = 0.05
) -> list[float | None]:
    """r = −1.0 if the share of letters not in ``script`` exceeds ``threshold``, else 0.0.

    Letters are characters of Unicode category L*, assigned to a script by the prefix of their
    Unicode name (``script`` = latin (default), cyrillic, greek, han, arabic, devanagari,
    hangul, hebrew). Not counted: text inside LaTeX math (``$...$``, ``$$...$$``, ``\\(...\\)``,
    ``\\[...\\]``), LaTeX command names, ``<tag>``s, Greek letters (unless ``script="greek"``)
    and mathematical letter symbols (so drift into Greek goes unseen unless Greek is the
    expected script). No letters → 0.0. ``threshold`` defaults to 0.05, so a
    few foreign words are tolerated. open-rs had no such reward: it only asked for English in
    the system prompt, and its runs drifted into other languages after ~150 steps.
    """
    if script not in SCRIPTS:
        raise UserError(
            f"reward 'language': unknown script '{script}'; valid choices: {', '.join(SCRIPTS)}"
        )
    if not 0 <= threshold < 1:
        raise UserError(f"reward 'language': threshold must be in [0, 1), got {threshold}")
    return [-1.0 if foreign_share(s.completion, script) > threshold else 0.0 for s in samples]


def drift_fraction(values: Sequence[float | None]) -> float:
    """Share of the scored ``language`` values (None and NaN skipped) that are < 0; NaN if none.

    Logged by the loop as ``language/drift_fraction``.
    """
    scored = [v for v in values if v is not None and not math.isnan(v)]
    return sum(v < 0 for v in scored) / len(scored) if scored else math.nan


# Extra metrics a reward publishes: the loop logs ``fn.batch_metrics(values)`` for any reward
# that defines it, so drift is tracked by name without the loop knowing this reward.
language.batch_metrics = lambda values: {"language/drift_fraction": drift_fraction(values)}
