"""Where a nightly series changed level over its whole history: ruptures' PELT (its C implementation,
`KernelCPD` with the linear kernel, which is the `l2` cost), drawn on the trends.

The nightly verdict is an online test of the latest nights against the ones before; this is the offline
view over a series' whole history (what Hunter/Otava and asv's step detection show): the nights where the
level moved and by how much. The series is the log of a comparison's nightly medians; the cost is the
squared distance to a segment's mean (`l2`), each change costs PENALTY·σ² with σ the series' night-to-night
noise estimated robustly (from the spread of successive differences, which a few steps barely move), so
the same penalty means the same false-alarm rate on any series (tests/test_changepoints.py measures it).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

PENALTY = 16.0  # per change, in units of σ²: about 0.5 % of 60-night noise series get a spurious change
MIN_NIGHTS = 3  # the shortest level reported


def noise_scale(values: np.ndarray) -> float:
    """σ of the night-to-night noise of `values`: the MAD of successive differences, /√2 (a step moves one
    difference out of many, so it barely changes the estimate)."""
    steps = np.diff(values)
    if len(steps) < 2:
        return 0.0
    return float(1.4826 * np.median(np.abs(steps - np.median(steps))) / np.sqrt(2))


def change_points(values: np.ndarray, penalty: float = PENALTY) -> list[int]:
    """The indices at which a new level of `values` (a log series, oldest first) starts."""
    import ruptures

    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    sigma = noise_scale(values)
    if len(values) < 2 * MIN_NIGHTS or sigma <= 0:
        return []
    detector = ruptures.KernelCPD(kernel="linear", min_size=MIN_NIGHTS).fit(values[:, None])
    found = detector.predict(pen=penalty * sigma**2)
    return [int(index) for index in found[:-1]]  # the last "change" is the series' end


def trend_change_points(trend: pd.DataFrame, penalty: float = PENALTY) -> pd.DataFrame:
    """Per series of `trend` (suite, operation, cores_requested, started_at, median), each change point: the
    first night of the new level, the shift of the level's median against the one before, in %, and its 95 %
    interval (the distribution-free one of a ratio of medians: NaN when a level has too few nights for one)."""
    from daskweak.analysis.intervals import ratio_interval

    columns = ["suite", "operation", "cores_requested", "started_at", "shift_pct", "shift_low", "shift_high"]
    found = []
    for (suite, operation, cores), rows in trend.dropna(subset=["median"]).groupby(
            ["suite", "operation", "cores_requested"], sort=True):
        rows = rows.sort_values("started_at")
        logs = np.log(rows["median"].to_numpy(dtype=float))
        bounds = [0, *change_points(logs, penalty), len(logs)]
        for before, start, end in zip(bounds, bounds[1:], bounds[2:], strict=False):
            shift = np.expm1(np.median(logs[start:end]) - np.median(logs[before:start])) * 100
            low, high = ratio_interval(np.exp(logs[start:end]), np.exp(logs[before:start]))
            found.append((suite, operation, cores, rows["started_at"].iloc[start], float(shift),
                          (low - 1) * 100, (high - 1) * 100))
    return pd.DataFrame(found, columns=columns)
