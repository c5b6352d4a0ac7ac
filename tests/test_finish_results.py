"""`finish` refuses a run whose rows are not in the database it reads: what happens when every task pod of the
KubernetesExecutor (or the CronJob) writes its own SQLite file. Real tasks (orchestration's task bodies, the
step in its own process as Airflow runs it), two real SQLite files."""

from __future__ import annotations

import pytest

from daskweak import orchestration
from daskweak.isolated import run_step_isolated
from daskweak.store import ResultStore
from tests.conftest import SMALL


def task_overrides(tmp_path, name: str) -> dict:
    """A task's settings as in its own pod: RESULTS_URL unset, so RES_DIR/daskweak.sqlite on its own disk."""
    return SMALL | {"res_dir": str(tmp_path / name), "suites": "tasks", "max_n_cores": 1, "obs_per_iter": 1}


def test_finish_fails_naming_the_run_and_the_database_when_the_steps_wrote_another_one(tmp_path):
    steps_pod, finish_pod = task_overrides(tmp_path, "step-pod"), task_overrides(tmp_path, "finish-pod")
    run_id = "scheduled__2026-11-30T02:00:00+00:00"
    [step] = orchestration.plan(None, steps_pod, run_id)
    summary = run_step_isolated({"env_file": None, "overrides": steps_pod, "step": step, "run_id": run_id})
    assert summary["status"] == "ok" and summary["stored"] is True
    collected = orchestration.collect([summary], [step])

    with pytest.raises(orchestration.ResultsMissing) as missing:
        orchestration.finish(None, finish_pod, run_id, collected)
    message = str(missing.value)
    assert f"run {run_id}" in message and f"sqlite:///{tmp_path / 'finish-pod' / 'daskweak.sqlite'}" in message
    assert "RESULTS_URL" in message and "RESULTS_CONN_ID" in message
    assert "no record of the run" in message
    with ResultStore(f"sqlite:///{tmp_path / 'step-pod' / 'daskweak.sqlite'}") as written:
        assert len(written.steps(run_id)) == 1  # the rows are there, in the step's own file

    # the same run read where its rows are: finish goes through
    assert f"run {run_id}: ok" in orchestration.finish(None, steps_pod, run_id, collected)


def test_finish_fails_when_the_run_is_recorded_but_a_step_that_reported_back_is_not(tmp_path):
    """The plan task and finish share a database, the step wrote its own: the step's rows are what is missing."""
    shared, steps_pod = task_overrides(tmp_path, "shared"), task_overrides(tmp_path, "step-pod")
    run_id = "manual__2026-11-30T12:00:00+00:00"
    [step] = orchestration.plan(None, shared, run_id)
    summary = run_step_isolated({"env_file": None, "overrides": steps_pod, "step": step, "run_id": run_id})
    collected = orchestration.collect([summary], [step])
    with pytest.raises(orchestration.ResultsMissing) as missing:
        orchestration.finish(None, shared, run_id, collected)
    assert "no rows of the steps with cores=[1]" in str(missing.value), missing.value


def test_the_database_in_the_message_has_no_password(tmp_path, postgres_url):
    """A PostgreSQL URL with a password (the server trusts any): finish names it masked."""
    url = postgres_url.replace("postgres@", "postgres:s3cret-pw@")
    overrides = task_overrides(tmp_path, "finish-pod") | {"results_url": url}
    with pytest.raises(orchestration.ResultsMissing) as missing:
        orchestration.finish(None, overrides, "never-planned", {"failed": [], "time_to_ready": {"1": 1.0}})
    assert "s3cret-pw" not in str(missing.value) and "postgres:***@" in str(missing.value)
