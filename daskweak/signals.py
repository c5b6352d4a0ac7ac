"""Ctrl-C and SIGTERM (Airflow killing a task, `kill`, preemption) must unwind so clusters close.

An exception raised by a signal handler is lost when it lands inside a garbage-collector callback
(distributed installs one), so the signal is also remembered: `check_interrupted` re-raises it at the next
safe point (between two timed operations), and `pending_interrupt` lets a step that failed meanwhile tell
that it was in fact stopped (a SIGTERM sent to a whole process group stops its workers too, and their loss
may surface first).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_pending: list[BaseException] = []


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM; a BaseException so `except Exception` does not swallow it."""


def _handler(signum: int, frame: object) -> None:
    exc: BaseException = KeyboardInterrupt() if signum == signal.SIGINT else Terminated(f"received signal {signum}")
    _pending.append(exc)
    raise exc


@contextmanager
def interrupts_raise() -> Iterator[None]:
    """While the block runs, SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, _handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if not any(old is _handler for old in previous.values()):
            _pending.clear()


def pending_interrupt() -> BaseException | None:
    """The exception of a signal received in an `interrupts_raise` block, whether or not it got through."""
    return _pending[0] if _pending else None


def check_interrupted() -> None:
    """Raise a signal's exception that got swallowed before reaching the main code."""
    if (interrupt := pending_interrupt()) is not None:
        raise interrupt
