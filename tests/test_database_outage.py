"""Results survive the database going away: a real PostgreSQL server of this module's own, stopped and
started again under a real sweep (the `daskweak` command), under `results sync`, and under the Airflow
task bodies. Nothing is lost, nothing is written twice, and what cannot be written is said plainly."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from daskweak import orchestration
from daskweak.errors import ResultsNotWritten
from daskweak.isolated import run_step_isolated
from daskweak.spool import spool_for
from daskweak.store import ResultStore
from tests.conftest import SMALL, Postgres, wait_until

# The scenario: a database restart or fail-over of two minutes, against the shipped waits (RESULTS_RETRY_SECONDS
# 30 s, RESULTS_FINAL_WAIT_SECONDS 180 s). The tests play it on a sixth of that time scale, the outage and every
# wait alike, so it keeps its shape: an outage four times a write's retry window, which the end of a run outwaits.
SCALE = 6
OUTAGE = 120.0 / SCALE
WAITS = {"results_retry_seconds": 30.0 / SCALE, "results_final_wait_seconds": 180.0 / SCALE}
TASK_OPERATIONS = 4  # independent, tree_reduction, nearest_neighbour, sequential_chain


@pytest.fixture(scope="module")
def server() -> Iterator[Postgres]:
    """Not the session's shared server: these tests stop theirs."""
    postgres = Postgres()
    postgres.start()
    try:
        yield postgres
    finally:
        postgres.remove()


@pytest.fixture
def database(server: Postgres) -> Iterator[Postgres]:
    """The module's server, running at the start and at the end of each test."""
    yield server
    server.stop(check=False)
    server.start()


def cli(tmp_path: Path, url: str, *args: str, **overrides: object) -> list[str]:
    settings = SMALL | WAITS | {"results_url": url, "res_dir": str(tmp_path / "results"), "suites": "tasks"} | overrides
    return [sys.executable, "-m", "daskweak", *args,
            *[arg for key, value in settings.items() for arg in ("--set", f"{key.upper()}={value}")]]


def counts(url: str, run_id: str) -> tuple[dict[int, int], int, str]:
    """Observations per step, distinct (step, operation, observation) keys, and the run's status."""
    with ResultStore(url) as results:
        rows = results.observations(run_id)
        status = results.runs().set_index("run_id").loc[run_id, "status"]
    keys = len(rows[["step", "suite", "operation", "observation"]].drop_duplicates())
    return rows.groupby("step").size().to_dict(), keys, status


def test_a_two_minute_outage_in_the_middle_of_a_sweep_loses_no_observation(database, tmp_path):
    obs = 8  # steps of several seconds: the sweep may end during the outage, and then waits for the database
    command = cli(tmp_path, database.url, "run", max_n_cores=3, obs_per_iter=obs)
    proc = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with ResultStore(database.url) as results:
            assert wait_until(lambda: not results.runs().empty, timeout=120)
            run_id = results.runs()["run_id"].item()
            assert wait_until(lambda: len(results.steps(run_id)) == 1, timeout=600, interval=1)
        database.stop()
        stopped = time.monotonic()
        spooled = tmp_path / "results" / "spool" / run_id / "step-00001.json"
        # the sweep goes on while the database is down, and keeps the next step's rows in the spool
        assert wait_until(spooled.exists, timeout=600, interval=1), "the second step never reached the spool"
        time.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))  # the outage itself, not a wait for a result
        database.start()
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    per_step, keys, status = counts(database.url, run_id)
    expected = TASK_OPERATIONS * (obs + SMALL["warmup"])
    assert per_step == {0: expected, 1: expected, 2: expected}  # every observation of every step…
    assert keys == 3 * expected  # …and none twice
    assert status == "ok"
    assert not (tmp_path / "results" / "spool" / run_id).exists()
    assert (tmp_path / "results" / f"daskweak_{run_id}_observations.csv").exists()


def test_a_run_ending_while_the_database_is_down_says_so_and_results_sync_loads_it_once(database, tmp_path):
    database.stop()
    # how long it waits does not matter here: only what it says when the database never came back
    done = subprocess.run(cli(tmp_path, database.url, "run", max_n_cores=2, obs_per_iter=1,
                              results_retry_seconds=1, results_final_wait_seconds=1),
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    out = done.stdout + done.stderr
    assert done.returncode == 1, out
    assert "Traceback" not in out
    [run_dir] = [p for p in (tmp_path / "results" / "spool").iterdir() if p.is_dir()]
    run_id = run_dir.name
    message = " ".join(out.split())  # the console wraps long lines
    assert f"run {run_id}" in message and str(run_dir) in message and "daskweak results sync" in message
    assert sorted(p.name for p in run_dir.iterdir()) == ["finish.json", "run.json", "step-00000.json",
                                                         "step-00001.json"]

    database.start()
    listing = subprocess.run(cli(tmp_path, database.url, "results"), cwd=tmp_path, capture_output=True, text=True,
                             timeout=300)
    assert f"run {run_id}: 4 record(s) wait in {run_dir}" in " ".join(listing.stdout.split())
    export = subprocess.run(cli(tmp_path, database.url, "results", run_id), cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert export.returncode == 1 and "daskweak results sync" in " ".join(export.stdout.split())
    copies = {p.name: p.read_bytes() for p in run_dir.iterdir()}
    synced = subprocess.run(cli(tmp_path, database.url, "results", "sync"), cwd=tmp_path, capture_output=True,
                            text=True, timeout=300)
    assert synced.returncode == 0, synced.stdout + synced.stderr
    assert f"run {run_id}: loaded 4 spooled record(s)" in synced.stdout
    expected = TASK_OPERATIONS * (1 + SMALL["warmup"])
    assert counts(database.url, run_id) == ({0: expected, 1: expected}, 2 * expected, "ok")

    again = subprocess.run(cli(tmp_path, database.url, "results", "sync"), cwd=tmp_path, capture_output=True,
                           text=True, timeout=300)
    assert again.returncode == 0 and "nothing to load" in again.stdout
    run_dir.mkdir()
    for name, content in copies.items():  # the same spool loaded a second time (a crash before its deletion)…
        (run_dir / name).write_bytes(content)
    # …by the next run, which loads the spool before it starts
    assert subprocess.run(cli(tmp_path, database.url, "run", max_n_cores=1, obs_per_iter=1), cwd=tmp_path,
                          capture_output=True, timeout=900).returncode == 0
    assert counts(database.url, run_id) == ({0: expected, 1: expected}, 2 * expected, "ok")
    assert not run_dir.exists()


def test_under_airflow_the_finish_task_loads_what_plan_and_the_steps_spooled(database, tmp_path):
    """The task bodies of the DAG (`orchestration`), the step in its own process as Airflow runs it."""
    # the database stays down while the tasks wait: they give up after 2 s
    overrides = SMALL | {"results_url": database.url, "res_dir": str(tmp_path / "results"), "suites": "tasks",
                         "max_n_cores": 1, "obs_per_iter": 1, "results_retry_seconds": 2,
                         "results_final_wait_seconds": 2}
    run_id = "manual__outage"
    database.stop()
    [step] = orchestration.plan(None, overrides, run_id)
    summary = run_step_isolated({"env_file": None, "overrides": overrides, "step": step, "run_id": run_id})
    assert summary["status"] == "ok" and summary["stored"] is False
    collected = orchestration.collect([summary], [step])
    with pytest.raises(ResultsNotWritten) as still_down:
        orchestration.finish(None, overrides, run_id, collected)
    spool_dir = tmp_path / "results" / "spool" / run_id
    assert str(spool_dir) in str(still_down.value) and "daskweak results sync" in str(still_down.value)

    database.start()
    text = orchestration.finish(None, overrides, run_id, collected)
    assert f"run {run_id}: ok" in text
    expected = TASK_OPERATIONS * (1 + SMALL["warmup"])
    assert counts(database.url, run_id) == ({0: expected}, expected, "ok")
    assert not spool_dir.exists()
    with ResultStore(database.url) as results:
        assert spool_for(tmp_path / "results", results).pending() == {}


def test_under_real_airflow_steps_spool_while_the_database_is_down_and_finish_loads_them(database, tmp_path):
    """`airflow dags test` of the manual DAG, its database stopped from the start until both steps have spooled."""
    from tests.airflow_harness import AIRFLOW, SMALL_ENV, AirflowHome

    env_file = tmp_path / "bench.env"
    env_file.write_text(SMALL_ENV + f"RES_DIR={tmp_path / 'results'}\nSUITES=tasks\nRESULTS_URL={database.url}\n"
                        + "".join(f"{key.upper()}={value}\n" for key, value in WAITS.items()))
    airflow = AirflowHome(tmp_path / "home", env_file)
    airflow.migrate()
    database.stop()
    proc = subprocess.Popen([AIRFLOW, "dags", "test", "dask_weak_scaling", "-c", '{"max_cores": 2}'],
                            env=airflow.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        spool = tmp_path / "results" / "spool"
        assert wait_until(lambda: any(spool.glob("*/step-00001.json")), timeout=600, interval=1)
        database.start()
        out, _ = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out[-5000:]
    run_id = airflow.latest_run_id("dask_weak_scaling")
    assert [t[2] for t in airflow.task_instances(run_id, "run_step")] == ["success", "success"]
    assert [t[2] for t in airflow.task_instances(run_id, "finish")] == ["success"]
    expected = TASK_OPERATIONS * 2  # one warm-up and one observation per operation
    assert counts(database.url, run_id) == ({0: expected, 1: expected}, 2 * expected, "ok")
    assert not any(spool.glob("*/*.json"))
