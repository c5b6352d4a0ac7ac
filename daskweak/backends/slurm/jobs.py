"""A run's Slurm jobs by name: every worker job is called `daskweak-<run>-s<step>`, so whoever comes after a
killed driver (the DAG's finish task, the step's retry, the next `daskweak run`) can find and cancel them.

A driver killed with SIGKILL cannot scancel its jobs: running ones would idle until the workers' death
timeout and pending ones would stay queued forever. Only `squeue` and `scancel` of the current user are used;
another user's jobs, and jobs that are not daskweak's, are never touched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pwd
import re
import subprocess
import time
from typing import TYPE_CHECKING

from daskweak.backends.polling import poll_until

if TYPE_CHECKING:
    from daskweak.store import ResultStore

log = logging.getLogger(__name__)

PREFIX = "daskweak-"
MAX_RUN_PART = 56  # Airflow's run ids (manual__2026-11-30T15:52:00.123456+00:00) fit; longer ones are cut
NAME = re.compile(rf"^{PREFIX}(?P<run>.+)-s(?P<step>\d+)$")
CANCEL_WAIT = 60.0


def run_part(run_id: str) -> str:
    """The run id as it can stand in a job name and a log file name (dask-jobqueue names the logs after the
    job): letters, digits, '.', '_', '-'; an id that had to be changed or shortened gets a hash of itself, so
    two runs never share a name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", run_id)
    if safe == run_id and len(safe) <= MAX_RUN_PART:
        return safe
    return f"{safe[:MAX_RUN_PART - 9]}-{hashlib.sha256(run_id.encode()).hexdigest()[:8]}"


def job_name(run_id: str, step: int) -> str:
    return f"{PREFIX}{run_part(run_id)}-s{step}"


def comment(run_id: str, step: int) -> str:
    """`--comment`, shown by `squeue -o %k`: the run id in full for a person (no spaces: one #SBATCH word)."""
    return re.sub(r"\s", "_", f"daskweak:run={run_id}:step={step}")


def user() -> str:
    """Jobs are the submitting uid's: the same user's `squeue -u` and `scancel -u`."""
    return pwd.getpwuid(os.getuid()).pw_name


def own_jobs() -> dict[str, str]:
    """job id → name of the current user's daskweak jobs still queued or running."""
    out = _slurm(["squeue", "-h", "-u", user(), "-o", "%i|%j"])
    found = {}
    for line in out.splitlines():
        job_id, _, name = line.strip().partition("|")
        if name.startswith(PREFIX):
            found[job_id] = name
    return found


def of_run(jobs: dict[str, str], run_id: str, step: int | None = None) -> list[str]:
    """The ids among `jobs` that belong to `run_id` (and to `step`, if given)."""
    wanted = run_part(run_id)
    found = []
    for job_id, name in jobs.items():
        match = NAME.match(name)
        if match and match["run"] == wanted and (step is None or int(match["step"]) == step):
            found.append(job_id)
    return sorted(found, key=int)


def cancel(job_ids: list[str], wait: float = CANCEL_WAIT, interval: float = 1.0) -> list[str]:
    """scancel `job_ids` and wait until squeue no longer lists them; returns them."""
    if job_ids:
        _slurm(["scancel", *job_ids])
        poll_until(lambda: not queued(job_ids), interval=interval, deadline=time.monotonic() + wait)
    return job_ids


def cancel_run(run_id: str, step: int | None = None) -> list[str]:
    """Cancel what is left of `run_id`'s jobs (of one step, if given): the end of an Airflow run, a retried
    step."""
    return cancel(of_run(own_jobs(), run_id, step))


def cancel_ended_runs(store: ResultStore) -> dict[str, list[str]]:
    """At the start of a command-line run: cancel the jobs of every run the results table knows as no longer
    running (finished, failed, or "running" whose driver is gone — `store.runs()` says so). Jobs of a run the
    table does not know (another results database, another tool) or of a live run are left alone; an Airflow
    run's jobs are cancelled by its own finish task. Returns run id → cancelled job ids."""
    jobs = own_jobs()
    if not jobs:
        return {}  # the common case: no need to read the runs table
    runs = store.runs()
    ended = runs.loc[runs["status"] != "running", "run_id"] if not runs.empty else []
    doomed = {run_id: ids for run_id in ended if (ids := of_run(jobs, run_id))}
    cancel([job_id for ids in doomed.values() for job_id in ids])
    return doomed


def queued(job_ids: list[str]) -> list[str]:
    """The jobs of `job_ids` squeue still lists (pending, running, completing)."""
    return _slurm(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], check=False).split()


def _slurm(command: list[str], check: bool = True) -> str:
    """A Slurm client command's output. squeue -j exits 1 when none of the ids is known any more (purged
    after MinJobAge): that is an empty answer, hence `check=False` there."""
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    if check and done.returncode != 0:
        raise subprocess.CalledProcessError(done.returncode, command, done.stdout, done.stderr)
    return done.stdout
