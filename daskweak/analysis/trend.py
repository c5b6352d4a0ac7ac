"""The view over nights: per operation and core count, each run's median time against the baseline band,
with regressions, suspects and accepted changes marked (what asv and the Dask benchmark dashboard show,
aware of core counts).

Only runs of one fingerprint share a trend (others measured something else). Everything is aggregated once
(one query, one groupby, rolling windows): a year of nightly runs renders in about a second, no bootstrap.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape

import pandas as pd

from daskweak.analysis import plots
from daskweak.analysis.pages import page
from daskweak.analysis.stats import KEYS
from daskweak.store import ResultStore

NIGHTS = 365  # a year of nightly runs
BASELINE_RUNS = 10  # the band: the range of the medians of the runs before (as many as the verdict's baseline)
MIN_BAND_RUNS = 3
MARKED = ("regression", "suspected")


def fingerprint_runs(runs: pd.DataFrame, fingerprint: str, nights: int = NIGHTS) -> pd.DataFrame:
    """The last `nights` runs with this fingerprint, oldest first."""
    same = runs[runs["fingerprint"] == fingerprint].sort_values("started_at")
    return same.tail(nights)


def medians(store: ResultStore, runs: pd.DataFrame, baseline_runs: int = BASELINE_RUNS) -> pd.DataFrame:
    """Per (run, suite, operation, cores): median time, the run's start, and the band (min–max of the
    medians of the `baseline_runs` runs before it; none until MIN_BAND_RUNS of them exist)."""
    rows = store.measured_durations(list(runs["run_id"]))
    table = rows.groupby(["run_id", *KEYS], as_index=False)["duration"].median().rename(
        columns={"duration": "median"})
    table = table.merge(runs[["run_id", "started_at"]], on="run_id").sort_values([*KEYS, "started_at"])
    table["started_at"] = pd.to_datetime(table["started_at"], utc=True).dt.tz_localize(None)
    grouped = table.groupby(KEYS, sort=False)["median"]
    before = grouped.shift(1)
    window = before.groupby([table[k] for k in KEYS], sort=False).rolling(baseline_runs, min_periods=MIN_BAND_RUNS)
    table["band_low"] = window.min().reset_index(level=list(range(len(KEYS))), drop=True)
    table["band_high"] = window.max().reset_index(level=list(range(len(KEYS))), drop=True)
    return table.reset_index(drop=True)


def marks(store: ResultStore, runs: pd.DataFrame) -> pd.DataFrame:
    """Regressions and suspects from the stored verdicts, accepted changes (`daskweak accept`) from the
    acceptances: suite, operation, cores_requested (None: every one), started_at, kind."""
    columns = ["suite", "operation", "cores_requested", "started_at", "kind"]
    when = dict(zip(runs["run_id"], pd.to_datetime(runs["started_at"], utc=True).dt.tz_localize(None),
                    strict=True))
    found = []
    verdicts = store.verdicts_of(list(runs["run_id"]))
    for run_id, comparisons in zip(verdicts["run_id"], verdicts["comparisons"], strict=True):
        found += [(c.get("suite"), c.get("operation"), c.get("cores_requested"), when[run_id], c["verdict"])
                  for c in comparisons or [] if c.get("verdict") in MARKED]
    accepted = store.acceptances()
    if not accepted.empty:
        accepted = accepted[accepted["run_id"].isin(when)]
        for record in accepted.to_dict("records"):
            found.append((record.get("suite"), record.get("operation"), record.get("cores_requested"),
                          when[record["run_id"]], "accepted"))
    return pd.DataFrame(found, columns=columns)


def trend_figures(store: ResultStore, runs: pd.DataFrame) -> dict[str, str]:
    """One SVG of small multiples per suite."""
    table = medians(store, runs)
    if table.empty:
        return {}
    marked = marks(store, runs)
    return {suite: plots.svg(plots.trend_figure(table, suite, marked)) for suite in sorted(table["suite"].unique())}


def fingerprints(runs: pd.DataFrame) -> pd.DataFrame:
    """Each fingerprint with its backend, run count and latest start, newest first."""
    return (runs.groupby("fingerprint").agg(backend=("backend", "last"), runs=("run_id", "count"),
                                            latest=("started_at", "max"))
            .sort_values("latest", ascending=False).reset_index())


def trend_page(store: ResultStore, fingerprint: str | None = None, nights: int = NIGHTS,
               link: Callable[[str], str] = lambda fp: f"trends/{fp}", home: str = "./") -> str:
    """The trend of `fingerprint` (default: the latest run's), with links (`link`) to the other fingerprints'."""
    runs = store.runs()
    if runs.empty:
        return page("Trends", "<p>No runs yet.</p>")
    if fingerprint is None:
        fingerprint = str(runs.sort_values("started_at")["fingerprint"].iloc[-1])
    chosen = fingerprint_runs(runs, fingerprint, nights)
    others = fingerprints(runs)
    choices = " · ".join(
        (f"<b>{escape(fp)}</b>" if fp == fingerprint else f"<a href='{escape(link(fp))}'>{escape(fp)}</a>")
        + f" ({escape(str(backend))}, {count} run(s), latest {latest:%Y-%m-%d})"
        for fp, backend, count, latest in others.itertuples(index=False))
    if chosen.empty:
        return page(f"Trends of {fingerprint}", f"<p>No runs with this fingerprint.</p><p>{choices}</p>")
    figures = trend_figures(store, chosen)
    first, last = chosen["started_at"].min(), chosen["started_at"].max()
    body = (f"<p><a href='{escape(home)}'>All runs</a></p><p>{len(chosen)} run(s) with fingerprint "
            f"<code>{escape(fingerprint)}</code> from {first:%Y-%m-%d} to {last:%Y-%m-%d}: per operation, each "
            f"run's median time, one line per core count; the band is the range of the {BASELINE_RUNS} runs' "
            f"medians before each run.</p><p>Fingerprints: {choices}</p>"
            + "".join(f"<h2>{escape(suite)}</h2><figure>{svg}</figure>" for suite, svg in figures.items()))
    return page(f"Trends of {fingerprint}", body)
