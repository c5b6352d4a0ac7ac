"""Nightly regression verdict: a run against the last K successful runs with the same configuration.

A (suite, operation, cores) regresses when its median time exceeds the baseline median by more than
max(THRESHOLD %, SIGMAS·σ) — σ being the spread of the baseline runs' medians, so run-to-run noise counts —
and a one-sided Mann-Whitney U test of its observations against the baseline's finds it significant
(p < P). Improvements are the mirror image. Runs with another fingerprint (other settings, sizes, backend)
are never compared.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from daskweak.analysis.stats import KEYS, measured
from daskweak.errors import UnknownRun
from daskweak.settings import Settings
from daskweak.store import ResultStore

VERDICTS = ("regression", "improvement", "unchanged", "no baseline")


@dataclass(frozen=True)
class Thresholds:
    baseline_runs: int = 10
    threshold_pct: float = 10.0
    sigmas: float = 3.0
    p_value: float = 0.01
    min_baseline_runs: int = 3


def baseline_run_ids(runs: pd.DataFrame, run_id: str, k: int) -> list[str]:
    """The last `k` successful runs before `run_id` with its fingerprint."""
    runs = runs.set_index("run_id")
    if run_id not in runs.index:
        raise UnknownRun(f"no run {run_id!r} in the results table")
    current = runs.loc[run_id]
    earlier = runs[(runs["fingerprint"] == current["fingerprint"]) & (runs["status"] == "ok")
                   & (runs["started_at"] < current["started_at"])]
    return list(earlier.sort_values("started_at").index[-k:])


def compare_to_baseline(current: pd.DataFrame, baseline: pd.DataFrame, thresholds: Thresholds) -> pd.DataFrame:
    """One row per (suite, operation, cores) of the current run, with its verdict."""
    current, baseline = measured(current), measured(baseline)
    base_groups = {key: group for key, group in baseline.groupby(KEYS)}
    rows = []
    for key, group in current.groupby(KEYS, sort=True):
        now = group["duration"].to_numpy(dtype=float)
        row = {**dict(zip(KEYS, key, strict=True)), "median": float(np.median(now)), "baseline_median": np.nan,
               "change_pct": np.nan, "sigma": np.nan, "p_value": np.nan, "baseline_runs": 0,
               "verdict": "no baseline"}
        past = base_groups.get(key)
        if past is not None and past["run_id"].nunique() >= thresholds.min_baseline_runs:
            row.update(_judge(now, past, thresholds))
        rows.append(row)
    return pd.DataFrame(rows)


def _judge(now: np.ndarray, past: pd.DataFrame, thresholds: Thresholds) -> dict[str, object]:
    before = past["duration"].to_numpy(dtype=float)
    run_medians = past.groupby("run_id")["duration"].median().to_numpy()
    base, median = float(np.median(before)), float(np.median(now))
    sigma = float(np.std(run_medians, ddof=1))
    margin = max(base * thresholds.threshold_pct / 100, thresholds.sigmas * sigma)
    verdict = "unchanged"
    p_slower = mannwhitneyu(now, before, alternative="greater").pvalue
    p_faster = mannwhitneyu(now, before, alternative="less").pvalue
    if median - base > margin and p_slower < thresholds.p_value:
        verdict, p = "regression", p_slower
    elif base - median > margin and p_faster < thresholds.p_value:
        verdict, p = "improvement", p_faster
    else:
        p = min(p_slower, p_faster)
    return {"baseline_median": base, "change_pct": (median / base - 1) * 100, "sigma": sigma,
            "p_value": float(p), "baseline_runs": int(past["run_id"].nunique()), "verdict": verdict}


def status(table: pd.DataFrame) -> str:
    """`regression` if any row regressed, else `ok` (or `no baseline` when nothing could be compared)."""
    if (table["verdict"] == "regression").any():
        return "regression"
    if table.empty or (table["verdict"] == "no baseline").all():
        return "no baseline"
    return "ok"


def _lines(table: pd.DataFrame) -> list[list[str]]:
    def number(value: float, fmt: str) -> str:
        return "—" if pd.isna(value) else format(value, fmt)

    return [[row.suite, row.operation, str(row.cores_requested), number(row.median, ".4f"),
             number(row.baseline_median, ".4f"), number(row.change_pct, "+.1f"), number(row.p_value, ".2g"),
             row.verdict] for row in table.itertuples()]


HEADER = ["suite", "operation", "cores", "median s", "baseline s", "change %", "p", "verdict"]


def notable(table: pd.DataFrame) -> pd.DataFrame:
    """What a reader needs first: regressions, then improvements."""
    return table[table["verdict"].isin(["regression", "improvement"])].sort_values(
        ["verdict", "change_pct"], ascending=[False, False])


def markdown(run_id: str, table: pd.DataFrame, baseline: list[str]) -> str:
    found = notable(table)
    head = (f"**{status(table)}**: run `{run_id}` against {len(baseline)} baseline run(s); "
            f"{(table['verdict'] == 'regression').sum()} regression(s), "
            f"{(table['verdict'] == 'improvement').sum()} improvement(s) in {len(table)} comparisons.")
    if found.empty:
        return head + "\n"
    rows = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    rows += ["| " + " | ".join(cells) + " |" for cells in _lines(found)]
    return head + "\n\n" + "\n".join(rows) + "\n"


def html(run_id: str, table: pd.DataFrame, baseline: list[str]) -> str:
    verdict = status(table)
    head = (f"<p class='verdict {escape(verdict.replace(' ', '-'))}'><b>{escape(verdict)}</b>: run "
            f"{escape(run_id)} against {len(baseline)} baseline run(s)</p>")
    cells = "".join(
        f"<tr class='{escape(line[-1].replace(' ', '-'))}'>" + "".join(f"<td>{escape(c)}</td>" for c in line)
        + "</tr>" for line in _lines(table))
    return head + "<table><tr>" + "".join(f"<th>{h}</th>" for h in HEADER) + f"</tr>{cells}</table>"


def thresholds_of(settings: Settings) -> Thresholds:
    return Thresholds(baseline_runs=settings.regression_baseline_runs,
                      threshold_pct=settings.regression_threshold_pct, sigmas=settings.regression_sigmas,
                      p_value=settings.regression_p_value,
                      min_baseline_runs=settings.regression_min_baseline_runs)


def check_run(store: ResultStore, run_id: str, settings: Settings) -> dict[str, Any]:
    """The verdict of `run_id` against its baseline, saved with the run (replacing an earlier one)."""
    thresholds = thresholds_of(settings)
    baseline = baseline_run_ids(store.runs(), run_id, thresholds.baseline_runs)
    table = compare_to_baseline(store.observations(run_id), store.observations_of(baseline), thresholds)
    record = {
        "run_id": run_id, "created_at": datetime.now(UTC), "status": status(table), "baseline": baseline,
        "markdown": markdown(run_id, table, baseline), "html": html(run_id, table, baseline),
        "comparisons": json.loads(table.to_json(orient="records")),
    }
    store.save_verdict(record)
    return record
