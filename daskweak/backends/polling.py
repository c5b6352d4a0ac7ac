"""Waiting on an API (Slurm's squeue, the Kubernetes API server) at POLL_INTERVAL, never past a deadline."""

from __future__ import annotations

import time
from collections.abc import Callable


def poll_until(done: Callable[[], bool], *, interval: float, deadline: float) -> bool:
    """Ask `done` now and then every `interval` seconds until it holds or the `time.monotonic()` deadline
    passes; returns whether it held. The last wait ends at the deadline, so a long interval cannot overshoot it."""
    while not done():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(interval, remaining))
    return True
