"""Suites of timed operations. Each suite yields its operations in order; the runner times each one alone.

Building an operation does no work (only `run` touches the cluster), so `catalogue` lists every operation
with its unit and description without a cluster: README.md's table is generated from it
(`python -m daskweak.workloads`), so the docs say what the code does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

from distributed import Client

from daskweak.plan import Step


@dataclass(frozen=True)
class Operation:
    """One timed unit of work: `run` blocks until the cluster has finished it; rate = size / duration."""

    name: str
    unit: str
    size: int
    run: Callable[[], object]
    describe: str = ""  # what the operation computes, for people (README's table)
    prepares: bool = False  # later operations of the observation read its result (a re-measure runs it untimed)


Suite = Callable[[Client, Step, int], Iterator[Operation]]


def get_suite(name: str) -> Suite:
    from daskweak.workloads import arrays, dataframes, tasks

    return {"arrays": arrays.operations, "dataframes": dataframes.operations, "tasks": tasks.operations}[name]


SUITES = ("arrays", "dataframes", "tasks")


def catalogue() -> dict[str, list[Operation]]:
    """Every suite's operations as the runner gets them, built on a tiny step and no client (none is used)."""
    step = Step(index=0, cores=1, nodes=1, node_cores=(1,), workers=1, threads_per_worker=1, memory_per_node=None,
                array_side=16, array_chunk=8, dataframe_rows=1000, dataframe_partitions=4, tasks=10)
    return {name: list(get_suite(name)(cast(Client, None), step, 0)) for name in SUITES}


def operations_table() -> str:
    """README.md's "What is measured" table: every operation in the order it runs, what it computes, its unit."""
    lines = ["| suite | operation | what it computes | unit |", "|---|---|---|---|"]
    for suite, operations in catalogue().items():
        lines += [f"| {suite} | {op.name} | {op.describe} | {op.unit} |" for op in operations]
    return "\n".join(lines) + "\n"
