"""Stopping on SIGTERM / SIGINT without losing work: the current step finishes, a checkpoint is
written, and the run exits 0 saying how to resume. A second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


class GracefulStop:
    """Context manager: ``requested`` names the signal once one arrived (else None)."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # asked twice: the user means now
        self.requested = signal.Signals(signum).name
        print(
            f"frugalrl: {self.requested} received: finishing this step, then saving a checkpoint"
            " (Ctrl-C again to stop at once)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self) -> GracefulStop:
        if threading.current_thread() is threading.main_thread():  # signals go to the main thread
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
