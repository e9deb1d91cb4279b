"""The ``dedup`` stage: drop repeated problems, keeping the first occurrence.

Exact duplicates are equal after :func:`~frugalrl.curate.similarity.normalise_text`;
near-duplicates share at least ``threshold`` of their word shingles (Jaccard), found with
MinHash LSH. A repeated problem wastes a training step on what the model has seen, and two
copies with different gold answers make the reward contradict itself.
"""

from __future__ import annotations

from frugalrl.curate.config import DedupConfig
from frugalrl.curate.similarity import NearIndex, minhashes, normalise_text, shingles
from frugalrl.curate.stage import (
    CURATION_STAGES,
    Dropped,
    Row,
    StageContext,
    StageResult,
    excerpt,
    origin,
)


@CURATION_STAGES.register("dedup")
def dedup(rows: list[Row], config: DedupConfig, context: StageContext) -> StageResult:
    """First occurrences kept; later exact and near copies dropped, naming the kept one."""
    result = StageResult(kept=[])
    first_seen: dict[str, int] = {}
    unique: list[int] = []  # indices of rows that are no exact copy
    for i, row in enumerate(rows):
        key = normalise_text(row["problem"])
        if key in first_seen:
            kept = rows[first_seen[key]]
            result.dropped.append(Dropped(row, "exact duplicate", f"same as {origin(kept)}"))
        else:
            first_seen[key] = i
            unique.append(i)
    if not config.near:
        result.kept = [rows[i] for i in unique]
        return result
    sets = [shingles(rows[i]["problem"], config.shingle_size) for i in unique]
    index = NearIndex(config.threshold, config.num_perm)
    for i, s, signature in zip(unique, sets, minhashes(sets, config.num_perm), strict=True):
        match = index.best_match(s, signature)
        if match is None:
            index.add(str(i), s, signature)
            result.kept.append(rows[i])
            continue
        kept = rows[int(match[0])]
        detail = f"Jaccard {match[1]:.2f} with {origin(kept)}: {excerpt(kept['problem'])}"
        result.dropped.append(Dropped(rows[i], "near duplicate", detail))
    return result
