"""`daskweak publish DIR`: a static site of every run and the trends, for any web server or CI artefact store.

    DIR/index.html                 the runs (as the Airflow page lists them), links to reports and trends
    DIR/runs/<run>.html            each run's report (self-contained, plots inline)
    DIR/trends.html                the trend of the latest run's fingerprint
    DIR/trends-<fingerprint>.html  the trend of every other fingerprint

Links are relative, so the folder can move. Publishing again re-renders only the reports of runs that
changed since (status, end, verdict: `.published.json` remembers), and every index and trend page.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from daskweak.analysis import pages, trend
from daskweak.analysis.report import run_report
from daskweak.store import ResultStore

MANIFEST = ".published.json"
NAV = "<p><a href='../index.html'>All runs</a> · <a href='../trends.html'>Trends</a></p>"


def _state(run: pd.Series, verdict: str | None) -> str:
    """What a published report depends on besides its immutable rows."""
    return f"{run['status']}|{run['finished_at']}|{verdict}"


def publish(store: ResultStore, directory: Path, force: bool = False) -> list[Path]:
    """Write the site; returns the files written (unchanged reports are kept, not rewritten)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "runs").mkdir(exist_ok=True)
    manifest_path = directory / MANIFEST
    manifest = {} if force or not manifest_path.exists() else json.loads(manifest_path.read_text())
    runs = store.runs()
    verdicts = store.verdict_statuses()
    written = []
    for run in runs.to_dict("records"):
        run_id, state = run["run_id"], _state(pd.Series(run), verdicts.get(run["run_id"]))
        path = directory / pages.STATIC.report(run_id)
        if manifest.get(run_id) == state and path.exists():
            continue
        path.write_text(run_report(store, run_id, nav=NAV).html, encoding="utf-8")
        manifest[run_id] = state
        written.append(path)
    (directory / "index.html").write_text(pages.runs_page(store, pages.STATIC), encoding="utf-8")
    written.append(directory / "index.html")
    if not runs.empty:
        latest = str(runs.sort_values("started_at")["fingerprint"].iloc[-1])
        for fingerprint in trend.fingerprints(runs)["fingerprint"]:
            name = "trends.html" if fingerprint == latest else f"trends-{pages.file_name(fingerprint)}.html"
            html = trend.trend_page(store, fingerprint, home="index.html", link=lambda fp: (
                "trends.html" if fp == latest else f"trends-{pages.file_name(fp)}.html"))
            (directory / name).write_text(html, encoding="utf-8")
            written.append(directory / name)
    manifest_path.write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return written
