"""``frugalrl export RUN_DIR``: a LoRA run's adapters merged into a full Hugging Face model."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from frugalrl.errors import UserError
from frugalrl.policy import is_adapter_dir, load_policy
from frugalrl.report.model_card import CARD_FILE, model_card
from frugalrl.train.checkpoint import list_checkpoints


def adapter_source(run_dir: Path) -> Path:
    """The run's ``final/`` adapters, else those of its newest checkpoint."""
    for candidate in [run_dir / "final", *reversed(list_checkpoints(run_dir))]:
        if is_adapter_dir(candidate):
            return candidate
    if (run_dir / "final" / "config.json").is_file():
        raise UserError(f"{run_dir / 'final'} is already a full model (the run did not use peft)")
    raise UserError(f"{run_dir}: no LoRA adapters in final/ or checkpoints/ (is it a run dir?)")


def export_merged(
    run_dir: str | Path,
    out: str | Path | None = None,
    dtype: str = "auto",
    evals: Sequence[str | Path] = (),
) -> Path:
    """Merge the adapters into their base model and save model + tokenizer to ``out``
    (default ``RUN_DIR/merged``), loadable with ``AutoModelForCausalLM.from_pretrained``, with a
    model card (README.md) that also shows the results of ``evals`` (``frugalrl eval`` dirs)."""
    run_dir = Path(run_dir)
    source = adapter_source(run_dir)
    out = Path(out) if out is not None else run_dir / "merged"
    # The card reads everything first: a bad evaluation directory fails before the merge.
    card = model_card(run_dir, source, out, evals)
    model, tokenizer = load_policy(source, dtype, torch.device("cpu"), adapters="merge")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    (out / CARD_FILE).write_text(card, encoding="utf-8")
    return out
