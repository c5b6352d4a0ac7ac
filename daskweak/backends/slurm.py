"""Slurm through dask-jobqueue: one batch job per planned node, translated from the origin's settings.

ACCOUNT → account, PARTITION → queue, TIME_LIMIT → walltime, MEM_PER_NODE (GB) → memory, OUT_DIR → job
logs, NET_INTERFACE → scheduler and workers, ENV_TO_SOURCE → the job prologue. A submission Slurm would
refuse (bad account or partition, more memory than a node) is caught with `sbatch --test-only` before any
job is queued, with sbatch's own message.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from dask_jobqueue import SLURMCluster

from daskweak.backends.polling import poll_until
from daskweak.errors import DaskweakError
from daskweak.plan import Step
from daskweak.settings import Settings
from daskweak.tls import security

DEFAULT_GB_PER_CORE = 2


class PolledSLURMCluster(SLURMCluster):
    """A SLURMCluster that knows POLL_INTERVAL, because `stop` receives only the cluster."""

    poll_interval: float = 1.0


class SubmissionRefused(DaskweakError):
    """Slurm refused the worker job; the message is sbatch's own."""


def job_memory_bytes(settings: Settings, cores: int) -> int:
    """A job holds its share of a node's MEM_PER_NODE (unset: 2 GB per core)."""
    per_node = settings.mem_per_node_bytes
    if per_node is None:
        return cores * DEFAULT_GB_PER_CORE * 10**9
    return per_node * cores // settings.node_cores


def prologue(settings: Settings) -> list[str]:
    lines = ['ulimit -n "$(ulimit -Hn)" 2>/dev/null || ulimit -n 65536 2>/dev/null || true']  # "too many open files"
    if settings.env_to_source:
        env = Path(settings.env_to_source).resolve()
        lines.append(f"source {env / 'bin' / 'activate' if env.is_dir() else env}")
    return lines


def cluster_options(settings: Settings, cores: int) -> dict[str, Any]:
    """SLURMCluster's arguments for a job of `cores` cores."""
    processes = cores if settings.worker_mode == "processes" else 1
    extra = ["--exclusive"] if settings.slurm_exclusive else []
    extra += settings.sbatch_extra
    options: dict[str, Any] = {
        "cores": cores,
        "processes": processes,
        "memory": f"{job_memory_bytes(settings, cores) // 10**6}MB",
        "account": settings.account,
        "queue": settings.partition,
        "walltime": settings.time_limit,
        "interface": settings.net_interface,
        "log_directory": str(Path(settings.out_dir).resolve()),
        "job_script_prologue": prologue(settings),
        "job_extra_directives": extra,
        "job_name": "daskweak-worker",
        "death_timeout": 60,  # an orphaned worker (driver killed) ends its job
        "scheduler_options": {"interface": settings.net_interface, "dashboard_address": ":0"},
    }
    if settings.use_ssl and settings.cert_dir:
        options |= {"security": security(settings.cert_dir), "protocol": "tls://"}
    return options


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
    """One job per planned node; a smaller last node gets a smaller job (jobqueue's specs are per job)."""
    Path(settings.out_dir).mkdir(parents=True, exist_ok=True)
    largest = max(step.node_cores)
    cluster = PolledSLURMCluster(**cluster_options(settings, largest))
    cluster.poll_interval = settings.poll_interval
    try:
        check_submission(cluster.job_script())
        template = cluster.new_spec
        specs = {}
        for node, cores in enumerate(step.node_cores):
            options = dict(template["options"])
            if cores != largest:
                sized = cluster_options(settings, cores)
                options |= {key: sized[key] for key in ("cores", "processes", "memory")}
            specs[f"node{node}"] = {"cls": template["cls"], "options": options}
        cluster.worker_spec.update(specs)
        cluster.scale(len(specs))
    except BaseException:
        cluster.close()
        raise
    return cluster


def stop(cluster: PolledSLURMCluster, wait: float = 60.0) -> None:
    """Close the cluster (scancel of its jobs) and wait until Slurm has let the jobs go, so the next step's
    jobs do not queue behind them; squeue is asked every POLL_INTERVAL."""
    job_ids = _job_ids(cluster)
    cluster.close()
    if job_ids:
        poll_until(lambda: not _queued(job_ids), interval=cluster.poll_interval, deadline=time.monotonic() + wait)


def _queued(job_ids: list[str]) -> list[str]:
    """The jobs of `job_ids` squeue still lists."""
    return subprocess.run(["squeue", "-h", "-o", "%i", "-j", ",".join(job_ids)], capture_output=True,
                          text=True, timeout=30).stdout.split()


def client_options(settings: Settings) -> dict[str, Any]:
    return {"security": security(settings.cert_dir)} if settings.use_ssl and settings.cert_dir else {}


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
    return {"scheduler": cluster.scheduler_address, "job_script": cluster.job_script(),
            "jobs": allocations(_job_ids(cluster))}


def _job_ids(cluster: SLURMCluster) -> list[str]:
    return [str(w.job_id) for w in cluster.workers.values() if getattr(w, "job_id", None)]
