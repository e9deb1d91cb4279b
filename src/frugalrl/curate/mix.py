"""The ``mix`` stage: the final set as named parts drawn from the rows, e.g. open-rs's
3,000 + 3,000 hard + 1,000 easy problems.

Each part takes a seeded random draw from the rows it matches that no earlier part took;
what no part takes is dropped ("not in the mix"). With ``total`` the parts' sizes are
``total × weight / Σ weights`` (largest remainders, so they add up to ``total``). With
``sets`` and ``select`` the parts are those of the selected set: one config describes several
sets that differ only in composition (one curation run builds one of them).
"""

from __future__ import annotations

import math
import random
from typing import Any

from frugalrl.curate.config import MixConfig, MixSourceConfig
from frugalrl.curate.stage import CURATION_STAGES, Dropped, Row, StageContext, StageResult
from frugalrl.errors import UserError


def matches(row: Row, part: MixSourceConfig) -> bool:
    """Whether ``row`` belongs to ``part``: its load source and every ``where`` field agree."""
    if part.source is not None and row.get("_source") != part.source:
        return False
    for key, wanted in part.where.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if row.get(key) not in allowed:
            return False
    return True


def selected_parts(config: MixConfig) -> list[MixSourceConfig]:
    """The parts to draw: ``sources``, or the set named by ``select``."""
    if config.select is None:
        if not config.sources:
            hint = f" (or pick one of mix.sets with mix.select: {sorted(config.sets)})"
            raise UserError(
                "mix.sources is empty: name at least one part (or drop the mix stage)"
                + (hint if config.sets else "")
            )
        return config.sources
    if config.select not in config.sets:
        raise UserError(
            f"mix.select '{config.select}' is not one of mix.sets {sorted(config.sets)}"
        )
    if config.sources:
        raise UserError("mix: give either mix.sources or mix.select (a set of mix.sets), not both")
    if not config.sets[config.select]:
        raise UserError(f"mix.sets.{config.select} is empty: name at least one part")
    return config.sets[config.select]


def part_sizes(config: MixConfig) -> list[int | None]:
    """Rows wanted per part (None: all that match)."""
    parts = selected_parts(config)
    if config.total is None:
        if any(p.weight is not None for p in parts):
            raise UserError("mix: a part has a weight but mix.total is not set")
        return [p.count for p in parts]
    if any(p.weight is None or p.count is not None for p in parts):
        raise UserError("mix: with mix.total every part needs a weight (and no count)")
    weights = [float(p.weight) for p in parts]  # type: ignore[arg-type]
    exact = [config.total * w / sum(weights) for w in weights]
    sizes = [math.floor(x) for x in exact]
    by_remainder = sorted(range(len(exact)), key=lambda i: sizes[i] - exact[i])
    for i in by_remainder[: config.total - sum(sizes)]:
        sizes[i] += 1
    return list(sizes)


@CURATION_STAGES.register("mix")
def mix(rows: list[Row], config: MixConfig, context: StageContext) -> StageResult:
    """The drawn parts (shuffled, unless ``shuffle`` is off), each row tagged ``mix_source``."""
    parts_config = selected_parts(config)
    rng = random.Random(config.seed)
    taken: set[int] = set()
    chosen: list[Row] = []
    parts: dict[str, dict[str, Any]] = {}
    for part, wanted in zip(parts_config, part_sizes(config), strict=True):
        pool = [i for i, row in enumerate(rows) if i not in taken and matches(row, part)]
        n = len(pool) if wanted is None else min(wanted, len(pool))
        picked = sorted(rng.sample(pool, n))
        taken.update(picked)
        chosen += [{**rows[i], "mix_source": part.name} for i in picked]
        parts[part.name] = {"wanted": wanted, "available": len(pool), "taken": n}
    if config.shuffle:
        rng.shuffle(chosen)
    dropped = [Dropped(r, "not in the mix") for i, r in enumerate(rows) if i not in taken]
    short = {
        name: p for name, p in parts.items() if p["wanted"] is not None and p["taken"] < p["wanted"]
    }
    stats: dict[str, Any] = {"parts": parts, "short parts": sorted(short)}
    if config.select is not None:
        stats = {"set": config.select, **stats}
    return StageResult(chosen, dropped, stats=stats)
