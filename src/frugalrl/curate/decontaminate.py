"""The ``decontaminate`` stage: drop training problems that overlap an evaluation benchmark.

Three checks, each against every configured benchmark: the same normalised text; any shared
run of ``ngram`` tokens (13, as GPT-3 and Tülu 3 decontaminate; a 13-token match between two
math problems is almost never chance); and near-duplication (Jaccard of word shingles, as
dedup). Training on a test problem inflates the benchmark score it is measured with.
"""

from __future__ import annotations

from dataclasses import dataclass

from frugalrl.curate.config import DecontaminateConfig
from frugalrl.curate.similarity import (
    NearIndex,
    build_index,
    minhashes,
    ngrams,
    normalise_text,
    shingles,
    words,
)
from frugalrl.curate.stage import CURATION_STAGES, Dropped, Row, StageContext, StageResult, excerpt
from frugalrl.eval.benchmarks import load_benchmark


@dataclass
class BenchmarkIndex:
    """Every benchmark problem, indexed for the three checks; keys are ``bench/id``."""

    problems: dict[str, str]  # key -> problem text
    exact: dict[str, str]  # normalised text -> key
    ngrams: dict[str, str]  # n-token sequence -> first key holding it
    near: NearIndex | None


def build_benchmark_index(config: DecontaminateConfig) -> BenchmarkIndex:
    problems: dict[str, str] = {}
    for spec in config.benchmarks:
        bench = load_benchmark(spec)
        for p in bench.problems:
            problems[f"{bench.name}/{p['id']}"] = p["problem"]
    exact: dict[str, str] = {}
    grams: dict[str, str] = {}
    for key, text in problems.items():
        exact.setdefault(normalise_text(text), key)
        for gram in ngrams(words(text), config.ngram):
            grams.setdefault(gram, key)
    near = None
    if config.near:
        sets = [shingles(t, config.shingle_size) for t in problems.values()]
        near = build_index(problems, sets, config.threshold, config.num_perm)
    return BenchmarkIndex(problems, exact, grams, near)


def find_overlap(
    problem: str, index: BenchmarkIndex, config: DecontaminateConfig, signature=None
) -> tuple[str, str, str] | None:
    """``(benchmark key, check, evidence)`` for the first check that fires, else None."""
    key = index.exact.get(normalise_text(problem))
    if key is not None:
        return key, "exact", "same text"
    for gram in sorted(ngrams(words(problem), config.ngram)):
        if gram in index.ngrams:
            return index.ngrams[gram], f"{config.ngram}-gram", f"shares '{gram}'"
    if index.near is not None and signature is not None:
        match = index.near.best_match(shingles(problem, config.shingle_size), signature)
        if match is not None:
            return match[0], "near duplicate", f"Jaccard {match[1]:.2f}"
    return None


@CURATION_STAGES.register("decontaminate")
def decontaminate(
    rows: list[Row], config: DecontaminateConfig, context: StageContext
) -> StageResult:
    """Rows overlapping no benchmark; dropped rows' reason names the benchmark."""
    index = build_benchmark_index(config)
    signatures = [None] * len(rows)
    if config.near:
        sets = [shingles(r["problem"], config.shingle_size) for r in rows]
        signatures = minhashes(sets, config.num_perm)
    result = StageResult(kept=[])
    by_check: dict[str, int] = {}
    for row, signature in zip(rows, signatures, strict=True):
        hit = find_overlap(row["problem"], index, config, signature)
        if hit is None:
            result.kept.append(row)
            continue
        key, check, evidence = hit
        bench = key.split("/", 1)[0]
        by_check[check] = by_check.get(check, 0) + 1
        detail = f"{check} ({evidence}) with {key}: {excerpt(index.problems[key])}"
        result.dropped.append(Dropped(row, f"in {bench}", detail))
    result.stats = {"benchmark problems": len(index.problems), "overlaps by check": by_check}
    return result
