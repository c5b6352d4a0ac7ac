"""The results tables (runs, steps, observations, verdicts, calibrations, acceptances) behind one SQLAlchemy
URL: SQLite by default, any server.

A step's rows are written in one transaction that first deletes that step's old rows, so running a step
again replaces it (Airflow retries, re-runs) and loading a spooled step twice (`daskweak.spool`) is harmless.

A database that does not answer is retried for RESULTS_RETRY_SECONDS, then `ResultsUnavailable` is raised; the spool
keeps the rows meanwhile. After one such give-up the store tries each later operation once (a sweep must not
wait half a minute per write during an outage) until the database answers again; the end of a run waits
longer (`patient(settings.results_final_wait_seconds)`); both waits are settings (RESULTS_RETRY_SECONDS,
RESULTS_FINAL_WAIT_SECONDS).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import psutil
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
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError, SQLAlchemyError
from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, stop_after_delay, wait_exponential

from daskweak.errors import ResultsUnavailable

log = logging.getLogger(__name__)

# How long a write waits for an unreachable database (or a locked SQLite file) before the spool keeps its rows,
# when no settings say (RESULTS_RETRY_SECONDS). The end of a run (`daskweak run`, Airflow's finish) waits
# RESULTS_FINAL_WAIT_SECONDS: restarts and fail-overs of a shared server take a minute or two, and waiting
# spares the user a `daskweak results sync`.
RETRY_SECONDS = 30.0
# A command-line run writes its heartbeat this often; one not heard from for STALE_AFTER is shown interrupted.
HEARTBEAT_SECONDS = 60.0
STALE_AFTER = timedelta(minutes=10)

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
    # Added after the first release (see _add_missing_columns): who drives a command-line run, and when it
    # last said so; Airflow runs leave both empty (Airflow drives them and its finish task closes them).
    Column("driver", JSON),
    Column("heartbeat_at", DateTime(timezone=True)),
    # Added with the hardware class (daskweak.runinfo.hardware): what the run measured on, and its hash; a
    # regression baseline only holds runs of the same class. Older runs have neither (their own class).
    Column("hardware", JSON),
    Column("hardware_class", String(32)),
    # Added with the judged-baseline rule: what started the run (RUN_KINDS). Only judged nightly runs form a
    # regression baseline; older runs have none and count when they were judged (they were nights).
    Column("kind", String(16)),
)

# What may start a run: the nightly DAG, the manual DAG, the command line, a calibration.
RUN_KINDS = ("nightly", "manual", "cli", "calibration")

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
    # Added with busy-host marks (daskweak.hostload): per host, what else used it while the step measured.
    Column("host_load", JSON),
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
    # Added with loops (daskweak.schedule): runs of the operation timed together; `duration` is per run.
    Column("loops", Integer),
    # Added with the nightly re-measure: the observation re-measured a suspected comparison the same night
    # (NULL: a sweep observation).
    Column("remeasured", Boolean),
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
    # Added with the nightly re-measure: SUITE.OP@CORES measured again before this verdict.
    Column("remeasured", JSON),
)

# One row per `daskweak calibrate`: the noise of R calibration runs and what it recommends
# (daskweak.analysis.calibration); a report shows the newest one of its run's fingerprint.
calibrations = Table(
    "calibrations", metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("fingerprint", String(32), nullable=False, index=True),
    Column("settings", JSON, nullable=False),
    Column("repeats", Integer, nullable=False),
    Column("runs", JSON, nullable=False),
    Column("noise", JSON, nullable=False),
    Column("recommendations", JSON, nullable=False),
)

# `daskweak accept RUN_ID [--operation SUITE.OP]`: the run's level is the new normal for those comparisons
# (suite and operation empty: all of them); their regression baseline starts anew at that run.
acceptances = Table(
    "acceptances", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False, index=True),
    Column("suite", String(32)),
    Column("operation", String(64)),
    Column("accepted_at", DateTime(timezone=True), nullable=False),
    Column("note", Text),
)

T = TypeVar("T")
KILLED_STEP = "its process was killed before it could record its end; the rows it had measured are kept"


class ResultStore:
    """Idempotent writes and plain DataFrame reads over the tables; opening one does not touch the database."""

    def __init__(self, url: str, retry_seconds: float | None = None):
        self.url = url
        self.engine = _engine(url)
        self.retry_seconds = RETRY_SECONDS if retry_seconds is None else retry_seconds
        self.unavailable = False  # the last operation gave up: try the next ones once each
        self._schema_ready = False

    @classmethod
    def of(cls, settings: Any) -> ResultStore:
        """The store of a run's settings: their database and their retry schedule (RESULTS_RETRY_SECONDS)."""
        return cls(settings.database_url, retry_seconds=settings.results_retry_seconds)

    @property
    def masked_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    @contextmanager
    def patient(self, seconds: float) -> Iterator[None]:
        """Within the block, wait up to `seconds` for the database, even after an earlier give-up."""
        previous = self.retry_seconds
        self.retry_seconds, self.unavailable = seconds, False
        try:
            yield
        finally:
            self.retry_seconds = previous

    def start_run(self, record: dict[str, Any]) -> None:
        def write(conn: Connection) -> None:
            conn.execute(delete(runs).where(runs.c.run_id == record["run_id"]))
            conn.execute(insert(runs).values(**record))

        self._transaction(write)

    def finish_run(self, run_id: str, status: str, finished_at: Any) -> None:
        """Close the run; a step still "running" at its end was killed with what it had measured (a spool
        checkpoint), and is marked so."""
        def write(conn: Connection) -> None:
            conn.execute(update(runs).where(runs.c.run_id == run_id).values(status=status, finished_at=finished_at))
            conn.execute(update(steps).where((steps.c.run_id == run_id) & (steps.c.status == "running")).values(
                status="interrupted", error=KILLED_STEP))

        self._transaction(write)

    def heartbeat(self, run_id: str, at: datetime) -> bool:
        """One attempt, no retries: a missed beat is harmless, the next one comes a minute later. (Before the
        store's first successful operation there is no run row to refresh, and no schema to race for.)"""
        if not self._schema_ready:
            return False
        try:
            with self.engine.begin() as conn:
                conn.execute(update(runs).where(runs.c.run_id == run_id).values(heartbeat_at=at))
        except SQLAlchemyError as exc:
            log.info("heartbeat of run %s not written: %s", run_id, exc)
            return False
        return True

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
        """Every run; a "running" run whose driver is gone shows as "interrupted" (see `driver_gone`)."""
        table = self._read(select(runs).order_by(runs.c.started_at))
        if not table.empty:
            gone = [status == "running" and driver_gone(driver, heartbeat)
                    for status, driver, heartbeat in zip(table["status"], table["driver"], table["heartbeat_at"],
                                                         strict=True)]
            table.loc[gone, "status"] = "interrupted"
        return table

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
        def read() -> dict[str, Any] | None:
            with self.engine.connect() as conn:
                row = conn.execute(select(verdicts).where(verdicts.c.run_id == run_id)).mappings().first()
            return dict(row) if row else None

        return self._retry(read)

    def verdict_statuses(self) -> dict[str, str]:
        def read() -> dict[str, str]:
            with self.engine.connect() as conn:
                return dict(conn.execute(select(verdicts.c.run_id, verdicts.c.status)).all())

        return self._retry(read)

    def measured_durations(self, run_ids: list[str]) -> pd.DataFrame:
        """Durations of the measured observations (no warm-ups, no failures) of many runs, in one query and
        only the columns a trend needs (a year of nightly runs reads in well under a second)."""
        o = observations.c
        query = select(o.run_id, o.suite, o.operation, o.cores_requested, o.duration).where(
            o.run_id.in_(run_ids) & (o.warmup == False) & (o.status == "ok"))  # noqa: E712 (SQL, not Python)
        return self._read(query)

    def verdicts_of(self, run_ids: list[str]) -> pd.DataFrame:
        """run_id, status and comparisons of the stored verdicts of these runs."""
        return self._read(select(verdicts.c.run_id, verdicts.c.status, verdicts.c.comparisons).where(
            verdicts.c.run_id.in_(run_ids)))

    def save_calibration(self, record: dict[str, Any]) -> None:
        self._transaction(lambda conn: conn.execute(insert(calibrations).values(**record)))

    def latest_calibration(self, fingerprint: str) -> dict[str, Any] | None:
        """The newest calibration of runs with this fingerprint, or None."""
        def read() -> dict[str, Any] | None:
            query = (select(calibrations).where(calibrations.c.fingerprint == fingerprint)
                     .order_by(calibrations.c.created_at.desc()).limit(1))
            with self.engine.connect() as conn:
                row = conn.execute(query).mappings().first()
            return dict(row) if row else None

        return self._retry(read)

    def verdict_history(self, run_ids: list[str]) -> dict[str, dict[str, Any]]:
        """run_id → {created_at, status, comparisons} of the stored verdicts of these runs (the regression
        rule's memory: which nights were suspected, and whether before or after an acceptance)."""
        def read() -> dict[str, dict[str, Any]]:
            query = select(verdicts.c.run_id, verdicts.c.created_at, verdicts.c.status,
                           verdicts.c.comparisons).where(verdicts.c.run_id.in_(run_ids))
            with self.engine.connect() as conn:
                return {row["run_id"]: dict(row) for row in conn.execute(query).mappings()}

        return self._retry(read)

    def accept(self, run_id: str, suite: str | None = None, operation: str | None = None,
               note: str | None = None) -> None:
        """Record that `run_id`'s level is accepted (for one suite or operation, or all comparisons)."""
        record = {"run_id": run_id, "suite": suite, "operation": operation, "accepted_at": datetime.now(UTC),
                  "note": note}
        self._transaction(lambda conn: conn.execute(insert(acceptances).values(**record)))

    def acceptances(self) -> pd.DataFrame:
        return self._read(select(acceptances).order_by(acceptances.c.accepted_at))

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, query: Any) -> pd.DataFrame:
        def read() -> pd.DataFrame:
            with self.engine.connect() as conn:
                return pd.read_sql(query, conn)

        return self._retry(read)

    def _transaction(self, work: Callable[[Connection], Any]) -> None:
        def attempt() -> None:
            with self.engine.begin() as conn:
                work(conn)

        self._retry(attempt)

    def _ensure_schema(self) -> None:
        if not self._schema_ready:
            try:
                metadata.create_all(self.engine)
            except DBAPIError:
                # Another process created a table between our check and our CREATE ("already exists"):
                # the second pass finds it; anything else fails again and goes to the retries.
                metadata.create_all(self.engine)
            _add_missing_columns(self.engine)
            self._schema_ready = True

    def _retry(self, work: Callable[[], T]) -> T:
        """A server restarting or failing over, a network blip, SQLite's "locked", racing table creators:
        all pass within RETRY_SECONDS; past that `ResultsUnavailable`, and later calls try once each."""

        def attempt() -> T:
            self._ensure_schema()
            return work()

        retrying = Retrying(
            retry=retry_if_exception_type((OperationalError, InterfaceError, IntegrityError)),
            wait=wait_exponential(multiplier=0.05, max=2.0),
            stop=stop_after_attempt(1) if self.unavailable else stop_after_delay(self.retry_seconds),
            reraise=True,
        )
        try:
            result = retrying(attempt)
        except (OperationalError, InterfaceError, IntegrityError) as exc:
            self.unavailable = True
            reason = (str(exc.orig if exc.orig is not None else exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ResultsUnavailable(f"the results database {self.masked_url} did not answer: {reason}") from exc
        self.unavailable = False
        return result


def _add_missing_columns(engine: Engine) -> None:
    """`create_all` never alters an existing table: add the (nullable) columns a newer version introduced to a
    database an older one created. Idempotent; a concurrent process adding the same column is not an error."""
    for table in metadata.sorted_tables:
        present = {column["name"] for column in inspect(engine).get_columns(table.name)}
        for column in table.columns:
            if column.name in present:
                continue
            ddl = f"ALTER TABLE {table.name} ADD COLUMN {column.name} {column.type.compile(engine.dialect)}"
            try:
                with engine.begin() as conn:
                    conn.execute(text(ddl))
            except DBAPIError:
                if column.name not in {c["name"] for c in inspect(engine).get_columns(table.name)}:
                    raise


def this_driver() -> dict[str, Any]:
    """What identifies the process driving a run: host name, pid, and its start time (pids are reused)."""
    return {"host": socket.gethostname(), "pid": psutil.Process().pid, "started": psutil.Process().create_time()}


def driver_gone(driver: dict[str, Any] | None, heartbeat_at: Any, at: datetime | None = None) -> bool:
    """A recorded driver on this host is gone when its process is; elsewhere when its heartbeat is stale.

    Runs without a driver (Airflow's) are never judged here: Airflow's finish task closes them.
    """
    if not driver:
        return False
    if driver.get("host") == socket.gethostname():
        try:
            return abs(psutil.Process(driver["pid"]).create_time() - driver["started"]) > 1.0
        except psutil.NoSuchProcess:
            return True
        except psutil.Error:
            pass  # not ours to inspect: judge by the heartbeat
    if heartbeat_at is None or pd.isna(heartbeat_at):
        return False
    beat = pd.Timestamp(heartbeat_at)
    beat = beat.tz_localize(UTC) if beat.tzinfo is None else beat  # SQLite returns UTC without its zone
    return beat < (at or datetime.now(UTC)) - STALE_AFTER


def _engine(url: str) -> Engine:
    if not url.startswith("sqlite"):
        parsed = make_url(url)
        # An unreachable host must fail within seconds so the retries (and the spool) take over, not hang
        # for the TCP timeout; a connect_timeout in the URL wins.
        connect_args = ({"connect_timeout": 10}
                        if parsed.get_backend_name() == "postgresql" and "connect_timeout" not in parsed.query else {})
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
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
