"""Format: does the completion follow the expected layout?"""

from __future__ import annotations

import re
from collections.abc import Sequence

from frugalrl.errors import UserError
from frugalrl.rewards.answer import extract_boxed
from frugalrl.rewards.registry import REWARDS
from frugalrl.sample import Sample

_OPEN_R1 = re.compile(r"^<think>\n.*?\n</think>\n<answer>\n.*?\n</answer>$", re.DOTALL)
_R1_HEAD, _R1_SEP, _R1_TAIL = "<think>\n", "\n</think>\n<answer>\n", "\n</answer>"


def _open_rs(text: str) -> bool:
    # No <think> required: it may sit in the prompt (open-rs: "<think> tag is in the system prompt").
    return text.count("\n</think>\n") == 1


def _open_r1(text: str) -> bool:
    # What _OPEN_R1.fullmatch says, in linear time: the regex backtracks over every separator,
    # quadratic on a completion that repeats it (a 150 kB one took 5 s).
    if not (text.startswith(_R1_HEAD) and text.endswith(_R1_TAIL)):
        return False
    sep = text.find(_R1_SEP, len(_R1_HEAD))
    return sep != -1 and sep + len(_R1_SEP) <= len(text) - len(_R1_TAIL)


def _boxed(text: str) -> bool:
    boxed = extract_boxed(text)
    return boxed is not None and boxed.strip() != ""


SCHEMAS = {"open-rs": _open_rs, "open-r1": _open_r1, "boxed": _boxed}


@REWARDS.register("format")
def format(samples: Sequence[Sample], schema: str = "open-rs") -> list[float | None]:
    """r = 1 if the completion matches ``schema``, else 0.

    - ``open-rs``: ``"\\n</think>\\n"`` occurs exactly once (``<think>`` and ``<answer>`` are not
      checked; the opening tag may be part of the prompt).
    - ``open-r1``: the whole completion matches
      ``^<think>\\n.*?\\n</think>\\n<answer>\\n.*?\\n</answer>$`` (DOTALL).
    - ``boxed``: a ``\\boxed{...}`` (or ``\\fbox{...}``) with balanced braces and non-empty content.
    """
    try:
        check = SCHEMAS[schema]
    except KeyError:
        raise UserError(
            f"unknown format schema '{schema}'; valid choices: {', '.join(SCHEMAS)}"
        ) from None
    return [1.0 if check(s.completion) else 0.0 for s in samples]
