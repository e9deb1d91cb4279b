"""What every curation stage is: a named function from rows to kept rows plus dropped rows.

A stage never raises on a bad row: it drops it with a short ``reason`` (what the summary
counts) and a ``detail`` (what the report shows), so one malformed line cannot end a run.
Rows are plain dicts with at least ``problem`` and ``answer``; keys starting with ``_`` are
bookkeeping (``_origin``: "file:line", ``_source``: the load source's name), left out of the
written dataset.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frugalrl.registry import Registry

Row = dict[str, Any]


@dataclass(frozen=True)
class Dropped:
    """A row a stage removed (or flagged but kept), why, and the evidence."""

    row: Row
    reason: str  # short and fixed per cause, e.g. "exact duplicate": counted in the summary
    detail: str = ""  # one line for this row, e.g. "same as open-rs-12 (open_rs.jsonl:13)"


@dataclass
class StageResult:
    kept: list[Row]
    dropped: list[Dropped] = field(default_factory=list)
    flagged: list[Dropped] = field(default_factory=list)  # kept, but listed in the report
    stats: dict[str, Any] = field(default_factory=dict)  # stage-specific numbers for the report

    def dropped_by_reason(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.dropped))

    def flagged_by_reason(self) -> dict[str, int]:
        return dict(Counter(d.reason for d in self.flagged))


@dataclass(frozen=True)
class StageContext:
    """What a stage may need besides its rows and its config section."""

    out_dir: Path
    progress: bool = True


Stage = Callable[[list[Row], Any, StageContext], StageResult]

CURATION_STAGES: Registry[Stage] = Registry("curation stage")
"""Stages by name; ``stages:`` in the config lists which run, each reading the section of the
same name."""


def origin(row: Row) -> str:
    """Where a row came from, for messages: its id and file:line when known."""
    where = row.get("_origin", "")
    rid = row.get("id")
    return (
        f"{rid} ({where})" if rid is not None and where else str(rid if rid is not None else where)
    )


def excerpt(text: str, width: int = 80) -> str:
    """``text`` on one line, cut to ``width`` characters."""
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"
