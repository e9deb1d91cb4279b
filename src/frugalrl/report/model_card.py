"""Hugging Face model cards (``README.md``) for a run's ``final/``, ``checkpoints/best/`` and the
full model ``frugalrl export`` merges from LoRA adapters.

A folder uploaded to the Hub is read by people who never saw the run directory: the card says
what the weights are, how they were trained, on what, how they scored and what that cost, so
that the upload is a useful page rather than a bare set of files. Every value is read from the
run directory (``config.yaml``, ``summary.json``, ``eval/<label>/summary.json``), the training
data file (its problem count; the ``frugalrl curate`` summary written beside it) or evaluation
directories the caller names: a number those files do not hold is left out, never estimated.

The YAML front matter follows the Hub's model-card metadata spec (``modelcard.md`` in
huggingface/hub-docs): ``library_name``, ``base_model``, ``tags``, ``datasets`` and
``model-index`` (evaluation results). The Hub checks ``base_model``, ``datasets`` and
``license`` against its own ids, so a local path is never written there (it goes in the body),
and no license is written: a run directory does not say under which one its weights may be used.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from frugalrl import __version__
from frugalrl.curate.report import REPORT_FILE as CURATION_REPORT
from frugalrl.curate.report import SUMMARY_FILE as CURATION_SUMMARY
from frugalrl.data import build_messages, load_problems
from frugalrl.errors import UserError
from frugalrl.eval.benchmarks import BENCHMARKS
from frugalrl.eval.summary import format_accuracy
from frugalrl.policy import is_adapter_dir
from frugalrl.report.run_report import read_json
from frugalrl.run_layout import CHECKPOINTS, FINAL

CARD_FILE = "README.md"  # the Hub renders a repository's README.md as its model card
SUMMARY_FILE = "summary.json"
HELDOUT = "heldout"  # the benchmark name training gives its eval.path problems
# A Hub id as from_pretrained takes it ("gpt2", "org/name"); a local path that exists is not one.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")
# A folder in the Hub's download cache, which names the repository it holds.
HUB_CACHE = re.compile(r"models--([\w.-]+)--([\w.-]+)/snapshots/")
GPU_DEVICES = {"cuda": "CUDA GPU", "mps": "Apple GPU (MPS)"}


@dataclass(frozen=True)
class Hardware:
    """What trained the run, as the training command saw it. Run directories do not record the
    device, so only the command that trained can say; without it the card falls back to the
    recipe's ``train.device`` and gives GPU-hours only where that settles them."""

    device: str  # torch device type: "cuda", "cpu", "mps"
    count: int = 1  # data-parallel processes, one device each
    name: str | None = None  # e.g. torch.cuda.get_device_name()


@dataclass(frozen=True)
class Run:
    """The run directory's recorded facts: the resolved recipe and the summary."""

    run_dir: Path
    config: dict[str, Any]
    summary: dict[str, Any]

    def section(self, name: str) -> dict[str, Any]:
        return self.config.get(name) or {}


@dataclass(frozen=True)
class Weights:
    """Which of the run's weights a card describes: ``final``, ``best`` or a ``checkpoint``."""

    kind: str
    step: int | None
    source: Path  # the run folder they come from (final/, checkpoints/best, ...)
    merged: bool  # LoRA adapters merged into the base model (frugalrl export)
    adapter: bool  # the folder holds LoRA adapters, not a full model


@dataclass(frozen=True)
class Result:
    """One benchmark's statistics for one model (:mod:`frugalrl.eval.summary`'s stats dict)."""

    benchmark: str
    stats: Mapping[str, Any]


@dataclass(frozen=True)
class EvalSet:
    """The results of one evaluation of one model, with how its samples were drawn."""

    source: str  # where the card read them, as the card says
    results: list[Result]
    settings: Mapping[str, Any]


def write_model_cards(run_dir: str | Path, hardware: Hardware | None = None) -> list[Path]:
    """Cards for the run's ``final/`` and ``checkpoints/best/``, those that exist: the folders a
    user uploads, each described as what it is (the best checkpoint scores differently)."""
    run_dir = Path(run_dir)
    folders = [run_dir / FINAL, run_dir / CHECKPOINTS / "best"]
    return [
        write_model_card(run_dir, folder, hardware=hardware)
        for folder in folders
        if (folder / "config.json").is_file() or is_adapter_dir(folder)
    ]


def write_model_card(
    run_dir: str | Path,
    weights: str | Path,
    folder: str | Path | None = None,
    evals: Sequence[str | Path] = (),
    hardware: Hardware | None = None,
) -> Path:
    """Write ``folder/README.md`` (``folder``: ``weights`` itself, or where they were merged to)."""
    folder = Path(folder or weights)
    card = folder / CARD_FILE
    card.write_text(model_card(run_dir, weights, folder, evals, hardware), encoding="utf-8")
    return card


def model_card(
    run_dir: str | Path,
    weights: str | Path,
    folder: str | Path | None = None,
    evals: Sequence[str | Path] = (),
    hardware: Hardware | None = None,
) -> str:
    """The card's text for the weights from ``weights`` (the run's final/ or a checkpoint) saved
    in ``folder``; ``evals``: ``frugalrl eval`` output directories of those weights. Everything
    is read before anything is written, so a bad evaluation directory fails an export early."""
    run = read_run(Path(run_dir))
    folder = Path(folder or weights)
    w = resolve_weights(run, Path(weights), folder)
    own, base = own_results(run, w), run_results(run, "base")
    given = [read_eval_dir(Path(e)) for e in evals]
    problems = training_problems(run)
    meta = front_matter(run, w, [*own.results, *(r for g in given for r in g.results)])
    body = [
        *intro(run, w),
        *training_section(run),
        *data_section(run, problems),
        *results_section(run, w, own, base, given),
        *cost_section(run, hardware),
        *usage_section(run, w, folder, problems),
        *versions_section(w),
    ]
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=1000)
    return f"---\n{header}---\n\n" + "\n".join(body).rstrip() + "\n"


# --- reading the run ------------------------------------------------------------------------


def read_object(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``; None when there is none (a file is optional until needed)."""
    data = read_json(path)
    return data if isinstance(data, dict) else None


def read_run(run_dir: Path) -> Run:
    """config.yaml and summary.json of ``run_dir``, as plain mappings: a card must also describe
    runs whose recipe an older or newer frugalrl would no longer validate."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise UserError(f"{path} not found (is {run_dir} a run directory?)")
    config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return Run(run_dir, config, read_object(run_dir / SUMMARY_FILE) or {})


def resolve_weights(run: Run, source: Path, folder: Path) -> Weights:
    """What ``source`` is within the run, which says which evaluation describes it."""
    merged = folder.resolve() != source.resolve()
    adapter = is_adapter_dir(source) and not merged
    if source.resolve() == (run.run_dir / FINAL).resolve():
        return Weights("final", run.summary.get("steps"), source, merged, adapter)
    if source.name == "best":
        step = (run.summary.get("best") or {}).get("step")
        return Weights("best", step, source, merged, adapter)
    if source.name.startswith("step-") and source.name[5:].isdigit():
        return Weights("checkpoint", int(source.name[5:]), source, merged, adapter)
    raise UserError(f"{source}: not final/ or a checkpoint of {run.run_dir}")


def stats_results(data: Mapping[str, Any]) -> list[Result]:
    """Per-benchmark results of an evaluation summary, then their macro average if several."""
    benchmarks = data.get("benchmarks") or {}
    results = [Result(name, stats) for name, stats in benchmarks.items()]
    if len(results) > 1 and isinstance(data.get("overall"), Mapping):
        results.append(Result("overall", data["overall"]))
    return results


def run_results(run: Run, label: str) -> EvalSet:
    """The run's own evaluation ``label`` (base, final, step-000050): ``eval/<label>/``, which
    holds every benchmark, else the held-out statistics summary.json keeps."""
    data = read_object(run.run_dir / "eval" / label / SUMMARY_FILE)
    if data is not None:
        return EvalSet(f"`eval/{label}/`", stats_results(data), data.get("settings") or {})
    stats = (run.summary.get("eval") or {}).get(label)
    name = HELDOUT if run.section("eval").get("path") else "overall"
    return EvalSet(f"`{SUMMARY_FILE}`", [Result(name, stats)] if stats else [], {})


def own_results(run: Run, w: Weights) -> EvalSet:
    """The run's evaluation of these weights: the final one, or the periodic one at their step."""
    if w.kind == "final":
        return run_results(run, "final")
    if w.step is None:
        return EvalSet("", [], {})  # a best checkpoint the summary does not describe
    found = run_results(run, f"step-{w.step:06d}")
    best = run.summary.get("best") or {}
    if not found.results and w.kind == "best" and best.get("heldout_accuracy") is not None:
        stats = {"accuracy": best["heldout_accuracy"]}
        return EvalSet(f"`{SUMMARY_FILE}`", [Result(HELDOUT, stats)], {})
    return found


def read_eval_dir(path: Path) -> EvalSet:
    """A ``frugalrl eval`` output directory given with the weights (``export --eval``)."""
    data = read_object(path / SUMMARY_FILE)
    if data is None or not isinstance(data.get("benchmarks"), Mapping):
        raise UserError(f"{path}: no {SUMMARY_FILE} of frugalrl eval here (an evaluation dir?)")
    model = f" of `{data['model']}`" if data.get("model") else ""
    return EvalSet(
        f"`frugalrl eval`{model} ({path})", stats_results(data), data.get("settings") or {}
    )


def training_problems(run: Run) -> list[dict[str, Any]] | None:
    """The training problems as training read them, when the file is here to read (a Hub
    dataset is not downloaded for a card, nor a moved file guessed at)."""
    data = run.section("data")
    path = str(data.get("path") or "")
    if not path or not Path(path).is_file():
        return None
    try:
        return load_problems(
            path,
            problem_field=data.get("problem_field", "problem"),
            answer_field=data.get("answer_field", "answer"),
            limit=data.get("limit"),
        )
    except UserError:
        return None


# --- front matter ---------------------------------------------------------------------------


def hub_model_id(name: str) -> str | None:
    """The base model's Hub id: the recipe's name when it is not a local folder, or the id a
    Hub cache path names. A model that exists only here has none (the Hub rejects a path)."""
    cached = HUB_CACHE.search(name.replace("\\", "/"))
    if cached:
        return f"{cached[1]}/{cached[2]}"
    if not name or Path(name).exists() or not HUB_ID.fullmatch(name):
        return None
    return name


def hub_dataset_id(path: str) -> str | None:
    """``data.path`` when it names a Hub dataset rather than a local file."""
    local = Path(path).exists() or Path(path).suffix in {".jsonl", ".json", ".parquet", ".csv"}
    return None if not path or local or not HUB_ID.fullmatch(path) else path


def tag(name: str) -> str:
    return name.lower().replace("_", "-")


def tags(run: Run) -> list[str]:
    """Hub tags: the trainer, the algorithm (advantage estimator, and the loss if not PPO's
    clip), the task, and LoRA when the run trained adapters."""
    algo = run.section("algo")
    found = ["frugalrl", tag(algo.get("advantage", "grpo"))]
    if algo.get("policy_loss", "ppo_clip") != "ppo_clip":
        found.append(tag(algo["policy_loss"]))
    found += ["reinforcement-learning", "math", "reasoning"]
    if run.config.get("peft"):
        found.append("lora")
    return list(dict.fromkeys(found))


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == value


def benchmark_dataset(run: Run, result: Result) -> dict[str, str]:
    """A model-index ``dataset``: the Hub wants an id (``type``) and a readable ``name``."""
    n = result.stats.get("num_problems")
    size = f", {n} problems" if is_number(n) else ""
    if result.benchmark == HELDOUT:
        path = str(run.section("eval").get("path") or HELDOUT)
        kind = hub_dataset_id(path) or Path(path).stem
        return {"type": kind, "name": f"held-out problems ({Path(path).name}{size})"}
    shipped = BENCHMARKS.get(result.benchmark)
    pretty = shipped[1].split(",")[0] if shipped else result.benchmark
    return {"type": result.benchmark, "name": f"{pretty} ({n} problems)" if size else pretty}


def index_entry(run: Run, result: Result) -> dict[str, Any] | None:
    """One model-index result: accuracy (avg@k, %) and mean completion tokens, as the card's
    tables print them; None for the macro average, which is no dataset of its own."""
    accuracy, k = result.stats.get("accuracy"), result.stats.get("samples_per_problem")
    if result.benchmark == "overall" or not is_number(accuracy):
        return None
    name = f"avg@{k} accuracy (%)" if is_number(k) else "accuracy (%)"
    metrics = [{"type": "accuracy", "value": round(100 * accuracy, 1), "name": name}]
    tokens = result.stats.get("mean_tokens")
    if is_number(tokens):
        metrics.append({"type": "mean_tokens", "value": round(tokens, 1), "name": "mean tokens"})
    return {
        "task": {"type": "text-generation", "name": "Math reasoning"},
        "dataset": benchmark_dataset(run, result),
        "metrics": metrics,
    }


def model_name(run: Run, w: Weights) -> str:
    if w.kind == "final":
        return run.run_dir.name
    return f"{run.run_dir.name}-{w.kind if w.kind == 'best' else w.source.name}"


def front_matter(run: Run, w: Weights, results: list[Result]) -> dict[str, Any]:
    """The metadata block: what the Hub filters, links and tabulates by."""
    meta: dict[str, Any] = {"library_name": "peft" if w.adapter else "transformers"}
    base = hub_model_id(str(run.section("model").get("name_or_path", "")))
    if base:
        meta["base_model"] = base
    meta["pipeline_tag"] = "text-generation"
    meta["tags"] = tags(run)
    dataset = hub_dataset_id(str(run.section("data").get("path") or ""))
    if dataset:
        meta["datasets"] = [dataset]
    entries = [e for e in (index_entry(run, r) for r in results) if e is not None]
    if entries:
        meta["model-index"] = [{"name": model_name(run, w), "results": entries}]
    return meta


# --- body -----------------------------------------------------------------------------------


def what_weights(run: Run, w: Weights) -> str:
    """One sentence on which weights these are: the best checkpoint is not the last one."""
    steps = run.summary.get("steps")
    if w.kind == "final":
        what = f"the weights after step {steps}, the run's last"
    elif w.kind == "best":
        what = f"the checkpoint with the best periodic held-out accuracy (step {w.step})"
    else:
        what = f"the checkpoint saved at step {w.step}"
    if w.merged:
        return f"A full model: the LoRA adapters of {what}, merged into the base model by `frugalrl export`."
    if w.adapter:
        return (
            f"LoRA adapters (peft) of {what}; `frugalrl export {run.run_dir}` merges them into "
            "a full model."
        )
    return f"This folder holds {what}."


def intro(run: Run, w: Weights) -> list[str]:
    base = run.section("model").get("name_or_path", "n/a")
    stopped = run.summary.get("stopped")
    lines = [
        f"# {model_name(run, w)}",
        "",
        f"`{base}` trained with reinforcement learning from verifiable rewards by frugalrl "
        f"(recipe `{run.config.get('name', 'n/a')}`, run directory `{run.run_dir}`). "
        + what_weights(run, w),
    ]
    if stopped:
        lines += [
            "",
            f"The run was stopped early, after step {stopped.get('step')}: {stopped.get('reason')}.",
        ]
    return [*lines, ""]


def reward_text(reward: Mapping[str, Any]) -> str:
    """``format`` × 1.0 (schema=open-rs), with a schedule when one changes its parameters."""
    params = {k: v for k, v in reward.items() if k not in {"name", "weight", "schedule"}}
    text = f"`{reward.get('name')}` × {reward.get('weight', 1.0)}"
    if params:
        text += " (" + ", ".join(f"{k}={v}" for k, v in params.items()) + ")"
    if reward.get("schedule"):
        text += f", scheduled {json.dumps(reward['schedule'])}"
    return text


def algorithm_text(algo: Mapping[str, Any]) -> str:
    loss = algo.get("policy_loss", "ppo_clip")
    text = f"advantage `{algo.get('advantage')}`, policy loss `{loss}`"
    if loss == "ppo_clip":
        text += f" (ε {algo.get('epsilon_low')} / {algo.get('epsilon_high')})"
    elif algo.get("policy_loss_params"):
        text += f" ({json.dumps(algo['policy_loss_params'])})"
    return text + f", aggregation `{algo.get('loss_aggregation')}`"


def kl_text(algo: Mapping[str, Any]) -> str:
    beta = algo.get("beta", 0)
    if not beta:
        return "none (β 0)"
    where = "in the reward" if algo.get("kl_in_reward") else "in the loss"
    return f"β {beta}, estimator `{algo.get('kl_estimator')}`, {where}"


def lora_text(peft: Mapping[str, Any] | None, summary: Mapping[str, Any]) -> str:
    """Full fine-tuning, or the LoRA settings with the adapters' size beside the full model's."""
    if not peft:
        return "full fine-tuning (every weight)"
    text = (
        f"LoRA r {peft.get('r')}, α {peft.get('alpha')}, dropout {peft.get('dropout')}, "
        f"modules {peft.get('target_modules')}"
    )
    saved, base = summary.get("saved_weights_bytes"), summary.get("base_weights_bytes")
    if is_number(saved) and is_number(base) and base:
        text += f"; adapters {saved / 1e6:.2f} MB = {100 * saved / base:.1f}% of the base weights"
    return text


def guards_text(summary: Mapping[str, Any]) -> str | None:
    guards = summary.get("guards")
    if not isinstance(guards, Mapping):
        return None
    return f"{guards.get('warnings', 0)} warnings, {guards.get('rollbacks', 0)} rollbacks"


def training_section(run: Run) -> list[str]:
    """The key settings of the recipe, from the run's config.yaml."""
    algo, optim, train = run.section("algo"), run.section("optim"), run.section("train")
    rollout = run.section("rollout")
    prompts, k = train.get("prompts_per_step"), rollout.get("num_generations")
    rows = [
        ("recipe", f"`{run.config.get('name')}`"),
        ("algorithm", algorithm_text(algo)),
        ("KL penalty", kl_text(algo)),
        ("rewards", ", ".join(reward_text(r) for r in run.config.get("rewards") or [])),
        ("steps", f"{run.summary.get('steps', 'n/a')} of {train.get('steps')} planned"),
        ("prompts per step × generations", f"{prompts} × {k}"),
        (
            "sampling",
            f"temperature {rollout.get('temperature')}, top-p {rollout.get('top_p')}, "
            f"up to {rollout.get('max_completion_tokens')} completion tokens",
        ),
        (
            "learning rate",
            f"{optim.get('lr')}, {optim.get('lr_scheduler')} schedule, warmup "
            f"{optim.get('warmup_ratio')}, min ratio {optim.get('min_lr_ratio')}",
        ),
        (
            "precision",
            f"{train.get('precision')} (model dtype {run.section('model').get('dtype')})",
        ),
        ("weights trained", lora_text(run.config.get("peft"), run.summary)),
        ("seed", str(train.get("seed"))),
        ("stability guards", guards_text(run.summary)),
    ]
    table = ["| setting | value |", "|---|---|"]
    table += [f"| {k} | {v} |" for k, v in rows if v is not None]
    return ["## Training", "", *table, ""]


def curation_lines(data_path: str) -> list[str]:
    """The curation summary ``frugalrl curate`` wrote beside the data file, if it did."""
    path = Path(data_path)
    summary = read_object(path.parent / CURATION_SUMMARY) if path.name == "data.jsonl" else None
    if not summary or not isinstance(summary.get("stages"), list):
        return []
    lines = [
        f"- Curated by `frugalrl curate` (`{summary.get('name')}`): {summary.get('rows_in', 0):,} "
        f"rows read, {summary.get('rows_out', 0):,} kept (details: `{CURATION_REPORT}` beside "
        "the data file).",
    ]
    for stage in summary["stages"]:
        why = ", ".join(f"{r}: {n:,}" for r, n in (stage.get("dropped_by_reason") or {}).items())
        lines.append(
            f"  - {stage.get('stage')}: {stage.get('rows_in', 0):,} in, "
            f"{stage.get('rows_out', 0):,} out" + (f" (dropped: {why})" if why else "")
        )
    return lines


def data_section(run: Run, problems: list[dict[str, Any]] | None) -> list[str]:
    data = run.section("data")
    path = str(data.get("path") or "n/a")
    count = f": {len(problems):,} problems" if problems is not None else ""
    limit = f" (its first {data['limit']:,})" if problems is not None and data.get("limit") else ""
    lines = [
        "## Training data",
        "",
        f"- Problems: `{path}`{count}{limit}; prompts over {data.get('max_prompt_tokens')} tokens "
        "are left out of training.",
        f"- Prompt template: `{data.get('prompt_template')}`"
        + (" with its own system prompt" if data.get("system_prompt") else ""),
    ]
    return [*lines, *curation_lines(path), ""]


def result_row(benchmark: str, model: str, stats: Mapping[str, Any]) -> str:
    n, k = stats.get("num_problems", "n/a"), stats.get("samples_per_problem", "n/a")
    tokens = stats.get("mean_tokens")
    tokens_text = f"{tokens:.1f}" if is_number(tokens) else "n/a"
    return f"| {benchmark} | {model} | {n} × {k} | {format_accuracy(stats)} | {tokens_text} |"


RESULT_HEADER = [
    "| benchmark | model | problems × samples | accuracy % (95% CI) | mean tokens |",
    "|---|---|---|---|---|",
]


def settings_line(settings: Mapping[str, Any], fallback: Mapping[str, Any]) -> str:
    """How the evaluation sampled, from its own record (else the recipe's eval section), saying
    only what is recorded: a re-graded evaluation keeps no sampling settings."""
    known = [
        (
            "samples per problem (avg@k)",
            settings.get("samples", fallback.get("samples_per_problem")),
        ),
        ("temperature", settings.get("temperature", fallback.get("temperature"))),
        ("top-p", settings.get("top_p", fallback.get("top_p"))),
        ("max new tokens", settings.get("max_new_tokens", fallback.get("max_new_tokens"))),
        ("prompt template", settings.get("prompt_template")),
    ]
    parts = [f"{name} {value}" for name, value in known if value is not None]
    return "; ".join([*parts, "95% CI: bootstrap over problems"]) + "."


def own_table(run: Run, own: EvalSet, base: EvalSet, label: str) -> list[str]:
    """Base and these weights, benchmark by benchmark, from the run's own evaluations."""
    base_by_name = {r.benchmark: r.stats for r in base.results}
    rows = []
    for r in own.results:
        if r.benchmark in base_by_name:
            rows.append(result_row(r.benchmark, "base", base_by_name[r.benchmark]))
        rows.append(result_row(r.benchmark, label, r.stats))
    return [*RESULT_HEADER, *rows]


def change_line(own: EvalSet, base: EvalSet) -> list[str]:
    """Held-out change base → these weights, when both saw the same problems and samples."""
    now = next((r.stats for r in own.results if r.benchmark == HELDOUT), None)
    before = next((r.stats for r in base.results if r.benchmark == HELDOUT), None)
    keys = ("accuracy", "mean_tokens", "num_problems", "samples_per_problem")
    if (
        not now
        or not before
        or not all(is_number(now.get(k)) and is_number(before.get(k)) for k in keys)
    ):
        return []
    if (now["num_problems"], now["samples_per_problem"]) != (
        before["num_problems"],
        before["samples_per_problem"],
    ):
        return []
    gain = 100 * (now["accuracy"] - before["accuracy"])
    tokens = (
        f", mean tokens {100 * (now['mean_tokens'] / before['mean_tokens'] - 1):+.1f}%"
        if before["mean_tokens"]
        else ""
    )
    return [f"Held-out change from the base model: accuracy {gain:+.1f} points{tokens}.", ""]


def results_section(
    run: Run, w: Weights, own: EvalSet, base: EvalSet, given: list[EvalSet]
) -> list[str]:
    """Accuracy (95% CI) and mean tokens of these weights, beside the base model's; nothing
    when nothing was evaluated."""
    if not own.results and not any(g.results for g in given):
        return []
    lines = ["## Results", ""]
    label = "this model" if w.kind == "final" else f"this model (step {w.step})"
    if own.results:
        lines += [
            f"Evaluated by the training run ({own.source} of the run directory); "
            + settings_line(own.settings, run.section("eval")),
            "",
        ]
        lines += [*own_table(run, own, base, label), "", *change_line(own, base)]
    for g in given:
        lines += [f"{g.source}: " + settings_line(g.settings, {}), "", *RESULT_HEADER]
        lines += [result_row(r.benchmark, "this model", r.stats) for r in g.results] + [""]
    return lines


def duration(seconds: float) -> str:
    """'26.1 s', or '9 min 39 s (579.4 s)': readable, with the recorded seconds kept."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    text = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
    return f"{text} ({seconds:.1f} s)"


def hardware_lines(run: Run, hardware: Hardware | None) -> list[str]:
    """The device and GPU-hours (devices × wall time), only as far as they are known."""
    wall = run.summary.get("wall_seconds")
    device = str(run.section("train").get("device", "auto"))
    if hardware is None and device.split(":")[0] in GPU_DEVICES:
        hours = f"; {wall / 3600:.3f} GPU-hours per GPU" if is_number(wall) else ""
        return [
            f"- Device: {GPU_DEVICES[device.split(':')[0]]} (`train.device: {device}`); the "
            f"run directory does not record how many{hours}."
        ]
    if hardware is None and device == "cpu":
        hardware = Hardware("cpu")
    if hardware is None:
        return [
            f"- Device: not recorded in the run directory (`train.device: {device}`), so no GPU-hours are given."
        ]
    name = f" ({hardware.name})" if hardware.name else ""
    kind = GPU_DEVICES.get(hardware.device, hardware.device.upper())
    lines = [f"- Device: {hardware.count} × {kind}{name}"]
    if hardware.device in GPU_DEVICES and is_number(wall):
        lines.append(
            f"- GPU-hours: {hardware.count * wall / 3600:.3f} ({hardware.count} × wall time)"
        )
    return lines


def cost_section(run: Run, hardware: Hardware | None) -> list[str]:
    """What training took, from summary.json: wall and step time, the device if known."""
    s = run.summary
    lines = ["## Cost", ""]
    if is_number(s.get("wall_seconds")):
        lines.append(
            "- Wall time, loading, evaluations and saving included: " + duration(s["wall_seconds"])
        )
    if is_number(s.get("train_seconds")):
        lines.append(f"- Time in training steps: {duration(s['train_seconds'])}")
    if is_number(s.get("demo_wall_seconds")):
        base = "reused from its cache" if s.get("sft_cached") else "built first"
        lines.append(
            f"- `frugalrl demo` end to end: {duration(s['demo_wall_seconds'])} (SFT base {base})"
        )
    return [*lines, *hardware_lines(run, hardware), ""]


def has_chat_template(folder: Path) -> bool:
    config = read_object(folder / "tokenizer_config.json") or {}
    return (folder / "chat_template.jinja").is_file() or bool(config.get("chat_template"))


def example_messages(run: Run, problems: list[dict[str, Any]] | None) -> list[dict[str, str]]:
    """A prompt as training built them: the first training problem in the recipe's template."""
    data = run.section("data")
    problem = problems[0]["problem"] if problems else "What is the sum of the first 10 odd numbers?"
    try:
        return build_messages(
            problem, str(data.get("prompt_template", "plain")), data.get("system_prompt")
        )
    except UserError:  # a template registered by the user's own code, not loaded here
        return [{"role": "user", "content": problem}]


def usage_section(
    run: Run, w: Weights, folder: Path, problems: list[dict[str, Any]] | None
) -> list[str]:
    """A transformers snippet that prompts the model the way it was trained and evaluated."""
    messages = json.dumps(example_messages(run, problems), ensure_ascii=False)
    ev, rollout = run.section("eval"), run.section("rollout")
    max_new = ev.get("max_new_tokens") or rollout.get("max_completion_tokens")
    if w.adapter:
        imports = (
            "from peft import AutoPeftModelForCausalLM\nfrom transformers import AutoTokenizer"
        )
        load = "model = AutoPeftModelForCausalLM.from_pretrained(path)  # the base model + adapters"
    else:
        imports = "from transformers import AutoModelForCausalLM, AutoTokenizer"
        load = "model = AutoModelForCausalLM.from_pretrained(path)"
    if has_chat_template(w.source):  # the tokenizer an export saves is the source's
        prompt = "prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)"
    else:
        prompt = (
            'prompt = "\\n\\n".join(m["content"] for m in messages) + "\\n\\n"  # no chat template'
        )
    code = [
        imports,
        "",
        f"path = {json.dumps(str(folder.resolve()))}  # or the Hub repo id once uploaded",
        "tokenizer = AutoTokenizer.from_pretrained(path)",
        load,
        "",
        f"messages = {messages}",
        prompt,
        'inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False)',
        f"output = model.generate(**inputs, max_new_tokens={max_new}, do_sample=True, "
        f"temperature={ev.get('temperature')}, top_p={ev.get('top_p')})",
        'print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))',
    ]
    return ["## How to use", "", "```python", *code, "```", ""]


def versions_section(w: Weights) -> list[str]:
    """The library versions that wrote the card (the run does not record those it trained with)."""
    import torch
    import transformers

    versions = [
        f"frugalrl {__version__}",
        f"transformers {transformers.__version__}",
        f"torch {torch.__version__}",
    ]
    if w.adapter or w.merged:
        import peft

        versions.append(f"peft {peft.__version__}")
    return ["## Framework versions", "", "Card written with " + ", ".join(versions) + ".", ""]
