"""The `daskweak` command as a user runs it: exit codes, tables, exports, and interruption."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from daskweak.cli import main
from daskweak.store import ResultStore
from tests.conftest import SMALL, cluster_processes, wait_until

SMALL_ARGS = [arg for key, value in SMALL.items() for arg in ("--set", f"{key.upper()}={value}")]


def test_bad_configuration_exits_2_before_anything_starts(tmp_path, capsys):
    code = main(["run", "--set", "MAX_N_CORES=0", "--set", "BACKEND=slurm", "--set", "TIME_LIMIT=soon"])
    out = capsys.readouterr().out
    assert code == 2
    for name in ("MAX_N_CORES", "ACCOUNT", "PARTITION", "TIME_LIMIT"):
        assert name in out
    assert not (tmp_path / "results").exists()  # nothing half-written
    assert cluster_processes() == []  # no cluster was started


def test_run_prints_the_efficiency_table_and_writes_the_exports(tmp_path, capsys):
    assert main(["run", *SMALL_ARGS, "--set", "SUITES=arrays,tasks", "--set", "RES_FILE_NAME=bench"]) == 0
    out = capsys.readouterr().out
    assert "median seconds (efficiency, weak scaling)" in out and "100%" in out and "transpose_add" in out
    results = tmp_path / "results"
    arrays = pd.read_csv(results / "bench_arrays.csv")
    assert {"operation", "cores_requested", "median", "mean", "min", "max", "std"} <= set(arrays.columns)
    assert set(arrays["cores_requested"]) == {1, 2} and (arrays["count"] == SMALL["obs_per_iter"]).all()
    assert (results / "bench_tasks.csv").exists() and not (results / "bench_dataframes.csv").exists()
    [raw] = results.glob("bench_*_observations.csv")
    assert len(pd.read_csv(raw)) == (9 + 4) * 2 * (SMALL["obs_per_iter"] + SMALL["warmup"])

    assert main(["results"]) == 0
    listing = capsys.readouterr().out
    run_id = raw.name.removeprefix("bench_").removesuffix("_observations.csv")
    assert run_id in listing
    assert main(["results", run_id, "--format", "parquet", "--out", str(tmp_path / "export")]) == 0
    assert len(pd.read_parquet(tmp_path / "export" / f"daskweak_{run_id}_observations.parquet")) > 0
    assert main(["results", "no-such-run"]) == 1


def test_a_failed_run_exits_1(capsys):
    assert main(["run", *SMALL_ARGS, "--set", "TIMEOUT=0.001", "--set", "MAX_N_CORES=1"]) == 1
    assert "TIMEOUT" in capsys.readouterr().out


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_run_closes_its_cluster_and_keeps_what_was_measured(tmp_path, sig, code):
    args = [*SMALL_ARGS, "--set", "SUITES=tasks", "--set", "OBS_PER_ITER=500", "--set", "MAX_N_CORES=2"]
    proc = subprocess.Popen([sys.executable, "-m", "daskweak", "run", *args], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    parent = psutil.Process(proc.pid)
    assert wait_until(lambda: len(parent.children(recursive=True)) >= 2, timeout=60)  # nanny + worker
    time.sleep(3)  # a few observations into the first step
    family = parent.children(recursive=True)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == code, out
    assert "interrupted" in out
    assert wait_until(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in family),
                      timeout=30), [p.cmdline() for p in family if p.is_running()]
    store = ResultStore(f"sqlite:///{Path(tmp_path) / 'results' / 'daskweak.sqlite'}")
    [run] = store.runs().itertuples()
    assert run.status == "interrupted"
    steps = store.steps(run.run_id)
    assert list(steps["status"]) == ["interrupted"]
    assert len(store.observations(run.run_id)) > 0
    store.close()
