"""The ``difficulty`` stage: each problem's pass rate under a model, and the band to keep.

k completions per problem from the training rollout engine, graded as the accuracy reward
grades them; pass rate = correct / k. Problems the model always solves teach it nothing under
GRPO (every advantage is 0), nor do the ones it never solves; open-s1 dropped the problems
DeepSeek-R1-Distill-Qwen-1.5B always solved. Results are cached in a JSONL keyed by model,
problem, answer, k and sampling settings, written after each generate call, so a re-run (or
a run resumed after a crash) does not regenerate.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from frugalrl.curate.config import DifficultyConfig
from frugalrl.curate.stage import CURATION_STAGES, Dropped, Row, StageContext, StageResult
from frugalrl.errors import UserError
from frugalrl.rewards.answer import check_extraction, grade, parse_gold

CACHE_FILE = "difficulty_cache.jsonl"


def cache_key(row: Row, config: DifficultyConfig) -> str:
    """Hash of everything a pass rate depends on (the problem and answer, hashed themselves)."""
    fields = {
        "model": config.model,
        "problem": hashlib.sha256(row["problem"].encode()).hexdigest(),
        "answer": row["answer"],
        "k": config.samples,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_new_tokens": config.max_new_tokens,
        "prompt_template": config.prompt_template,
        "system_prompt": config.system_prompt,
        "extraction": config.extraction,
        "seed": config.seed,
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, dict[str, Any]]:
    """Cached records by key; unreadable lines (an interrupted write) are skipped."""
    records: dict[str, dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                records[record["key"]] = record
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return records


def pass_rate(completions: Sequence[str], answer: str, extraction: str) -> tuple[int, float | None]:
    """``(correct, correct / k)``; the rate is None when the gold answer does not parse."""
    if parse_gold(answer) is None:
        return 0, None
    correct = 0
    for text in completions:
        # a math-verify timeout or failure counts as wrong, as in training
        with contextlib.suppress(Exception):
            correct += bool(grade(text, answer, extraction))
    return correct, correct / len(completions)


def build_engine(config: DifficultyConfig):
    """(engine, tokenizer) for the model, as training builds them."""
    from frugalrl.eval.runner import resolve_model_dir
    from frugalrl.policy import load_policy, pick_device
    from frugalrl.rollout import ROLLOUT_ENGINES

    if not config.model:
        raise UserError("difficulty.model is not set: name the model to estimate pass rates with")
    policy, tokenizer = load_policy(
        resolve_model_dir(config.model), config.dtype, pick_device(config.device)
    )
    engine = ROLLOUT_ENGINES.get(config.engine)(policy, tokenizer, batch_size=config.batch_size)
    return engine, tokenizer


def estimate(
    rows: Sequence[Row], config: DifficultyConfig, cache_path: Path, progress: bool
) -> tuple[dict[str, dict[str, Any]], int]:
    """Cache records for every row (generating what is missing), and how many were generated."""
    import torch

    from frugalrl.data.prompts import encode_prompts
    from frugalrl.rollout import SamplingParams

    cache = read_cache(cache_path)
    keys = [cache_key(r, config) for r in rows]
    first = {k: i for i, k in reversed(list(enumerate(keys)))}  # one generation per key
    todo = sorted(i for k, i in first.items() if k not in cache)
    if not todo:
        return cache, 0
    engine, tokenizer = build_engine(config)
    torch.manual_seed(config.seed)
    params = SamplingParams(config.temperature, config.top_p, config.max_new_tokens)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    with (
        cache_path.open("a", encoding="utf-8") as f,
        tqdm(total=len(todo), desc="difficulty", unit="problem", disable=not progress) as bar,
    ):
        for start in range(0, len(todo), config.chunk_problems):
            chunk = [rows[i] for i in todo[start : start + config.chunk_problems]]
            prompts = encode_prompts(chunk, tokenizer, config.prompt_template, config.system_prompt)
            groups = engine.generate(prompts, config.samples, params)
            for row, group in zip(chunk, groups, strict=True):
                correct, rate = pass_rate([c.text for c in group], row["answer"], config.extraction)
                record = {
                    "key": cache_key(row, config),
                    "model": config.model,
                    "k": config.samples,
                    "correct": correct,
                    "pass_rate": rate,
                    "id": row.get("id"),
                }
                cache[record["key"]] = record
                f.write(json.dumps(record) + "\n")
            f.flush()
            bar.update(len(chunk))
    return cache, len(todo)


def band_of(rate: float | None, bands: dict[str, tuple[float, float]]) -> str | None:
    """The first band (in order) whose ``[min, max]`` holds ``rate``; None if none does."""
    if rate is None:
        return None
    return next((name for name, (low, high) in bands.items() if low <= rate <= high), None)


def histogram(rates: Sequence[float], bins: int) -> dict[str, list]:
    """Counts of pass rates in ``bins`` equal bins over [0, 1] (1.0 falls in the last)."""
    counts = [0] * bins
    for r in rates:
        counts[min(int(r * bins), bins - 1)] += 1
    return {"edges": [i / bins for i in range(bins + 1)], "counts": counts}


def band_counts(rows: Sequence[Row], bands: dict[str, tuple[float, float]]) -> dict[str, int]:
    """Kept rows per band, in the bands' order, then those in none ("none")."""
    counts = {name: 0 for name in bands} | {"none": 0}
    for row in rows:
        counts[row.get("difficulty_band") or "none"] += 1
    return counts


@CURATION_STAGES.register("difficulty")
def difficulty(rows: list[Row], config: DifficultyConfig, context: StageContext) -> StageResult:
    """Rows in the pass-rate band ``[keep_min, keep_max]``, each with its ``pass_rate`` (and
    ``difficulty_band`` when ``bands`` are named)."""
    check_extraction(config.extraction)
    if config.keep_min > config.keep_max:
        raise UserError(f"difficulty: keep_min {config.keep_min} > keep_max {config.keep_max}")
    cache_path = Path(config.cache_path) if config.cache_path else context.out_dir / CACHE_FILE
    n = len(rows) if config.limit is None else min(config.limit, len(rows))
    cache, generated = estimate(rows[:n], config, cache_path, context.progress)
    result = StageResult(kept=[])
    rates: list[float] = []
    for i, row in enumerate(rows):
        rate = cache[cache_key(row, config)]["pass_rate"] if i < n else None
        new_row = {**row, "pass_rate": rate}
        if config.bands:
            new_row["difficulty_band"] = band_of(rate, config.bands)
        if rate is not None:
            rates.append(rate)
        if rate is not None and rate > config.keep_max:
            result.dropped.append(Dropped(new_row, "too easy", f"pass rate {rate:.2f}"))
        elif rate is not None and rate < config.keep_min:
            result.dropped.append(Dropped(new_row, "too hard", f"pass rate {rate:.2f}"))
        else:
            result.kept.append(new_row)
    result.stats = {
        "estimated": len(rates),
        "generated": generated,
        "from cache": n - generated,
        "mean pass rate": sum(rates) / len(rates) if rates else None,
        "histogram": histogram(rates, config.bins),
        **({"bands": band_counts(result.kept, config.bands)} if config.bands else {}),
        "cache": str(cache_path),
    }
    return result
