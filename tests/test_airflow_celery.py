"""The same DAG under the CeleryExecutor: Redis from Debian's packages as the broker, a real Celery worker."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest
import redis

from daskweak.store import ResultStore
from tests.airflow_harness import AIRFLOW, Services, dask_processes, free_port
from tests.conftest import need

DAG = "dask_weak_scaling"


@pytest.fixture(scope="module")
def redis_url():
    server = shutil.which("redis-server")
    if not server:
        need("redis-server (Debian package 'redis-server') is not installed")
    port = free_port()
    proc = subprocess.Popen([server, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    yield f"redis://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(10)


def test_a_rest_triggered_run_succeeds_under_the_celery_executor(tmp_path, redis_url):
    celery = {"AIRFLOW__CELERY__BROKER_URL": f"{redis_url}/0",
              "AIRFLOW__CELERY__RESULT_BACKEND": f"{redis_url}/1",
              "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2"}
    with Services(tmp_path, "CeleryExecutor", extra_env=celery,
                  extra_services=[("celery-worker", [AIRFLOW, "celery", "worker"])]) as services:
        run_id, state = services.trigger(DAG, {"max_cores": 2, "obs_per_iter": 1, "suites": ["tasks"]})
        assert state == "success", (tmp_path / "celery-worker.log").read_text()[-3000:]
        steps = services.home.task_instances(run_id, "run_step")
        assert [(t[1], t[2]) for t in steps] == [("cores=1", "success"), ("cores=2", "success")]
        assert steps[0][5] <= steps[1][4] or steps[1][5] <= steps[0][4]  # one step at a time
    # every task went through Celery: its result backend holds one result per task instance (5 + 1 mapped)
    results = redis.Redis.from_url(f"{redis_url}/1").keys("celery-task-meta-*")
    assert len(results) >= 6
    store = ResultStore(f"sqlite:///{tmp_path / 'results' / 'daskweak.sqlite'}")
    rows = store.observations(run_id)
    assert sorted(set(rows["cores_requested"])) == [1, 2] and (rows["status"] == "ok").all()
    store.close()
    assert [p for p in dask_processes(services.home.home) if p.is_running()] == []
