"""Why a step's jobs are not workers yet, from Slurm itself, while the step waits for them.

`sbatch --test-only` accepts a job that a limit will then hold forever (a QOS's MaxJobsPerUser, an
association's MaxJobs, a partition with too few nodes), and a job can end before its worker starts (a
CERT_DIR or an environment the compute node cannot see). Waiting out TIMEOUT would say neither. So every
POLL_INTERVAL the waiting step asks `squeue`:

- a job held for a reason that cannot resolve without someone acting (QOS and association limits, partition
  limits, unavailable or down nodes, a held job, a dependency never satisfied) fails the step at once;
- a job that ended (or left the queue) before the workers were all there fails the step at once, with its
  state, Slurm's reason and the last lines of its error log (the job script's own checks print there);
- a transient reason (Resources, Priority, …) keeps the step waiting; at TIMEOUT the message names it.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from daskweak.errors import DaskweakError

# Pending reasons that no amount of waiting by this step resolves: someone has to change a limit, the
# partition, a node or the job. A QOS or association limit counts even when other jobs of the user hold the
# slots: the step would wait for them without saying so.
HOPELESS_PREFIXES = ("QOS", "Assoc")
# squeue prints some with details ("ReqNodeNotAvail, UnavailableNodes:node2"), so these are prefixes too.
HOPELESS = (
    "PartitionNodeLimit", "PartitionTimeLimit", "PartitionDown", "PartitionInactive", "PartitionConfig",
    "ReqNodeNotAvail", "NodeDown", "Nodes required for job are DOWN", "BadConstraints", "InvalidAccount",
    "InvalidQOS", "AccountNotAllowed", "QOSNotAllowed", "JobHeldAdmin", "JobHeldUser",
    "DependencyNeverSatisfied", "FrontEndDown", "MaxRequeue", "launch_failed_requeued_held",
)
ACTIVE = frozenset({"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "RESIZING", "SUSPENDED", "REQUEUED"})
# The job script's own checks start their message with this, so it stands out of the error log.
MARK = "daskweak:"
TAIL_LINES = 5


class JobsHeld(DaskweakError):
    """Slurm accepted the worker jobs but holds them for a reason waiting cannot resolve."""


class JobEnded(DaskweakError):
    """A worker job ended before its workers joined the scheduler."""


@dataclass(frozen=True)
class JobState:
    job_id: str
    state: str  # PENDING, RUNNING, FAILED, …, or GONE when squeue no longer knows it
    reason: str
    node: str


def states(job_ids: list[str]) -> list[JobState] | None:
    """squeue's state, reason and node of each job, finished ones included while Slurm keeps them (a job it
    no longer knows is GONE); None when squeue did not answer (a busy controller says nothing about jobs)."""
    if not job_ids:
        return []
    try:
        done = subprocess.run(["squeue", "-h", "-t", "all", "-j", ",".join(job_ids), "-o", "%i|%T|%r|%N"],
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0 and "Invalid job id" not in done.stderr:  # all purged: squeue exits 1 saying so
        return None
    known = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 4:
            known[parts[0]] = JobState(*parts)
    return [known.get(job_id, JobState(job_id, "GONE", "no longer in squeue", "")) for job_id in job_ids]


def hopeless(reason: str) -> bool:
    return reason.startswith(HOPELESS + HOPELESS_PREFIXES)


def check(job_ids: list[str], log_directory: str | None, job_name: str) -> None:
    """Raise JobsHeld or JobEnded when waiting longer for these jobs cannot help."""
    found = states(job_ids)
    if found is None:
        return  # ask again at the next poll
    held = [job for job in found if job.state == "PENDING" and hopeless(job.reason)]
    if held:
        listing = ", ".join(f"job {job.job_id} ({job.reason})" for job in held)
        raise JobsHeld(f"Slurm holds the worker jobs and waiting will not help: {listing}; "
                       "see `scontrol show job ID` and the QOS or association limits (`sacctmgr show qos`, "
                       "`sacctmgr show assoc`)")
    ended = [job for job in found if job.state not in ACTIVE]
    if ended:
        job = ended[0]
        where = f" on {job.node}" if job.node else ""
        log = _log_tail(log_directory, job_name, job.job_id)
        raise JobEnded(f"Slurm job {job.job_id}{where} ended before its workers joined ({job.state}, "
                       f"{job.reason}){f': {log}' if log else ''}")


def summary(job_ids: list[str]) -> str:
    """One line of where each job is, for the TIMEOUT message: "job 12 PENDING (Resources), job 13 RUNNING on
    node1"."""
    found = states(job_ids)
    if found is None:
        return "squeue did not answer"
    return ", ".join(
        f"job {job.job_id} {job.state}" + (f" ({job.reason})" if job.state == "PENDING" else "")
        + (f" on {job.node}" if job.node and job.state != "PENDING" else "")
        for job in found
    )


def _log_tail(log_directory: str | None, job_name: str, job_id: str) -> str:
    """The job script's own message (a line starting with MARK), else the last lines of its error log."""
    if not log_directory:
        return ""
    path = Path(log_directory) / f"{job_name}-{job_id}.err"
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"(no error log at {path}: is OUT_DIR on a file system the compute nodes share?)"
    marked = [line for line in lines if line.startswith(MARK)]
    return " | ".join(marked or lines[-TAIL_LINES:])
