"""Task suite: the scheduler's own throughput, in tasks per second, on four graph shapes."""

from __future__ import annotations

import math
from collections.abc import Iterator

from dask import delayed
from distributed import Client, wait

from daskweak.plan import Step
from daskweak.workloads import Operation


def add(*values: int) -> int:
    return sum(values)


def operations(client: Client, step: Step, seed: int) -> Iterator[Operation]:
    count = step.tasks

    # Independent tasks are queued by the scheduler (worker-saturation), so each costs a round trip as
    # well; half the tasks keep them from dominating the suite.
    independent_count = max(1, count // 2)

    def independent() -> None:
        wait(client.map(add, range(independent_count), pure=False))

    def tree() -> int:
        level = [delayed(add)(i) for i in range(count // 2)]
        while len(level) > 1:
            level = [delayed(add)(*level[i:i + 2]) for i in range(0, len(level), 2)]
        return client.compute(level[0]).result()

    width = max(step.cores, round(math.sqrt(count)))
    depth = max(1, count // width)

    def neighbours() -> None:
        layer = [delayed(add)(i) for i in range(width)]
        for _ in range(depth - 1):
            layer = [delayed(add)(layer[i - 1], layer[i], layer[(i + 1) % width]) for i in range(width)]
        wait(client.compute(layer))

    # Chains are latency-bound (one scheduler round trip per task): a quarter of the tasks keeps them
    # from dominating the suite.
    length = max(1, count // 4 // step.cores)

    def chains() -> None:
        ends = []
        for c in range(step.cores):
            value = delayed(add)(c)
            for _ in range(length - 1):
                value = delayed(add)(value)
            ends.append(value)
        wait(client.compute(ends))

    yield Operation("independent", "tasks", independent_count, independent, describe="`client.map`, half the tasks")
    yield Operation("tree_reduction", "tasks", count // 2 * 2 - 1, tree, describe="pairwise sums")
    yield Operation("nearest_neighbour", "tasks", width * depth, neighbours,
                    describe="layers, each task reads three of the layer before")
    yield Operation("sequential_chain", "tasks", length * step.cores, chains,
                    describe="one chain per core, a quarter of the tasks")
