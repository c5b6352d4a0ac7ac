"""`daskweak compare`: sides of one or more runs against the first side, per (suite, operation, cores).

The unit of evidence is the run when a side has several: observations of one run share its cluster, its
night and its machine state, so they are not independent of each other. Then the run medians (log) of the
two sides go to Welch's t test. With one run on a side only its observations are there: a Mann-Whitney test
of the observations, whose p then speaks for these runs only (the table says which unit was used).

The family is every comparison of the call, corrected with Holm; each interval is at the level Holm tested
its comparison at (`intervals.holm_levels`) and comes from inverting the same test, so an interval excludes 1
exactly when its comparison is significant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from math import comb

import numpy as np
import pandas as pd
from scipy.stats import ttest_ind

from daskweak.analysis.intervals import holm_levels, shift_test
from daskweak.analysis.regression import adjusted
from daskweak.analysis.stats import KEYS, measured
from daskweak.errors import DaskweakError
from daskweak.store import ResultStore

SIGNIFICANCE = 0.01  # the family's level (Holm's family-wise error)
COLUMNS = [*KEYS, "run", "unit", "n_base", "n_other", "baseline_median", "median", "ratio", "ratio_ci_low",
           "ratio_ci_high", "p_value", "p_adjusted", "smallest_p", "significant"]


def smallest_p(n: int, m: int) -> float:
    """The smallest two-sided Mann-Whitney p of n against m observations (no ties): 2/C(n+m, n)."""
    return min(1.0, 2 / comb(n + m, n)) if n and m else 1.0


def needed_observations(alpha: float = SIGNIFICANCE) -> int:
    """The fewest observations a side for which n against n can reach p < alpha."""
    n = 1
    while smallest_p(n, n) >= alpha:
        n += 1
    return n


def sides_of(run_ids: Sequence[str] | Sequence[Sequence[str]]) -> list[list[str]]:
    """Each argument is a side: a run id, or several (a list, or ids joined by commas); a run belongs to one
    side only."""
    sides = [[r for part in ([side] if isinstance(side, str) else side) for r in part.split(",") if r]
             for side in run_ids]
    every = [run for side in sides for run in side]
    if twice := sorted({run for run in every if every.count(run) > 1}):
        raise DaskweakError(f"compare: run(s) {', '.join(twice)} given more than once; each run belongs to one side")
    return sides


def label(side: list[str]) -> str:
    return ",".join(side)


def _run_logs(runs: list[np.ndarray]) -> np.ndarray:
    """Each run's log median: the unit of a run-level test."""
    return np.log([np.median(x) for x in runs])


def _test(before: list[np.ndarray], after: list[np.ndarray]) -> dict[str, float | str]:
    """p-value and point estimate of one comparison, at the run level when both sides have several runs."""
    if len(before) > 1 and len(after) > 1:
        base, other = _run_logs(before), _run_logs(after)
        p = float(ttest_ind(other, base, equal_var=False).pvalue)
        return {"unit": "runs", "p": p, "ratio": float(np.exp(other.mean() - base.mean())),
                "baseline_median": float(np.exp(base.mean())), "median": float(np.exp(other.mean())),
                "smallest_p": 0.0}
    base, other = np.concatenate(before), np.concatenate(after)
    # Hodges–Lehmann: the median of all pairwise ratios, the estimate the test's interval is centred on
    ratio = float(np.exp(np.median(np.subtract.outer(np.log(other), np.log(base)))))
    return {"unit": "observations", "p": shift_test(base, other, 1.0)[0], "ratio": ratio,
            "baseline_median": float(np.median(base)), "median": float(np.median(other)),
            "smallest_p": smallest_p(len(other), len(base))}


def _interval(before: list[np.ndarray], after: list[np.ndarray], unit: str, level: float) -> tuple[float, float]:
    if unit == "runs":
        ci = ttest_ind(_run_logs(after), _run_logs(before), equal_var=False).confidence_interval(1 - level)
        return float(np.exp(ci.low)), float(np.exp(ci.high))
    _, low, high = shift_test(np.concatenate(before), np.concatenate(after), level)
    return low, high


def compare(store: ResultStore, run_ids: Sequence[str] | Sequence[Sequence[str]],
            alpha: float = SIGNIFICANCE) -> pd.DataFrame:
    """Every side against the first: per (suite, operation, cores) the ratio other/first with its interval,
    p, Holm-adjusted p and significance over the whole family of the call."""
    sides = sides_of(run_ids)
    every = [r for side in sides for r in side]
    rows = measured(store.observations_of(every))
    groups = {key: group["duration"].to_numpy(dtype=float) for key, group in rows.groupby(["run_id", *KEYS])}
    keys = sorted({tuple(key[1:]) for key in groups})
    records, samples = [], []
    for side in sides[1:]:
        for key in keys:
            before = [groups[(r, *key)] for r in sides[0] if (r, *key) in groups]
            after = [groups[(r, *key)] for r in side if (r, *key) in groups]
            if not before or not after:
                continue
            found = _test(before, after)
            records.append({**dict(zip(KEYS, key, strict=True)), "run": label(side), "unit": found["unit"],
                            "n_base": sum(map(len, before)), "n_other": sum(map(len, after)),
                            "baseline_median": found["baseline_median"], "median": found["median"],
                            "ratio": found["ratio"], "p_value": found["p"], "smallest_p": found["smallest_p"]})
            samples.append((before, after))
    table = pd.DataFrame.from_records(records, columns=[c for c in COLUMNS if c not in (
        "ratio_ci_low", "ratio_ci_high", "p_adjusted", "significant")])
    if table.empty:
        return table.reindex(columns=COLUMNS)
    p = table["p_value"].to_numpy(dtype=float)
    table["p_adjusted"] = adjusted(p, "holm")
    table["significant"] = table["p_adjusted"] < alpha
    bounds = [_interval(before, after, unit, level) if math.isfinite(level) else (math.nan, math.nan)
              for (before, after), unit, level in zip(samples, table["unit"], holm_levels(p, alpha), strict=True)]
    table["ratio_ci_low"], table["ratio_ci_high"] = zip(*bounds, strict=True)
    return table[COLUMNS]


def too_few(ratios: pd.DataFrame, alpha: float = SIGNIFICANCE) -> str | None:
    """What to say when the observation counts cannot reach significance for some comparison, else None."""
    short = ratios[(ratios["unit"] == "observations") & (ratios["smallest_p"] * len(ratios) >= alpha)]
    if short.empty:
        return None
    n = needed_observations(alpha / len(ratios))
    return (f"too few observations: {len(short)} of {len(ratios)} comparison(s) cannot be significant whatever "
            f"the difference (the smallest possible two-sided Mann-Whitney p, {short['smallest_p'].max():.2g}, "
            f"times the {len(ratios)} comparisons of the family is ≥ {alpha}); give each run ≥ {n} observations, "
            "or compare several runs a side (RUN,RUN,… — tested at the run level)")
