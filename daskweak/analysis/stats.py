"""Statistics over measured observations (warm-ups and failures left out): aggregates, confidence, efficiency."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy.stats import bootstrap

KEYS = ["suite", "operation", "cores_requested"]
BOOTSTRAP_SAMPLES = 2000
CONFIDENCE = 0.95


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
    return with_efficiency(table, scaling)


def with_efficiency(table: pd.DataFrame, scaling: str, by: list[str] | None = None) -> pd.DataFrame:
    """Add `efficiency` to a table of medians: T(1)/T(n), divided by n under strong scaling."""
    by = by or ["suite", "operation"]
    one_core = table[table["cores_requested"] == 1][[*by, "median"]].rename(columns={"median": "t1"})
    table = table.merge(one_core, on=by, how="left")
    table["efficiency"] = table["t1"] / table["median"]
    if scaling == "strong":
        table["efficiency"] /= table["cores_requested"]
    return table.drop(columns="t1")


def bootstrap_median_ci(values: np.ndarray, rng: np.random.Generator,
                        samples: int = BOOTSTRAP_SAMPLES) -> tuple[float, float]:
    """Percentile bootstrap interval of the median (scipy's); a single value is its own interval."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return (float(values[0]), float(values[0])) if len(values) else (np.nan, np.nan)
    result = bootstrap((values,), np.median, n_resamples=samples, confidence_level=CONFIDENCE,
                       method="percentile", vectorized=True, rng=rng)
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def summary(observations: pd.DataFrame, scaling: str, seed: int = 0) -> pd.DataFrame:
    """Per (run, suite, operation, cores): count, median, mean, IQR, CV, 95% bootstrap CI of the median,
    weak and strong efficiency, and the rate per core with its CI (the seed makes the CIs repeatable)."""
    rows = measured(observations)
    rng = np.random.default_rng(seed)
    keys = ["run_id", *KEYS]
    records = []
    for key, group in rows.groupby(keys, sort=True):
        duration = group["duration"].to_numpy(dtype=float)
        per_core = (group["rate"] / group["cores_requested"]).to_numpy(dtype=float)
        q1, q3 = np.percentile(duration, [25, 75])
        mean = duration.mean()
        records.append({
            **dict(zip(keys, key, strict=True)),
            "count": len(duration), "median": float(np.median(duration)), "mean": float(mean),
            "iqr": float(q3 - q1), "cv": float(duration.std(ddof=1) / mean) if len(duration) > 1 else 0.0,
            **dict(zip(("ci_low", "ci_high"), bootstrap_median_ci(duration, rng), strict=True)),
            "rate_per_core": float(np.median(per_core)),
            **dict(zip(("rate_per_core_ci_low", "rate_per_core_ci_high"), bootstrap_median_ci(per_core, rng),
                       strict=True)),
            "rate_unit": group["rate_unit"].iloc[0],
        })
    columns = [*keys, "count", "median", "mean", "iqr", "cv", "ci_low", "ci_high", "rate_per_core",
               "rate_per_core_ci_low", "rate_per_core_ci_high", "rate_unit"]
    table = pd.DataFrame.from_records(records, columns=columns)
    table = with_efficiency(table, "weak", by=["run_id", "suite", "operation"]).rename(
        columns={"efficiency": "weak_efficiency"})
    table["strong_efficiency"] = table["weak_efficiency"] / table["cores_requested"]
    table["efficiency"] = table["strong_efficiency" if scaling == "strong" else "weak_efficiency"]
    return table
