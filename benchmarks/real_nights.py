"""Real nights through the nightly DAG: unchanged nights stay green, then real slowdowns turn red.

    .venv/bin/python benchmarks/real_nights.py DIR nights N [--change none|p2p|quota] [--set KEY=VALUE ...]
    .venv/bin/python benchmarks/real_nights.py DIR effect CHANGE [--obs 25]
    .venv/bin/python benchmarks/real_nights.py DIR summary
    touch DIR/stop    # the running `nights` ends after the night under way

DIR holds one sequence: a private Airflow home, a SQLite results database, the settings (`nightly.env`:
MAX_N_CORES=2 and the shipped defaults unless `--set` on the first call) and `nights.jsonl`, one line per
night. `nights` runs N more nights with `airflow dags test dask_weak_scaling_nightly DATE` on the logical dates
after the last one, so a sequence can be stopped and resumed later; the verdicts are read back from the
results table. The first REGRESSION_MIN_BASELINE_RUNS nights only build the baseline.

The changes, each a real change of what the nightly run does, set for the nights run with it:
- `p2p`: Dask's array rechunk by its peer-to-peer shuffle (DASK_ARRAY__RECHUNK__METHOD=p2p), a library
  configuration change that touches the operations that rechunk;
- `quota`: a CPU quota (cgroup v1 `cpu.cfs_quota_us`) of QUOTA × the machine's CPUs for every process of the
  night, what a container limit set a little too low does: the steps that use every core slow down, the
  1-core step barely. `--quota 0.9` is the default.

`effect CHANGE` measures what the change touches: one `daskweak run` with `--obs` observations per operation
without it and one with it, on their own database (`effects.db`, no baseline); an operation is touched where
its median moved out of its 95 % interval there. Prints each operation's change and stores the touched set.

`summary` prints, for the unchanged nights, the judged ones and how many were red (target 0 of ≥ 12) and, for
each change's nights, what was flagged and confirmed, the first night that confirmed a touched comparison
(target ≤ 3) and any comparison flagged that the change does not touch (target none).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import numpy as np

from daskweak.analysis.intervals import median_interval
from daskweak.analysis.stats import measured
from daskweak.settings import load_settings
from daskweak.store import ResultStore

ROOT = Path(__file__).resolve().parents[1]
DAG = "dask_weak_scaling_nightly"
NIGHTLY = {"MAX_N_CORES": "2"}
FIRST_NIGHT = date(2026, 1, 1)
CGROUP = Path("/sys/fs/cgroup/cpu/daskweak-bench-quota")
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


@contextlib.contextmanager
def applied(change: str, quota: float) -> Iterator[tuple[list[str], dict[str, str]]]:
    """The command prefix and environment that make `change` for what runs inside."""
    if change == "none":
        yield [], {}
    elif change == "p2p":
        yield [], {"DASK_ARRAY__RECHUNK__METHOD": "p2p"}
    elif change == "quota":
        CGROUP.mkdir(exist_ok=True)
        period = int((CGROUP / "cpu.cfs_period_us").read_text())
        (CGROUP / "cpu.cfs_quota_us").write_text(str(int(quota * os.cpu_count() * period)))
        try:  # the shell joins the group, then becomes the command: everything it starts is inside
            yield ["sh", "-c", f'echo $$ > {CGROUP}/cgroup.procs && exec "$@"', "sh"], {}
        finally:
            with contextlib.suppress(OSError):  # a process that outlived its night keeps the group: next time
                CGROUP.rmdir()
    else:
        sys.exit(f"unknown change {change!r}: none, p2p or quota")


class Sequence:
    """One sequence of nights in DIR: its Airflow home, results database, settings and night log."""

    def __init__(self, base: Path, overrides: dict[str, str]):
        self.base, self.calls, self.log = base, base / "notified.txt", base / "nights.jsonl"
        self.env_file = base / "nightly.env"
        base.mkdir(parents=True, exist_ok=True)
        if not self.env_file.exists():
            settings = NIGHTLY | overrides | {
                "RES_DIR": str(base / "results"), "REGRESSION_NOTIFIER": "daskweak_bench_notifier.CallLog",
                "REGRESSION_NOTIFIER_ARGS": f'{{"path": "{self.calls}"}}'}
            self.env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
            (base / "daskweak_bench_notifier.py").write_text(NOTIFIER)
        elif overrides:
            sys.exit(f"{base} already has its settings ({self.env_file}): --set only on a sequence's first call")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
            "AIRFLOW_HOME": str(base / "airflow"), "DASKWEAK_ENV_FILE": str(self.env_file),
            "PYTHONPATH": str(base)}
        self.settings = load_settings(self.env_file)

    def nights(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def run(self, count: int, change: str, quota: float) -> None:
        subprocess.run([str(ROOT / "bin" / "airflow"), "db", "migrate"], env=self.env, check=True,
                       capture_output=True)
        done = self.nights()
        for index in range(len(done), len(done) + count):
            if (self.base / "stop").exists():  # `touch DIR/stop`: end after the night under way
                (self.base / "stop").unlink()
                print("stopped: resume with the same command", flush=True)
                return
            night = self.next_date(FIRST_NIGHT + timedelta(days=index))
            with applied(change, quota) as (prefix, extra):
                start = time.perf_counter()
                result = subprocess.run([*prefix, str(ROOT / "bin" / "airflow"), "dags", "test", DAG,
                                         night.isoformat()], env=self.env | extra, capture_output=True, text=True)
                seconds = time.perf_counter() - start
            with sqlite3.connect(self.base / "airflow" / "airflow.db") as db:
                [(run_id,)] = db.execute("select run_id from dag_run where dag_id = ? order by id desc limit 1",
                                         (DAG,)).fetchall()
            entry = {"night": index + 1, "date": night.isoformat(), "change": change,
                     "quota": quota if change == "quota" else None, "run_id": run_id, "exit": result.returncode,
                     "seconds": round(seconds, 1)}
            if self.verdict(entry) is None:
                sys.exit(f"night {night}: no verdict stored (exit {result.returncode}):\n{result.stdout[-3000:]}\n"
                         f"{result.stderr[-3000:]}")
            with self.log.open("a") as log:
                log.write(json.dumps(entry) + "\n")
            show(entry, self.verdict(entry), self.notified(entry))

    def next_date(self, wanted: date) -> date:
        """`wanted`, or the day after the latest logical date the Airflow home ran (a night killed half-way
        leaves its DAG run, and a second run of one date would not be a new night)."""
        with sqlite3.connect(self.base / "airflow" / "airflow.db") as db:
            [(latest,)] = db.execute("select max(logical_date) from dag_run where dag_id = ?", (DAG,)).fetchall()
        return max(wanted, date.fromisoformat(latest[:10]) + timedelta(days=1)) if latest else wanted

    def verdict(self, entry: dict[str, object]) -> dict[str, object] | None:
        with ResultStore(self.settings.database_url) as store:
            return store.verdict(str(entry["run_id"]))

    def notified(self, entry: dict[str, object]) -> bool:
        return self.calls.exists() and str(entry["run_id"]) in self.calls.read_text().split()


def name(comparison: dict[str, object]) -> str:
    cores = comparison["cores_requested"]
    return f"{comparison['suite']}.{comparison['operation']}@{cores if cores else 'all'}"


def flagged(verdict: dict[str, object], kind: str) -> list[dict[str, object]]:
    return [c for c in verdict["comparisons"] if c["verdict"] == kind]


def show(entry: dict[str, object], verdict: dict[str, object], notified: bool) -> None:
    marks = ", ".join(f"{name(c)} {c['change_pct']:+.0f}%"
                      for c in [*flagged(verdict, "regression"), *flagged(verdict, "suspected")])
    print(f"night {entry['night']:2d} {entry['change']:<6} {verdict['status']:<12} exit {entry['exit']} "
          f"{len(flagged(verdict, 'suspected')):2d} suspected {len(flagged(verdict, 'regression')):2d} regression "
          f"re-measured {len(verdict.get('remeasured') or []):2d} notified {'yes' if notified else 'no ':<3} "
          f"{entry['seconds']:5.0f} s  {marks}", flush=True)


def touched_by(base: Path, change: str) -> set[str] | None:
    path = base / f"effect-{change}.json"
    return set(json.loads(path.read_text())["touched"]) if path.exists() else None


def summary(sequence: Sequence) -> None:
    rule = sequence.settings
    entries = sequence.nights()
    verdicts = [sequence.verdict(entry) for entry in entries]
    print(f"rule: {rule.regression_correction} at {rule.regression_p_value:g}, changes over "
          f"{rule.regression_threshold_pct:g} %, confirmed on {rule.regression_confirm_m} of "
          f"{rule.regression_confirm_n} nights, baseline {rule.regression_min_baseline_runs}–"
          f"{rule.regression_baseline_runs} runs, re-measure {rule.remeasure_obs} observations")
    for entry, verdict in zip(entries, verdicts, strict=True):
        show(entry, verdict, sequence.notified(entry))
    unchanged = [(e, v) for e, v in zip(entries, verdicts, strict=True) if e["change"] == "none"]
    judged = [(e, v) for e, v in unchanged if v["status"] != "no baseline"]
    red = [e for e, v in judged if v["status"] == "regression" or e["exit"] != 0]
    longest = run = 0
    for _, v in judged:
        run = 0 if v["status"] == "regression" else run + 1
        longest = max(longest, run)
    minutes = [e["seconds"] / 60 for e, _ in unchanged]
    suspected = sum(v["status"] == "suspected" for _, v in judged)
    print(f"\nunchanged nights judged {len(judged)}: red {len(red)} (target 0), suspected {suspected}, "
          f"longest green streak {longest} (target ≥ 12); wall time per night median "
          f"{np.median(minutes) if minutes else math.nan:.1f} min, max {max(minutes, default=math.nan):.1f} min")
    # each change's consecutive nights, in order
    groups: list[list[tuple[dict, dict]]] = []
    for entry, verdict in zip(entries, verdicts, strict=True):
        if entry["change"] == "none":
            continue
        last = groups[-1][-1][0] if groups else None
        if last and last["change"] == entry["change"] and last["night"] == entry["night"] - 1:
            groups[-1].append((entry, verdict))
        else:
            groups.append([(entry, verdict)])
    for group in groups:
        change = group[0][0]["change"]
        touched = touched_by(sequence.base, change)
        first = None
        stray: set[str] = set()
        for index, (entry, verdict) in enumerate(group, 1):
            confirmed = {name(c) for c in flagged(verdict, "regression")}
            suspects = {name(c) for c in flagged(verdict, "suspected")}
            if touched is not None:
                stray |= (confirmed | suspects) - touched - {"all.night effect@all"}
                if first is None and confirmed & touched:
                    first = index
            print(f"{change} night {index}: confirmed {sorted(confirmed)} suspected {sorted(suspects)} "
                  f"notified {'yes' if sequence.notified(entry) else 'no'}")
        if touched is None:
            print(f"{change}: no effect measured (run `effect {change}`), so touched and untouched are unknown")
            continue
        print(f"{change}: touches {len(touched)} comparisons; first confirmed on night {first or '—'} of "
              f"{len(group)} (target ≤ 3); flagged but untouched: {sorted(stray) or 'none'} (target none)")


def measure_effect(sequence: Sequence, change: str, obs: int, quota: float) -> None:
    """One run without and one with `change`, many observations each; touched = median out of its interval."""
    database = sequence.base / "effects.db"
    env = {k: v for k, v in sequence.env.items() if k != "DASKWEAK_ENV_FILE"}
    command = [str(ROOT / ".venv" / "bin" / "daskweak"), "run", "--env-file", str(sequence.env_file),
               "--set", f"OBS_PER_ITER={obs}", "--set", f"RESULTS_URL=sqlite:///{database}"]
    run_ids = []
    for with_change in (False, True):
        with applied(change if with_change else "none", quota) as (prefix, extra):
            subprocess.run([*prefix, *command], env=env | extra, check=True, capture_output=True)
        with ResultStore(f"sqlite:///{database}") as store:
            run_ids.append(str(store.runs()["run_id"].iloc[-1]))
    with ResultStore(f"sqlite:///{database}") as store:
        before, after = (measured(store.observations(run_id)) for run_id in run_ids)
    touched, rows = [], []
    for (suite, operation, cores), group in before.groupby(["suite", "operation", "cores_requested"]):
        other = after[(after["suite"] == suite) & (after["operation"] == operation)
                      & (after["cores_requested"] == cores)]["duration"].to_numpy()
        base_values = group["duration"].to_numpy()
        low, high = median_interval(base_values)
        moved = float(np.median(other))
        change_pct = 100 * (moved / float(np.median(base_values)) - 1)
        out = not low <= moved <= high
        key = f"{suite}.{operation}@{cores}"
        if out and moved > high:
            touched.append(key)
        rows.append((key, change_pct, out))
    print(f"{change}: {obs} observations per operation, without → with (runs {run_ids[0]} → {run_ids[1]})")
    for key, change_pct, out in sorted(rows):
        print(f"  {key:<40} {change_pct:+7.1f} %  {'touched' if key in touched else ('faster' if out else '')}")
    moved = [pct for key, pct, out in rows if key in touched]
    middle = np.median(moved) if moved else math.nan
    print(f"touched {len(touched)} of {len(rows)}; their slowdown median {middle:+.1f} %, "
          f"range {min(moved, default=math.nan):+.1f} to {max(moved, default=math.nan):+.1f} %")
    # pooled over core counts, as the verdict pools: touched when any of its core counts is
    pooled = {f"{key.split('@')[0]}@all" for key in touched}
    (sequence.base / f"effect-{change}.json").write_text(json.dumps(
        {"runs": run_ids, "obs": obs, "quota": quota if change == "quota" else None,
         "touched": sorted(set(touched) | pooled), "rows": rows}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dir", type=Path, help="the sequence's directory (created on the first call)")
    parser.add_argument("action", choices=["nights", "effect", "summary"])
    parser.add_argument("arg", nargs="?", help="nights: how many; effect: the change")
    parser.add_argument("--change", default="none", choices=["none", "p2p", "quota"])
    parser.add_argument("--quota", type=float, default=0.9, help="the CPU share left by `quota` (default 0.9)")
    parser.add_argument("--obs", type=int, default=25, help="effect: observations per operation")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    sequence = Sequence(args.dir.resolve(), dict(item.split("=", 1) for item in args.set))
    if args.action == "nights":
        sequence.run(int(args.arg or 1), args.change, args.quota)
    elif args.action == "effect":
        measure_effect(sequence, args.arg, args.obs, args.quota)
    else:
        summary(sequence)


if __name__ == "__main__":
    main()
