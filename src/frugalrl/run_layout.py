"""Where a run directory keeps what: the one layout that training writes and evaluation reads.

RUN/config.yaml             the resolved recipe
RUN/checkpoints/step-N/     HF-format weights + training_state.pt (complete ones only)
RUN/checkpoints/best/       the best held-out accuracy so far (rollbacks)
RUN/final/                  the trained model
"""

from __future__ import annotations

from pathlib import Path

STATE_FILE = "training_state.pt"  # present only once a checkpoint is complete
CHECKPOINTS = "checkpoints"
FINAL = "final"


def checkpoint_dir(run_dir: Path, name: str) -> Path:
    return Path(run_dir) / CHECKPOINTS / name


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    done = [p for p in root.glob("step-*") if (p / STATE_FILE).is_file()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))
