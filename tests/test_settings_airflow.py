"""Settings under real Airflow: the shipped `.env.example` runs as a `.env`, and a broken `.env` keeps the
DAGs loadable while every run fails at `validate` with the settings error."""

from __future__ import annotations

import shutil

import pytest

from tests.airflow_harness import ROOT, AirflowHome

DAG = "dask_weak_scaling"


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    base = tmp_path_factory.mktemp("airflow-settings")
    env_file = base / ".env"
    shutil.copy(ROOT / ".env.example", env_file)
    home = AirflowHome(base / "home", env_file)
    home.migrate()
    return home


def test_the_env_example_as_dot_env_runs_the_dag(airflow):
    # environment variables beat the .env: a tiny sweep, results beside it
    small = {"MAX_N_CORES": "1", "SUITES": "tasks", "PROBLEM_SIZE_TASKS": "20", "OBS_PER_ITER": "1",
             "WARMUP": "0", "RES_DIR": str(airflow.env_file.parent / "results")}
    airflow.run("dags", "test", DAG, env=small, check=True)
    run_id = airflow.latest_run_id(DAG)
    assert [t[2] for t in airflow.task_instances(run_id, "validate")] == ["success"]
    assert [t[2] for t in airflow.task_instances(run_id, "run_step")] == ["success"]


def test_a_broken_dot_env_loads_the_dag_and_fails_validate_with_the_error(airflow, tmp_path):
    broken = tmp_path / ".env"
    broken.write_text("MAX_N_CORES=zero\nSTEP_RETRIES=0\n")
    env = {"DASKWEAK_ENV_FILE": str(broken)}
    errors = airflow.run("dags", "list-import-errors", "--local", env=env, check=True)
    assert "No data found" in errors.stdout
    # The form's max_cores would repair MAX_N_CORES for this run, but the DAG was built from defaults
    # (its retries, limits, schedule): the run must stop at validate all the same.
    result = airflow.run("dags", "test", DAG, "-c", '{"max_cores": 1}', env=env)
    assert result.returncode != 0
    run_id = airflow.latest_run_id(DAG)
    [validate] = airflow.task_instances(run_id, "validate")
    assert validate[2] == "failed"
    assert "MAX_N_CORES='zero'" in result.stdout + result.stderr
    assert [t[2] for t in airflow.task_instances(run_id, "run_step")] in ([], [None], ["upstream_failed"])
