"""The results store on SQLite and on a real PostgreSQL server: idempotent steps, concurrent writers, the
spool's files, old databases gaining new columns, and runs whose driver is gone."""

from __future__ import annotations

import multiprocessing
import socket
import stat
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import psutil
import pytest
from sqlalchemy import Column, MetaData, Table, create_engine, insert, inspect

from daskweak.spool import spool_for
from daskweak.store import STALE_AFTER, ResultStore, runs, this_driver
from tests.conftest import wait_until

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
    with ResultStore(url) as store:
        store.runs()  # the tables exist before the writers start
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


def run_record(run_id: str, **extra: object) -> dict:
    return {"run_id": run_id, "started_at": datetime.now(UTC), "status": "running", "backend": "local",
            "scaling": "weak", "use_ssl": False, "fingerprint": "abc", "config": {"max_n_cores": 2},
            "versions": {"dask": "x"}, "host": "h", "git_revision": None} | extra


def fresh_database(url: str, tmp_path) -> str:
    """An empty database: a new file, or a new database of the session's PostgreSQL server."""
    if url.startswith("sqlite"):
        return f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    import psycopg
    from sqlalchemy.engine import make_url

    base, name = make_url(url), f"fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(host=base.host, port=base.port, user=base.username, dbname=base.database,
                         autocommit=True) as conn:
        conn.execute(f"create database {name}")
    return base.set(database=name).render_as_string(hide_password=False)


def test_an_older_database_gains_the_new_columns_and_keeps_its_runs(url, tmp_path):
    """A results database made before `driver`/`heartbeat_at` (and `hardware`/`hardware_class`) existed:
    `create_all` would not add them."""
    url = fresh_database(url, tmp_path)
    old = MetaData()
    Table("runs", old, *[Column(c.name, c.type, primary_key=c.primary_key, nullable=c.nullable)
                         for c in runs.columns if c.name not in ("driver", "heartbeat_at", "hardware",
                                                                 "hardware_class")])
    engine = create_engine(url)
    old.create_all(engine)
    with engine.begin() as conn:
        conn.execute(insert(old.tables["runs"]).values(**run_record("before", status="ok")))
    for _ in range(2):  # idempotent: the second store finds the columns there
        with ResultStore(url) as store:
            assert store.runs().set_index("run_id").loc["before", "status"] == "ok"
    assert {"driver", "heartbeat_at", "hardware", "hardware_class"} <= {
        c["name"] for c in inspect(engine).get_columns("runs")}
    with ResultStore(url) as store:
        store.start_run(run_record("after", driver=this_driver(), heartbeat_at=datetime.now(UTC)))
        assert store.runs().set_index("run_id").loc["after", "driver"]["pid"] == psutil.Process().pid
    engine.dispose()


def test_a_running_run_whose_driver_is_gone_is_shown_interrupted(tmp_path):
    ended = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    dead = {"host": socket.gethostname(), "pid": ended.pid, "started": psutil.Process(ended.pid).create_time()}
    ended.communicate("")  # a real driver process that has ended
    elsewhere = {"host": "another-host.invalid", "pid": 1, "started": 0.0}
    now = datetime.now(UTC)
    with ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}") as store:
        store.start_run(run_record("alive", driver=this_driver(), heartbeat_at=now - 2 * STALE_AFTER))
        store.start_run(run_record("killed", driver=dead, heartbeat_at=now))
        store.start_run(run_record("quiet-elsewhere", driver=elsewhere, heartbeat_at=now - 2 * STALE_AFTER))
        store.start_run(run_record("beating-elsewhere", driver=elsewhere, heartbeat_at=now - timedelta(minutes=1)))
        store.start_run(run_record("airflow"))  # no driver: Airflow's finish task closes it
        store.start_run(run_record("done", driver=dead, heartbeat_at=now, status="ok"))
        assert store.heartbeat("beating-elsewhere", datetime.now(UTC))
        shown = store.runs().set_index("run_id")["status"].to_dict()
    assert shown == {"alive": "running", "killed": "interrupted", "quiet-elsewhere": "interrupted",
                     "beating-elsewhere": "running", "airflow": "running", "done": "ok"}


def test_spooled_records_are_private_files_that_round_trip_exactly_and_load_twice_harmlessly(url, tmp_path):
    with ResultStore(url) as store:
        spool = spool_for(tmp_path / "results", store)
        record = run_record("spooled", driver=this_driver(), heartbeat_at=datetime.now(UTC))
        rows = [observation("spooled", 0, i) for i in range(3)]
        spool._put("spooled", "run", record)
        spool._put("spooled", "step-00000", {"step": step_row("spooled", 0), "rows": rows})
        files = sorted((tmp_path / "results" / "spool" / "spooled").iterdir())
        assert [f.name for f in files] == ["run.json", "step-00000.json"]
        assert stat.S_IMODE(files[0].parent.stat().st_mode) == 0o700
        assert {stat.S_IMODE(f.stat().st_mode) for f in files} == {0o600}
        copies = {f.name: f.read_bytes() for f in files}
        assert spool.pending() == {"spooled": 2}
        first = spool.sync()
        assert first.loaded == {"spooled": 2} and not first.left and spool.pending() == {}
        for name, content in copies.items():  # the same files again, as after a crash before their deletion
            (spool.path("spooled")).mkdir(exist_ok=True)
            (spool.path("spooled") / name).write_bytes(content)
        assert spool.sync().loaded == {"spooled": 2}
        stored = store.observations("spooled")
        assert len(stored) == 3 and sorted(stored["operation"]) == ["op0", "op1", "op2"]
        when = pd_utc(store.runs().set_index("run_id").loc["spooled", "started_at"])
        assert when == record["started_at"]
        assert list(store.steps("spooled")["status"]) == ["ok"]
        assert not spool.path("spooled").exists()


def pd_utc(value: object) -> datetime:
    """SQLite gives timestamps back without their zone (they were written in UTC)."""
    import pandas as pd

    stamp = pd.Timestamp(value)
    return (stamp if stamp.tzinfo else stamp.tz_localize(UTC)).to_pydatetime()


def test_a_sweep_driver_refreshes_its_heartbeat(tmp_path):
    from daskweak.runner import heartbeat

    with ResultStore(f"sqlite:///{tmp_path / 'r.sqlite'}") as store:
        started = datetime.now(UTC) - timedelta(hours=1)
        store.start_run(run_record("beating", driver=this_driver(), heartbeat_at=started))

        def beaten() -> bool:
            return pd_utc(store.runs().set_index("run_id").loc["beating", "heartbeat_at"]) > started

        with heartbeat(store, "beating", every=0.05):
            assert wait_until(beaten, timeout=30)
