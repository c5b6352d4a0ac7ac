"""Dataframe suite: the origin's nine operations plus elementwise arithmetic, set_index and rolling mean.

Group keys scale with the rows (about KEY_GROUP_ROWS rows per key), so under weak scaling every
group-by does more work as the cores grow; the origin capped the keys at 1e5 and its groupby-apply
stopped growing, then took 97% of all measured time.
"""

from __future__ import annotations

from collections.abc import Iterator

import dask.dataframe as dd
import numpy as np
import pandas as pd
from distributed import Client, wait

from daskweak.plan import Step
from daskweak.workloads import Operation

KEY_GROUP_ROWS = 1000
SMALL_KEYS = 100


def make_partition(spec: tuple[int, int, int, int]) -> pd.DataFrame:
    """Rows [start, stop) with index = row number, so `loc` can find partitions by division."""
    start, stop, keys, seed = spec
    rng = np.random.default_rng(seed)
    size = stop - start
    return pd.DataFrame(
        {
            "x": rng.random(size),
            "y": rng.standard_normal(size),
            "k": rng.integers(0, keys, size=size, dtype=np.int64),
            "j": rng.integers(0, SMALL_KEYS, size=size, dtype=np.int64),
        },
        index=pd.RangeIndex(start, stop, name="row"),
    )


def spread(group: pd.DataFrame) -> float:
    return float(group["x"].max() - group["y"].min())


def operations(client: Client, step: Step, seed: int) -> Iterator[Operation]:
    rows, parts = step.dataframe_rows, step.dataframe_partitions
    keys = max(1, rows // KEY_GROUP_ROWS)
    bounds = [round(i * rows / parts) for i in range(parts + 1)]
    specs = [(bounds[i], bounds[i + 1], keys, seed + i) for i in range(parts)]
    rng = np.random.default_rng(seed)
    labels = np.sort(rng.choice(rows, size=max(1, rows // 20), replace=False)).tolist()
    nbytes = step.dataframe_bytes
    data: dict[str, dd.DataFrame] = {}

    def persist(frame: dd.DataFrame | dd.Series) -> None:
        wait(client.persist(frame))

    def compute(frame: dd.DataFrame | dd.Series) -> object:
        return client.compute(frame).result()

    def create() -> None:
        frame = dd.from_map(make_partition, specs, divisions=[*bounds[:-1], bounds[-1] - 1])
        data["df"] = client.persist(frame)
        wait(data["df"])

    def df() -> dd.DataFrame:
        if "df" not in data:
            raise RuntimeError("no data: the create operation did not finish")
        return data["df"]

    yield Operation("create", "rows", rows, create, describe="random, two float and two key columns, persisted",
                    prepares=True)
    yield Operation(
        "map_partitions", "rows", rows,
        lambda: persist(df().map_partitions(lambda p: p.assign(rank=p.x.rank()))),
        describe="rank within each partition",
    )
    yield Operation("loc_random_access", "rows", len(labels), lambda: compute(df().loc[labels]),
                    describe="`loc` of 5% of the rows")
    yield Operation("std", "rows", rows, lambda: compute(df()[["x", "y", "k", "j"]].std()),
                    describe="standard deviation of every column")
    yield Operation("series_std", "rows", rows, lambda: compute(df()["x"].std()),
                    describe="standard deviation of one column")
    yield Operation("groupby_mean", "rows", rows, lambda: compute(df().groupby("k")[["x", "y"]].mean()),
                    describe="mean of two columns by key (one key per 1000 rows)")
    yield Operation("groupby_two_columns", "rows", rows, lambda: compute(df().groupby(["j", "k"])["x"].sum()),
                    describe="sum by two keys")
    yield Operation(
        "groupby_apply", "rows", rows,
        lambda: compute(df().groupby("k").apply(spread, meta=("spread", "f8"))),
        describe="a Python function per group",
    )
    yield Operation("sort_values", "rows", rows, lambda: persist(df().sort_values("x")),
                    describe="by a float column (a shuffle)")
    yield Operation("arithmetic", "bytes", nbytes, lambda: persist(df().x * 2 + df().y ** 2 - df().k),
                    describe="x·2 + y² − k")
    yield Operation("set_index", "rows", rows, lambda: persist(df().set_index("x")),
                    describe="on a float column (a shuffle)")
    yield Operation("rolling_mean", "rows", rows, lambda: persist(df()["x"].rolling(100).mean()),
                    describe="window of 100 rows")
    data.clear()
