"""Stopping a run on a scheduler's signal and resuming it exactly.

SIGTERM (a preemption, ``scancel``, a time limit; torchrun passes it on to its workers) and, inside a submitit job,
submitit's timeout/preemption signal (``SIGUSR2`` unless ``SUBMITIT_PREEMPT_SIGNAL`` names another) only *ask* the
run to stop: the training loop finishes its step, and at its next check (every ``log_every`` steps and between
epochs, where all ranks agree) writes a checkpoint unless the last one is of that step, even in the middle of an
epoch, and raises :class:`Stopped`. The run is recorded ``interrupted``; the CLI exits with 128 + the signal's
number, or, for a signal that had a handler before the run (submitit's), calls that handler, which requeues the
job. A second signal stops at once, without a checkpoint.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import Any

log = logging.getLogger("tvlars")

_requested: int | None = None  # the signal that asked the run to stop


class Stopped(BaseException):
    """A run stopped by a signal. Not an ``Exception``: a sweep does not go on with its next job either.

    ``forward`` is the handler the signal had before the run (submitit's, which requeues the job), if any.
    """

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        self.forward: Callable[[int, FrameType | None], Any] | None = None

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def requested() -> int | None:
    """The signal that asked this process to stop, if one did."""
    return _requested


def stop_signals() -> list[signal.Signals]:
    """SIGTERM, and inside a submitit job its timeout/preemption signal."""
    signals = [signal.SIGTERM]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        signals.append(signal.Signals[f"SIG{os.environ.get('SUBMITIT_PREEMPT_SIGNAL', 'USR2')}"])
    return signals


def _ask(signum: int, frame: FrameType | None) -> None:
    global _requested
    name = signal.Signals(signum).name
    if _requested is not None:
        raise Stopped(signum, f"stopped at once by a second {name}; rerun the same command to resume from the last "
                              "checkpoint")
    _requested = signum
    log.warning("%s received: the run stops at its next check (every log_every steps) after writing a checkpoint "
                "(send it again to stop at once)", name)


@contextlib.contextmanager
def handling() -> Iterator[None]:
    """Turn the stop signals into a request (:func:`requested`) for the duration of a run; a :class:`Stopped` that
    leaves the block gets the signal's previous handler as ``forward``. A no-op outside the main thread."""
    global _requested
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, _ask) for signum in stop_signals()}
    _requested = None
    try:
        yield
    except Stopped as exc:
        handler = previous.get(signal.Signals(exc.signum))
        exc.forward = handler if callable(handler) else None
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        _requested = None
