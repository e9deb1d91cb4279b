"""The curation config: which stages run, in what order, and each stage's own section.

Same conventions as the training config (:mod:`frugalrl.config`): every option documented
where it is declared, unknown keys and bad values are one-line user errors naming the key,
``--set a.b=value`` overrides (list items by index: ``load.sources.0.path=...``).
Input paths (data files, a local model, the difficulty cache) resolve against the config
file's directory; ``output_dir`` against the working directory, like ``frugalrl train``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from frugalrl.config import apply_overrides, format_validation_error, read_yaml_mapping
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import BENCHMARKS


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SourceConfig(_Section):
    """One input file (or saved HF dataset directory) and how its fields map to ours."""

    name: str = Field(
        "main", description="Names the rows' origin in the report and for mix.sources.*.source."
    )
    path: str = Field(
        description="A .jsonl, .json (array or JSON lines) or .parquet file, or a directory "
        "written by datasets' save_to_disk. Relative: to the config file's directory."
    )
    split: str = Field("train", description="Split to read when `path` holds a DatasetDict.")
    problem_field: str = Field("problem", description="Field holding the problem text.")
    answer_field: str = Field("answer", description="Field holding the gold final answer.")
    solution_field: str | None = Field(
        "solution",
        description="Field holding a worked solution (its \\boxed{} answer is checked against "
        "the gold one); None: the data has none.",
    )
    limit: int | None = Field(None, gt=0, description="Read only the first N rows (debugging).")


class LoadConfig(_Section):
    sources: list[SourceConfig] = Field(
        default_factory=list,
        description="Files to read, concatenated in order. A row without a problem, or "
        "without both an answer and a solution to take one from, is reported (file, line) "
        "and dropped, as is a line that is not a JSON object.",
    )

    @field_validator("sources")
    @classmethod
    def _distinct_names(cls, v: list[SourceConfig]) -> list[SourceConfig]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError(f"source names must differ, got {names}")
        return v


class AnswersConfig(_Section):
    drop_unparseable: bool = Field(
        True,
        description="Drop rows whose gold answer math-verify cannot parse: the accuracy "
        "reward scores them None, so they train nothing (statements such as 'p \\equiv 1 "
        "\\pmod 4' or proofs).",
    )
    on_disagreement: Literal["drop", "keep"] = Field(
        "drop",
        description="A gold answer that math-verify finds different from its own solution's "
        "\\boxed{} answer is wrong in one of the two: 'drop' the row or 'keep' it; either way "
        "it is listed in the report.",
    )
    workers: int | Literal["auto"] = Field(
        "auto",
        description="math-verify processes ('auto': one per core, at most 8; 0: in this "
        "process). Workers also guard against math-verify hanging on odd input.",
    )
    timeout_seconds: float = Field(
        30.0, gt=0, description="Watchdog: a chunk of rows stalled this long counts as unchecked."
    )


class DedupConfig(_Section):
    near: bool = Field(True, description="Also drop near-duplicates (MinHash LSH), not only exact.")
    threshold: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Near-duplicate: Jaccard similarity of the word-shingle sets ≥ this (the "
        "exact Jaccard, checked on the LSH candidates). 0.8 is a common choice (e.g. the "
        "Pile, SlimPajama); lower catches more rewordings and more distinct problems that "
        "only differ in their numbers.",
    )
    shingle_size: int = Field(3, gt=0, description="Words per shingle.")
    num_perm: int = Field(128, gt=0, description="MinHash permutations (accuracy vs. speed).")


class DecontaminateConfig(_Section):
    benchmarks: list[str] = Field(
        default_factory=lambda: list(BENCHMARKS),
        description="Shipped benchmark names (frugalrl.eval.benchmarks) or JSONL paths; a "
        "problem overlapping any of them is dropped. Default: every shipped benchmark.",
    )
    ngram: int = Field(
        13,
        gt=0,
        description="Drop a problem sharing any n-word sequence with a benchmark problem "
        "(13 as in GPT-3 and Tülu 3's decontamination). Problems shorter than n words are "
        "caught by the exact and near-duplicate checks only.",
    )
    near: bool = Field(True, description="Also drop near-duplicates of benchmark problems.")
    threshold: float = Field(
        0.8, gt=0, le=1, description="Near-duplicate Jaccard threshold, as dedup.threshold."
    )
    shingle_size: int = Field(3, gt=0, description="Words per shingle, as dedup.shingle_size.")
    num_perm: int = Field(128, gt=0, description="MinHash permutations, as dedup.num_perm.")


class DifficultyConfig(_Section):
    model: str = Field(
        "", description="HF model directory (relative: to the config file) or hub name."
    )
    samples: int = Field(8, gt=0, description="k completions per problem; pass rate = correct/k.")
    keep_min: float = Field(
        0.0, ge=0, le=1, description="Keep problems whose pass rate is ≥ this (0: keep unsolved)."
    )
    keep_max: float = Field(
        1.0,
        ge=0,
        le=1,
        description="... and ≤ this. Below 1 drops the problems the model always solves "
        "(open-s1 with DeepSeek-R1-Distill-Qwen-1.5B).",
    )
    limit: int | None = Field(
        None,
        gt=0,
        description="Estimate only the first N rows (a quick look on a small sample); the "
        "others pass through unfiltered, with pass_rate null.",
    )
    prompt_template: str = Field("open-rs", description="As data.prompt_template in training.")
    system_prompt: str | None = Field(None, description="None: the template's own.")
    temperature: float = Field(0.7, gt=0, description="Sampling temperature; open-rs: 0.7.")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(3584, gt=0, description="Length cap; open-rs trains at 3,584.")
    extraction: str = Field("boxed_or_anchored", description="Answer extraction, as the reward.")
    engine: str = Field("hf", description="Rollout engine by name, as rollout.engine.")
    batch_size: int = Field(64, gt=0, description="Sequences per generate call.")
    chunk_problems: int = Field(
        16, gt=0, description="Problems per generate call; the cache is written after each."
    )
    device: str = Field("auto", description="auto, cpu, cuda, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    seed: int = Field(0, description="torch seed before sampling (part of the cache key).")
    cache_path: str = Field(
        "",
        description="JSONL of pass rates keyed by model, problem, answer, k and sampling, so a "
        "re-run does not regenerate; '': difficulty_cache.jsonl in the output directory.",
    )
    bins: int = Field(10, gt=0, description="Bars of the report's difficulty histogram.")
    bands: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Named pass-rate bands, name: [min, max] (inclusive), e.g. {hard: [0, "
        "0.375], easy: [0.75, 1]}: each kept row gets `difficulty_band`, the first band (in "
        "order) holding its pass rate, else null; mix parts draw from one with "
        "`where: {difficulty_band: hard}`.",
    )

    @field_validator("bands")
    @classmethod
    def _bands_in_range(cls, v: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
        for name, (low, high) in v.items():
            if not 0 <= low <= high <= 1:
                raise ValueError(f"band '{name}' needs 0 <= min <= max <= 1, got [{low}, {high}]")
        return v


class MixSourceConfig(_Section):
    name: str = Field(description="Names this part in the report, and in each row's mix_source.")
    source: str | None = Field(None, description="Only rows loaded from this load source.")
    where: dict[str, Any] = Field(
        default_factory=dict,
        description="Only rows whose fields equal these values (a list: any of them), "
        "e.g. {level: Hard}.",
    )
    count: int | None = Field(
        None, ge=0, description="Rows to draw; None: all that match (or mix.total × weight)."
    )
    weight: float | None = Field(
        None, gt=0, description="With mix.total: this part's share of it (weights are normalised)."
    )


class MixConfig(_Section):
    sources: list[MixSourceConfig] = Field(
        default_factory=list,
        description="Parts of the final set, each drawn at random (seeded) from the rows it "
        "matches that no earlier part took. Rows no part takes are dropped. Asking for more "
        "rows than match takes them all, and the report says so.",
    )
    sets: dict[str, list[MixSourceConfig]] = Field(
        default_factory=dict,
        description="Alternative part lists by name, for sets that differ only in their "
        "composition (open-rs's experiments 1 and 2); `select` names the one to build, in "
        "place of `sources`. total, seed and shuffle are shared.",
    )
    select: str | None = Field(
        None, description="Which of `sets` to build (None: build `sources`)."
    )
    total: int | None = Field(
        None,
        gt=0,
        description="Final size, split by the parts' weights (then every part needs one).",
    )
    seed: int = Field(42, description="Seeds the draws and the final shuffle.")
    shuffle: bool = Field(True, description="Shuffle the final set (else: parts in order).")


class CurateConfig(_Section):
    name: str = Field("curated", description="Names the default output directory.")
    stages: list[str] = Field(
        default_factory=lambda: ["load", "answers", "dedup", "decontaminate", "mix"],
        description="Stages to run, in order, by name (frugalrl.curate.CURATION_STAGES); "
        "'load' comes first. Each reads its own section below.",
    )
    output_dir: str = Field("curated/{name}", description="Where outputs go; {name}: the name.")
    examples_per_reason: int = Field(
        5, ge=0, description="Dropped rows shown per reason in curation_report.md."
    )
    progress: bool = Field(True, description="Progress bars on the console.")
    load: LoadConfig = LoadConfig()
    answers: AnswersConfig = AnswersConfig()
    dedup: DedupConfig = DedupConfig()
    decontaminate: DecontaminateConfig = DecontaminateConfig()
    difficulty: DifficultyConfig = DifficultyConfig()
    mix: MixConfig = MixConfig()

    @field_validator("stages")
    @classmethod
    def _load_first(cls, v: list[str]) -> list[str]:
        if not v or v[0] != "load":
            raise ValueError("the first stage must be 'load'")
        if len(set(v)) != len(v):
            raise ValueError(f"a stage may run only once, got {v}")
        return v

    @property
    def out_dir(self) -> Path:
        return Path(self.output_dir.format(name=self.name))


def _against(base: Path, path: str) -> str:
    return path if not path or Path(path).is_absolute() else str(base / path)


def resolve_paths(config: CurateConfig, base: Path) -> CurateConfig:
    """The config with input paths made relative to ``base`` (the config file's directory).

    A relative model path that does not exist there is left alone: it may be a hub name.
    """
    for source in config.load.sources:
        source.path = _against(base, source.path)
    diff = config.difficulty
    if diff.model and (base / diff.model).exists():
        diff.model = _against(base, diff.model)
    diff.cache_path = _against(base, diff.cache_path)
    return config


def load_curate_config(path: str | Path, overrides: list[str] | None = None) -> CurateConfig:
    """Read a curation YAML, apply ``--set`` overrides, validate, resolve input paths."""
    path = Path(path)
    data = apply_overrides(read_yaml_mapping(path, "curation config"), overrides or [])
    try:
        config = CurateConfig.model_validate(data)
    except ValidationError as err:
        raise UserError(format_validation_error(err, str(path), CurateConfig)) from None
    return resolve_paths(config, path.resolve().parent)
