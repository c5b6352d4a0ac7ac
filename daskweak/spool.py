"""RES_DIR/spool: every record a run writes lands here first, and leaves once the results table has it.

A database that is restarting, failing over or cut off must not cost measurements, nor stop the sweep:
`start_run`, `write_step` and `finish_run` write one file per record (`RES_DIR/spool/<run>/run.json`,
`step-00003.json`, `finish.json`), then load the run's pending files into the table in that order and
delete each one written. What the database refused stays and is loaded by the next write, by
`daskweak results sync`, by the next `daskweak run`, or under Airflow by the `finish` task. Every load
replaces (a run's record, a step's rows in one transaction), so loading a file twice changes nothing.

Files are JSON (datetimes as ISO 8601 with their time zone), written to a temporary file and renamed, so
a killed process leaves either the old file or the new one; the directory is private to the user (0700,
files 0600). One lock per spool serialises writers and loaders of the same machine, so a loader never
deletes a file a writer has just replaced.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from daskweak.errors import ResultsUnavailable
from daskweak.store import ResultStore

log = logging.getLogger(__name__)

DATETIME = "$datetime"


@dataclass
class SyncReport:
    """What one load of the spool did: records written per run, records left per run, and why."""

    loaded: dict[str, int] = field(default_factory=dict)
    left: dict[str, int] = field(default_factory=dict)
    error: str | None = None


class Spool:
    """A run's records on their way to the results table (see the module's docstring)."""

    def __init__(self, directory: Path, store: ResultStore):
        self.directory = directory.resolve()
        self.store = store
        self.last_error: str | None = None  # why the last load left records behind

    def start_run(self, record: dict[str, Any]) -> bool:
        """Spool the run's record and load it; True when the table has it."""
        self._put(record["run_id"], "run", record)
        return not self.sync(record["run_id"]).left

    def write_step(self, record: dict[str, Any], rows: list[dict[str, Any]]) -> bool:
        """Spool the step's record and rows and load them (after what the run spooled before); True when the
        table has all of the run's records."""
        self._put(record["run_id"], f"step-{record['step']:05d}", {"step": record, "rows": rows})
        return not self.sync(record["run_id"]).left

    def checkpoint(self, record: dict[str, Any], rows: list[dict[str, Any]]) -> None:
        """Spool what a running step has measured so far, without loading it: if the step's process is killed
        (SIGKILL, OOM) its measured rows still reach the table with the next load, as a step still "running"
        that the run's end marks interrupted. The step's own `write_step` replaces the file."""
        self._put(record["run_id"], f"step-{record['step']:05d}", {"step": record, "rows": rows})

    def finish_run(self, run_id: str, status: str, finished_at: datetime) -> bool:
        self._put(run_id, "finish", {"run_id": run_id, "status": status, "finished_at": finished_at})
        return not self.sync(run_id).left

    def sync(self, run_id: str | None = None) -> SyncReport:
        """Load pending records (of one run, or of every run) in order. A database that does not answer stops
        the whole load; a record it rejects (a bug, never an outage) stops only its run's load."""
        report = SyncReport()
        down = False
        with self._locked():
            for run in [run_id] if run_id else self.runs():
                stuck = down
                for path in self._pending(run):
                    if not stuck:
                        try:
                            self._load(json.loads(path.read_text(encoding="utf-8"), object_hook=_decode), path)
                        except ResultsUnavailable as exc:
                            report.error = str(exc)
                            down = stuck = True
                        except (SQLAlchemyError, ValueError) as exc:
                            log.error("spooled %s not loaded: %s", path, exc)
                            report.error = report.error or f"{path.name} of run {run} was refused: {exc}"
                            stuck = True
                        else:
                            path.unlink()
                            report.loaded[run] = report.loaded.get(run, 0) + 1
                            continue
                    report.left[run] = report.left.get(run, 0) + 1
                self._remove_if_empty(run)
        self.last_error = report.error
        if report.loaded:
            log.info("loaded spooled records into the results table: %s", report.loaded)
        return report

    def pending(self, run_id: str | None = None) -> dict[str, int]:
        """Records waiting per run."""
        counts = {run: len(self._pending(run)) for run in ([run_id] if run_id else self.runs())}
        return {run: count for run, count in counts.items() if count}

    def runs(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.name for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith("."))

    def path(self, run_id: str) -> Path:
        if run_id in ("", ".", "..") or Path(run_id).name != run_id:
            raise ValueError(f"a run id cannot name a spool directory: {run_id!r}")
        return self.directory / run_id

    def message(self, left: dict[str, int], reason: str | None = None) -> str:
        """One paragraph for the user: why, what is not in the table, where it is, how to load it."""
        runs = "; ".join(f"run {run}: {count} record(s) in {self.path(run)}" for run, count in sorted(left.items()))
        reason = reason or f"the results database {self.store.masked_url} did not take them"
        return (f"{reason}. Not in the table yet, kept in the spool: {runs}. Run `daskweak results sync` when the "
                "database answers (the next `daskweak run` loads them too).")

    def _load(self, payload: dict[str, Any], path: Path) -> None:
        kind = path.stem.split("-")[0]
        if kind == "run":
            self.store.start_run(payload)
        elif kind == "step":
            self.store.write_step(payload["step"], payload["rows"])
        elif kind == "finish":
            self.store.finish_run(payload["run_id"], payload["status"], payload["finished_at"])
        else:
            raise ValueError(f"unknown spool file {path}")

    def _put(self, run_id: str, name: str, payload: dict[str, Any]) -> None:
        """Atomically (temporary file, fsync, rename) and privately (0600 in 0700 directories)."""
        directory = self.path(run_id)
        with self._locked():
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            handle, temporary = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
            try:
                with os.fdopen(handle, "w", encoding="utf-8") as out:
                    json.dump(payload, out, default=_encode)
                    out.flush()
                    os.fsync(out.fileno())
                os.replace(temporary, directory / f"{name}.json")
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise

    def _pending(self, run_id: str) -> list[Path]:
        directory = self.path(run_id)
        if not directory.is_dir():
            return []
        order = {"run": 0, "step": 1, "finish": 2}
        return sorted(directory.glob("*.json"), key=lambda p: (order.get(p.stem.split("-")[0], 3), p.name))

    def _remove_if_empty(self, run_id: str) -> None:
        directory = self.path(run_id)
        if directory.is_dir() and not any(directory.iterdir()):
            directory.rmdir()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def spool_for(res_dir: Path, store: ResultStore) -> Spool:
    """The spool of a results directory (RES_DIR/spool)."""
    return Spool(res_dir / "spool", store)


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {DATETIME: value.isoformat()}
    if hasattr(value, "item"):  # a NumPy scalar
        return value.item()
    raise TypeError(f"cannot spool {type(value).__name__}: {value!r}")


def _decode(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and DATETIME in obj:
        return datetime.fromisoformat(obj[DATETIME])
    return obj
