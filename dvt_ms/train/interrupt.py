"""Graceful stop on SIGTERM / SIGINT: the training loop finishes its step, checkpoints, and exits.

``with StopSignals() as stop:`` installs handlers for SIGINT and SIGTERM (main thread only) that only
record the first signal (``stop.signum``); the loop looks at :attr:`StopSignals.requested` after every
step. A second signal restores the default action and re-sends itself, so the process stops at once
(status 130 for SIGINT, 143 for SIGTERM, as a shell reports a death by signal). The previous handlers
come back on exit.

:class:`TrainingInterrupted` is what the loop raises once the checkpoint is written; its
:attr:`~TrainingInterrupted.exit_status` is ``128 + signum``.
"""
import logging
import os
import signal
import threading
from typing import Dict, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class TrainingInterrupted(RuntimeError):
    """The run stopped on a signal after writing a checkpoint; the message says where and how to resume."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = int(signum)

    @property
    def exit_status(self) -> int:
        """``128 + signum``: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum


class StopSignals:
    """Context manager recording the first SIGINT/SIGTERM; a second one stops the process at once."""

    def __init__(self, signals: Sequence[int] = STOP_SIGNALS):
        self.signals = tuple(signals)
        self.signum: Optional[int] = None
        self._previous: Dict[int, object] = {}

    @property
    def requested(self) -> bool:
        """Whether a stop signal arrived."""
        return self.signum is not None

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            logger.warning("received %s: stopping after the current step, with a checkpoint (send it again "
                           "to stop at once, without one)", signal.Signals(signum).name)
            return
        logger.warning("received %s again: stopping now", signal.Signals(signum).name)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: SIGINT/SIGTERM keep their handlers (no graceful stop)")
            return self
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
