"""Statistics over measured observations (warm-ups and failures left out): aggregates, confidence, efficiency."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from daskweak.analysis.intervals import median_interval, precision, ratio_interval

KEYS = ["suite", "operation", "cores_requested"]
NOISE_LIMIT = 0.10  # NOISE_LIMIT_PCT's default, as a fraction


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


def noise_limit_of(run: Any) -> float:
    """A stored run's NOISE_LIMIT_PCT (kept with its configuration; older runs have the default) as a fraction."""
    config = run["config"] if isinstance(run["config"], dict) else {}
    return float(config.get("noise_limit_pct") or NOISE_LIMIT * 100) / 100


def efficiency(observations: pd.DataFrame, scaling: str, noise_limit: float = NOISE_LIMIT) -> pd.DataFrame:
    """Median time per (suite, operation, cores) with E(n) = T(1)/T(n) (weak) or T(1)/(n·T(n)) (strong), its
    95 % interval and whether it is `noisy` (see `summary`)."""
    table = summary(observations, scaling, noise_limit=noise_limit)
    return table[[*KEYS, "count", "median", "ci_low", "ci_high", "precision", "efficiency", "efficiency_low",
                  "efficiency_high", "noisy"]]


def with_efficiency(table: pd.DataFrame, scaling: str, by: list[str] | None = None) -> pd.DataFrame:
    """Add `efficiency` to a table of medians: T(1)/T(n), divided by n under strong scaling."""
    by = by or ["suite", "operation"]
    one_core = table[table["cores_requested"] == 1][[*by, "median"]].rename(columns={"median": "t1"})
    table = table.merge(one_core, on=by, how="left")
    table["efficiency"] = table["t1"] / table["median"]
    if scaling == "strong":
        table["efficiency"] /= table["cores_requested"]
    return table.drop(columns="t1")


def summary(observations: pd.DataFrame, scaling: str, noise_limit: float = NOISE_LIMIT) -> pd.DataFrame:
    """Per (run, suite, operation, cores): count, median, mean, IQR, CV, the exact 95 % interval of the median
    and its `precision` (half-width / median), weak and strong efficiency with their 95 % intervals, the rate
    per core with its interval, and `noisy`: the median's or the efficiency's interval is missing (too few
    observations) or wider than ± `noise_limit` of the value. A noisy value is never shown as a result."""
    rows = measured(observations)
    keys = ["run_id", *KEYS]
    records, samples = [], {}
    for key, group in rows.groupby(keys, sort=True):
        duration = group["duration"].to_numpy(dtype=float)
        per_core = (group["rate"] / group["cores_requested"]).to_numpy(dtype=float)
        q1, q3 = np.percentile(duration, [25, 75])
        mean = duration.mean()
        samples[key] = duration
        records.append({
            **dict(zip(keys, key, strict=True)),
            "count": len(duration), "median": float(np.median(duration)), "mean": float(mean),
            "iqr": float(q3 - q1), "cv": float(duration.std(ddof=1) / mean) if len(duration) > 1 else 0.0,
            **dict(zip(("ci_low", "ci_high"), median_interval(duration), strict=True)),
            "precision": precision(duration),
            "rate_per_core": float(np.median(per_core)),
            **dict(zip(("rate_per_core_ci_low", "rate_per_core_ci_high"), median_interval(per_core), strict=True)),
            "rate_unit": group["rate_unit"].iloc[0],
        })
    columns = [*keys, "count", "median", "mean", "iqr", "cv", "ci_low", "ci_high", "precision", "rate_per_core",
               "rate_per_core_ci_low", "rate_per_core_ci_high", "rate_unit"]
    table = pd.DataFrame.from_records(records, columns=columns)
    table = with_efficiency(table, "weak", by=["run_id", "suite", "operation"]).rename(
        columns={"efficiency": "weak_efficiency"})
    def bounds(run_id: str, suite: str, operation: str, cores: int) -> tuple[float, float]:
        if cores == 1:  # T(1)/T(1): exactly 1, its noise is the median's
            return 1.0, 1.0
        return ratio_interval(samples.get((run_id, suite, operation, 1), np.array([])),
                              samples[(run_id, suite, operation, cores)])

    found = [bounds(*key) for key in zip(table["run_id"], table["suite"], table["operation"],
                                         table["cores_requested"], strict=True)]
    low = np.array([b[0] for b in found], dtype=float)
    high = np.array([b[1] for b in found], dtype=float)
    strong = 1 / table["cores_requested"].to_numpy(dtype=float) if scaling == "strong" else 1.0
    table["strong_efficiency"] = table["weak_efficiency"] / table["cores_requested"]
    table["efficiency"] = table["strong_efficiency" if scaling == "strong" else "weak_efficiency"]
    table["efficiency_low"], table["efficiency_high"] = low * strong, high * strong
    half = (table["efficiency_high"] - table["efficiency_low"]) / 2 / table["efficiency"]
    table["noisy"] = ~((table["precision"] <= noise_limit) & (half.fillna(np.inf) <= noise_limit))
    return table
