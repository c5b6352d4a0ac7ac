"""Self-contained HTML reports: one run (header, efficiency heatmap, verdict, plots) or several runs side by side.

A run's first screen answers what a Dask maintainer asks first — on what was this measured, what scaled
(the heatmap), what regressed (the stored verdict, regressions and suspects first) — and the plots and
tables follow. The plots are inline SVG, so a report is one file that opens anywhere; they are also
written beside it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daskweak.analysis import plots, units
from daskweak.analysis.comparison import SIGNIFICANCE, compare, label, sides_of, too_few
from daskweak.analysis.pages import page
from daskweak.analysis.stats import KEYS, measured, noise_limit_of, summary
from daskweak.errors import UnknownRun
from daskweak.settings import MEASURED
from daskweak.store import ResultStore

CONFIDENCE = 0.95
# The packages a Dask maintainer asks about first, in this order; other recorded versions follow.
VERSIONS = ("python", "dask", "distributed", "numpy", "pandas", "dask-jobqueue", "dask-kubernetes")
# What the verdict table lists first: the rows that need a reader.
VERDICT_ORDER = {"regression": 0, "suspected": 1, "improvement": 2, "no baseline": 3, "unchanged": 4}
VERDICT_KNOWN = ("suite", "operation", "cores_requested", "median", "baseline_median", "change_pct", "change_ci",
                 "p_value", "verdict")


@dataclass
class Report:
    title: str
    html: str
    figures: dict[str, str] = field(default_factory=dict)  # file name → SVG

    def write(self, directory: Path, name: str = "report.html") -> list[Path]:
        directory.mkdir(parents=True, exist_ok=True)
        paths = [directory / name]
        paths[0].write_text(self.html, encoding="utf-8")
        for file_name, svg in self.figures.items():
            (directory / file_name).write_text(svg, encoding="utf-8")
            paths.append(directory / file_name)
        return paths


def _runs(store: ResultStore, run_ids: list[str]) -> pd.DataFrame:
    runs = store.runs().set_index("run_id")
    missing = [r for r in run_ids if r not in runs.index]
    if missing:
        raise UnknownRun(f"no such run(s): {', '.join(missing)}")
    return runs.loc[run_ids]


def latest_run_id(store: ResultStore) -> str:
    """The run started last (what `daskweak report` without a run id reports)."""
    runs = store.runs()
    if runs.empty:
        raise UnknownRun(f"no runs in {store.masked_url} yet")
    return str(runs.sort_values("started_at")["run_id"].iloc[-1])


def _suite_figures(table: pd.DataFrame, labels: dict[str, str]) -> dict[str, str]:
    return {f"{suite}.svg": plots.svg(plots.suite_figure(table, suite, labels))
            for suite in sorted(table["suite"].unique())}


def _describe(run_id: str, run: pd.Series) -> str:
    return (f"{escape(run_id)}: {escape(run['backend'])}, {escape(run['scaling'])} scaling, TLS "
            f"{'on' if run['use_ssl'] else 'off'}, status {escape(run['status'])}, "
            f"fingerprint {escape(run['fingerprint'])}, host {escape(run['host'])}")


def _mapping(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def _pairs(items: dict[str, Any]) -> str:
    return ", ".join(f"{escape(str(k))} {escape(str(v))}" for k, v in items.items() if v not in (None, "", []))


def hardware(run: pd.Series) -> str:
    """The run's hardware record (CPU model, cores, memory, nodes) when stored, else its host name."""
    record = _mapping(run.get("hardware"))

    def shown(key: str, value: Any) -> tuple[str, Any]:
        if key.endswith("_gib"):
            return key.removesuffix("_gib").replace("_", " "), f"{value} GiB"
        return key.replace("_", " "), ", ".join(map(str, value)) if isinstance(value, list) else value

    text = _pairs(dict(shown(k, v) for k, v in record.items() if k != "backend"))
    host = f"host {escape(str(run.get('host') or '—'))}"
    return f"{text}; {host}" if text else host


def cluster_shape(run: pd.Series, steps: pd.DataFrame) -> str:
    if steps.empty:
        return escape(str(run["backend"]))
    cores = sorted(int(c) for c in steps["cores_requested"])
    workers = steps["workers_actual"].fillna(steps["workers_requested"]).astype(int)
    threads = steps["threads_per_worker"].dropna()
    per_worker = f" × {int(threads.max())} thread(s)" if not threads.empty else ""
    return (f"{escape(str(run['backend']))}: {', '.join(map(str, cores))} cores in {len(steps)} step(s); up to "
            f"{int(steps['nodes'].max())} node(s), {int(workers.max())} worker(s){per_worker}")


def verdict_line(verdict: dict[str, Any] | None) -> str:
    """The verdict in one line: its status and how many comparisons fell where."""
    if not verdict:
        return "<span class='verdict'>no regression check stored for this run</span>"
    counts = pd.Series([row.get("verdict") for row in verdict.get("comparisons") or []]).value_counts()
    parts = [f"{int(counts[name])} {escape(str(name))}" for name in sorted(counts.index, key=_rank)]
    baseline = verdict.get("baseline") or []
    status = str(verdict["status"])
    return (f"<span class='verdict {escape(status.replace(' ', '-'))}'><b>{escape(status)}</b></span>: "
            f"{', '.join(parts) or 'nothing compared'} against {len(baseline)} baseline run(s)")


def _rank(name: Any) -> int:
    return VERDICT_ORDER.get(str(name), 5)


def header(run_id: str, run: pd.Series, steps: pd.DataFrame, verdict: dict[str, Any] | None) -> str:
    """Date, duration, status, cluster shape, hardware, versions, git revision, settings, verdict line."""
    started, finished = pd.Timestamp(run["started_at"]), run.get("finished_at")
    duration = (pd.Timestamp(finished) - started).total_seconds() if finished is not None and pd.notna(
        finished) else None
    versions = _mapping(run.get("versions"))
    ordered = {k: versions[k] for k in VERSIONS if versions.get(k)} | {
        k: v for k, v in versions.items() if k not in VERSIONS and v}
    config = _mapping(run.get("config"))
    settings = {k: config[k] for k in sorted(MEASURED | {"obs_per_iter", "warmup"})
                if k in config and config[k] not in (None, "", []) and config[k] is not False
                and k != "use_ssl"}  # TLS is in the cluster row
    settings = {k: ",".join(map(str, v)) if isinstance(v, list) else v for k, v in settings.items()}
    rows = [
        ("verdict", verdict_line(verdict)),
        ("date", f"{started:%Y-%m-%d %H:%M} UTC, took {units.seconds(duration)}, status "
                 f"<b class='{escape(str(run['status']))}'>{escape(str(run['status']))}</b>"),
        ("cluster", f"{cluster_shape(run, steps)}; {escape(str(run['scaling']))} scaling, TLS "
                    f"{'on' if run['use_ssl'] else 'off'}"),
        ("hardware", hardware(run)),
        ("versions", _pairs(ordered) or "—"),
        ("git revision", f"<code>{escape(str(run.get('git_revision') or '—'))}</code>"),
        ("settings", f"{_pairs(settings)}; fingerprint <code>{escape(str(run['fingerprint']))}</code>"),
    ]
    return "<table class='header'>" + "".join(f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows) + "</table>"


def _cell(key: str, value: Any, metric: Any = None) -> str:
    """One verdict cell in its unit: a comparison's `metric` says what its medians measure (time or memory)."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "—"
    if isinstance(value, str):
        return escape(value)
    if key in ("median", "baseline_median") and metric not in (None, "time", "duration"):
        return units.memory(float(value)) if "memory" in str(metric) else f"{float(value):.4g}"
    if key in ("median", "baseline_median") or key.endswith("_s"):
        return units.seconds(float(value))
    if key.startswith("change") or key.endswith("_pct"):
        return f"{float(value):+.1f} %"
    if key.startswith("p_") or key.endswith("p_value") or key == "q_value":
        return f"{float(value):.2g}"
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list | dict):
        return escape(json.dumps(value))
    return escape(str(value))


def _change_ci(table: pd.DataFrame, intervals: pd.DataFrame) -> pd.DataFrame:
    """Add "change CI": the run's 95% bootstrap interval of its median time relative to the baseline median
    (the baseline's own spread is in the verdict's p), for time comparisons of a verdict that stores none."""
    if intervals.empty or "change_ci" in table or not {"baseline_median", *KEYS} <= set(table.columns):
        return table
    merged = table.merge(intervals[[*KEYS, "ci_low", "ci_high"]], on=KEYS, how="left")
    if "metric" in merged:
        merged.loc[~merged["metric"].isin(["duration", "time"]), ["ci_low", "ci_high"]] = np.nan
    low = (merged["ci_low"] / merged["baseline_median"] - 1) * 100
    high = (merged["ci_high"] / merged["baseline_median"] - 1) * 100
    table = table.copy()
    table["change_ci"] = [f"{a:+.0f}…{b:+.0f} %" if pd.notna(a) and pd.notna(b) else None
                          for a, b in zip(low, high, strict=True)]
    return table


def verdict_table(verdict: dict[str, Any], intervals: pd.DataFrame | None = None) -> str:
    """The stored comparisons, regressions and suspects first; keys beyond the known ones (a CI, a q-value,
    an acceptance) become columns as they are. Unchanged rows fold away under the table. `intervals`
    (`stats.summary` of the run) adds the CI of the change when the verdict stores none."""
    table = pd.DataFrame.from_records(verdict.get("comparisons") or [])
    if table.empty:
        return "<p>No comparisons in this verdict.</p>"
    if intervals is not None:
        table = _change_ci(table, intervals)
    if "verdict" not in table:
        table["verdict"] = ""
    table["_rank"] = table["verdict"].map(_rank)
    # a verdict with no baseline stores no change (None): not a number to sort by
    change = pd.to_numeric(table["change_pct"], errors="coerce").abs() if "change_pct" in table else 0
    table = table.assign(_change=change).sort_values(["_rank", "_change"], ascending=[True, False])
    # keys that say nothing in this verdict (all empty) would only widen the table; the metric shows in the
    # medians' unit (seconds, bytes) and the operation's name (peak_memory)
    extra = [c for c in table.columns if c not in (*VERDICT_KNOWN, "metric") and not c.startswith("_")
             and table[c].notna().any()]
    # the verdict first: on a narrow screen the extra keys are what scrolls out of view
    columns = ["verdict"] + [c for c in VERDICT_KNOWN if c in table.columns and c != "verdict"] + extra
    names = {"cores_requested": "cores", "median": "median", "baseline_median": "baseline", "change_pct": "change",
             "change_ci": "change 95% CI", "p_value": "p"}
    head = "<tr>" + "".join(f"<th>{escape(names.get(c, c.replace('_', ' ')))}</th>" for c in columns) + "</tr>"

    def rows(part: pd.DataFrame) -> str:
        return "".join(
            f"<tr class='{escape(str(r['verdict']).replace(' ', '-'))}'>"
            + "".join(f"<td>{_cell(c, r[c], r.get('metric'))}</td>" for c in columns) + "</tr>"
            for r in part.to_dict("records"))

    notable = table[table["_rank"] < VERDICT_ORDER["unchanged"]]
    rest = table[table["_rank"] >= VERDICT_ORDER["unchanged"]]
    shown = f"<table class='verdicts'>{head}{rows(notable)}</table>" if not notable.empty else (
        "<p>Every comparison unchanged.</p>")
    if not rest.empty:
        shown += (f"<details><summary>{len(rest)} unchanged comparison(s)</summary>"
                  f"<table class='verdicts'>{head}{rows(rest)}</table></details>")
    return shown


def _calibration(store: ResultStore, run: pd.Series) -> str:
    """The latest calibration of the run's configuration (`daskweak calibrate`), as its module renders it."""
    try:
        from daskweak.analysis import calibration
    except ImportError:
        return ""
    if not (hasattr(calibration, "latest_calibration") and hasattr(calibration, "html_fragment")):
        return ""
    return calibration.html_fragment(calibration.latest_calibration(store, str(run["fingerprint"])))


STATS_COLUMNS = ("suite", "operation", "cores", "n", "median", "95% interval", "IQR", "CV", "efficiency",
                 "95% interval", "rate", "95% interval")


def _span(low: float, high: float, show: Any) -> str:
    return "—" if not (np.isfinite(low) and np.isfinite(high)) else f"{show(low)} – {show(high)}"


def _statistics(table: pd.DataFrame) -> str:
    """One row per operation and core count; a noisy row is greyed and its efficiency marked "noisy"."""
    def line(r: Any) -> str:
        n = r.cores_requested
        rate = _span(r.rate_per_core_ci_low * n, r.rate_per_core_ci_high * n, lambda v: units.rate(v, r.rate_unit))
        effect = f"{r.efficiency:.0%}" + (" noisy" if r.noisy else "")
        row = "<tr class='noisy'>" if r.noisy else "<tr>"
        return (f"{row}<td>{escape(r.suite)}</td><td>{escape(r.operation)}</td>"
                f"<td>{n}</td><td>{r.count}</td><td>{units.seconds(r.median)}</td>"
                f"<td>{_span(r.ci_low, r.ci_high, units.seconds)}</td><td>{units.seconds(r.iqr)}</td>"
                f"<td>{r.cv:.0%}</td><td>{effect}</td>"
                f"<td>{_span(r.efficiency_low, r.efficiency_high, lambda v: f'{v:.0%}')}</td>"
                f"<td>{units.rate(r.rate_per_core * n, r.rate_unit)}</td><td>{rate}</td></tr>")

    return "<table>" + "".join(f"<th>{c}</th>" for c in STATS_COLUMNS) + "".join(map(line, table.itertuples())) \
        + "</table>"


def peak_memory(observations: pd.DataFrame) -> pd.DataFrame:
    """Median peak cluster memory per (suite, operation, cores), where it was recorded."""
    rows = measured(observations).dropna(subset=["peak_memory"])
    return rows.groupby(KEYS, as_index=False)["peak_memory"].median()


def run_report(store: ResultStore, run_id: str, nav: str = "") -> Report:
    """The run's report; `nav` (HTML) goes first, e.g. the published site's links back."""
    run = _runs(store, [run_id]).iloc[0]
    observations = store.observations(run_id)
    table = summary(observations, run["scaling"], noise_limit_of(run))
    steps = store.steps(run_id)
    verdict = store.verdict(run_id)
    figures: dict[str, str] = {}
    body = [nav, header(run_id, run, steps, verdict)]
    # The first screen: what scaled (heatmap) beside what regressed (the verdict, regressions first).
    first = []
    if not table.empty:
        figures["efficiency.svg"] = plots.svg(plots.heatmap(table))
        first.append(f"<section><h2>Efficiency ({escape(str(run['scaling']))} scaling)</h2><figure class='heatmap'>"
                     f"{figures['efficiency.svg']}</figure></section>")
    check = (verdict_table(verdict, table) if verdict else
             "<p>No regression check stored (<code>daskweak check</code>).</p>")
    first.append(f"<section><h2>Regression check</h2>{check}</section>")
    body.append(f"<div class='first'>{''.join(first)}</div>")
    if not table.empty:
        suites = _suite_figures(table, {run_id: "measured"})
        figures |= suites
        body.append("<h2>Rate against cores</h2>")
        body += [f"<figure class='suite'>{svg}</figure>" for svg in suites.values()]
        memory = peak_memory(observations)
        if not memory.empty:
            figures["memory.svg"] = plots.svg(plots.memory_figure(memory))
            body.append(f"<h2>Peak memory per operation</h2><figure>{figures['memory.svg']}</figure>")
    if not steps.empty and steps["time_to_ready"].notna().any():
        figures["ready.svg"] = plots.svg(plots.ready_figure(steps))
        body.append(f"<h2>Time to ready per step</h2><figure class='small'>{figures['ready.svg']}</figure>")
    body.append(_calibration(store, run))
    if not table.empty:
        body.append("<h2>Statistics per operation and core count</h2><p>Medians with exact 95% intervals "
                    "(order statistics: — with fewer than 6 observations, which cannot bound a median); efficiency "
                    "T(1)/T(n) with the interval its two medians allow; warm-ups and failed observations left out. "
                    f"Greyed, \"noisy\": an interval missing or wider than ±{noise_limit_of(run):.0%}, not a "
                    "result.</p>" + _statistics(table))
    shown = steps[["step", "cores_requested", "cores_actual", "workers_actual", "nodes", "time_to_ready", "status",
                   "error"]]
    body.append("<h2>Steps</h2>" + shown.to_html(index=False, na_rep="—", float_format="{:.2f}".format))
    return Report(f"Run {run_id}", page(f"Run {run_id}", "".join(body)), figures)


def differences(runs: pd.DataFrame, most: int = 3) -> dict[str, str]:
    """Per run, the settings in which the compared runs differ (what a legend should say), e.g. `use_ssl=True`."""
    configs = {run_id: dict(config or {}) for run_id, config in runs["config"].items()}
    keys = sorted({key for config in configs.values() for key in config})
    varying = [k for k in keys if len({repr(config.get(k)) for config in configs.values()}) > 1
               and k not in ("res_dir", "out_dir", "cert_dir", "results_url")]
    return {run_id: ", ".join(f"{k}={config.get(k)}" for k in varying[:most]) for run_id, config in configs.items()}


METHOD = (f"ratio &gt; 1: slower. With several runs a side the unit is the run (Welch's t test on log run "
          f"medians); with one, the run's observations (Mann-Whitney, Hodges–Lehmann ratio). Significance is "
          f"corrected over every comparison of the page (Holm, family-wise {SIGNIFICANCE}); each interval is at the "
          f"level Holm tested its row at, from the same test, so it excludes 1 exactly when the row is significant "
          f"(— : too few observations to bound it at that level).")


def ratio_interval_text(low: float, high: float) -> str:
    return "—" if np.isnan(low) or np.isnan(high) else f"{low:.3g} – {high:.3g}"


def compare_report(store: ResultStore, run_ids: list[str] | list[list[str]]) -> Report:
    sides = sides_of(run_ids)
    every = [r for side in sides for r in side]
    runs = _runs(store, every)
    table = pd.concat([summary(store.observations(r), runs.loc[r, "scaling"]) for r in every])
    labels = {r: f"{r} ({difference})" if difference else r for r, difference in differences(runs).items()}
    ratios = compare(store, sides)
    figures = _suite_figures(table, labels) if not table.empty else {}
    note = too_few(ratios)
    shown = ratios.assign(interval=[ratio_interval_text(a, b) for a, b in zip(
        ratios["ratio_ci_low"], ratios["ratio_ci_high"], strict=True)])
    shown = shown[[*KEYS, "run", "unit", "baseline_median", "median", "ratio", "interval", "p_value", "p_adjusted",
                   "significant"]]
    body = ["<ul>" + "".join(f"<li>{_describe(r, runs.loc[r])}</li>" for r in every) + "</ul>",
            f"<h2>Median time relative to {escape(label(sides[0]))}</h2><p>{METHOD}</p>"
            + (f"<p class='warning'>{escape(note)}</p>" if note else "")
            + shown.to_html(index=False, na_rep="—", float_format="{:.4g}".format)]
    body += [f"<figure class='suite'>{svg}</figure>" for svg in figures.values()]
    title = "Comparison of " + " vs ".join(label(side) for side in sides)
    return Report(title, page(title, "".join(body)), figures)
