"""Warming the workers' memory just before each measured observation, at the cost of one allocation.

Lives apart from the runner so that the function the workers run imports only NumPy and the plan.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from distributed import Client

from daskweak.plan import Step

# What a measured observation of a suite holds at once. Only the array suite's is warmed: its observations
# hold the whole array and a full-size result at once, and its first allocations were where a warm-up on
# 1/16 of the data left the first measured observation slow (arrays.create, arrays.blockwise).
FOOTPRINT: dict[str, Callable[[Step], int]] = {"arrays": lambda step: 2 * step.array_bytes}


def footprint(step: Step, suite: str) -> int:
    """Bytes one worker holds at the peak of a measured observation (its share of input and result), at most
    half its memory, so warming it never makes a worker spill."""
    per_worker = FOOTPRINT[suite](step) // step.workers if suite in FOOTPRINT else 0
    if step.memory_per_node:
        per_worker = min(per_worker, step.memory_per_node * step.nodes // (2 * step.workers))
    return per_worker


def warm_memory(client: Client, nbytes: int) -> None:
    """Touch `nbytes` of fresh memory on every worker at once, then free it.

    On a virtual machine that hands freed memory back to its hypervisor (free page reporting), the first touch
    of memory the guest has not used for about a second costs many times a later one: 2 s against 0.11 s per
    GiB on the development machine. A warm-up on a fraction of the data leaves that cost to the first measured
    observation alone, and a pause between observations leaves it to any of them. The runner touches the
    footprint just before every measured observation: the first touch pays the cost outside the measurement
    (one allocation instead of a full-size pass), the later ones find the memory the previous observation has
    just freed and cost a tenth.
    """
    if nbytes > 0:
        client.run(_touch, nbytes)


def _touch(nbytes: int) -> None:
    np.ones(nbytes, dtype=np.uint8)  # writes every page; freed on return
