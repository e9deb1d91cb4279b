"""Training metrics: one JSON line per step in ``run_dir/metrics.jsonl``, mirrored to
TensorBoard and (optionally) Weights & Biases.

The JSONL file is the record of truth: it is flushed after every row, so a crash loses nothing
already logged, and :func:`read_metrics` reads it back tolerating the traces a crash or a
resume leaves (a half-written last line, re-logged steps). TensorBoard and wandb are
conveniences: if either cannot be imported or fails, the logger warns once and carries on.
"""

from __future__ import annotations

import json
import logging
import math
import netrc
import os
from collections.abc import Mapping
from importlib.util import find_spec
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

from frugalrl.errors import UserError

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
WANDB_ENV_VARS = ("WANDB_MODE", "WANDB_API_KEY", "WANDB_PROJECT")

_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    """Log ``message`` the first time ``key`` is seen in this process (not every step)."""
    if key not in _warned:
        _warned.add(key)
        log.warning(message)


def _clean(name: str, value: Any) -> float | int | bool | None:
    """A JSON-safe scalar: NaN/inf become None (JSON has no NaN); tensors/numpy become numbers."""
    if value is None or isinstance(value, bool | int):
        return value
    if hasattr(value, "item"):  # 0-d torch tensor or numpy scalar
        value = value.item()
        if isinstance(value, bool | int):
            return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"metric {name!r} must be a number or None, got {value!r}") from None
    return number if math.isfinite(number) else None


class MetricsLogger:
    """Append metrics rows to ``run_dir/metrics.jsonl`` (+ TensorBoard, + wandb).

    ``wandb=None`` turns wandb on only when the package is installed and one of WANDB_MODE,
    WANDB_API_KEY or WANDB_PROJECT is set, so nobody is surprised by an upload or a login
    prompt. Use as a context manager, or call :meth:`close`.
    """

    def __init__(
        self,
        run_dir: str | Path,
        *,
        tensorboard: bool = True,
        wandb: bool | None = None,
        config: dict | None = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.path = self.run_dir / METRICS_FILE
        self._file = self._open_jsonl(self.path)
        self._tb = _open_tensorboard(self.run_dir / TENSORBOARD_DIR) if tensorboard else None
        self._wandb = _open_wandb(self.run_dir, config) if _want_wandb(wandb) else None
        self._closed = False

    @staticmethod
    def _open_jsonl(path: Path):
        """Open for appending (a resumed run continues the same file)."""
        # A crash mid-write can leave a last line without its newline; start on a fresh line so
        # the next row is not glued onto the fragment (read_metrics skips the fragment).
        needs_newline = False
        if path.exists() and path.stat().st_size > 0:
            with path.open("rb") as f:
                f.seek(-1, os.SEEK_END)
                needs_newline = f.read(1) != b"\n"
        file = path.open("a", encoding="utf-8")
        if needs_newline:
            file.write("\n")
            file.flush()
        return file

    def log(self, step: int, metrics: Mapping[str, float | int | None]) -> None:
        """Write one row ``{"step": step, **metrics}``; NaN/inf are written as null."""
        if self._closed:
            raise RuntimeError("MetricsLogger.log() called after close()")
        if "step" in metrics:
            raise ValueError("'step' is reserved: pass it as the step argument")
        row = {"step": int(step)} | {name: _clean(name, v) for name, v in metrics.items()}
        self._file.write(json.dumps(row, allow_nan=False) + "\n")
        # Flush to the OS so a crashed process loses nothing; no fsync: it would cost a disk
        # round trip per step and only helps if the whole machine goes down.
        self._file.flush()
        scalars = {k: v for k, v in row.items() if k != "step" and v is not None}
        self._log_tensorboard(row["step"], scalars)
        self._log_wandb(row["step"], scalars)

    def _log_tensorboard(self, step: int, scalars: Mapping[str, float | int | bool]) -> None:
        if self._tb is None:
            return
        try:
            for name, value in scalars.items():
                self._tb.add_scalar(name, float(value), step)
        except Exception as e:  # a side channel must never stop training
            _warn_once("tensorboard-log", f"TensorBoard logging failed, disabling it: {e}")
            self._tb = None

    def _log_wandb(self, step: int, scalars: Mapping[str, float | int | bool]) -> None:
        if self._wandb is None:
            return
        try:
            self._wandb.log(dict(scalars), step=step)
        except Exception as e:
            _warn_once("wandb-log", f"wandb logging failed, disabling it: {e}")
            self._wandb = None

    def close(self) -> None:
        """Flush and close every sink; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._file.close()
        if self._tb is not None:
            try:
                self._tb.close()
            except Exception as e:
                _warn_once("tensorboard-close", f"closing TensorBoard writer failed: {e}")
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as e:
                _warn_once("wandb-close", f"wandb finish failed: {e}")

    def __enter__(self) -> MetricsLogger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _open_tensorboard(log_dir: Path) -> Any | None:
    """A SummaryWriter, or None (with one warning) when TensorBoard is unavailable."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as e:  # ImportError, or a broken tensorboard install
        _warn_once("tensorboard-import", f"TensorBoard unavailable, logging to JSONL only: {e}")
        return None
    try:
        # flush_secs: the default 120 s would leave a live dashboard two minutes behind.
        return SummaryWriter(log_dir=str(log_dir), flush_secs=30)
    except Exception as e:
        _warn_once("tensorboard-open", f"could not open TensorBoard writer: {e}")
        return None


def _want_wandb(flag: bool | None) -> bool:
    """Explicit True/False wins; None means: installed and configured through the environment."""
    if flag is not None:
        return flag
    return find_spec("wandb") is not None and any(os.environ.get(v) for v in WANDB_ENV_VARS)


def _wandb_has_credentials() -> bool:
    """Whether wandb can log in without asking: an API key in the env or in a netrc file."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        # wandb reads $NETRC when set, ~/.netrc otherwise; so do we.
        entries = netrc.netrc(os.environ.get("NETRC") or None)
        return entries.authenticators(host or "api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def _open_wandb(run_dir: Path, config: dict | None) -> Any | None:
    """A wandb run, or None (with one warning) if wandb is missing or fails to start.

    Without credentials an online run would prompt for a login, which hangs unattended jobs;
    such runs go offline instead (``wandb sync`` uploads them later).
    """
    try:
        import wandb
    except Exception as e:
        _warn_once("wandb-import", f"wandb requested but not importable, skipping it: {e}")
        return None
    mode = os.environ.get("WANDB_MODE") or None
    if mode in (None, "online", "run") and not _wandb_has_credentials():
        _warn_once("wandb-offline", "no wandb credentials found; logging to wandb offline")
        mode = "offline"
    try:
        return wandb.init(
            project=os.environ.get("WANDB_PROJECT", "frugalrl"),
            name=run_dir.name,
            dir=str(run_dir),
            config=config or {},
            mode=mode,
        )
    except Exception as e:
        _warn_once("wandb-init", f"wandb failed to start, continuing without it: {e}")
        return None


def read_metrics(path: str | Path) -> list[dict]:
    """Rows of a metrics.jsonl (or of ``path/metrics.jsonl`` for a run dir), sorted by step.

    Tolerates what crashes and resumes leave behind: lines that do not parse (a half-written
    last line) are skipped, and when the step goes backwards (a run resumed from an earlier
    checkpoint re-logs the steps after it) the re-logged rows replace the old ones, so each
    step keeps its last values. Consecutive rows with the same step (several ``log`` calls in
    one step) are merged, later values winning.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        raise UserError(f"no metrics file at {path}")
    by_step: dict[int, dict] = {}
    previous_step: int | None = None
    skipped = 0
    with path.open(encoding="utf-8", errors="replace") as f:
        for line in f:
            row = _parse_row(line)
            if row is None:
                skipped += int(bool(line.strip()))
                continue
            step = row["step"]
            if previous_step is not None and step < previous_step:
                # Resumed from an earlier checkpoint: everything from here on is stale.
                by_step = {s: r for s, r in by_step.items() if s < step}
            by_step.setdefault(step, {}).update(row)
            previous_step = step
    if skipped:
        log.warning(f"{path}: skipped {skipped} unreadable line(s) (a crash mid-write?)")
    return [by_step[s] for s in sorted(by_step)]


def _parse_row(line: str) -> dict | None:
    """A row with an integer "step", or None for a blank, truncated or foreign line."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(row, dict) or not isinstance(row.get("step"), int):
        return None
    return row
