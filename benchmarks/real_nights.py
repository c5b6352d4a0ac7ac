"""Real nights through the nightly DAG: unchanged nights stay green, then a real slowdown turns red.

    .venv/bin/python benchmarks/real_nights.py [--unchanged 17] [--slowed 3] [--set KEY=VALUE ...]

Runs `airflow dags test dask_weak_scaling_nightly DATE` once per night on consecutive logical dates, in a
private AIRFLOW_HOME with a SQLite results database, MAX_N_CORES=2, the shipped problem sizes (smaller ones
put the array operations under the 0.1 s calibration asks for, and their noise turns nights red) and the
shipped REGRESSION_* defaults (the first REGRESSION_MIN_BASELINE_RUNS nights only build the baseline). After
the unchanged nights comes a documented change of the environment: every process of the nightly run is
pinned to one CPU (`taskset -c 0`, what a CPU quota of one core does), so the two workers of the 2-core step
share one CPU while the 1-core step keeps its CPU; `--slowed` nights of it. A notifier (REGRESSION_NOTIFIER)
appends each call to a file. `--keep DIR` keeps the Airflow home and the results database there for a closer
look.

Prints one line per night (DAG result, verdict, suspected and regressed comparisons, notifier calls), then
the figures: red nights among the unchanged judged ones; per slowed night, the comparisons flagged and
confirmed, and among those no unchanged night had flagged, the first slowed night that confirmed one
(against M of N), and whether the notifier was called.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

from daskweak.settings import load_settings
from daskweak.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
DAG = "dask_weak_scaling_nightly"
NIGHTLY = {"MAX_N_CORES": "2"}
NOTIFIER = """\
from airflow.sdk.bases.notifier import BaseNotifier


class CallLog(BaseNotifier):
    def __init__(self, path):
        super().__init__()
        self.path = path

    def notify(self, context):
        with open(self.path, "a") as log:
            log.write(context["run_id"] + "\\n")
"""
SLOWDOWN = ["taskset", "-c", "0"]


class Nights:
    """A private Airflow home and results database, one nightly DAG run per call."""

    def __init__(self, base: Path, overrides: dict[str, str]):
        self.base, self.calls = base, base / "notified.txt"
        self.env_file = base / "nightly.env"
        settings = NIGHTLY | overrides | {
            "RES_DIR": str(base / "results"), "REGRESSION_NOTIFIER": "daskweak_bench_notifier.CallLog",
            "REGRESSION_NOTIFIER_ARGS": f'{{"path": "{self.calls}"}}'}
        self.env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        (base / "daskweak_bench_notifier.py").write_text(NOTIFIER)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
            "AIRFLOW_HOME": str(base / "airflow"), "DASKWEAK_ENV_FILE": str(self.env_file),
            "PYTHONPATH": str(base)}
        self.settings = load_settings(self.env_file)
        subprocess.run([str(ROOT / "bin" / "airflow"), "db", "migrate"], env=self.env, check=True,
                       capture_output=True)

    def run(self, night: date, prefix: list[str]) -> dict[str, object]:
        start = time.perf_counter()
        done = subprocess.run([*prefix, str(ROOT / "bin" / "airflow"), "dags", "test", DAG, night.isoformat()],
                              env=self.env, capture_output=True, text=True)
        elapsed = time.perf_counter() - start
        with sqlite3.connect(self.base / "airflow" / "airflow.db") as db:
            [(run_id,)] = db.execute("select run_id from dag_run where dag_id = ? order by id desc limit 1",
                                     (DAG,)).fetchall()
        with ResultStore(self.settings.database_url) as store:
            verdict = store.verdict(run_id)
        if verdict is None:
            sys.exit(f"night {night}: no verdict stored (exit {done.returncode}):\n{done.stdout[-3000:]}\n"
                     f"{done.stderr[-3000:]}")
        comparisons = verdict["comparisons"]
        calls = self.calls.read_text().split() if self.calls.exists() else []
        return {"night": night, "run_id": run_id, "exit": done.returncode, "status": verdict["status"],
                "seconds": elapsed, "notified": run_id in calls,
                "suspected": [c for c in comparisons if c["verdict"] == "suspected"],
                "regression": [c for c in comparisons if c["verdict"] == "regression"]}


def name(comparison: dict[str, object]) -> str:
    return f"{comparison['suite']}.{comparison['operation']}@{comparison['cores_requested']}"


def show(index: int, kind: str, result: dict[str, object]) -> None:
    flagged = ", ".join(f"{name(c)} {c['change_pct']:+.0f}%" for c in [*result["regression"], *result["suspected"]])
    print(f"night {index:2d} {kind:<9} {result['status']:<12} exit {result['exit']} "
          f"{len(result['suspected']):2d} suspected {len(result['regression']):2d} regression "
          f"notified {'yes' if result['notified'] else 'no ':<3} {result['seconds']:5.0f} s  {flagged}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--unchanged", type=int, default=17, help="unchanged nights (the first "
                        "REGRESSION_MIN_BASELINE_RUNS of them build the baseline)")
    parser.add_argument("--slowed", type=int, default=3, help="slowed nights")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", type=Path, help="an empty directory to keep the Airflow home and results in")
    args = parser.parse_args()
    with contextlib.ExitStack() as stack:
        base = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        base.mkdir(parents=True, exist_ok=True)
        nights = Nights(base, dict(item.split("=", 1) for item in args.set))
        rule = nights.settings
        start = date(2026, 1, 1)
        unchanged, slowed = [], []
        for index in range(args.unchanged):
            unchanged.append(nights.run(start + timedelta(days=index), []))
            show(index + 1, "unchanged", unchanged[-1])
        for index in range(args.slowed):
            slowed.append(nights.run(start + timedelta(days=args.unchanged + index), SLOWDOWN))
            show(args.unchanged + index + 1, "slowed", slowed[-1])
    judged = [r for r in unchanged if r["status"] != "no baseline"]
    red = [r for r in judged if r["status"] == "regression" or r["exit"] != 0]
    suspected = [r for r in judged if r["status"] == "suspected"]
    before = {name(c) for r in unchanged for c in [*r["suspected"], *r["regression"]]}
    print()
    print(f"rule: {rule.regression_correction} at {rule.regression_p_value:g}, changes over "
          f"{rule.regression_threshold_pct:g} %, confirmed on {rule.regression_confirm_m} of "
          f"{rule.regression_confirm_n} nights, baseline {rule.regression_min_baseline_runs}–"
          f"{rule.regression_baseline_runs} runs (shipped defaults unless --set)")
    print(f"unchanged nights judged      {len(judged):3d}   red {len(red)}   suspected (shown, not red) "
          f"{len(suspected)}   (target: 0 red)")
    first = None
    for index, result in enumerate(slowed, 1):
        fresh = [c for c in result["regression"] if name(c) not in before]
        first = first or (index if fresh else None)
        print(f"slowed night {index} (taskset -c 0)  flagged {len(result['suspected']) + len(result['regression'])}, "
              f"confirmed {len(result['regression'])} ({len(fresh)} never flagged before the slowdown), "
              f"notifier called: {'yes' if result['notified'] else 'no'}, DAG exit {result['exit']}")
    print(f"slowdown confirmed (fresh comparisons) on slowed night {first if first else '—'} "
          f"(target ≤ {rule.regression_confirm_n}; M = {rule.regression_confirm_m})")


if __name__ == "__main__":
    main()
