"""Airflow as deployed: api-server + scheduler + dag-processor with the LocalExecutor, a REST-triggered
run (each task its own process), and the plugin page behind Airflow's authentication."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import httpx
import pytest

from daskweak.store import ResultStore
from tests.airflow_harness import AIRFLOW, SMALL_ENV, AirflowHome, dask_processes, free_port
from tests.conftest import wait_until

DAG = "dask_weak_scaling"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("airflow-server")
    env_file = base / "bench.env"
    env_file.write_text(SMALL_ENV + f"RES_DIR={base / 'results'}\nSUITES=tasks,arrays\n")
    port = free_port()
    home = AirflowHome(base / "home", env_file, extra={
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
    })
    home.run("db", "migrate", check=True)
    procs = []
    for name, args in [("api-server", ["api-server", "-H", "127.0.0.1", "-p", str(port)]),
                       ("scheduler", ["scheduler"]), ("dag-processor", ["dag-processor"])]:
        log = open(base / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        procs.append((subprocess.Popen([AIRFLOW, *args], env=home.env, stdout=log, stderr=subprocess.STDOUT,
                                       start_new_session=True), log))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        else:
            raise AssertionError((base / "api-server.log").read_text()[-3000:])
        token = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": "admin-password"},
                           timeout=10).json()["access_token"]
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        yield home, client, url
    finally:
        for proc, _ in procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
            log.close()


@pytest.fixture(scope="module")
def finished_run(server):
    """A run triggered through the REST API, as the README shows, and run by the real executor."""
    _, client, _ = server
    deadline = time.monotonic() + 120
    while client.get(f"/api/v2/dags/{DAG}").status_code != 200:  # the dag-processor has parsed it
        assert time.monotonic() < deadline, "DAG never appeared"
        time.sleep(1)
    client.patch(f"/api/v2/dags/{DAG}", json={"is_paused": False}).raise_for_status()
    created = client.post(f"/api/v2/dags/{DAG}/dagRuns",
                          json={"logical_date": None, "conf": {"max_cores": 2, "obs_per_iter": 2}})
    created.raise_for_status()
    run_id = created.json()["dag_run_id"]
    deadline = time.monotonic() + 400
    while (state := client.get(f"/api/v2/dags/{DAG}/dagRuns/{run_id}").json()["state"]) not in ("success",
                                                                                             "failed"):
        assert time.monotonic() < deadline, f"run still {state}"
        time.sleep(2)
    return run_id, state


def test_rest_triggered_run_succeeds_under_the_local_executor(server, finished_run):
    home, _, _ = server
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
    _, _, url = server
    assert httpx.get(f"{url}/daskweak/", timeout=10).status_code == 401
    bad = httpx.get(f"{url}/daskweak/", headers={"Authorization": "Bearer not-a-token"}, timeout=10)
    assert bad.status_code in (401, 403)


def test_plugin_page_lists_runs_and_shows_one_run(server, finished_run):
    _, client, _ = server
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
    home, client, _ = server
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

