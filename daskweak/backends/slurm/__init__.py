"""The Slurm backend: `backend` (the jobqueue cluster of a step), `jobs` (a run's jobs by name, cancelled
after a killed driver) and `watch` (why jobs are not workers yet). The backend's functions are re-exported
here, so `daskweak.backends.slurm` is the backend module."""

from daskweak.backends.slurm.backend import (
    PolledSLURMCluster,
    SubmissionRefused,
    allocations,
    check_submission,
    client_options,
    cluster_options,
    describe,
    job_memory_bytes,
    not_ready,
    preflight,
    prologue,
    stalled,
    start,
    stop,
)
from daskweak.backends.slurm.jobs import cancel_ended_runs, cancel_run

__all__ = [
    "PolledSLURMCluster", "SubmissionRefused", "allocations", "cancel_ended_runs", "cancel_run",
    "check_submission", "client_options", "cluster_options", "describe", "job_memory_bytes", "not_ready",
    "preflight", "prologue", "stalled", "start", "stop",
]
