"""Self-contained HTML reports: one run (tables, plots, regression verdict) or several runs side by side.

The plots are inline SVG, so a report is one file that opens anywhere; they are also written beside it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from daskweak.analysis import plots
from daskweak.analysis.pages import page
from daskweak.analysis.stats import KEYS, measured, summary
from daskweak.errors import UnknownRun
from daskweak.store import ResultStore

SIGNIFICANCE = 0.01
SUMMARY_COLUMNS = {
    "suite": "suite", "operation": "operation", "cores_requested": "cores", "count": "n", "median": "median s",
    "ci_low": "CI low", "ci_high": "CI high", "iqr": "IQR s", "cv": "CV", "efficiency": "efficiency",
    "rate_per_core": "rate/core", "rate_unit": "unit",
}


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


def _figures(table: pd.DataFrame, labels: dict[str, str]) -> dict[str, str]:
    return {f"{suite}.svg": plots.svg(plots.suite_figure(table, suite, labels))
            for suite in sorted(table["suite"].unique())}


def _describe(run_id: str, run: pd.Series) -> str:
    return (f"{escape(run_id)}: {escape(run['backend'])}, {escape(run['scaling'])} scaling, TLS "
            f"{'on' if run['use_ssl'] else 'off'}, status {escape(run['status'])}, "
            f"fingerprint {escape(run['fingerprint'])}, host {escape(run['host'])}")


def run_report(store: ResultStore, run_id: str) -> Report:
    run = _runs(store, [run_id]).iloc[0]
    table = summary(store.observations(run_id), run["scaling"])
    steps = store.steps(run_id)[["step", "cores_requested", "cores_actual", "workers_actual", "nodes",
                                 "time_to_ready", "status", "error"]]
    figures = _figures(table, {run_id: "measured"}) if not table.empty else {}
    verdict = store.verdict(run_id)
    body = [f"<p>{_describe(run_id, run)}</p>"]
    if verdict:
        body.append(f"<h2>Regression check</h2>{verdict['html']}")
    body.append("<h2>Steps</h2>" + steps.to_html(index=False, na_rep="—", float_format="{:.2f}".format))
    if not table.empty:
        shown = table[list(SUMMARY_COLUMNS)].rename(columns=SUMMARY_COLUMNS)
        body.append("<h2>Statistics per operation and core count</h2><p>Medians with 95% bootstrap "
                    "confidence intervals; warm-ups and failed observations left out.</p>"
                    + shown.to_html(index=False, na_rep="—", float_format="{:.4g}".format))
        body += [f"<h2>{escape(name.removesuffix('.svg'))}</h2><figure>{svg}</figure>"
                 for name, svg in figures.items()]
    return Report(f"Run {run_id}", page(f"Run {run_id}", "".join(body)), figures)


def compare(store: ResultStore, run_ids: list[str]) -> pd.DataFrame:
    """Each run against the first: median ratio per (suite, operation, cores) and a two-sided Mann-Whitney p."""
    _runs(store, run_ids)
    rows = measured(store.observations_of(run_ids))
    groups = {key: group["duration"].to_numpy(dtype=float) for key, group in rows.groupby(["run_id", *KEYS])}
    base, records = run_ids[0], []
    for other in run_ids[1:]:
        for (run_id, *key), before in groups.items():
            after = groups.get((other, *key))
            if run_id != base or after is None:
                continue
            p = float(mannwhitneyu(after, before, alternative="two-sided").pvalue)
            records.append({**dict(zip(KEYS, key, strict=True)), "run": other,
                            "baseline_median": float(np.median(before)), "median": float(np.median(after)),
                            "ratio": float(np.median(after) / np.median(before)), "p_value": p,
                            "significant": p < SIGNIFICANCE})
    columns = [*KEYS, "run", "baseline_median", "median", "ratio", "p_value", "significant"]
    return pd.DataFrame.from_records(records, columns=columns)


def differences(runs: pd.DataFrame, most: int = 3) -> dict[str, str]:
    """Per run, the settings in which the compared runs differ (what a legend should say), e.g. `use_ssl=True`."""
    configs = {run_id: dict(config or {}) for run_id, config in runs["config"].items()}
    keys = sorted({key for config in configs.values() for key in config})
    varying = [k for k in keys if len({repr(config.get(k)) for config in configs.values()}) > 1
               and k not in ("res_dir", "out_dir", "cert_dir", "results_url")]
    return {run_id: ", ".join(f"{k}={config.get(k)}" for k in varying[:most]) for run_id, config in configs.items()}


def compare_report(store: ResultStore, run_ids: list[str]) -> Report:
    runs = _runs(store, run_ids)
    table = pd.concat([summary(store.observations(r), runs.loc[r, "scaling"]) for r in run_ids])
    labels = {r: f"{r} ({difference})" if difference else r for r, difference in differences(runs).items()}
    ratios = compare(store, run_ids)
    figures = _figures(table, labels) if not table.empty else {}
    body = ["<ul>" + "".join(f"<li>{_describe(r, runs.loc[r])}</li>" for r in run_ids) + "</ul>",
            f"<h2>Median time relative to {escape(run_ids[0])}</h2><p>ratio &gt; 1: slower; significant: "
            f"two-sided Mann-Whitney U, p &lt; {SIGNIFICANCE}.</p>"
            + ratios.to_html(index=False, na_rep="—", float_format="{:.4g}".format)]
    body += [f"<h2>{escape(name.removesuffix('.svg'))}</h2><figure>{svg}</figure>" for name, svg in figures.items()]
    title = "Comparison of " + ", ".join(run_ids)
    return Report(title, page(title, "".join(body)), figures)
