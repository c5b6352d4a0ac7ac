"""The results store on SQLite and on a real PostgreSQL server: idempotent steps, concurrent writers."""

from __future__ import annotations

import multiprocessing
from datetime import UTC, datetime

import pytest

from daskweak.store import ResultStore

WRITERS, STEPS_EACH, ROWS_EACH = 4, 5, 40


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nested' / 'results.sqlite'}"
    return request.getfixturevalue("postgres_url")


def step_row(run_id: str, step: int, status: str = "ok") -> dict:
    now = datetime.now(UTC)
    return {"run_id": run_id, "step": step, "started_at": now, "finished_at": now, "cores_requested": step + 1,
            "workers_requested": step + 1, "nodes": 1, "layout": [step + 1], "status": status}


def observation(run_id: str, step: int, index: int, duration: float = 1.0) -> dict:
    now = datetime.now(UTC)
    return {
        "run_id": run_id, "step": step, "started_at": now, "finished_at": now, "backend": "local",
        "scaling": "weak", "use_ssl": False, "suite": "tasks", "operation": f"op{index}",
        "cores_requested": step + 1, "cores_actual": step + 1, "workers": step + 1, "threads_per_worker": 1,
        "nodes": 1, "problem_size": 10, "bytes": 0, "observation": 0, "warmup": False, "duration": duration,
        "size": 10.0, "unit": "tasks", "rate": 10.0 / duration, "rate_unit": "tasks/s", "peak_memory": 1e6,
        "status": "ok", "error": None,
    }


def write_many(url: str, writer: int) -> None:
    store = ResultStore(url)
    for step in range(STEPS_EACH):
        rows = [observation(f"run{writer}", step, i) for i in range(ROWS_EACH)]
        store.write_step(step_row(f"run{writer}", step), rows)
        # every writer also rewrites one shared step: the last write must win, whole
        store.write_step(step_row("shared", 0), [observation("shared", 0, i, duration=writer + 1) for i in range(5)])
    store.close()


def test_writing_a_step_again_replaces_it(url):
    store = ResultStore(url)
    store.write_step(step_row("r", 0), [observation("r", 0, i) for i in range(3)])
    store.write_step(step_row("r", 0, status="partial"), [observation("r", 0, i, 2.0) for i in range(2)])
    rows, steps = store.observations("r"), store.steps("r")
    assert len(rows) == 2 and set(rows["duration"]) == {2.0}
    assert list(steps["status"]) == ["partial"]
    store.close()


def test_runs_keep_config_and_versions_as_json(url):
    store = ResultStore(url)
    record = {"run_id": "j", "started_at": datetime.now(UTC), "status": "running", "backend": "local",
              "scaling": "weak", "use_ssl": False, "fingerprint": "abc", "config": {"max_n_cores": 2},
              "versions": {"dask": "x"}, "host": "h", "git_revision": None}
    store.start_run(record)
    store.start_run(record)  # idempotent too
    store.finish_run("j", "ok", datetime.now(UTC))
    run = store.runs().set_index("run_id").loc["j"]
    assert run["config"] == {"max_n_cores": 2} and run["versions"] == {"dask": "x"} and run["status"] == "ok"
    store.close()


def test_concurrent_writers_lose_nothing(url):
    ResultStore(url).close()
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_many, args=(url, w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = ResultStore(url)
    for w in range(WRITERS):
        assert len(store.observations(f"run{w}")) == STEPS_EACH * ROWS_EACH
        assert len(store.steps(f"run{w}")) == STEPS_EACH
    shared = store.observations("shared")
    assert len(shared) == 5 and shared["duration"].nunique() == 1
    store.close()
