"""Suites of timed operations. Each suite yields its operations in order; the runner times each one alone."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from distributed import Client

from daskweak.plan import Step


@dataclass(frozen=True)
class Operation:
    """One timed unit of work: `run` blocks until the cluster has finished it; rate = size / duration."""

    name: str
    unit: str
    size: int
    run: Callable[[], object]


Suite = Callable[[Client, Step, int], Iterator[Operation]]


def get_suite(name: str) -> Suite:
    from daskweak.workloads import arrays, dataframes, tasks

    return {"arrays": arrays.operations, "dataframes": dataframes.operations, "tasks": tasks.operations}[name]
