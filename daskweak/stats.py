"""Aggregates over measured observations (warm-ups and failures left out) and scaling efficiency."""

from __future__ import annotations

import pandas as pd

KEYS = ["suite", "operation", "cores_requested"]


def measured(observations: pd.DataFrame) -> pd.DataFrame:
    """Only what counts for statistics: successful, non-warm-up observations."""
    return observations[(~observations["warmup"].astype(bool)) & (observations["status"] == "ok")]


def aggregate(observations: pd.DataFrame) -> pd.DataFrame:
    """The origin's CSV aggregates: median, mean, min, max, std of the duration per operation and cores."""
    return measured(observations).groupby(KEYS, sort=True).agg(
        median=("duration", "median"), mean=("duration", "mean"), min=("duration", "min"),
        max=("duration", "max"), std=("duration", "std"), count=("duration", "count"),
        median_rate=("rate", "median"), rate_unit=("rate_unit", "first"),
    ).reset_index()


def efficiency(observations: pd.DataFrame, scaling: str) -> pd.DataFrame:
    """Median time per (suite, operation, cores) with E(n) = T(1)/T(n) (weak) or T(1)/(n·T(n)) (strong)."""
    table = aggregate(observations)[[*KEYS, "median"]]
    one_core = table[table["cores_requested"] == 1][["suite", "operation", "median"]]
    table = table.merge(one_core.rename(columns={"median": "t1"}), on=["suite", "operation"], how="left")
    table["efficiency"] = table["t1"] / table["median"]
    if scaling == "strong":
        table["efficiency"] /= table["cores_requested"]
    return table.drop(columns="t1")
