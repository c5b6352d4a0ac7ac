"""The `daskweak` command as a user runs it: exit codes, tables, exports, and interruption."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import psutil
import pytest

from daskweak.cli import main
from daskweak.store import ResultStore
from tests.airflow_harness import measured
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
    assert "median seconds, efficiency (weak scaling) [95 % interval]" in out and "transpose_add" in out
    # a few observations cannot bound a median: every value is marked, and the end of the run says what to do
    assert "noisy" in out and "values are noisy" in out and "daskweak calibrate" in out
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
    assert wait_until(lambda: measured(tmp_path / "results", 1), timeout=120)  # an observation into step 1
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


ROOT = Path(__file__).resolve().parents[1]


def daskweak(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The CLI as a user runs it: its own process, the environment of the test (settings variables removed)."""
    import os

    return subprocess.run([sys.executable, "-m", "daskweak", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=os.environ | (env or {}))


def test_the_env_example_copied_to_dot_env_plans(tmp_path):
    shutil.copy(ROOT / ".env.example", tmp_path / ".env")
    result = daskweak("plan", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weak scaling plan on local" in result.stdout
    assert "ignored" not in result.stdout  # the template's other-backend keys hold their defaults


def test_an_origin_env_for_kubernetes_plans_and_lists_the_slurm_keys_as_ignored(tmp_path):
    from tests.test_settings import ORIGIN_KUBE_ENV

    (tmp_path / ".env").write_text(ORIGIN_KUBE_ENV)
    result = daskweak("plan", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "weak scaling plan on kubernetes" in result.stdout
    assert ("ignored on kubernetes (they configure another backend): ACCOUNT, ENV_TO_SOURCE, NET_INTERFACE, "
            "OUT_DIR, PARTITION, TIME_LIMIT") in result.stdout


def test_set_before_and_after_the_command_are_both_kept(capsys):
    assert main(["--set", "MAX_N_CORES=6", "plan", "--set", "STEP_BY=3"]) == 0
    out = capsys.readouterr().out
    cores = [int(row.split("│")[2]) for row in out.splitlines() if re.match(r"│\s+\d+ │", row)]
    assert cores == [1, 3, 6]


def test_two_different_settings_files_are_refused(tmp_path, capsys):
    (tmp_path / "a.env").write_text("MAX_N_CORES=1\n")
    (tmp_path / "b.env").write_text("MAX_N_CORES=2\n")
    assert main(["--env-file", "a.env", "plan", "--env-file", str(tmp_path / "a.env")]) == 0  # the same file
    capsys.readouterr()
    assert main(["--env-file", "a.env", "plan", "--env-file", "b.env"]) == 2
    out = capsys.readouterr().out
    assert "--env-file" in out and "a.env and b.env" in out and "one settings file" in out


def test_a_misspelled_key_is_refused_with_the_closest_key(tmp_path, capsys):
    assert main(["plan", "--set", "MAX_N_CORE=8"]) == 2
    assert "MAX_N_CORE='8': expected a known setting; did you mean MAX_N_CORES?" in capsys.readouterr().out
    (tmp_path / ".env").write_text("STEP_BY=1\nMAX_N_CORE=8\nOBS_PER_ITER=0\n")
    assert main(["plan"]) == 2
    out = capsys.readouterr().out
    assert ".env:2: MAX_N_CORE='8'" in out and "did you mean MAX_N_CORES?" in out
    assert "OBS_PER_ITER" in out  # reported together with the unknown key


def test_an_environment_variable_close_to_a_setting_is_warned_about_on_stderr(tmp_path):
    result = daskweak("plan", cwd=tmp_path, env={"MAX_N_CORE": "8"})
    assert result.returncode == 0, result.stderr
    assert "MAX_N_CORE" in result.stderr and "did you mean MAX_N_CORES?" in result.stderr


def test_verbose_logs_each_step_and_observation(tmp_path):
    args = [*SMALL_ARGS, "--set", "SUITES=tasks", "--set", "MAX_N_CORES=1", "--set", "OBS_PER_ITER=1",
            "--set", "WARMUP=0", "--set", "VERBOSE=True"]
    result = daskweak("run", *args, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    log = result.stderr
    assert "INFO daskweak.runner: step 0: starting 1 cores on local" in log
    for operation in ("independent", "tree_reduction", "nearest_neighbour", "sequential_chain"):
        assert re.search(rf"INFO daskweak.runner: cores=1 suite=tasks observation=0 operation={operation} "
                         r"seconds=\d+\.\d+ status=ok", log), log
    assert "INFO daskweak.runner: step 0 (1 cores): ok" in log
