"""The results tables (runs, steps, observations, verdicts) behind one SQLAlchemy URL: SQLite by default, any server.

A step's rows are written in one transaction that first deletes that step's old rows, so running a step
again replaces it (Airflow retries, re-runs) and a crash loses only the step in flight.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import IntegrityError, OperationalError

metadata = MetaData()

runs = Table(
    "runs", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True)),
    Column("status", String(16), nullable=False),
    Column("backend", String(16), nullable=False),
    Column("scaling", String(8), nullable=False),
    Column("use_ssl", Boolean, nullable=False),
    Column("fingerprint", String(32), nullable=False, index=True),
    Column("config", JSON, nullable=False),
    Column("versions", JSON, nullable=False),
    Column("host", String(255), nullable=False),
    Column("git_revision", String(64)),
)

steps = Table(
    "steps", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("step", Integer, primary_key=True),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("cores_requested", Integer, nullable=False),
    Column("cores_actual", Integer),
    Column("workers_requested", Integer, nullable=False),
    Column("workers_actual", Integer),
    Column("threads_per_worker", Integer),
    Column("nodes", Integer, nullable=False),
    Column("layout", JSON, nullable=False),
    Column("time_to_ready", Float),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    Column("details", JSON),
)

observations = Table(
    "observations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("step", Integer, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("backend", String(16), nullable=False),
    Column("scaling", String(8), nullable=False),
    Column("use_ssl", Boolean, nullable=False),
    Column("suite", String(32), nullable=False),
    Column("operation", String(64), nullable=False),
    Column("cores_requested", Integer, nullable=False),
    Column("cores_actual", Integer, nullable=False),
    Column("workers", Integer, nullable=False),
    Column("threads_per_worker", Integer, nullable=False),
    Column("nodes", Integer, nullable=False),
    Column("problem_size", Integer, nullable=False),
    Column("bytes", Integer, nullable=False),
    Column("observation", Integer, nullable=False),
    Column("warmup", Boolean, nullable=False),
    Column("duration", Float, nullable=False),
    Column("size", Float, nullable=False),
    Column("unit", String(16), nullable=False),
    Column("rate", Float),
    Column("rate_unit", String(24), nullable=False),
    Column("peak_memory", Float),
    Column("status", String(16), nullable=False),
    Column("error", Text),
    UniqueConstraint("run_id", "step", "suite", "operation", "observation", name="one_row_per_observation"),
)

verdicts = Table(
    "verdicts", metadata,
    Column("run_id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("status", String(16), nullable=False),
    Column("baseline", JSON, nullable=False),
    Column("markdown", Text, nullable=False),
    Column("html", Text, nullable=False),
    Column("comparisons", JSON, nullable=False),
)

T = TypeVar("T")


class ResultStore:
    """Idempotent writes and plain DataFrame reads over the three tables."""

    def __init__(self, url: str):
        self.url = url
        self.engine = _engine(url)
        self._retry(lambda: metadata.create_all(self.engine))

    def start_run(self, record: dict[str, Any]) -> None:
        def write(conn: Connection) -> None:
            conn.execute(delete(runs).where(runs.c.run_id == record["run_id"]))
            conn.execute(insert(runs).values(**record))

        self._transaction(write)

    def finish_run(self, run_id: str, status: str, finished_at: Any) -> None:
        self._transaction(lambda conn: conn.execute(
            update(runs).where(runs.c.run_id == run_id).values(status=status, finished_at=finished_at)
        ))

    def write_step(self, step_row: dict[str, Any], rows: Iterable[dict[str, Any]]) -> None:
        """Replace the step's record and its observation rows in one transaction."""
        rows = list(rows)
        run_id, index = step_row["run_id"], step_row["step"]

        def write(conn: Connection) -> None:
            conn.execute(delete(observations).where(
                (observations.c.run_id == run_id) & (observations.c.step == index)
            ))
            conn.execute(delete(steps).where((steps.c.run_id == run_id) & (steps.c.step == index)))
            conn.execute(insert(steps).values(**step_row))
            if rows:
                conn.execute(insert(observations), rows)

        self._transaction(write)

    def runs(self) -> pd.DataFrame:
        return self._read(select(runs).order_by(runs.c.started_at))

    def steps(self, run_id: str) -> pd.DataFrame:
        return self._read(select(steps).where(steps.c.run_id == run_id).order_by(steps.c.step))

    def observations(self, run_id: str) -> pd.DataFrame:
        query = select(observations).where(observations.c.run_id == run_id).order_by(observations.c.id)
        return self._read(query)

    def observations_of(self, run_ids: list[str]) -> pd.DataFrame:
        """Observations of several runs in one query (a regression baseline)."""
        return self._read(select(observations).where(observations.c.run_id.in_(run_ids)))

    def save_verdict(self, record: dict[str, Any]) -> None:
        def write(conn: Connection) -> None:
            conn.execute(delete(verdicts).where(verdicts.c.run_id == record["run_id"]))
            conn.execute(insert(verdicts).values(**record))

        self._transaction(write)

    def verdict(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(verdicts).where(verdicts.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def verdict_statuses(self) -> dict[str, str]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(verdicts.c.run_id, verdicts.c.status)).all())

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, query: Any) -> pd.DataFrame:
        with self.engine.connect() as conn:
            return pd.read_sql(query, conn)

    def _transaction(self, work: Callable[[Connection], Any]) -> None:
        def attempt() -> None:
            with self.engine.begin() as conn:
                work(conn)

        self._retry(attempt)

    @staticmethod
    def _retry(work: Callable[[], T], attempts: int = 20) -> T:
        """Concurrent writers: SQLite may report "locked" and racing creators may collide; try again."""
        for attempt in range(attempts):
            try:
                return work()
            except (OperationalError, IntegrityError):
                if attempt == attempts - 1:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    database = make_url(url).database
    if database and database != ":memory:":
        Path(database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _wal(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets readers and one writer work at once; busy_timeout makes writers wait instead of failing.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine
