"""``frugalrl demo``: the miniature open-rs experiment, end to end, offline.

1. write the synthetic task's splits as JSONL (train problems, SFT traces, held-out problems);
2. build a tokenizer and a tiny Qwen2, SFT-warm-start it, save it in HF format (cached: the
   same settings reuse the same base);
3. ``frugalrl train`` the demo recipe from that base, which evaluates the base and the trained
   model on the held-out split and writes the report.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict
from importlib import resources
from pathlib import Path

from frugalrl import __version__
from frugalrl.config import load_config
from frugalrl.data import build_messages, render_prompt
from frugalrl.demo.model import build_model, build_tokenizer, save_pretrained
from frugalrl.demo.sft import supervised_finetune
from frugalrl.demo.task import TaskSpec, make_split

SEED = 0
TASK = TaskSpec()
SFT_PROBLEMS, RL_PROBLEMS, HELDOUT_PROBLEMS = 30_000, 4_000, 200
SFT = {"steps": 1600, "batch_size": 32, "lr": 5e-3}


def recipe_path(name_or_path: str) -> Path:
    """A recipe file, or the name of one shipped in frugalrl/recipes ('demo-efficiency')."""
    path = Path(name_or_path)
    if path.suffix in {".yaml", ".yml"} or path.exists():
        return path
    return Path(str(resources.files("frugalrl") / "recipes" / f"{name_or_path}.yaml"))


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return path


def prepare_data(data_dir: Path) -> None:
    write_jsonl(
        data_dir / "sft.jsonl", make_split("train", SFT_PROBLEMS, SEED, TASK, with_traces=True)
    )
    # RL problems are drawn from the same train split with another seed: new problems, never held-out.
    write_jsonl(data_dir / "train.jsonl", make_split("train", RL_PROBLEMS, SEED + 1, TASK))
    write_jsonl(data_dir / "heldout.jsonl", make_split("heldout", HELDOUT_PROBLEMS, SEED, TASK))


def build_base(
    data_dir: Path, base_dir: Path, sft: dict | None = None, progress: bool = True
) -> Path:
    """Tokenizer + tiny Qwen2 + SFT warm-start, saved in HF format to ``base_dir``."""
    rows = [json.loads(line) for line in (data_dir / "sft.jsonl").open()]
    template_probe = build_messages(rows[0]["problem"], "demo")
    # The tokenizer learns the chat frame and the traces; it is what the model will read.
    corpus = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in template_probe]
    corpus += (
        ["<|im_start|>assistant\n"] + [r["problem"] for r in rows] + [r["completion"] for r in rows]
    )
    tokenizer = build_tokenizer(corpus)
    model = build_model(len(tokenizer), seed=SEED)
    prompts = [render_prompt(tokenizer, build_messages(r["problem"], "demo")) for r in rows]
    supervised_finetune(
        model,
        tokenizer,
        prompts,
        [r["completion"] for r in rows],
        seed=SEED,
        progress=progress,
        **(sft or SFT),
    )
    return save_pretrained(model, tokenizer, base_dir)


def _fingerprint(sft: dict) -> dict:
    return {
        "version": __version__,
        "task": asdict(TASK),
        "sft": sft,
        "seed": SEED,
        "sizes": [SFT_PROBLEMS, RL_PROBLEMS, HELDOUT_PROBLEMS],
    }


def run_demo(
    out: Path,
    overrides: list[str] | None = None,
    fresh: bool = False,
    sft: dict | None = None,
    recipe: str = "demo",
    run_name: str = "run",
) -> dict:
    """Run ``recipe`` on the demo task into ``out/run_name``, from the cached base in ``out``.

    ``sft`` overrides the warm-start settings (tests use a few steps).
    """
    t0 = time.perf_counter()
    sft = {**SFT, **(sft or {})}
    out.mkdir(parents=True, exist_ok=True)
    data_dir, base_dir, run_dir = out / "data", out / "sft-base", out / run_name
    # The recipe is read first: a bad key or value fails before minutes of SFT.
    config = load_config(
        recipe_path(recipe),
        [
            f"model.name_or_path={base_dir}",
            f"data.path={data_dir / 'train.jsonl'}",
            f"eval.path={data_dir / 'heldout.jsonl'}",
            f"train.output_dir={run_dir}",
            *(overrides or []),
        ],
    )
    stamp = base_dir / "demo_fingerprint.json"
    cached = not fresh and stamp.is_file() and json.loads(stamp.read_text()) == _fingerprint(sft)
    if not cached:
        print("demo: writing task data and building the SFT base policy (cached for next time)")
        prepare_data(data_dir)
        shutil.rmtree(base_dir, ignore_errors=True)
        build_base(data_dir, base_dir, sft, progress=config.logging.progress)
        stamp.write_text(json.dumps(_fingerprint(sft)))
    shutil.rmtree(run_dir, ignore_errors=True)  # the demo always trains from the base afresh
    from frugalrl.report import write_run_report
    from frugalrl.train.loop import train

    summary = train(config, report=write_run_report)
    summary["demo_wall_seconds"] = time.perf_counter() - t0
    summary["sft_cached"] = cached
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
