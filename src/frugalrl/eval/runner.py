"""``frugalrl eval``: sample k completions per benchmark problem, grade them, summarise.

Writes to the output directory:

* ``generations.jsonl``: one row per sample (benchmark, id, sample, completion, answer,
  extracted, correct, ungraded, tokens, finished, answer_group);
* ``summary.json``: avg@k with a bootstrap CI, pass@k, maj@k and token statistics per
  benchmark and overall (:mod:`frugalrl.eval.summary`), plus how the samples were made;
* ``summary.md``: the same as a markdown table (also printed).

:mod:`frugalrl.eval.regrade` re-grades saved generations (ours, or another tool's) without a model.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from frugalrl.data import encode_prompts
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import Benchmark
from frugalrl.eval.grading import grade_rows
from frugalrl.eval.regrade import write_results
from frugalrl.rewards.answer import DEFAULT_EXTRACTION
from frugalrl.rollout import ROLLOUT_ENGINES, RolloutEngine, SamplingParams
from frugalrl.run_layout import FINAL, list_checkpoints


@dataclass(frozen=True)
class EvalSettings:
    """How completions are sampled; defaults follow the open-rs evaluation (docs/algorithms.md#open-rs)."""

    samples: int = 1  # k samples per problem; open-rs used 1 (hence its ±10-point AIME swings)
    temperature: float = 0.6  # open-rs and Arora & Zanette both evaluate at 0.6
    top_p: float = 0.95  # open-rs (lighteval) evaluation
    max_new_tokens: int = 32768  # open-rs: up to 32,768 new tokens
    prompt_template: str = "open-rs-eval"  # lighteval's MATH prompt, as open-rs evaluated
    system_prompt: str | None = None
    extraction: str = DEFAULT_EXTRACTION
    seed: int = 0
    chunk_prompts: int = 64  # prompts per generate call (a progress tick, a memory bound)
    votes: tuple[str, ...] = ()  # short-m@k votes reported beside maj@k ("short-3@8")

    def sampling(self) -> SamplingParams:
        return SamplingParams(self.temperature, self.top_p, self.max_new_tokens)


def resolve_model_dir(path: str | Path) -> str:
    """A model directory (full, or LoRA adapters), a run directory (its ``final/``, else its
    newest checkpoint) or a hub name, as a path ``load_policy`` accepts."""
    from frugalrl.policy import is_adapter_dir

    p = Path(path)

    def is_model(d: Path) -> bool:  # a full model, or LoRA adapters (merged when loaded)
        return (d / "config.json").is_file() or is_adapter_dir(d)

    if is_model(p):
        return str(p)
    if is_model(p / FINAL):
        return str(p / FINAL)
    checkpoints = list_checkpoints(p)
    if checkpoints:
        return str(checkpoints[-1])
    if p.exists():
        raise UserError(f"{p}: no model here (expected config.json, final/ or checkpoints/)")
    return str(path)  # a hub name: from_pretrained reports if it cannot be had


def sample_rows(
    engine: RolloutEngine,
    tokenizer,
    benchmark: str,
    problems: Sequence[dict],
    settings: EvalSettings,
    bar: tqdm | None = None,
) -> list[dict[str, Any]]:
    """Ungraded generation rows: ``settings.samples`` completions of every problem."""
    prompt_ids = encode_prompts(
        problems, tokenizer, settings.prompt_template, settings.system_prompt
    )
    rows: list[dict[str, Any]] = []
    for start in range(0, len(problems), settings.chunk_prompts):
        chunk = slice(start, start + settings.chunk_prompts)
        groups = engine.generate(prompt_ids[chunk], settings.samples, settings.sampling())
        for j, (problem, group) in enumerate(zip(problems[chunk], groups, strict=True)):
            problem_id = str(problem.get("id", f"{benchmark}-{start + j}"))
            for i, c in enumerate(group):
                rows.append(
                    {
                        "benchmark": benchmark,
                        "id": problem_id,
                        "sample": i,
                        "completion": c.text,
                        "answer": problem["answer"],
                        "tokens": c.num_tokens,
                        "finished": c.finished,
                    }
                )
        if bar is not None:
            bar.update(len(problems[chunk]))
    return rows


def evaluate_engine(
    engine: RolloutEngine,
    tokenizer,
    benchmarks: Sequence[Benchmark],
    settings: EvalSettings,
    out: Path,
    meta: dict[str, Any] | None = None,
    workers: int = 0,
    timeout: float = 30.0,
    progress: bool = True,
    title: str = "evaluation",
) -> dict[str, Any]:
    """Sample, grade and summarise ``benchmarks`` with an engine already holding the policy."""
    torch.manual_seed(settings.seed)
    t0 = time.perf_counter()
    total = sum(len(b.problems) for b in benchmarks)
    rows: list[dict[str, Any]] = []
    with tqdm(total=total, desc="eval", unit="problem", disable=not progress) as bar:
        for b in benchmarks:
            bar.set_postfix_str(b.name)
            rows += sample_rows(engine, tokenizer, b.name, b.problems, settings, bar)
    generate_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    rows = grade_rows(rows, settings.extraction, workers, timeout)
    meta = {
        **(meta or {}),
        "settings": asdict(settings),
        "generate_seconds": generate_seconds,
        "grade_seconds": time.perf_counter() - t0,
    }
    return write_results(out, rows, meta, title, settings.votes)


@dataclass(frozen=True)
class ModelSource:
    """The policy to evaluate and how it is served: ``frugalrl eval --model ... --engine ...``."""

    model: str | Path  # model, LoRA adapter or run directory, or a hub name
    engine: str = "hf"  # a registered rollout engine
    engine_options: dict[str, Any] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 256  # sequences per generate call

    @contextmanager
    def open(self) -> Iterator[tuple[RolloutEngine, Any, str]]:
        """(engine holding the policy, tokenizer, resolved model directory); the engine is
        closed on exit (e.g. a vLLM server it started)."""
        from frugalrl.policy import load_policy, pick_device

        model_dir = resolve_model_dir(self.model)
        policy, tokenizer = load_policy(model_dir, self.dtype, pick_device(self.device))
        rollout = ROLLOUT_ENGINES.get(self.engine)(
            policy, tokenizer, batch_size=self.batch_size, **self.engine_options
        )
        try:
            yield rollout, tokenizer, model_dir
        finally:
            rollout.close()


def evaluate_model(
    source: ModelSource,
    benchmarks: Sequence[Benchmark],
    settings: EvalSettings,
    out: Path,
    workers: int = 0,
    timeout: float = 30.0,
    progress: bool = True,
) -> dict[str, Any]:
    """``frugalrl eval --model``: load the policy, then :func:`evaluate_engine`."""
    with source.open() as (rollout, tokenizer, model_dir):
        meta = {"model": model_dir, "engine": source.engine}
        return evaluate_engine(
            rollout,
            tokenizer,
            benchmarks,
            settings,
            out,
            meta,
            workers,
            timeout,
            progress,
            model_dir,
        )
