"""The report plus the regression check of one run over a results table of 10⁶ observation rows (≤ 10 s),
and the trend page over a year of nightly runs of the default sweep (≤ 2 s).

    .venv/bin/python benchmarks/analysis.py [--rows 1000000] [--keep DB] [--only report|trend]

Builds a SQLite results table of nightly runs with one fingerprint (3 suites × ~8 operations × 4 core
counts × 25 observations per run, lognormal noise), then times, for the latest run: `daskweak report`'s
work (statistics with bootstrap intervals, the plots, the HTML) and `daskweak check`'s (each comparison's
run median against the last REGRESSION_BASELINE_RUNS runs' with the prediction-interval t test, Holm over
the night's family, verdict stored). Building the table is not timed.

The trend: 365 nightly runs of the default sweep (every operation of the catalogue × 1 and 2 cores × 3
observations, with steps, peak memory and stored verdicts marking a few regressions), then the time of
the trend page (one query, per-run medians, each verdict's baseline band, one figure per suite) and of one run's report.
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
from daskweak.store import steps as steps_table

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


def nightly_history(store: ResultStore, nights: int, rng: np.random.Generator, cores: tuple[int, ...] = (1, 2),
                    obs: int = 3, start: datetime = datetime(2026, 1, 1, 2, tzinfo=UTC),
                    slowdown_from: int | None = None) -> list[str]:
    """`nights` runs of the default sweep (the catalogue's operations and units) with one fingerprint, with
    steps, peak memory and a stored verdict each; from night `slowdown_from` on, tasks.independent is 30%
    slower and marked a regression. Returns the run ids, oldest first."""
    from daskweak.workloads import catalogue

    ops = [(suite, op.name, op.unit) for suite, operations in catalogue().items() for op in operations]
    grid = pd.DataFrame([(suite, name, unit, n, o) for suite, name, unit in ops for n in cores for o in range(obs)],
                        columns=["suite", "operation", "unit", "cores_requested", "observation"])
    # per operation one time at 1 core, growing a little with the cores (weak scaling is never perfect)
    base = rng.uniform(0.1, 1.5, len(ops)).repeat(len(cores) * obs) * (1 + 0.08 * np.log2(grid["cores_requested"]))
    slow = ((grid["suite"] == "tasks") & (grid["operation"] == "independent")).to_numpy()
    run_ids = []
    for night in range(nights):
        run_id = f"nightly-{night:05d}"
        when = start + timedelta(days=night)
        slower = slowdown_from is not None and night >= slowdown_from
        duration = base * rng.normal(1.0, 0.02) * rng.lognormal(0.0, 0.05, len(grid)) * np.where(
            slow & slower, 1.3, 1.0)
        size = np.where(grid["unit"] == "bytes", 8e8, np.where(grid["unit"] == "rows", 2e7, 5e3)) * grid[
            "cores_requested"]
        frame = grid.drop(columns="unit").assign(
            run_id=run_id, step=grid["cores_requested"], started_at=when, finished_at=when, backend="local",
            scaling="weak", use_ssl=False, cores_actual=grid["cores_requested"], workers=grid["cores_requested"],
            threads_per_worker=1, nodes=1, problem_size=1000, bytes=8000, warmup=False, duration=duration,
            size=size, unit=grid["unit"], rate=size / duration, rate_unit=grid["unit"] + "/s",
            peak_memory=2.0 ** 28 * grid["cores_requested"] * rng.uniform(0.8, 1.2, len(grid)), status="ok",
            error=None)
        steps = [{"run_id": run_id, "step": n, "started_at": when, "finished_at": when, "cores_requested": n,
                  "cores_actual": n, "workers_requested": n, "workers_actual": n, "threads_per_worker": 1,
                  "nodes": 1, "layout": [n], "time_to_ready": float(rng.uniform(1, 3)), "status": "ok",
                  "error": None} for n in cores]
        flagged = [slower and (s, o) == ("tasks", "independent") for s, o, _ in ops for _n in cores]
        # stored verdicts written, not judged (a year of checks is not what this builds): the band is the
        # ±2·5 % an observation's noise gives
        comparisons = [{"suite": s, "operation": o, "cores_requested": n, "median": level * (1.3 if flag else 1.0),
                        "baseline_median": level, "baseline_low": level * 0.9, "baseline_high": level * 1.1,
                        "change_pct": 30.0 if flag else 0.0, "p_value": 0.5,
                        "verdict": "regression" if flag else "unchanged"}
                       for (s, o, n), level, flag in zip(((s, o, n) for s, o, _ in ops for n in cores),
                                                         base[::obs], flagged, strict=True)]
        store.start_run({"run_id": run_id, "started_at": when, "finished_at": when + timedelta(minutes=4),
                         "status": "ok", "backend": "local", "scaling": "weak", "use_ssl": False,
                         "fingerprint": "nightly", "config": {"max_n_cores": max(cores), "obs_per_iter": obs},
                         "versions": {"python": "3.11", "dask": "2026.1.0"}, "host": "bench"})
        with store.engine.begin() as conn:
            conn.execute(steps_table.insert(), steps)
            conn.execute(observations.insert(), frame.to_dict("records"))
        store.save_verdict({"run_id": run_id, "created_at": when, "status": "regression" if slower else "ok",
                            "baseline": [],
                            "markdown": "", "html": "", "comparisons": comparisons})
        run_ids.append(run_id)
    return run_ids


def trend_benchmark(directory: Path) -> None:
    """A year of nightly runs of the default sweep: time the trend page and one run's report."""
    from daskweak.analysis.report import run_report
    from daskweak.analysis.trend import trend_page

    store = ResultStore(f"sqlite:///{directory / 'trend.sqlite'}")
    started = time.perf_counter()
    run_ids = nightly_history(store, 365, np.random.default_rng(1), slowdown_from=350)
    print(f"built 365 nightly runs in {time.perf_counter() - started:.1f} s (not timed below)")
    with store.engine.connect() as conn:
        total = conn.execute(select(func.count()).select_from(observations)).scalar()
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        html = trend_page(store)
        timings.append(time.perf_counter() - started)
    started = time.perf_counter()
    run_report(store, run_ids[-1])
    reported = time.perf_counter() - started
    store.close()
    print(f"trend over 365 runs ({total:,} observation rows), 3 suites, {len(html) / 1e6:.1f} MB of HTML: "
          f"{min(timings):.2f} s best of 3, {max(timings):.2f} s worst (target ≤ 2 s)")
    print(f"report of the latest of them: {reported:.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="keep the SQLite file here (and reuse it when it exists)")
    parser.add_argument("--only", choices=("report", "trend"), help="run one of the two benchmarks")
    args = parser.parse_args()
    if args.only != "report":
        with tempfile.TemporaryDirectory() as tmp:
            trend_benchmark(Path(tmp))
    if args.only == "trend":
        return
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
