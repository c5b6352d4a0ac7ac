"""Array suite: the origin's seven operations plus rechunk and map_overlap (the 2017 Dask scaling study).

The random array is persisted once per observation and every later operation reads the persisted chunks,
so no operation pays for regenerating the data (the origin dropped the result of `persist()`).
"""

from __future__ import annotations

from collections.abc import Iterator

import dask.array as da
import numpy as np
from distributed import Client, wait

from daskweak.plan import Step
from daskweak.workloads import Operation


def smooth(block: np.ndarray) -> np.ndarray:
    """A 5-point stencil: the work of map_overlap is the same per element as in NumPy."""
    out = block.copy()
    out[1:-1, 1:-1] = (block[:-2, 1:-1] + block[2:, 1:-1] + block[1:-1, :-2] + block[1:-1, 2:]) / 4
    return out


def operations(client: Client, step: Step, seed: int) -> Iterator[Operation]:
    n, chunk = step.array_side, step.array_chunk
    nbytes = step.array_bytes
    rng = np.random.default_rng(seed)
    # Random access gathers three quarters of the rows, so its work grows with the array.
    rows = np.sort(rng.choice(n, size=max(1, 3 * n // 4), replace=False))
    data: dict[str, da.Array] = {}

    def persist(array: da.Array) -> None:
        wait(client.persist(array))

    def create() -> None:
        data["x"] = client.persist(da.random.default_rng(seed).random((n, n), chunks=(chunk, chunk)))
        wait(data["x"])

    def x() -> da.Array:
        if "x" not in data:
            raise RuntimeError("no data: the create operation did not finish")
        return data["x"]

    yield Operation("create", "bytes", nbytes, create, describe="random N×N, persisted", prepares=True)
    yield Operation("blockwise", "bytes", nbytes, lambda: persist(x().map_blocks(np.cumsum, axis=1)),
                    describe="cumulative sum within each block, `map_blocks(np.cumsum, axis=1)`")
    yield Operation("random_access", "bytes", len(rows) * n * 8, lambda: persist(x()[rows]),
                    describe="gathers three quarters of the rows, `x[rows]`")
    yield Operation("std", "bytes", nbytes, lambda: client.compute(x().std()).result(),
                    describe="of all elements, `x.std()`")
    yield Operation("std_axis", "bytes", nbytes, lambda: client.compute(x().std(axis=0)).result(),
                    describe="per column, `x.std(axis=0)`")
    yield Operation("sin2_cos2", "bytes", nbytes, lambda: persist(da.sin(x()) ** 2 + da.cos(x()) ** 2),
                    describe="sin²+cos²")
    yield Operation("transpose_add", "bytes", nbytes, lambda: persist(x() + x().T), describe="x + xᵀ")
    yield Operation(
        "rechunk", "bytes", nbytes,
        lambda: persist(x().rechunk((min(n, 2 * chunk), max(1, chunk // 2)))),
        describe="to chunks twice as tall and half as wide",
    )
    yield Operation(
        "map_overlap", "bytes", nbytes, lambda: persist(x().map_overlap(smooth, depth=1, boundary="none")),
        describe="5-point stencil",
    )
    data.clear()
