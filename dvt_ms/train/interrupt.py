"""Graceful stop on SIGTERM / SIGINT: the training loop finishes its step, checkpoints, and exits.

``with StopSignals() as stop:`` installs handlers for SIGINT and SIGTERM (main thread only) that only
record the first signal (``stop.signum``); the loop looks at :attr:`StopSignals.requested` after every
step. A second signal restores the default action and re-sends itself, so the process stops at once
(status 130 for SIGINT, 143 for SIGTERM, as a shell reports a death by signal). The previous handlers
come back on exit.

MindSpore and SIGINT. While a compiled graph runs, MindSpore (2.10) installs its own SIGINT handler,
which turns the signal into a SIGTERM to the process, and leaves it installed: a Ctrl-C in the middle of
a step would read as SIGTERM. Two defences: :meth:`StopSignals.refresh` (called after every step) puts
the handler back, and a script can call :func:`route_sigint_to_thread` before importing MindSpore: SIGINT
is then blocked in every thread (threads inherit the mask) and taken by a watcher thread with
``sigwait``, so no C handler ever sees it. Outside a ``StopSignals`` block the watcher raises
``KeyboardInterrupt`` in the main thread, as Python's default handler would.

:class:`TrainingInterrupted` is what the loop raises once the checkpoint is written; its
:attr:`~TrainingInterrupted.exit_status` is ``128 + signum``.
"""
import _thread
import logging
import os
import signal
import threading
from typing import Dict, Optional, Sequence

logger = logging.getLogger(__name__)

__all__ = ["STOP_SIGNALS", "StopSignals", "TrainingInterrupted", "route_sigint_to_thread"]

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_STATE = {"active": None, "routed": False}


def route_sigint_to_thread() -> bool:
    """Block SIGINT here and in every thread started later; a watcher thread receives it (``sigwait``).

    Call it first thing in a script's ``main`` (before MindSpore starts its threads). Returns whether it
    is in place (only from the main thread, on platforms with ``pthread_sigmask``).
    """
    if _STATE["routed"]:
        return True
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        return False
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    threading.Thread(target=_watch_sigint, name="dvt_ms-sigint", daemon=True).start()
    _STATE["routed"] = True
    return True


def _watch_sigint() -> None:
    while True:
        signum = signal.sigwait({signal.SIGINT})
        active = _STATE["active"]
        if active is None:
            _thread.interrupt_main()  # KeyboardInterrupt in the main thread, as without the watcher
        else:
            active._handle(signum, None, from_thread=True)


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

    def _handle(self, signum: int, frame, from_thread: bool = False) -> None:
        if self.signum is None:
            self.signum = signum
            logger.warning("received %s: stopping after the current step, with a checkpoint (send it again "
                           "to stop at once, without one)", signal.Signals(signum).name)
            return
        logger.warning("received %s again: stopping now, without a checkpoint", signal.Signals(signum).name)
        if from_thread:  # SIGINT is blocked in every thread: exit with the status a death by it gives
            os._exit(128 + signum)
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)

    def _installed(self) -> Sequence[int]:
        return [s for s in self.signals if not (s == signal.SIGINT and _STATE["routed"])]

    def refresh(self) -> None:
        """Put the handlers back (MindSpore replaces the SIGINT one while a graph runs)."""
        if self._previous:
            for signum in self._previous:
                if signal.getsignal(signum) is not self._handle or signum == signal.SIGINT:
                    signal.signal(signum, self._handle)

    def __enter__(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            logger.debug("not in the main thread: SIGINT/SIGTERM keep their handlers (no graceful stop)")
            return self
        for signum in self._installed():
            self._previous[signum] = signal.signal(signum, self._handle)
        _STATE["active"] = self
        return self

    def __exit__(self, *exc_info) -> None:
        if _STATE["active"] is self:
            _STATE["active"] = None
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()
