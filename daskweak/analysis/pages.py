"""HTML pages over the results tables: the runs, and one run's steps and efficiency per operation.

Plain server-rendered HTML (no scripts), so it works inside Airflow's plugin iframe, from a file and from any
static web server (`daskweak publish`); `Links` says where each view lives in each of them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import quote

import pandas as pd

from daskweak.analysis import units
from daskweak.analysis.regression import regressed_operations
from daskweak.analysis.stats import efficiency, noise_limit_of
from daskweak.store import ResultStore

STYLE = """<style>
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#1f2937}
table{border-collapse:collapse;margin:.5rem 0 1.5rem}th,td{border:1px solid #d1d5db;padding:.25rem .6rem;
text-align:right}th{background:#f3f4f6}td:first-child,th:first-child{text-align:left}a{color:#2563eb}
.failed,.interrupted,.partial,.regression{color:#b91c1c;font-weight:600}.improvement{color:#047857}
figure{margin:0 0 1rem}svg{max-width:100%;height:auto}figure.heatmap svg{max-width:100%}
.first{display:flex;flex-wrap:wrap;gap:0 2rem;align-items:flex-start}.first>section{flex:1 1 30rem;min-width:0}
.first>section:first-child{flex:0 0 auto}
figure.small svg{max-width:28rem}table.header th{text-align:left;vertical-align:top}
table.header td{text-align:left;max-width:70rem}
table.verdicts td,table.verdicts th{padding:.2rem .4rem;font-size:.85rem}table.verdicts td{white-space:nowrap}
.first>section:last-child{overflow-x:auto}.suspected{color:#b45309;font-weight:600}
.no-baseline{color:#6b7280}.warning{color:#b45309;font-weight:600}details{margin:0 0 1.5rem}
td.noisy,tr.noisy td{color:#9ca3af;background:repeating-linear-gradient(45deg,#fff,#fff 4px,#f3f4f6 4px,#f3f4f6 8px)}
</style>"""


def _quoted(run_id: str) -> str:
    return quote(run_id, safe="")


def file_name(key: str) -> str:
    """A name every file system and web server takes (Airflow run ids hold ':' and '+')."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", key)


@dataclass(frozen=True)
class Links:
    """Where a page finds the others, relative to itself."""

    run: Callable[[str], str]
    report: Callable[[str], str]
    trends: str


# The Airflow page's routes (/daskweak/…), relative to /daskweak/.
PLUGIN = Links(run=lambda r: f"runs/{_quoted(r)}", report=lambda r: f"runs/{_quoted(r)}/report", trends="trends")
# `daskweak publish`'s folder: index.html, runs/<id>.html, trends.html.
STATIC = Links(run=lambda r: f"runs/{file_name(r)}.html", report=lambda r: f"runs/{file_name(r)}.html",
               trends="trends.html")


def page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{escape(title)}</title>{STYLE}</head>"
            f"<body><h1>{escape(title)}</h1>{body}</body></html>")


def runs_page(store: ResultStore, links: Links = PLUGIN) -> str:
    runs = store.runs().sort_values("started_at", ascending=False)
    verdicts = store.verdict_statuses()
    if runs.empty:
        return page("Weak scaling", "<p>No runs yet. Trigger <code>dask_weak_scaling</code>.</p>")
    rows = "".join(
        f"<tr><td><a href='{links.run(r.run_id)}'>{escape(r.run_id)}</a></td>"
        f"<td>{r.started_at:%Y-%m-%d %H:%M}</td><td class='{escape(r.status)}'>{escape(r.status)}</td>"
        f"<td>{escape(r.backend)}</td><td>{escape(r.scaling)}</td><td>{'on' if r.use_ssl else 'off'}</td>"
        f"<td>{escape(r.fingerprint)}</td><td class='{escape(verdicts.get(r.run_id, '').replace(' ', '-'))}'>"
        f"{escape(verdicts.get(r.run_id, '—'))}</td>"
        f"<td><a href='{links.report(r.run_id)}'>report</a></td></tr>"
        for r in runs.itertuples()
    )
    head = "".join(f"<th>{h}</th>" for h in ("run", "started", "status", "backend", "scaling", "TLS",
                                              "fingerprint", "regression check", "report"))
    trends = (f"<p><a href='{links.trends}'>Trends over nights</a> (median time per operation and core count, "
              "baseline band, regressions marked)</p>")
    return page("Weak scaling", f"{trends}<table><tr>{head}</tr>{rows}</table>")


def run_page(store: ResultStore, run_id: str, accept: bool = False) -> str | None:
    """One run: its verdict, steps and efficiency; with `accept`, a button per regressed operation that
    posts to `<run>/accept` (the Airflow page; a static site has nothing to post to)."""
    runs = store.runs().set_index("run_id")
    if run_id not in runs.index:
        return None
    run = runs.loc[run_id]
    steps = store.steps(run_id)[["step", "cores_requested", "cores_actual", "workers_actual", "nodes",
                                 "time_to_ready", "status", "error"]]
    verdict = store.verdict(run_id)
    check = f"<h2>Regression check</h2>{verdict['html']}" if verdict else ""
    accepted = store.acceptances()
    accepted = accepted[accepted["run_id"] == run_id] if not accepted.empty else accepted
    if verdict and accept:
        check += accept_buttons(run_id, verdict)
    if not accepted.empty:
        check += "<p class='accepted'>Accepted as the new normal: " + ", ".join(
            escape(".".join(p for p in (row.suite, row.operation) if isinstance(p, str)) or "every comparison")
            + (f" ({escape(row.note)})" if isinstance(row.note, str) else "") for row in accepted.itertuples())
        check += "</p>"
    body = (f"<p><a href='{quote(run_id, safe='')}/report'>Full report with plots</a> · "
            f"<a href='../trends'>Trends over nights</a></p>{check}"
            f"<p>{escape(run['backend'])}, {escape(run['scaling'])} scaling, TLS "
            f"{'on' if run['use_ssl'] else 'off'}, status <b>{escape(run['status'])}</b>, "
            f"fingerprint {escape(run['fingerprint'])}</p><h2>Steps</h2>"
            + steps.to_html(index=False, na_rep="—", float_format="{:.2f}".format))
    rows = store.observations(run_id)
    if not rows.empty:
        limit = noise_limit_of(run)
        body += ("<h2>Median time and efficiency per operation</h2><p>Efficiency with its 95 % interval; a value "
                 f"whose interval is missing or wider than ±{limit:.0%} is greyed and marked noisy: it is not a "
                 "result.</p>" + efficiency_html(efficiency(rows, run["scaling"], limit)))
    return page(f"Run {run_id}", body)


def efficiency_html(table: pd.DataFrame) -> str:
    """Operations (rows) × core counts (columns): median seconds, efficiency and its interval per cell."""
    cores = sorted(int(n) for n in table["cores_requested"].unique())
    head = "<tr><th>suite</th><th>operation</th>" + "".join(f"<th>{n} cores</th>" for n in cores) + "</tr>"
    lines = []
    for (suite, operation), group in table.groupby(["suite", "operation"], sort=True):
        cells = {int(row.cores_requested): row for row in group.itertuples()}
        tds = "".join(_efficiency_td(cells.get(n)) for n in cores)
        lines.append(f"<tr><td>{escape(suite)}</td><td>{escape(operation)}</td>{tds}</tr>")
    return f"<table class='efficiency'>{head}{''.join(lines)}</table>"


def _efficiency_td(row: Any) -> str:
    if row is None:
        return "<td>—</td>"
    text = units.efficiency(row)
    if row.noisy:
        return f"<td class='noisy' title='interval too wide: not a result'>{escape(text)} noisy</td>"
    return f"<td>{escape(text)}</td>"


def accept_buttons(run_id: str, verdict: dict) -> str:
    """A form per regressed operation: accepting makes this run's level its new normal (`daskweak accept`)."""
    names = regressed_operations(verdict.get("comparisons") or [])
    return "".join(
        f"<form method='post' action='{quote(run_id, safe='')}/accept?operation={quote(name, safe='')}'>"
        f"<button type='submit' class='accept'>Accept {escape(name)} as the new normal</button></form>"
        for name in names)
