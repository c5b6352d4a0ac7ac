"""Nightly regression verdict: a run against the earlier judged nights of the same settings and hardware class.

The unit of evidence is the night (observations of one run are not independent of each other). Per
comparison — (suite, operation, cores) for time, (suite, cores) for peak memory — the night's median, on a
log scale:
- **net of the night's shared effect**: what every time comparison of a night has in common (the median over
  them of each one's distance from its usual level: a busy or throttled machine) is taken out of each, and
  judged as a comparison of its own ("all · night effect"), so a change of every operation is still caught;
- **pooled**: each operation over its core counts (the mean of its log medians, cores "all") is judged
  beside its core counts, so a change they all see has all their evidence;
- **over windows**: the level of the last w nights (tonight included; w = 1, 2, 3, 5: the mean of one or
  two, the median of more, so one odd night cannot confirm itself on the nights after it) against the K
  eligible nights before them, a one-sided prediction-interval t test, t = (x_w − x̄)/(s·√(v_w + 1/K)) with
  K − 1 degrees of freedom (v_w: the window level's variance in nights, 1/w or a median's exact variance);
  the best window counts, Bonferroni-corrected over the windows tried, and its change must exceed
  THRESHOLD %. A small step no single night shows is seen by the nights after it together.
The night's whole family (measured and derived comparisons) is corrected together (Holm, or
Benjamini–Hochberg).

A significant slowdown is first "suspected" (shown, not red); it is a "regression" when it was suspected
on at least M of the last N nights (tonight included). The nightly DAG measures tonight's suspects again
with REMEASURE_OBS observations before the verdict (`remeasure_plan`; the verdict then uses those). A
suspected or regressed night never joins the baseline of that comparison unless a user accepts it (`daskweak
accept`): then only nights from the accepted one on form the baseline, and no window reaches back before it.
With REGRESSION_RESTART_NIGHTS = L > 0, a change flagged on L consecutive nights is a change point and the
baseline restarts at its first night by itself; the verdict names the run either way. Runs with another
fingerprint (settings) or hardware class are never compared; only judged nightly runs form a baseline.

Everything below `check_run` is pure NumPy over arrays with leading batch axes, so the seeded simulations
(`tests/test_analysis.py`, `benchmarks/regression_calibration.py`) run the very code the nightly check runs.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from daskweak import hostload
from daskweak.analysis.intervals import median_interval, median_variance, precision
from daskweak.analysis.stats import KEYS, measured
from daskweak.errors import UnknownRun
from daskweak.settings import Settings
from daskweak.store import ResultStore

VERDICTS = ("regression", "suspected", "improvement", "unchanged", "no baseline")
FLAGGED = ("suspected", "regression")
MEMORY = "peak_memory"  # the operation name of a suite's peak-memory comparison, and its metric
COMPARISON = [*KEYS, "metric"]
BAND = 0.05  # the trend's band: the baseline's two-sided 95 % prediction interval
MIN_SHARED = 8  # comparisons needed to estimate a night's shared effect (a median of fewer is mostly noise)


@dataclass(frozen=True)
class Thresholds:
    """The rule's knobs (REGRESSION_* settings); the defaults are the shipped ones, chosen by simulation."""

    baseline_runs: int = 20
    threshold_pct: float = 3.0
    p_value: float = 0.02  # the family's level: Holm's family-wise error, or BH's false discovery rate
    min_baseline_runs: int = 5
    correction: Literal["holm", "bh"] = "holm"
    confirm_m: int = 2
    confirm_n: int = 3
    restart_nights: int = 0  # 0: only an acceptance restarts a baseline
    windows: tuple[int, ...] = (1, 2, 3, 5)  # nights pooled by the window tests (tonight and the ones before)


# --- pure statistics over arrays: [..., R (runs, oldest first), F (comparisons)] -----------------------

def baseline_mask(eligible: np.ndarray, k: int) -> np.ndarray:
    """The last `k` eligible runs of each comparison: `eligible` and the mask are [..., R, F]."""
    from_newest = np.cumsum(eligible[..., ::-1, :], axis=-2)[..., ::-1, :]
    return eligible & (from_newest <= k)


def prediction_test(current: np.ndarray, history: np.ndarray, use: np.ndarray,
                    min_runs: int, share: float = 1.0) -> dict[str, np.ndarray]:
    """One-sided p-values of `current` [..., F] (log values: one night, or a statistic of a window of nights
    whose variance is `share` times one night's) against the runs `use`d of `history` [..., R, F].

    A new run from the baseline's distribution has a t-distributed standardised distance to the baseline's
    mean, t = (x − x̄)/(s·√(1 + 1/K)) with K − 1 degrees of freedom (a prediction interval), so p is exact
    for normal log-medians, whatever K ≥ 2 and the observations per run (and for the mean of w nights, share
    1/w); comparisons with fewer than `min_runs` baseline runs get NaN.
    """
    n = use.sum(axis=-2)
    values = np.where(use, history, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=-2) / n
        var = (np.where(use, history - mean[..., None, :], 0.0) ** 2).sum(axis=-2) / (n - 1)
        scale = np.sqrt(var * (share + 1 / n))
        t = (current - mean) / scale
        # identical baseline values (s = 0): any difference is infinitely many standard errors away
        t = np.where(scale > 0, t, np.sign(current - mean) * np.inf)
        df = np.maximum(n - 1, 1)
        slower, faster = student_t.sf(t, df), student_t.cdf(t, df)
        # the band one new run of the baseline falls in 95 % of the time (shown on the trend, not the test's
        # level)
        reach = student_t.ppf(1 - BAND / 2, df) * np.sqrt(var * (1 + 1 / n))
    ok = (n >= max(min_runs, 2)) & np.isfinite(current)
    nan = np.full(np.shape(t), np.nan)
    return {"n": n, "mean": np.where(ok, mean, np.nan), "slower": np.where(ok, slower, nan),
            "faster": np.where(ok, faster, nan), "low": np.where(ok, mean - reach, nan),
            "high": np.where(ok, mean + reach, nan)}


def night_effect(values: np.ndarray, shared: np.ndarray) -> np.ndarray:
    """Each night's shared effect [..., R] over `values` [..., R, F]: the median over the `shared` columns of
    each value's distance from its column's median night. A busy or slow machine moves every operation of
    a night together; the median over the family is that move, and one operation's own change barely
    shifts it. Zero when fewer than MIN_SHARED columns share it."""
    if int(np.sum(shared)) < MIN_SHARED:
        return np.zeros(values.shape[:-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a night with no values at all
        effect = np.nanmedian(distances(values[..., np.asarray(shared, dtype=bool)]), axis=-1)
    return np.where(np.isnan(effect), 0.0, effect)


def distances(values: np.ndarray) -> np.ndarray:
    """Each value's distance [..., R, F] from its column's median night (log): what the night effect is the
    median of."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a column with no values at all
        return values - np.nanmedian(values, axis=-2, keepdims=True)


def derive(values: np.ndarray, shared: np.ndarray, groups: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """The series the rule tests [..., R, F + G (+ 1)] and each night's shared effect [..., R]: the `shared`
    columns net of the night's effect, then one pooled series per group (the mean of its columns: an
    operation over its core counts, so a change they all see is seen with all their nights' evidence),
    then the night effect itself (when it is estimated) so a change of every operation is still caught."""
    effect = night_effect(values, shared)
    adjusted = values - effect[..., None] * np.asarray(shared, dtype=bool)
    pooled = [adjusted[..., group].mean(axis=-1) for group in groups]
    extra = [*pooled, effect] if int(np.sum(shared)) >= MIN_SHARED else pooled
    return np.concatenate([adjusted, np.stack(extra, axis=-1)], axis=-1) if extra else adjusted, effect


def derived_precision(precision: np.ndarray, shared: np.ndarray, groups: list[list[int]],
                      tonight: np.ndarray) -> np.ndarray:
    """Tonight's precision (95 % half-width / value) of each derived comparison. A pooled comparison's comes
    from its columns' [F] as `derive` combines them: a relative half-width is about 1.96 standard errors of a
    log, so a mean of k columns has √Σp²/k. The night effect is the median of tonight's distances `tonight`
    [F] (log, each column from its usual level), so its interval is that median's distribution-free one: valid however
    unequal the columns' noise, as long as each is symmetric about the shared effect."""
    precision = np.asarray(precision, dtype=float)
    shared = np.asarray(shared, dtype=bool)
    pooled = [float(np.sqrt(np.sum(precision[group] ** 2)) / len(group)) for group in groups]
    if int(shared.sum()) < MIN_SHARED:
        return np.array(pooled)
    low, high = median_interval(np.asarray(tonight, dtype=float)[shared])
    return np.array([*pooled, float(np.expm1((high - low) / 2))])


def adjusted(p: np.ndarray, method: str) -> np.ndarray:
    """Holm's or Benjamini–Hochberg's adjusted p-values along the last axis (NaN: not in the family)."""
    p = np.asarray(p, dtype=float)
    order = np.argsort(np.where(np.isnan(p), np.inf, p), axis=-1)
    ranked = np.take_along_axis(p, order, axis=-1)
    m = (~np.isnan(p)).sum(axis=-1, keepdims=True)
    rank = np.arange(1, p.shape[-1] + 1)
    if method == "holm":
        scaled = np.minimum(1.0, (m - rank + 1) * ranked)
        scaled = np.fmax.accumulate(np.where(np.isnan(scaled), -np.inf, scaled), axis=-1)
    elif method == "bh":
        scaled = np.minimum(1.0, m / rank * ranked)
        scaled = np.where(np.isnan(scaled), np.inf, scaled)
        scaled = np.minimum.accumulate(scaled[..., ::-1], axis=-1)[..., ::-1]
    else:
        raise ValueError(f"unknown correction {method!r}")
    out = np.empty_like(p)
    np.put_along_axis(out, order, scaled, axis=-1)
    return np.where(np.isnan(p), np.nan, out)


def window_level(nights: np.ndarray) -> np.ndarray:
    """The level of a window of nights [..., w, F]: the mean of one or two, the median of more."""
    return nights.mean(axis=-2) if nights.shape[-2] <= 2 else np.median(nights, axis=-2)


def window_share(w: int) -> float:
    """The variance of `window_level` of w nights in units of one night's: 1/w for a mean, the exact variance
    of a median of w normal draws beyond."""
    return 1 / w if w <= 2 else median_variance(w)


def windowed(current: np.ndarray, history: np.ndarray, eligible: np.ndarray, since: np.ndarray,
             rule: Thresholds) -> dict[str, np.ndarray]:
    """Per comparison, the best of the window tests (the last w nights, tonight included, against the K
    eligible nights before them, for w in `rule.windows`) in each direction, Bonferroni-corrected over
    the windows that could be tested: a step that started w nights ago is seen with w nights of evidence.
    A window never reaches back before `since` (an acceptance or a restart). Only a window whose change
    exceeds the threshold counts."""
    series = np.concatenate([history, current[..., None, :]], axis=-2)
    nights = series.shape[-2]
    shape = current.shape
    best = {side: np.full(shape, np.inf) for side in ("slower", "faster")}
    change = {side: np.full(shape, np.nan) for side in ("slower", "faster")}
    window = {side: np.ones(shape, dtype=int) for side in ("slower", "faster")}
    tried = np.zeros(shape, dtype=int)
    first: dict[str, np.ndarray] = {}
    above, below = np.log1p(rule.threshold_pct / 100), np.log1p(-rule.threshold_pct / 100)
    for w in sorted(set(rule.windows) | {1}):
        if w > nights:
            continue
        # two nights: their mean; three or more: their median, so one odd night (a busy machine) moves no
        # window after its own night and cannot confirm itself night after night
        level = window_level(series[..., nights - w:, :])
        use = baseline_mask(eligible[..., :nights - w, :], rule.baseline_runs)
        test = prediction_test(level, history[..., :nights - w, :], use, rule.min_baseline_runs,
                               share=window_share(w))
        if w == 1:
            first = test
        valid = np.isfinite(test["slower"]) & (nights - w >= since)
        tried += valid
        gain = level - test["mean"]
        for side, p, counts in (("slower", test["slower"], gain > above), ("faster", test["faster"], gain < below)):
            better = valid & counts & (p < best[side])
            best[side] = np.where(better, p, best[side])
            change[side] = np.where(better, gain, change[side])
            window[side] = np.where(better, w, window[side])
    with np.errstate(invalid="ignore"):
        p = {side: np.where(np.isfinite(best[side]), np.minimum(1.0, best[side] * np.maximum(tried, 1)), 1.0)
             for side in best}
    p = {side: np.where(np.isnan(first["slower"]), np.nan, value) for side, value in p.items()}
    return {"first": first, "p": p, "change": change, "window": window}


def judge(current: np.ndarray, history: np.ndarray, eligible: np.ndarray, flagged: np.ndarray,
          rule: Thresholds, since: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Tonight's verdict per comparison: `current` [..., F] log values; `history` [..., R, F] earlier runs'
    log values (NaN where missing); `eligible` [..., R, F] may join the baseline; `flagged` [..., R, F] was
    suspected or a regression (unaccepted) on that night; `since` [..., F] the first night of the current
    level (an acceptance or restart; 0 by default). Returns arrays [..., F]; `verdict` holds indices into
    VERDICTS."""
    eligible = eligible & np.isfinite(history)
    since = np.zeros(current.shape, dtype=int) if since is None else np.broadcast_to(since, current.shape)
    tests = windowed(current, history, eligible, since, rule)
    test = tests["first"]  # tonight alone against the last K: the baseline shown, and its band
    p_slower = adjusted(tests["p"]["slower"], rule.correction)
    p_faster = adjusted(tests["p"]["faster"], rule.correction)
    slower = p_slower < rule.p_value
    faster = (p_faster < rule.p_value) & ~slower
    change = np.where(faster, tests["change"]["faster"], np.where(
        slower, tests["change"]["slower"], current - test["mean"]))
    recent = flagged[..., max(0, flagged.shape[-2] - (rule.confirm_n - 1)):, :] if rule.confirm_n > 1 else \
        flagged[..., :0, :]
    nights = recent.sum(axis=-2) + slower
    verdict = np.select(
        [np.isnan(test["slower"]), slower & (nights >= rule.confirm_m), slower, faster],
        [VERDICTS.index("no baseline"), VERDICTS.index("regression"), VERDICTS.index("suspected"),
         VERDICTS.index("improvement")], VERDICTS.index("unchanged"))
    window = np.where(faster, tests["window"]["faster"], np.where(slower, tests["window"]["slower"], 1))
    return {"verdict": verdict, "change_pct": np.expm1(change) * 100, "window": window,
            "baseline_mean": test["mean"], "baseline_runs": test["n"], "band_low": test["low"],
            "band_high": test["high"], "p_value": np.where(faster, tests["p"]["faster"], tests["p"]["slower"]),
            "p_adjusted": np.where(faster, p_faster, p_slower), "nights_flagged": nights,
            "use": baseline_mask(eligible, rule.baseline_runs)}


def simulate_nights(rng: np.random.Generator, histories: int, nights: int, run_cv: np.ndarray,
                    obs_cv: np.ndarray, observations: int, rule: Thresholds,
                    slowdown: np.ndarray | None = None, start: int | None = None, *,
                    groups: list[list[int]] | None = None, shared: np.ndarray | None = None,
                    night_cv: float = 0.0, remeasure: int = 0, net: bool = True) -> np.ndarray:
    """Seeded nightly histories of one family, judged night by night as `check_run` judges a stored history.

    Per comparison f, a night's value is the log of the median of `observations` lognormal draws
    (within-run CV `obs_cv[f]`) times a night factor (run-to-run CV `run_cv[f]`), times a factor every
    `shared` comparison of the night has in common (CV `night_cv`). From night `start` on, the night is
    `slowdown[f]` times slower. The derived series (`groups` pooled, the night effect) are judged as
    `check_run` judges them (`net` false: the times are judged raw, no shared effect taken out). With
    `remeasure` > 0, a night's suspects are measured again with that many observations (the night's
    factors stay: the same night) and judged again, as the nightly DAG does.
    Nights are judged from the `rule.min_baseline_runs`-th on (the baseline growing to K as in a new
    history); returns the verdict indices [histories, nights, F + derived] (−1 for nights not judged).
    """
    run_cv, obs_cv = np.asarray(run_cv, dtype=float), np.asarray(obs_cv, dtype=float)
    families = run_cv.shape[-1]
    groups = groups or []
    shared = np.zeros(families, dtype=bool) if shared is None else np.asarray(shared, dtype=bool)
    sigma_run, sigma_obs = np.sqrt(np.log1p(run_cv ** 2)), np.sqrt(np.log1p(obs_cv ** 2))
    sigma_night = np.sqrt(np.log1p(night_cv ** 2))

    def medians(count: int, size: tuple[int, ...]) -> np.ndarray:
        return np.median(rng.standard_normal((*size[:-1], count, size[-1])), axis=-2) * sigma_obs

    level = rng.standard_normal((histories, nights, families)) * sigma_run \
        + rng.standard_normal((histories, nights, 1)) * sigma_night * shared
    if slowdown is not None:
        level[:, start or 0:, :] += np.log(np.asarray(slowdown, dtype=float))
    values = level + medians(observations, (histories, nights, families))
    shared = shared if net else np.zeros(families, dtype=bool)  # who shares the night, and who is judged net
    width = derive(values[:, :1], shared, groups)[0].shape[-1]
    verdicts = np.full((histories, nights, width), -1)
    flagged = np.zeros((histories, nights, width), dtype=bool)
    suspect = [VERDICTS.index(v) for v in FLAGGED]
    members = [[f] for f in range(families)] + groups + [[]]
    for night in range(rule.min_baseline_runs, nights):
        series = derive(values[:, :night + 1], shared, groups)[0]
        result = judge(series[:, night], series[:, :night], ~flagged[:, :night], flagged[:, :night], rule)
        if remeasure:
            again = np.zeros((histories, families), dtype=bool)
            for column, of in enumerate(members[:width]):
                again[:, of] |= np.isin(result["verdict"][:, column], suspect)[:, None]
            if again.any():
                fresh = level[:, night] + medians(remeasure, (histories, families))
                values[:, night] = np.where(again, fresh, values[:, night])
                series = derive(values[:, :night + 1], shared, groups)[0]
                result = judge(series[:, night], series[:, :night], ~flagged[:, :night], flagged[:, :night],
                               rule)
        verdicts[:, night] = result["verdict"]
        flagged[:, night] = np.isin(result["verdict"], suspect)
    return verdicts


def change_point(flagged: np.ndarray, nights: int) -> tuple[int, int] | None:
    """The latest streak of at least `nights` consecutive flagged runs in `flagged` [R] (oldest first), as
    (first, end): a level that held that long is a change, not noise. None when there is none or `nights`
    is 0."""
    found, streak = None, 0
    for row, flag in enumerate(flagged):
        streak = streak + 1 if flag else 0
        if nights and streak >= nights:
            found = (row - streak + 1, row + 1)
    return found


# --- from the stored rows to a verdict --------------------------------------------------------------

def run_values(observations: pd.DataFrame) -> pd.DataFrame:
    """One row per (run, comparison): the run's median time per operation, and its median peak memory per
    suite (the sampler measures a whole suite observation, so it is one comparison per suite and cores)."""
    rows = measured(observations)
    again = rows["remeasured"].eq(True) if "remeasured" in rows else pd.Series(False, index=rows.index)
    keys = ["run_id", *KEYS]
    # a comparison re-measured the same night is judged on its re-measure (many more observations, taken in
    # a step of their own); peak memory only on whole suite observations
    redone = rows[again].set_index(keys).index.unique()
    sweep = rows[~again]
    rows_time = pd.concat([sweep[~sweep.set_index(keys).index.isin(redone)], rows[again]])
    grouped = rows_time.groupby(keys, sort=True)["duration"]
    times = grouped.median().rename("median").reset_index()
    # how precise the run's median is (half-width of its 95 % interval / median; inf: too few observations)
    times["precision"] = grouped.agg(precision).to_numpy(dtype=float) if len(times) else []
    times["metric"] = "duration"
    memory = sweep.dropna(subset=["peak_memory"]) if "peak_memory" in sweep else sweep.iloc[:0]
    if memory.empty:
        return times
    per_obs = memory.groupby(["run_id", "suite", "cores_requested", "step", "observation"])["peak_memory"].first()
    by_suite = per_obs.groupby(["run_id", "suite", "cores_requested"])
    peaks = by_suite.median().rename("median").reset_index()
    peaks = peaks.assign(operation=MEMORY, metric=MEMORY, precision=by_suite.agg(precision).to_numpy(dtype=float))
    return pd.concat([times, peaks[times.columns]], ignore_index=True)


def comparable_runs(runs: pd.DataFrame, run_id: str) -> tuple[pd.DataFrame, str | None]:
    """Earlier successful runs with the run's fingerprint and hardware class (oldest first), and why there is
    no baseline when there are none."""
    runs = runs.set_index("run_id")
    if run_id not in runs.index:
        raise UnknownRun(f"no run {run_id!r} in the results table")
    hardware = runs["hardware_class"].fillna("") if "hardware_class" in runs else pd.Series("", index=runs.index)
    current = runs.loc[run_id]
    earlier = (runs["fingerprint"] == current["fingerprint"]) & (runs["status"] == "ok") \
        & (runs["started_at"] < current["started_at"])
    # a run recorded before daskweak knew hardware classes counts as this class when it ran on this host, so
    # an upgrade does not restart every baseline
    unknown = (hardware == "") & (runs["host"] == current["host"])
    same = runs[earlier & ((hardware == hardware.loc[run_id]) | unknown)].sort_values("started_at")
    if not same.empty:
        return same.reset_index(), None
    if earlier.any():
        return same.reset_index(), "new hardware class: no baseline"
    return same.reset_index(), "first run with these settings: no baseline"


def baseline_run_ids(runs: pd.DataFrame, run_id: str, k: int) -> list[str]:
    """The last `k` successful runs before `run_id` with its fingerprint and hardware class (before the
    per-comparison exclusion of suspected runs)."""
    return list(comparable_runs(runs, run_id)[0]["run_id"].iloc[-k:]) if k else []


def covers(acceptance: dict[str, Any], suite: str, operation: str) -> bool:
    return acceptance["suite"] in (None, suite) and acceptance["operation"] in (None, operation)


ALL_CORES = 0  # cores_requested of a derived comparison: an operation over all its core counts, the night
NIGHT = ("all", "night effect")  # (suite, operation) of the night's shared effect


def derived_keys(keys: list[tuple]) -> tuple[list[tuple], np.ndarray, list[list[int]]]:
    """The measured comparisons `keys` followed by the derived ones (an operation pooled over its core
    counts, then the night effect), which of the measured ones share the night's effect (times) and each
    pooled comparison's columns."""
    shared = np.array([key[3] == "duration" for key in keys], dtype=bool)
    members: dict[tuple, list[int]] = {}
    for column, (suite, operation, _, metric) in enumerate(keys):
        members.setdefault((suite, operation, metric), []).append(column)
    groups = [columns for columns in members.values() if len(columns) > 1]
    pooled = [(suite, operation, ALL_CORES, metric) for (suite, operation, metric), columns in members.items()
              if len(columns) > 1]
    night = [(*NIGHT, ALL_CORES, "duration")] if shared.sum() >= MIN_SHARED else []
    return [*keys, *pooled, *night], shared, groups


def _history_state(keys: list[tuple], order: list[str], past_verdicts: dict[str, dict],
                   acceptances: list[dict[str, Any]], rule: Thresholds) -> dict[str, Any]:
    """Per comparison: which earlier nights were flagged, which may join the baseline, where its current level
    starts (an acceptance or a change point), and what restarted it."""
    shape = (len(order), len(keys))
    flagged, eligible = np.zeros(shape, dtype=bool), np.ones(shape, dtype=bool)
    since = np.zeros(len(keys), dtype=int)
    accepted_from: list[str | None] = []
    restarted_at: list[str | None] = []
    for column, key in enumerate(keys):
        starts = [a for a in acceptances if covers(a, key[0], key[1])]
        for row, rid in enumerate(order):
            stored = past_verdicts.get(rid, {}).get(key)
            # a flagged night is accepted by an acceptance of it or of an earlier run, made after its verdict
            accepted = stored is not None and any(
                a["position"] <= row and stored["created_at"] <= a["accepted_at"] for a in starts)
            flagged[row, column] = stored is not None and stored["verdict"] in FLAGGED and not accepted
        eligible[:, column] = ~flagged[:, column]
        latest = max(starts, key=lambda a: (a["position"], a["accepted_at"]), default=None)
        if latest is not None and latest["position"] >= 0:
            # the accepted run starts the baseline anew: earlier nights neither count nor confirm
            eligible[:latest["position"], column] = False
            flagged[:latest["position"], column] = False
            since[column] = latest["position"]
        accepted_from.append(latest["run_id"] if latest else None)
        point = change_point(flagged[:, column], rule.restart_nights)
        if point is not None and (latest is None or point[0] > latest["position"]):
            # the streak is the new level: it forms the baseline, and nothing before it counts any more
            first, end = point
            eligible[:first, column] = False
            eligible[first:end, column] = True
            flagged[:end, column] = False
            since[column] = first
            accepted_from[-1] = None
        restarted_at.append(order[point[0]] if point is not None and accepted_from[-1] is None else None)
    return {"flagged": flagged, "eligible": eligible, "since": since, "accepted_from": accepted_from,
            "restarted_at": restarted_at}


def compare_history(values: pd.DataFrame, order: list[str], run_id: str, past_verdicts: dict[str, dict],
                    acceptances: list[dict[str, Any]], rule: Thresholds) -> pd.DataFrame:
    """The verdict table of `run_id` from its (run, comparison) values, the earlier runs `order` (oldest
    first), their stored per-comparison verdicts and the acceptances (each with its run's `position` in
    `order`: −1 before it, len(order) for `run_id` itself). Pure: the stored rows decide.

    Times are judged net of each night's shared effect, and the derived comparisons (each operation over
    its core counts, the night effect itself: `cores_requested` 0, shown as "all") are judged beside the
    measured ones, in the same family; values stored for derived comparisons are recomputed, not read."""
    values = values[values["cores_requested"] != ALL_CORES]
    current = values[values["run_id"] == run_id].set_index(COMPARISON)["median"]
    measured_keys = list(current.index)
    if not measured_keys:
        return pd.DataFrame(columns=[*COMPARISON, "median", "baseline_median", "change_pct", "window", "p_value",
                                     "p_adjusted", "baseline_runs", "nights_flagged", "verdict", "accepted_from",
                                     "restarted_at", "baseline_low", "baseline_high"])
    keys, shared, groups = derived_keys(measured_keys)
    grid = values[values["run_id"].isin(order)].pivot_table(index="run_id", columns=COMPARISON, values="median")
    grid = grid.reindex(index=order, columns=pd.MultiIndex.from_tuples(measured_keys, names=COMPARISON))
    raw = np.log(np.vstack([grid.to_numpy(dtype=float), current.to_numpy(dtype=float)[None, :]]))
    series, effect = derive(raw, shared, groups)
    state = _history_state(keys, order, past_verdicts, acceptances, rule)
    result = judge(series[-1], series[:-1], state["eligible"], state["flagged"], rule, state["since"])
    # what tonight's shared effect adds back, so a median and its baseline are in the same night's terms
    offset = np.r_[effect[-1] * shared, np.zeros(len(keys) - len(measured_keys))]
    table = pd.DataFrame(keys, columns=COMPARISON)
    table["median"] = np.exp(np.r_[raw[-1], series[-1, len(measured_keys):]])
    if "precision" in values:  # how precise tonight's median is, stored and shown beside it
        reached = values[values["run_id"] == run_id].set_index(COMPARISON)["precision"]
        tonight = reached.reindex(current.index).to_numpy(dtype=float)
        table["precision"] = np.r_[tonight, derived_precision(tonight, shared, groups, distances(raw)[-1])]
    table["baseline_median"] = np.exp(result["baseline_mean"] + offset)
    table["baseline_low"] = np.exp(result["band_low"] + offset)
    table["baseline_high"] = np.exp(result["band_high"] + offset)
    table["change_pct"] = result["change_pct"]
    table["window"] = result["window"].astype(int)
    table["p_value"] = result["p_value"]
    table["p_adjusted"] = result["p_adjusted"]
    table["baseline_runs"] = result["baseline_runs"].astype(int)
    table["nights_flagged"] = result["nights_flagged"].astype(int)
    table["verdict"] = [VERDICTS[i] for i in result["verdict"]]
    table["accepted_from"] = state["accepted_from"]
    table["restarted_at"] = state["restarted_at"]
    table.attrs["night_effect_pct"] = float(np.expm1(effect[-1]) * 100)
    used = result["use"]
    table.attrs["baseline"] = [rid for row, rid in enumerate(order) if used[row].any()]
    return table


def compare_to_baseline(current: pd.DataFrame, baseline: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """Tonight's observations against baseline runs' observations (all eligible, no earlier verdicts): the
    rule without history, for a quick look."""
    values = run_values(pd.concat([baseline, current], ignore_index=True))
    run_id = current["run_id"].iloc[0]
    order = list(dict.fromkeys(baseline.sort_values("started_at")["run_id"] if "started_at" in baseline
                               else baseline["run_id"]))
    return compare_history(values, order, run_id, {}, [], thresholds)


def status(table: pd.DataFrame) -> str:
    """`regression` if any comparison is a confirmed regression, `suspected` if one is suspected, else `ok`
    (or `no baseline` when nothing could be compared)."""
    if (table["verdict"] == "regression").any():
        return "regression"
    if table.empty or (table["verdict"] == "no baseline").all():
        return "no baseline"
    if (table["verdict"] == "suspected").any():
        return "suspected"
    return "ok"


def _lines(table: pd.DataFrame) -> list[list[str]]:
    def number(value: float, fmt: str) -> str:
        return "—" if pd.isna(value) else format(value, fmt)

    def amount(value: float, metric: str, operation: str) -> str:
        if pd.isna(value):
            return "—"
        if operation == NIGHT[1]:
            return f"×{value:.3f}"
        return f"{value / 2**20:.1f} MiB" if metric == MEMORY else f"{value:.4f} s"

    def change(row: Any) -> str:
        window = int(getattr(row, "window", 1) or 1)
        return number(row.change_pct, "+.1f") + (f" ({window} nights)" if window > 1 else "")

    def spread(value: float) -> str:
        return "" if pd.isna(value) else ("±?" if not np.isfinite(value) else f"±{value:.0%}")

    return [[row.suite, row.operation, str(row.cores_requested or "all"),
             f"{amount(row.median, row.metric, row.operation)} {spread(getattr(row, 'precision', np.nan))}".strip(),
             amount(row.baseline_median, row.metric, row.operation), change(row), number(row.p_adjusted, ".2g"),
             f"{row.nights_flagged}" if row.verdict in FLAGGED else "", row.verdict] for row in table.itertuples()]


HEADER = ["suite", "operation", "cores", "median", "baseline", "change %", "p (adjusted)", "nights", "verdict"]
ORDER = {"regression": 0, "suspected": 1, "improvement": 2}


def notable(table: pd.DataFrame) -> pd.DataFrame:
    """What a reader needs first: regressions, then suspects, then improvements, the largest change first."""
    found = table[table["verdict"].isin(list(ORDER))]
    return found.assign(_rank=found["verdict"].map(ORDER)).sort_values(
        ["_rank", "change_pct"], ascending=[True, False]).drop(columns="_rank")


def headline(run_id: str, table: pd.DataFrame, baseline: list[str], reason: str | None, rule: Thresholds,
             bold: str = "") -> str:
    counts = table["verdict"].value_counts()
    judged = int((table["verdict"] != "no baseline").sum())
    method = {"holm": "Holm", "bh": "Benjamini–Hochberg"}[rule.correction]
    why = f" ({reason})" if reason else ""
    accepted = sorted({a for a in table.get("accepted_from", pd.Series(dtype=object)).dropna()})
    since = f"; baseline restarted at accepted run(s) {', '.join(accepted)}" if accepted else ""
    points = sorted({a for a in table.get("restarted_at", pd.Series(dtype=object)).dropna()})
    if points:
        since += (f"; baseline restarted at change point(s) {', '.join(points)} (a change that held "
                  f"{rule.restart_nights} nights)")
    return (f"{bold}{status(table)}{bold}{why}: run `{run_id}` against {len(baseline)} baseline run(s){since}; "
            f"{counts.get('regression', 0)} regression(s) (suspected on ≥ {rule.confirm_m} of the last "
            f"{rule.confirm_n} nights), {counts.get('suspected', 0)} suspected, {counts.get('improvement', 0)} "
            f"improvement(s) in {judged} comparisons ({method} at {rule.p_value:g}, changes over "
            f"{rule.threshold_pct:g} %; tonight against the last night and the last "
            f"{', '.join(str(w) for w in sorted(rule.windows) if w > 1)} nights together){_night_text(table)}.")


def _night_text(table: pd.DataFrame) -> str:
    effect = table.attrs.get("night_effect_pct")
    if effect is None or not np.isfinite(effect):
        return ""
    night = table[(table["suite"] == NIGHT[0]) & (table["operation"] == NIGHT[1])]
    reach = float(night["precision"].iloc[0]) if "precision" in night and len(night) else np.nan
    spread = f" ±{reach:.0%}" if np.isfinite(reach) else (" ±?" if reach == np.inf else "")
    return f"; times are judged net of the night's shared effect ({effect:+.1f} %{spread} on every operation)"


def markdown(run_id: str, table: pd.DataFrame, baseline: list[str], reason: str | None = None,
             rule: Thresholds | None = None) -> str:
    rule = rule or Thresholds()
    head = headline(run_id, table, baseline, reason, rule, bold="**")
    found = notable(table)
    if found.empty:
        return head + "\n"
    rows = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    rows += ["| " + " | ".join(cells) + " |" for cells in _lines(found)]
    return head + "\n\n" + "\n".join(rows) + "\n" + _accept_hint(run_id, table)


def _accept_hint(run_id: str, table: pd.DataFrame) -> str:
    """How to make an intended change the new normal (the nightly stays red until someone does)."""
    names = regressed_operations(table.to_dict("records"))
    if not names:
        return ""
    calls = "\n".join(f"    daskweak accept {run_id} --operation {name}" for name in names)
    return ("\nIf the change is intended, accept it (the baseline then starts at this run):\n\n" + calls + "\n")


def regressed_operations(comparisons: Iterable[Mapping[str, Any]]) -> list[str]:
    """SUITE.OP of every confirmed regression among `comparisons` (verdict records), sorted: what
    `daskweak accept --operation` takes."""
    return sorted({f"{c['suite']}.{c['operation']}" for c in comparisons if c.get("verdict") == "regression"})


def accept(store: ResultStore, run_id: str, operation: str | None, note: str | None) -> None:
    """Make `run_id`'s level the new normal for `operation` (SUITE or SUITE.OP; None: every comparison), as
    `daskweak accept` and the Airflow page's button do."""
    if run_id not in set(store.runs()["run_id"]):
        raise UnknownRun(f"no run {run_id!r} in {store.masked_url}")
    suite, _, name = (operation or "").partition(".")
    store.accept(run_id, suite or None, name or None, note)


def html(run_id: str, table: pd.DataFrame, baseline: list[str], reason: str | None = None,
         rule: Thresholds | None = None) -> str:
    rule = rule or Thresholds()
    verdict = status(table)
    head = (f"<p class='verdict {escape(verdict.replace(' ', '-'))}'>"
            f"{escape(headline(run_id, table, baseline, reason, rule))}</p>")
    shown = pd.concat([notable(table), table[~table["verdict"].isin(list(ORDER))]])
    cells = "".join(
        f"<tr class='{escape(line[-1].replace(' ', '-'))}'>" + "".join(f"<td>{escape(c)}</td>" for c in line)
        + "</tr>" for line in _lines(shown))
    hint = _accept_hint(run_id, table)
    accept = ""
    if hint:
        say, calls = hint.strip().split("\n", 1)
        accept = f"<p class='accept'>{escape(say)}</p><pre>{escape(calls.strip())}</pre>"
    return (head + accept + "<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in HEADER)
            + f"</tr>{cells}</table>")


def thresholds_of(settings: Settings) -> Thresholds:
    return Thresholds(baseline_runs=settings.regression_baseline_runs,
                      threshold_pct=settings.regression_threshold_pct, p_value=settings.regression_p_value,
                      min_baseline_runs=settings.regression_min_baseline_runs,
                      correction=settings.regression_correction, confirm_m=settings.regression_confirm_m,
                      confirm_n=settings.regression_confirm_n, restart_nights=settings.regression_restart_nights)


def _past_verdicts(stored: dict[str, dict[str, Any]]) -> dict[str, dict[tuple, dict[str, Any]]]:
    """Per earlier run, its stored per-comparison verdicts keyed like the comparisons (older verdicts, from
    before peak memory was judged, have no `metric`: time)."""
    found: dict[str, dict[tuple, dict[str, Any]]] = {}
    for run_id, record in stored.items():
        created = pd.Timestamp(record["created_at"])
        created = created.tz_localize(UTC) if created.tzinfo is None else created
        found[run_id] = {
            (row["suite"], row["operation"], int(row["cores_requested"]), row.get("metric") or "duration"):
                {"verdict": row["verdict"], "created_at": created}
            for row in record["comparisons"]}
    return found


def _acceptances(store: ResultStore, earlier: pd.DataFrame, order: list[str], run_id: str) -> list[dict[str, Any]]:
    """The acceptances of this history, each with its run's position in `order`: the number of baseline
    nights before it (len(order) for `run_id` itself); runs of other settings are left out."""
    started = dict(zip(earlier["run_id"], earlier["started_at"], strict=True))
    nights = [started[rid] for rid in order]
    found = []
    for row in store.acceptances().to_dict("records"):
        if row["run_id"] == run_id:
            position = len(order)
        elif row["run_id"] in started:
            position = sum(when < started[row["run_id"]] for when in nights) if row["run_id"] not in order \
                else order.index(row["run_id"])
        else:
            continue
        accepted_at = pd.Timestamp(row["accepted_at"])
        accepted_at = accepted_at.tz_localize(UTC) if accepted_at.tzinfo is None else accepted_at
        found.append(row | {"position": position, "accepted_at": accepted_at})
    return found


def baseline_nights(earlier: pd.DataFrame, judged: Iterable[str]) -> list[str]:
    """The runs that may form a baseline, oldest first: nightly runs that were judged. An ad-hoc run, a manual
    DAG run or a night whose check never ran says nothing about the nightly level (runs from before run kinds
    were recorded count when they were judged: only nights were)."""
    kind = earlier["kind"] if "kind" in earlier else pd.Series(None, index=earlier.index, dtype=object)
    nightly = kind.isna() | (kind == "nightly")
    return list(earlier.loc[nightly & earlier["run_id"].isin(set(judged)), "run_id"])


def stored_values(history: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The (run, comparison) medians kept in stored verdicts: a night's values without reading its
    observations, so the whole history of a comparison stays in reach however long it is."""
    rows = [{"run_id": run_id, "suite": c["suite"], "operation": c["operation"],
             "cores_requested": int(c["cores_requested"]), "metric": c.get("metric") or "duration",
             "median": c["median"]}
            for run_id, record in history.items() for c in record["comparisons"] if c.get("median") is not None]
    return pd.DataFrame(rows, columns=["run_id", *COMPARISON, "median"])


def busy_note(store: ResultStore, run_id: str) -> str | None:
    """A warning when another workload shared a host while the run measured (`daskweak.hostload`)."""
    steps = store.steps(run_id)
    loads = steps.get("host_load", [])
    busy = [(cores, hostload.describe(load)) for cores, load in zip(steps["cores_requested"], loads, strict=True)
            if hostload.busy_hosts(load)]
    if not busy:
        return None
    return ("Warning: the host was busy while this run measured (" + "; ".join(
        f"{cores} cores: {text}" for cores, text in busy) + "): its slowdowns may be that work's, not Dask's.")


def remeasure_plan(comparisons: Iterable[Mapping[str, Any]]) -> dict[int, dict[str, list[str]]]:
    """What the nightly DAG measures again before it decides: per core count, {suite: [operation, …]} of every
    suspected or regressed time comparison; a pooled one (an operation over its core counts) at each of its
    core counts. Peak memory (a whole suite observation's) and the night effect (every operation) are not
    re-measured."""
    rows = [dict(c) for c in comparisons]
    cores_of: dict[tuple[str, str], set[int]] = {}
    for row in rows:
        if int(row["cores_requested"]) != ALL_CORES:
            cores_of.setdefault((row["suite"], row["operation"]), set()).add(int(row["cores_requested"]))
    plan: dict[int, dict[str, set[str]]] = {}
    for row in rows:
        if row.get("verdict") not in FLAGGED or (row.get("metric") or "duration") != "duration":
            continue
        key = (row["suite"], row["operation"])
        cores = cores_of.get(key, set()) if int(row["cores_requested"]) == ALL_CORES else {int(row["cores_requested"])}
        for count in cores:
            plan.setdefault(count, {}).setdefault(row["suite"], set()).add(row["operation"])
    return {count: {suite: sorted(names) for suite, names in sorted(suites.items())}
            for count, suites in sorted(plan.items())}


def remeasured(observations: pd.DataFrame) -> list[str]:
    """SUITE.OP@CORES of every comparison re-measured in the run, sorted."""
    if "remeasured" not in observations:
        return []
    rows = observations[observations["remeasured"].eq(True)]
    return sorted({f"{r.suite}.{r.operation}@{r.cores_requested}" for r in rows.itertuples()})


def check_run(store: ResultStore, run_id: str, settings: Settings, *, save: bool = True) -> dict[str, Any]:
    """The verdict of `run_id` against its baseline, saved with the run (replacing an earlier one) unless
    `save` is false (the nightly DAG's first look, which only decides what to re-measure).

    The whole judged nightly history is read, from the medians stored with each verdict: a baseline is the
    last K eligible nights however far back they are, so a regression nobody accepts stays red."""
    rule = thresholds_of(settings)
    earlier, reason = comparable_runs(store.runs(), run_id)
    order = baseline_nights(earlier, store.verdict_statuses())
    if not order and reason is None:
        reason = "no judged nightly run with these settings yet: no baseline"
    history = store.verdict_history(order)
    acceptances = _acceptances(store, earlier, order, run_id)
    observations = store.observations(run_id)
    values = pd.concat([stored_values(history), run_values(observations)], ignore_index=True)
    table = compare_history(values, order, run_id, _past_verdicts(history), acceptances, rule)
    baseline = table.attrs.get("baseline", [])
    notes = [(kind, note) for kind, note in (("note", _remeasure_note(observations)),
                                             ("warning", busy_note(store, run_id))) if note]
    record = {
        "run_id": run_id, "created_at": datetime.now(UTC), "status": status(table), "baseline": baseline,
        "markdown": markdown(run_id, table, baseline, reason, rule) + "".join(f"\n{note}\n" for _, note in notes),
        "html": html(run_id, table, baseline, reason, rule) + "".join(
            f"<p class='{kind}'>{escape(note)}</p>" for kind, note in notes),
        "comparisons": json.loads(table.to_json(orient="records")),
        "remeasured": remeasured(observations),
    }
    if save:
        store.save_verdict(record)
    return record


def _remeasure_note(observations: pd.DataFrame) -> str | None:
    redone = remeasured(observations)
    if not redone:
        return None
    counts = observations[observations["remeasured"].eq(True) & ~observations["warmup"].astype(bool)].groupby(
        ["suite", "operation", "cores_requested"]).size()
    return (f"Suspected tonight and measured again before this verdict ({int(counts.min())}–{int(counts.max())} "
            f"observations each, judged on those): {', '.join(redone)}.")
