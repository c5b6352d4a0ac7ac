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
from daskweak.analysis.changepoints import trend_change_points
from daskweak.analysis.pages import page
from daskweak.analysis.stats import KEYS
from daskweak.store import ResultStore

NIGHTS = 365  # a year of nightly runs
MARKED = ("regression", "suspected")


def fingerprint_runs(runs: pd.DataFrame, fingerprint: str, nights: int = NIGHTS) -> pd.DataFrame:
    """The last `nights` runs with this fingerprint, oldest first."""
    same = runs[runs["fingerprint"] == fingerprint].sort_values("started_at")
    return same.tail(nights)


def medians(store: ResultStore, runs: pd.DataFrame, verdicts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per (run, suite, operation, cores): median time, the run's start, and the band of the run's own
    verdict (the 95 % prediction interval of the baseline it was judged against; none for a run without
    a verdict or a baseline). `verdicts`: `store.verdicts_of` the runs, when the caller has read them."""
    rows = store.measured_durations(list(runs["run_id"]))
    table = rows.groupby(["run_id", *KEYS], as_index=False)["duration"].median().rename(
        columns={"duration": "median"})
    table = table.merge(runs[["run_id", "started_at"]], on="run_id").sort_values([*KEYS, "started_at"])
    table["started_at"] = pd.to_datetime(table["started_at"], utc=True).dt.tz_localize(None)
    if verdicts is None:
        verdicts = store.verdicts_of(list(runs["run_id"]))
    table = table.merge(bands(verdicts), on=["run_id", *KEYS], how="left")
    return table.reset_index(drop=True)


def bands(verdicts: pd.DataFrame) -> pd.DataFrame:
    """The time comparisons' baseline band of each stored verdict: run_id, KEYS, band_low, band_high."""
    columns = ["run_id", *KEYS, "band_low", "band_high"]
    found = [(run_id, c.get("suite"), c.get("operation"), c.get("cores_requested"), c.get("baseline_low"),
              c.get("baseline_high"))
             for run_id, comparisons in zip(verdicts["run_id"], verdicts["comparisons"], strict=True)
             for c in comparisons or [] if (c.get("metric") or "duration") == "duration"]
    table = pd.DataFrame(found, columns=columns)
    table[["band_low", "band_high"]] = table[["band_low", "band_high"]].astype(float)
    return table.astype({"cores_requested": "int64"}) if not table.empty else table


def marks(store: ResultStore, runs: pd.DataFrame, verdicts: pd.DataFrame | None = None) -> pd.DataFrame:
    """Regressions, suspects and change points the baseline restarted at from the stored verdicts, accepted
    changes (`daskweak accept`) from the acceptances: suite, operation, cores_requested (None: every one),
    started_at, kind."""
    columns = ["suite", "operation", "cores_requested", "started_at", "kind"]
    when = dict(zip(runs["run_id"], pd.to_datetime(runs["started_at"], utc=True).dt.tz_localize(None),
                    strict=True))
    found = []
    if verdicts is None:
        verdicts = store.verdicts_of(list(runs["run_id"]))
    for run_id, comparisons in zip(verdicts["run_id"], verdicts["comparisons"], strict=True):
        found += [(c.get("suite"), c.get("operation"), c.get("cores_requested"), when[run_id], c["verdict"])
                  for c in comparisons or [] if c.get("verdict") in MARKED]
        found += [(c.get("suite"), c.get("operation"), c.get("cores_requested"), when[c["restarted_at"]],
                   "restarted") for c in comparisons or [] if c.get("restarted_at") in when]
    accepted = store.acceptances()
    if not accepted.empty:
        accepted = accepted[accepted["run_id"].isin(when)]
        for record in accepted.to_dict("records"):
            found.append((record.get("suite"), record.get("operation"), record.get("cores_requested"),
                          when[record["run_id"]], "accepted"))
    return pd.DataFrame(found, columns=columns).drop_duplicates()


def trend_figures(store: ResultStore, runs: pd.DataFrame) -> dict[str, str]:
    """One SVG of small multiples per suite."""
    verdicts = store.verdicts_of(list(runs["run_id"]))  # read once: bands and marks both come from them
    table = medians(store, runs, verdicts)
    if table.empty:
        return {}
    marked = marks(store, runs, verdicts)
    changes = trend_change_points(table)
    return {suite: plots.svg(plots.trend_figure(table, suite, marked, changes))
            for suite in sorted(table["suite"].unique())}


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
            f"run's median time, one line per core count; the band is the 95 % prediction interval of the "
            f"baseline each run's verdict was judged against; a ring marks a flag of the operation over all its core "
            f"counts, a dash-dotted line one of the night effect (every operation at once); ◆ marks a change point "
            f"of the series' whole history (the first night of a new level, with its shift and that shift's 95 % "
            f"interval, \"noisy\" when the interval holds no change).</p><p>Fingerprints: {choices}</p>"
            + "".join(f"<h2>{escape(suite)}</h2><figure>{svg}</figure>" for suite, svg in figures.items()))
    return page(f"Trends of {fingerprint}", body)
