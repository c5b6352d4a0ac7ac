"""The report plus the regression check of one run over a results table of 10⁶ observation rows (≤ 10 s).

    .venv/bin/python benchmarks/analysis.py [--rows 1000000] [--keep DB]

Builds a SQLite results table of nightly runs with one fingerprint (3 suites × ~8 operations × 4 core
counts × 25 observations per run, lognormal noise), then times, for the latest run: `daskweak report`'s
work (statistics with bootstrap intervals, the plots, the HTML) and `daskweak check`'s (baseline of the
last 10 runs, Mann-Whitney per operation and cores, verdict stored). Building the table is not timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import func, select

from daskweak.analysis.regression import check_run
from daskweak.analysis.report import run_report
from daskweak.settings import load_settings
from daskweak.store import ResultStore, observations

OPERATIONS = {"arrays": 9, "dataframes": 12, "tasks": 4}
CORES = [1, 2, 4, 8]
OBSERVATIONS = 25


def build(store: ResultStore, rows: int, rng: np.random.Generator) -> str:
    per_run = sum(OPERATIONS.values()) * len(CORES) * OBSERVATIONS
    runs = max(2, rows // per_run)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    grid = pd.DataFrame([(suite, f"op{i}", cores, obs) for suite, count in OPERATIONS.items()
                         for i in range(count) for cores in CORES for obs in range(OBSERVATIONS)],
                        columns=["suite", "operation", "cores_requested", "observation"])
    base = rng.uniform(0.05, 2.0, len(grid) // OBSERVATIONS).repeat(OBSERVATIONS)
    for index in range(runs):
        run_id = f"nightly-{index:05d}"
        when = start + timedelta(days=index)
        store.start_run({"run_id": run_id, "started_at": when, "finished_at": when, "status": "ok",
                         "backend": "local", "scaling": "weak", "use_ssl": False, "fingerprint": "bench",
                         "config": {}, "versions": {}, "host": "bench"})
        duration = base * rng.normal(1.0, 0.02) * rng.lognormal(0.0, 0.05, len(grid))
        frame = grid.assign(
            run_id=run_id, step=grid["cores_requested"], started_at=when, finished_at=when, backend="local",
            scaling="weak", use_ssl=False, cores_actual=grid["cores_requested"], workers=grid["cores_requested"],
            threads_per_worker=1, nodes=1, problem_size=1000, bytes=8000, warmup=False, duration=duration,
            size=1000.0 * grid["cores_requested"], unit="bytes", rate=1000.0 * grid["cores_requested"] / duration,
            rate_unit="bytes/s", peak_memory=None, status="ok", error=None)
        with store.engine.begin() as conn:
            conn.execute(observations.insert(), frame.to_dict("records"))
    return f"nightly-{runs - 1:05d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the SQLite file here (and reuse it when it exists)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.keep or Path(tmp) / "bench.sqlite"
        store = ResultStore(f"sqlite:///{path}")
        latest = store.runs()["run_id"].max() if path.exists() and len(store.runs()) else None
        if latest is None:
            started = time.perf_counter()
            latest = build(store, args.rows, np.random.default_rng(0))
            print(f"built {args.rows:,} rows in {time.perf_counter() - started:.1f} s (not timed below)")
        with store.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(observations)).scalar()
        settings = load_settings(res_dir=tmp)
        started = time.perf_counter()
        report = run_report(store, latest)
        report.write(Path(tmp) / "report")
        reported = time.perf_counter() - started
        verdict = check_run(store, latest, settings)
        total_time = time.perf_counter() - started
        store.close()
        print(f"table: {total:,} observation rows; run {latest}")
        print(f"report (statistics, {len(report.figures)} plots, HTML): {reported:.2f} s")
        print(f"regression check against {len(verdict['baseline'])} runs ({verdict['status']}): "
              f"{total_time - reported:.2f} s")
        print(f"report + check: {total_time:.2f} s (target ≤ 10 s)")


if __name__ == "__main__":
    main()
