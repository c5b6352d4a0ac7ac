"""Nightly regression verdict: a run against the earlier runs of the same settings and hardware class.

The unit of evidence is the run (observations of one run are not independent of each other): per comparison
— (suite, operation, cores) for time, (suite, cores) for peak memory — the run's median, on a log scale,
is tested against the medians of the last K baseline runs with a one-sided prediction-interval t test,
t = (x − mean)/(s·√(1 + 1/K)) with K − 1 degrees of freedom. It works with one observation per run and
any K ≥ 3. The night's whole family of comparisons is corrected together (Holm, or Benjamini–Hochberg),
and a change must also exceed THRESHOLD % to count.

A significant slowdown is first "suspected" (shown, not red); it is a "regression" when it was suspected
on at least M of the last N nights (tonight included). A suspected or regressed run never joins the
baseline of that comparison unless a user accepts it (`daskweak accept`): then only runs from the accepted
one on form the baseline. With REGRESSION_RESTART_NIGHTS = L > 0, a change flagged on L consecutive nights
is a change point and the baseline restarts at its first night by itself; the verdict names the run either
way. Runs with another fingerprint (settings) or hardware class are never compared.

Everything below `check_run` is pure NumPy over arrays with leading batch axes, so the seeded simulations
(`tests/test_analysis.py`, `benchmarks/regression_calibration.py`) run the very code the nightly check runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any, Literal

import numpy as np
import pandas as pd
from scipy.stats import t as student_t

from daskweak import hostload
from daskweak.analysis.intervals import precision
from daskweak.analysis.stats import KEYS, measured
from daskweak.errors import UnknownRun
from daskweak.settings import Settings
from daskweak.store import ResultStore

VERDICTS = ("regression", "suspected", "improvement", "unchanged", "no baseline")
FLAGGED = ("suspected", "regression")
MEMORY = "peak_memory"  # the operation name of a suite's peak-memory comparison, and its metric
COMPARISON = [*KEYS, "metric"]
BAND = 0.05  # the trend's band: the baseline's two-sided 95 % prediction interval


@dataclass(frozen=True)
class Thresholds:
    """The rule's knobs (REGRESSION_* settings); the defaults are the shipped ones, chosen by simulation."""

    baseline_runs: int = 20
    threshold_pct: float = 3.0
    p_value: float = 0.05  # the family's level: Holm's family-wise error, or BH's false discovery rate
    min_baseline_runs: int = 5
    correction: Literal["holm", "bh"] = "holm"
    confirm_m: int = 2
    confirm_n: int = 3
    restart_nights: int = 0  # 0: only an acceptance restarts a baseline


# --- pure statistics over arrays: [..., R (runs, oldest first), F (comparisons)] -----------------------

def baseline_mask(eligible: np.ndarray, k: int) -> np.ndarray:
    """The last `k` eligible runs of each comparison: `eligible` and the mask are [..., R, F]."""
    from_newest = np.cumsum(eligible[..., ::-1, :], axis=-2)[..., ::-1, :]
    return eligible & (from_newest <= k)


def prediction_test(current: np.ndarray, history: np.ndarray, use: np.ndarray,
                    min_runs: int) -> dict[str, np.ndarray]:
    """One-sided p-values of `current` [..., F] (log values) against the runs `use`d of `history` [..., R, F].

    A new run from the baseline's distribution has a t-distributed standardised distance to the baseline's
    mean (prediction interval), so p is exact for normal log-medians, whatever K ≥ 2 and the observations
    per run; comparisons with fewer than `min_runs` baseline runs get NaN.
    """
    n = use.sum(axis=-2)
    values = np.where(use, history, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=-2) / n
        var = (np.where(use, history - mean[..., None, :], 0.0) ** 2).sum(axis=-2) / (n - 1)
        scale = np.sqrt(var * (1 + 1 / n))
        t = (current - mean) / scale
        # identical baseline values (s = 0): any difference is infinitely many standard errors away
        t = np.where(scale > 0, t, np.sign(current - mean) * np.inf)
        df = np.maximum(n - 1, 1)
        slower, faster = student_t.sf(t, df), student_t.cdf(t, df)
    ok = (n >= max(min_runs, 2)) & np.isfinite(current)
    nan = np.full(np.shape(t), np.nan)
    # the band a new run of the baseline falls in 95 % of the time (shown on the trend, not the test's level)
    reach = student_t.ppf(1 - BAND / 2, df) * scale
    return {"n": n, "mean": np.where(ok, mean, np.nan), "slower": np.where(ok, slower, nan),
            "faster": np.where(ok, faster, nan), "low": np.where(ok, mean - reach, nan),
            "high": np.where(ok, mean + reach, nan)}


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


def judge(current: np.ndarray, history: np.ndarray, eligible: np.ndarray, flagged: np.ndarray,
          rule: Thresholds) -> dict[str, np.ndarray]:
    """Tonight's verdict per comparison: `current` [..., F] log values; `history` [..., R, F] earlier runs'
    log values (NaN where missing); `eligible` [..., R, F] may join the baseline; `flagged` [..., R, F] was
    suspected or a regression (unaccepted) on that night. Returns arrays [..., F]; `verdict` holds indices
    into VERDICTS."""
    eligible = eligible & np.isfinite(history)
    use = baseline_mask(eligible, rule.baseline_runs)
    test = prediction_test(current, history, use, rule.min_baseline_runs)
    change = (np.exp(current - test["mean"]) - 1) * 100
    p_slower = adjusted(test["slower"], rule.correction)
    p_faster = adjusted(test["faster"], rule.correction)
    slower = (p_slower < rule.p_value) & (change > rule.threshold_pct)
    faster = (p_faster < rule.p_value) & (change < -rule.threshold_pct)
    recent = flagged[..., max(0, flagged.shape[-2] - (rule.confirm_n - 1)):, :] if rule.confirm_n > 1 else \
        flagged[..., :0, :]
    nights = recent.sum(axis=-2) + slower
    verdict = np.select(
        [np.isnan(test["slower"]), slower & (nights >= rule.confirm_m), slower, faster],
        [VERDICTS.index("no baseline"), VERDICTS.index("regression"), VERDICTS.index("suspected"),
         VERDICTS.index("improvement")], VERDICTS.index("unchanged"))
    return {"verdict": verdict, "change_pct": change, "baseline_mean": test["mean"], "baseline_runs": test["n"],
            "band_low": test["low"], "band_high": test["high"],
            "p_value": np.where(faster, test["faster"], test["slower"]),
            "p_adjusted": np.where(faster, p_faster, p_slower), "nights_flagged": nights, "use": use}


def simulate_nights(rng: np.random.Generator, histories: int, nights: int, run_cv: np.ndarray,
                    obs_cv: np.ndarray, observations: int, rule: Thresholds,
                    slowdown: np.ndarray | None = None, start: int | None = None) -> np.ndarray:
    """Seeded nightly histories of one family, judged night by night as `check_run` judges a stored history.

    Per comparison f, a night's value is the log of the median of `observations` lognormal draws
    (within-run CV `obs_cv[f]`) times a night factor (run-to-run CV `run_cv[f]`). From night `start` on, the
    night is `slowdown[f]` times slower. Nights are judged from the `rule.min_baseline_runs`-th on (the
    baseline growing to K as in a new history); returns the verdict indices [histories, nights, F] (−1 for
    nights not judged).
    """
    run_cv, obs_cv = np.asarray(run_cv, dtype=float), np.asarray(obs_cv, dtype=float)
    families = run_cv.shape[-1]
    sigma_run, sigma_obs = np.sqrt(np.log1p(run_cv ** 2)), np.sqrt(np.log1p(obs_cv ** 2))
    draws = rng.standard_normal((histories, nights, observations, families)) * sigma_obs
    values = np.median(draws, axis=2) + rng.standard_normal((histories, nights, families)) * sigma_run
    if slowdown is not None:
        shift = np.log(np.asarray(slowdown, dtype=float))
        values[:, start or 0:, :] += shift
    verdicts = np.full((histories, nights, families), -1)
    flagged = np.zeros((histories, nights, families), dtype=bool)
    for night in range(rule.min_baseline_runs, nights):
        result = judge(values[:, night], values[:, :night], ~flagged[:, :night], flagged[:, :night], rule)
        verdicts[:, night] = result["verdict"]
        flagged[:, night] = np.isin(result["verdict"], [VERDICTS.index(v) for v in FLAGGED])
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
    keys = ["run_id", *KEYS]
    grouped = rows.groupby(keys, sort=True)["duration"]
    times = grouped.median().rename("median").reset_index()
    # how precise the run's median is (half-width of its 95 % interval / median; inf: too few observations)
    times["precision"] = grouped.agg(precision).to_numpy(dtype=float) if len(times) else []
    times["metric"] = "duration"
    memory = rows.dropna(subset=["peak_memory"]) if "peak_memory" in rows else rows.iloc[:0]
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


def compare_history(values: pd.DataFrame, order: list[str], run_id: str, past_verdicts: dict[str, dict],
                    acceptances: list[dict[str, Any]], rule: Thresholds) -> pd.DataFrame:
    """The verdict table of `run_id` from its (run, comparison) values, the earlier runs `order` (oldest
    first), their stored per-comparison verdicts and the acceptances (each with its run's `position` in
    `order`: −1 before it, len(order) for `run_id` itself). Pure: the stored rows decide."""
    current = values[values["run_id"] == run_id].set_index(COMPARISON)["median"]
    keys = list(current.index)
    if not keys:
        return pd.DataFrame(columns=[*COMPARISON, "median", "baseline_median", "change_pct", "p_value",
                                     "p_adjusted", "baseline_runs", "nights_flagged", "verdict", "accepted_from",
                                     "restarted_at", "baseline_low", "baseline_high"])
    grid = values[values["run_id"].isin(order)].pivot_table(index="run_id", columns=COMPARISON, values="median")
    grid = grid.reindex(index=order, columns=pd.MultiIndex.from_tuples(keys, names=COMPARISON))
    history = np.log(grid.to_numpy(dtype=float))
    flagged = np.zeros(history.shape, dtype=bool)
    eligible = np.ones(history.shape, dtype=bool)
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
        since = max(starts, key=lambda a: (a["position"], a["accepted_at"]), default=None)
        if since is not None and since["position"] >= 0:
            # the accepted run starts the baseline anew: earlier nights neither count nor confirm
            eligible[:since["position"], column] = False
            flagged[:since["position"], column] = False
        accepted_from.append(since["run_id"] if since else None)
        point = change_point(flagged[:, column], rule.restart_nights)
        if point is not None and (since is None or point[0] > since["position"]):
            # the streak is the new level: it forms the baseline, and nothing before it counts any more
            first, end = point
            eligible[:first, column] = False
            eligible[first:end, column] = True
            flagged[:end, column] = False
            accepted_from[-1] = None
        restarted_at.append(order[point[0]] if point is not None and accepted_from[-1] is None else None)
    now = np.log(current.to_numpy(dtype=float))
    result = judge(now, history, eligible, flagged, rule)
    table = pd.DataFrame(keys, columns=COMPARISON)
    table["median"] = current.to_numpy(dtype=float)
    if "precision" in values:  # how precise tonight's median is, stored and shown beside it
        reached = values[values["run_id"] == run_id].set_index(COMPARISON)["precision"]
        table["precision"] = reached.reindex(current.index).to_numpy(dtype=float)
    table["baseline_median"] = np.exp(result["baseline_mean"])
    table["baseline_low"] = np.exp(result["band_low"])
    table["baseline_high"] = np.exp(result["band_high"])
    table["change_pct"] = result["change_pct"]
    table["p_value"] = result["p_value"]
    table["p_adjusted"] = result["p_adjusted"]
    table["baseline_runs"] = result["baseline_runs"].astype(int)
    table["nights_flagged"] = result["nights_flagged"].astype(int)
    table["verdict"] = [VERDICTS[i] for i in result["verdict"]]
    table["accepted_from"] = accepted_from
    table["restarted_at"] = restarted_at
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

    def amount(value: float, metric: str) -> str:
        if pd.isna(value):
            return "—"
        return f"{value / 2**20:.1f} MiB" if metric == MEMORY else f"{value:.4f} s"

    def spread(value: float) -> str:
        return "" if pd.isna(value) else ("±?" if not np.isfinite(value) else f"±{value:.0%}")

    return [[row.suite, row.operation, str(row.cores_requested),
             f"{amount(row.median, row.metric)} {spread(getattr(row, 'precision', np.nan))}".strip(),
             amount(row.baseline_median, row.metric), number(row.change_pct, "+.1f"), number(row.p_adjusted, ".2g"),
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
            f"{rule.threshold_pct:g} %).")


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


def check_run(store: ResultStore, run_id: str, settings: Settings) -> dict[str, Any]:
    """The verdict of `run_id` against its baseline, saved with the run (replacing an earlier one).

    The whole judged nightly history is read, from the medians stored with each verdict: a baseline is the
    last K eligible nights however far back they are, so a regression nobody accepts stays red."""
    rule = thresholds_of(settings)
    earlier, reason = comparable_runs(store.runs(), run_id)
    order = baseline_nights(earlier, store.verdict_statuses())
    if not order and reason is None:
        reason = "no judged nightly run with these settings yet: no baseline"
    history = store.verdict_history(order)
    acceptances = _acceptances(store, earlier, order, run_id)
    values = pd.concat([stored_values(history), run_values(store.observations(run_id))], ignore_index=True)
    table = compare_history(values, order, run_id, _past_verdicts(history), acceptances, rule)
    baseline = table.attrs.get("baseline", [])
    busy = busy_note(store, run_id)
    record = {
        "run_id": run_id, "created_at": datetime.now(UTC), "status": status(table), "baseline": baseline,
        "markdown": markdown(run_id, table, baseline, reason, rule) + (f"\n{busy}\n" if busy else ""),
        "html": html(run_id, table, baseline, reason, rule) + (f"<p class='warning'>{escape(busy)}</p>" if busy
                                                               else ""),
        "comparisons": json.loads(table.to_json(orient="records")),
    }
    store.save_verdict(record)
    return record
