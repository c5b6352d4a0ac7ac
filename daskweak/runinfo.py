"""Where and with what a run was measured: package versions, host, hardware and the project's git revision."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import socket
import subprocess
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

if TYPE_CHECKING:
    from daskweak.settings import Settings

PACKAGES = (
    "dask", "distributed", "numpy", "pandas", "pyarrow", "dask-jobqueue", "dask-kubernetes", "kr8s",
    "sqlalchemy", "daskweak",
)


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def git_revision() -> str | None:
    """The checkout daskweak runs from, with "-dirty" when it has uncommitted changes."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def host() -> str:
    return socket.getfqdn()


def hardware(settings: Settings) -> dict[str, Any]:
    """What the run measures on, as far as it is cheap to know from where the run starts, so that a night on
    other hardware never joins the old baseline.

    local: this machine (CPU model, logical cores, memory). slurm: the partition's node types as `sinfo`
    reports them (CPUs, memory, features), when `sinfo` answers. kubernetes: the namespace, the image and the
    types of the nodes the Dask pods can land on (node pool, instance type, architecture, CPUs, memory: one
    list of Nodes, `backends.kubernetes.nodes`), so a move to another node pool is a new class; when the API
    refuses (no right to list nodes) or does not answer, `nodes` is None and `nodes_unknown` says why, and the
    run goes on. The node count is a function of the settings, already in the fingerprint.
    """
    found: dict[str, Any] = {"backend": settings.backend, "machine": platform.machine()}
    if settings.backend == "local":
        found |= {"cpu_model": cpu_model(), "logical_cores": os.cpu_count(),
                  "memory_gib": round(psutil.virtual_memory().total / 2**30)}
    elif settings.backend == "slurm":
        found |= {"partition": settings.partition, "nodes": slurm_node_types(settings.partition)}
    else:
        from daskweak.backends.kubernetes.nodes import node_types  # kr8s and the backend: kubernetes runs only

        types, unknown = node_types()
        found |= {"namespace": settings.kube_namespace, "image": settings.container_image, "nodes": types}
        if unknown:
            found["nodes_unknown"] = unknown
    return found


# Said with the record, not hashed: nights whose nodes were unknown for different reasons are one class.
UNHASHED = ("nodes_unknown",)


def hardware_class(found: dict[str, Any]) -> str:
    """A short hash of `hardware`: runs of one class are comparable."""
    hashed = {key: value for key, value in found.items() if key not in UNHASHED}
    return hashlib.sha256(json.dumps(hashed, sort_keys=True, default=str).encode()).hexdigest()[:16]


def cpu_model() -> str | None:
    """The CPU model name from /proc/cpuinfo (Linux), else what platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Hardware", "cpu model"):
                return value.strip()
    except OSError:
        pass
    return platform.processor() or None


def slurm_node_types(partition: str | None) -> list[str] | None:
    """The partition's distinct node types, "CPUs/memory MB/features" each, or None without `sinfo`."""
    command = ["sinfo", "--noheader", "--format=%c/%m/%f", *(["--partition", partition] if partition else [])]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({line.strip() for line in done.stdout.splitlines() if line.strip()})
