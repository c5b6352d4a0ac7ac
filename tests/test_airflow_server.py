"""Airflow as deployed: api-server + scheduler + dag-processor with the LocalExecutor, a REST-triggered
run (each task its own process), and the plugin page behind Airflow's authentication."""

from __future__ import annotations

import time

import httpx
import pytest

from daskweak.store import ResultStore
from tests.airflow_harness import Services, dask_processes
from tests.conftest import wait_until

DAG = "dask_weak_scaling"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Services(tmp_path_factory.mktemp("airflow-server"), "LocalExecutor") as services:
        yield services


@pytest.fixture(scope="module")
def finished_run(server):
    """A run triggered through the REST API, as the README shows, and run by the real executor."""
    return server.trigger(DAG, {"max_cores": 2, "obs_per_iter": 2})


def test_rest_triggered_run_succeeds_under_the_local_executor(server, finished_run):
    home = server.home
    run_id, state = finished_run
    assert state == "success"
    steps = home.task_instances(run_id, "run_step")
    assert [(t[1], t[2]) for t in steps] == [("cores=1", "success"), ("cores=2", "success")]
    # max_active_tis_per_dag=1: the steps ran one after the other, not at once
    assert steps[0][5] <= steps[1][4] or steps[1][5] <= steps[0][4]
    store = ResultStore(f"sqlite:///{home.env_file.parent / 'results' / 'daskweak.sqlite'}")
    rows = store.observations(run_id)
    assert sorted(set(rows["cores_requested"])) == [1, 2] and (rows["status"] == "ok").all()
    assert len(rows) == 2 * (4 + 9) * 3
    store.close()
    assert home.xcoms(run_id, "collect")[-1]["ok"] == [1, 2]
    assert [p for p in dask_processes() if p.is_running()] == []


def test_plugin_page_requires_an_airflow_token(server, finished_run):
    url = server.url
    assert httpx.get(f"{url}/daskweak/", timeout=10).status_code == 401
    bad = httpx.get(f"{url}/daskweak/", headers={"Authorization": "Bearer not-a-token"}, timeout=10)
    assert bad.status_code in (401, 403)


def test_plugin_page_lists_runs_and_shows_one_run(server, finished_run):
    client = server.client
    run_id, _ = finished_run
    page = client.get("/daskweak/")
    assert page.status_code == 200 and run_id in page.text
    detail = client.get(f"/daskweak/runs/{run_id}")
    assert detail.status_code == 200
    assert "Steps" in detail.text and "efficiency @ 2" in detail.text and "sequential_chain" in detail.text
    assert client.get("/daskweak/runs/no-such-run").status_code == 404
    plugins = client.get("/api/v2/plugins").json()["plugins"]
    [ours] = [p for p in plugins if p["name"] == "daskweak"]
    assert ours["external_views"][0]["url_route"] == "weak-scaling"


def test_a_task_marked_failed_tears_its_cluster_down(server, finished_run):
    home, client = server.home, server.client
    created = client.post(f"/api/v2/dags/{DAG}/dagRuns",
                          json={"logical_date": None, "conf": {"max_cores": 1, "obs_per_iter": 500,
                                                               "suites": ["tasks"]}})
    created.raise_for_status()
    run_id = created.json()["dag_run_id"]
    deadline = time.monotonic() + 180
    while not any("daskweak.isolated" in " ".join(p.cmdline()) for p in dask_processes()):
        assert time.monotonic() < deadline, "the step never started"
        time.sleep(0.5)
    time.sleep(3)  # a few observations in
    client.patch(f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/run_step/0",
                 json={"new_state": "failed"}).raise_for_status()
    deadline = time.monotonic() + 90
    while any(p.is_running() and p.status() != "zombie" for p in dask_processes()):
        assert time.monotonic() < deadline, [p.cmdline() for p in dask_processes()]
        time.sleep(0.5)
    store = ResultStore(f"sqlite:///{home.env_file.parent / 'results' / 'daskweak.sqlite'}")
    assert wait_until(lambda: list(store.steps(run_id)["status"]) == ["interrupted"], 30)
    assert len(store.observations(run_id)) > 0  # what was measured before the kill is kept
    store.close()

