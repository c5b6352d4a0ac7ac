"""Slurm through dask-jobqueue: one batch job per planned node, translated from the origin's settings.

ACCOUNT → account, PARTITION → queue, TIME_LIMIT → walltime, MEM_PER_NODE (GB) → memory, OUT_DIR → job
logs, NET_INTERFACE → scheduler and workers, ENV_TO_SOURCE → the job prologue and the workers' interpreter.
A submission Slurm would refuse (bad account or partition, more memory than a node) is caught with
`sbatch --test-only` before any job is queued, with sbatch's own message; one Slurm accepts but then holds
or ends early fails the step while it waits (`watch`). Jobs are named after the run and step (`jobs`).
"""

from __future__ import annotations

import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from dask_jobqueue import SLURMCluster
from dask_jobqueue.slurm import SLURMJob
from distributed.core import Status
from distributed.security import Security

from daskweak.backends.polling import poll_until
from daskweak.backends.slurm import jobs, watch
from daskweak.errors import ConfigError, DaskweakError, Problem
from daskweak.plan import Step
from daskweak.settings import Settings
from daskweak.tls import ensure_certificates, security

DEFAULT_GB_PER_CORE = 2
# A job script's own check failed (a path the compute node cannot see): distinct from Python's exit codes.
CHECK_FAILED = 78


class RecordedSLURMJob(SLURMJob):
    """A worker job that remembers why sbatch refused it. `--test-only` passes one job, but a limit counted
    over jobs (a QOS's MaxSubmitJobsPerUser) refuses a later one while the cluster scales, and dask-jobqueue
    only logs that; `stalled` reports it."""

    refusal: str | None = None

    async def start(self) -> None:
        try:
            await super().start()
        except RuntimeError as exc:  # jobqueue's failed command: "… stderr:\n<sbatch's message>"
            self.refusal = " ".join(str(exc).partition("stderr:")[2].split()) or str(exc)
            self.status = Status.failed
            raise

    async def close(self) -> None:
        """jobqueue's close cancels the job but leaves the status as it was; SpecCluster's close asserts that
        every job it created is closed, which fails once a refusal's traceback keeps a job alive."""
        await super().close()
        self.status = Status.closed


class PolledSLURMCluster(SLURMCluster):
    """A SLURMCluster that knows POLL_INTERVAL (`stop` and `stalled` receive only the cluster) and records
    sbatch's refusals."""

    job_cls = RecordedSLURMJob
    poll_interval: float = 1.0


class SubmissionRefused(DaskweakError):
    """Slurm refused the worker job; the message is sbatch's own."""


def job_memory_bytes(settings: Settings, cores: int) -> int:
    """A job holds its share of a node's MEM_PER_NODE (unset: 2 GB per core)."""
    per_node = settings.mem_per_node_bytes
    if per_node is None:
        return cores * DEFAULT_GB_PER_CORE * 10**9
    return per_node * cores // settings.node_cores


def prologue(settings: Settings, tls_files: list[str] | None = None) -> list[str]:
    """The job script before the worker command: open-file limit, ENV_TO_SOURCE, and checks that fail the job
    at once, with a line the backend reports (`watch`), when the compute node lacks what the workers need."""
    lines = ['ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true']  # "too many open files"
    if settings.env_to_source:
        env = Path(settings.env_to_source).resolve()
        script = env / "bin" / "activate" if env.is_dir() else env
        lines.append(f"source {shlex.quote(str(script))}")
        lines.append(_check("command -v python >/dev/null",
                            f"ENV_TO_SOURCE={settings.env_to_source} put no python on PATH"))
    for path in tls_files or []:
        lines.append(_check(f"test -r {shlex.quote(path)}",
                            f"CERT_DIR={settings.cert_dir}: {path} is not readable here; CERT_DIR must be on a "
                            "file system the compute nodes share"))
    return lines


def _check(test: str, message: str) -> str:
    text = shlex.quote(f"{watch.MARK} {message}")
    return f'{test} || {{ echo {text}" (on $(hostname))" >&2; exit {CHECK_FAILED}; }}'


def cluster_options(settings: Settings, cores: int, run_id: str = "adhoc", step: int = 0) -> dict[str, Any]:
    """SLURMCluster's arguments for a job of `cores` cores of `run_id`'s step `step`."""
    processes = cores if settings.worker_mode == "processes" else 1
    extra = ["--exclusive"] if settings.slurm_exclusive else []
    extra += [f"--comment={jobs.comment(run_id, step)}", *settings.sbatch_extra]
    tls = _security(settings) if settings.use_ssl and settings.cert_dir else None
    tls_files = [str(v) for k, v in tls.get_tls_config_for_role("worker").items() if k != "ciphers" and v] if tls \
        else []
    options: dict[str, Any] = {
        "cores": cores,
        "processes": processes,
        "memory": f"{job_memory_bytes(settings, cores) // 10**6}MB",
        "account": settings.account,
        "queue": settings.partition,
        "walltime": settings.time_limit,
        "interface": settings.net_interface,
        "log_directory": str(Path(settings.out_dir).resolve()),
        "job_script_prologue": prologue(settings, tls_files),
        "job_extra_directives": extra,
        "job_name": jobs.job_name(run_id, step),
        # With ENV_TO_SOURCE the sourced environment's python runs the workers (the driver's path may not
        # exist on compute nodes, and would ignore the environment); without it, the driver's own.
        "python": "python" if settings.env_to_source else sys.executable,
        "death_timeout": 60,  # an orphaned worker (driver killed) ends its job
        "scheduler_options": {"interface": settings.net_interface, "dashboard_address": ":0"},
    }
    if tls:
        options |= {"security": tls, "protocol": "tls://"}
    return options


def preflight(settings: Settings) -> None:
    """What can be checked on the driver's host before anything is submitted: the scheduler runs here, so
    NET_INTERFACE must be one of this host's interfaces (the compute nodes need the same name)."""
    if settings.net_interface:
        import psutil

        names = sorted(psutil.net_if_addrs())
        if settings.net_interface not in names:
            raise ConfigError([Problem("NET_INTERFACE", settings.net_interface,
                                       f"an interface of {socket.gethostname()}, where the scheduler runs "
                                       f"(and of the compute nodes): one of {', '.join(names)}")])


def check_submission(script: str) -> None:
    """`sbatch --test-only` validates account, partition and resources without queueing anything."""
    with tempfile.NamedTemporaryFile("w", suffix=".sh") as handle:
        handle.write(script)
        handle.flush()
        result = subprocess.run(["sbatch", "--test-only", handle.name], capture_output=True, text=True, timeout=60)
    if result.returncode != 0:
        message = (result.stderr or result.stdout).strip()
        raise SubmissionRefused(f"Slurm refused the worker job: {message}")


def start(settings: Settings, step: Step, run_id: str) -> SLURMCluster:
    """One job per planned node; a smaller last node gets a smaller job (jobqueue's specs are per job).

    Jobs of an earlier attempt at this very step (a retried Airflow task whose first process was killed) are
    cancelled first: they would take the new jobs' place in the queue."""
    preflight(settings)
    Path(settings.out_dir).mkdir(parents=True, exist_ok=True)
    jobs.cancel_run(run_id, step.index)
    largest = max(step.node_cores)
    cluster = PolledSLURMCluster(**cluster_options(settings, largest, run_id, step.index))
    cluster.poll_interval = settings.poll_interval
    try:
        check_submission(cluster.job_script())
        template = cluster.new_spec
        specs = {}
        for node, cores in enumerate(step.node_cores):
            options = dict(template["options"])
            if cores != largest:
                sized = cluster_options(settings, cores, run_id, step.index)
                options |= {key: sized[key] for key in ("cores", "processes", "memory")}
            specs[f"node{node}"] = {"cls": template["cls"], "options": options}
        cluster.worker_spec.update(specs)
        cluster.scale(len(specs))
    except BaseException:
        cluster.close()
        raise
    return cluster


def stalled(cluster: PolledSLURMCluster) -> None:
    """Called every POLL_INTERVAL while the step waits for its workers: raises when Slurm holds a job for
    good or a job ended before its workers joined (see `watch`), or sbatch refused a job while scaling."""
    refused = [f"{name}: {job.refusal}" for name, job in cluster.workers.items() if getattr(job, "refusal", None)]
    if refused:
        raise SubmissionRefused(f"Slurm refused a worker job while scaling ({'; '.join(refused)})")
    watch.check(_job_ids(cluster), cluster._dummy_job.log_directory, cluster.job_name)


def not_ready(cluster: PolledSLURMCluster) -> str:
    """Where the jobs are when TIMEOUT ends: pending and why (Resources, Priority…), or running where."""
    return watch.summary(_job_ids(cluster)) or "no job submitted yet"


def stop(cluster: PolledSLURMCluster, wait: float = 60.0) -> None:
    """Close the cluster (scancel of its jobs) and wait until Slurm has let the jobs go, so the next step's
    jobs do not queue behind them; squeue is asked every POLL_INTERVAL."""
    job_ids = _job_ids(cluster)
    cluster.close()
    if job_ids:
        poll_until(lambda: not jobs.queued(job_ids), interval=cluster.poll_interval,
                   deadline=time.monotonic() + wait)


def client_options(settings: Settings) -> dict[str, Any]:
    return {"security": _security(settings)} if settings.use_ssl and settings.cert_dir else {}


def _security(settings: Settings) -> Security:
    """TLS for the step, with certificates issued for the addresses workers on other hosts dial: the
    scheduler's NET_INTERFACE (unset: every interface of this host), besides its name and loopback."""
    import psutil

    interfaces = psutil.net_if_addrs()
    chosen = [settings.net_interface] if settings.net_interface in interfaces else list(interfaces)
    addresses = [a.address.split("%")[0] for name in chosen for a in interfaces[name]
                 if a.family in (socket.AF_INET, socket.AF_INET6)]
    ensure_certificates(Path(settings.cert_dir), hosts=["localhost", "127.0.0.1", socket.gethostname(),
                                                        socket.getfqdn(), *dict.fromkeys(addresses)])
    return security(settings.cert_dir)


def allocations(job_ids: list[str]) -> list[dict[str, Any]]:
    """What Slurm actually granted each job (CPUs, memory, node), read back with `scontrol`."""
    found = []
    for job_id in job_ids:
        out = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True, timeout=30).stdout
        granted = re.search(r"\b(?:Alloc)?TRES=(\S*)", out)  # 22.05 prints TRES= for a running job
        tres = dict(re.findall(r"(\w+)=([\w.]+)", granted.group(1) if granted else ""))
        node = re.search(r"\bNodeList=(\S+)", out)
        found.append({"job_id": job_id, "cpus": int(tres["cpu"]) if "cpu" in tres else None,
                      "memory": tres.get("mem"), "node": node.group(1) if node else None})
    return found


def describe(cluster: SLURMCluster) -> dict[str, Any]:
    """The step's record: each job's allocation and its worker's name, so a lost worker names job and node."""
    workers = {str(w.job_id): name for name, w in cluster.workers.items() if getattr(w, "job_id", None)}
    jobs_ = [job | {"worker": workers.get(job["job_id"])} for job in allocations(_job_ids(cluster))]
    return {"scheduler": cluster.scheduler_address, "job_script": cluster.job_script(), "jobs": jobs_}


def _job_ids(cluster: SLURMCluster) -> list[str]:
    return [str(w.job_id) for w in cluster.workers.values() if getattr(w, "job_id", None)]
