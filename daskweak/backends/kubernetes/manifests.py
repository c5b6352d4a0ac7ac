"""The Kubernetes side described as data: the DaskCluster (and extra DaskWorkerGroup) manifests of a step.

Pure functions of the settings and the plan, so they are validated without a cluster (against the CRD
schema shipped in dask-kubernetes and the Kubernetes OpenAPI schema) and only then handed to the API.

Choices:
- Commands are `dask scheduler` / `dask worker`: distributed 2026.8 ships only the `dask` CLI, while
  dask-kubernetes' `make_cluster_spec` still writes `dask-scheduler` / `dask-worker`.
- Containers start through `sh -c 'ulimit -n …; exec dask …'`: a pod spec cannot raise the nofile limit.
- The scheduler is pinned to SCHEDULER_HOST by required node affinity on `kubernetes.io/hostname`, not by
  `nodeName`: affinity still goes through the Kubernetes scheduler, so taints, resources and the node's
  readiness are respected and a bad name leaves the pod Pending with a reason instead of failing it.
- With TLS, the kubernetes.io/tls Secret SECRET_CERT_NAME is mounted read-only at TLS_DIR and every Dask
  process requires encryption. Its files are mode 0440, owner root and group TLS_GROUP (the pod's fsGroup, which
  every container process gets as a supplementary group, whatever user the image runs as): `tls.key` is not
  world-readable, yet the image's non-root user (docker/Dockerfile: 10001) reads it.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from typing import Any

from daskweak.plan import Step
from daskweak.settings import Settings

TLS_DIR = "/etc/dask/tls"
TLS_MODE, TLS_GROUP = 0o440, 10001  # the Secret's files: owner root, group fsGroup; TLS_GROUP: the image's group
SCHEDULER_PORT, SCHEDULER_DASHBOARD, WORKER_DASHBOARD = 8786, 8787, 8788
NOFILE = 65536


def run_label(run_id: str) -> str:
    """A label value naming the run (run ids may hold characters labels refuse)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


def cluster_name(settings: Settings, run_id: str, step: Step) -> str:
    """KUBECLUSTER_NAME made unique per run and step, as a DNS-1123 label of at most 63 characters."""
    suffix = f"-{run_label(run_id)}-s{step.index}"
    prefix = re.sub(r"[^a-z0-9-]", "-", settings.kubecluster_name.lower())[: 63 - len(suffix)].strip("-")
    return f"{prefix or 'daskweak'}{suffix}"


def _kube_memory(n_bytes: int) -> str:
    return f"{max(1, n_bytes // 2**20)}Mi"


def _tls_args(settings: Settings) -> list[str]:
    if not settings.use_ssl:
        return []
    return ["--tls-ca-file", f"{TLS_DIR}/ca.crt", "--tls-cert", f"{TLS_DIR}/tls.crt", "--tls-key", f"{TLS_DIR}/tls.key"]


def _shell(args: list[str]) -> list[str]:
    """Raise nofile as far as the node allows, then exec the Dask process (it stays PID 1's child)."""
    return ["sh", "-c", f"ulimit -n {NOFILE} 2>/dev/null || ulimit -n $(ulimit -Hn); exec {shlex.join(args)}"]


def _env(settings: Settings) -> list[dict[str, str]]:
    return [{"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": str(settings.use_ssl)}]


def _tls_volume(settings: Settings) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    if not settings.use_ssl:
        return [], []
    volume = {"name": "dask-tls", "secret": {"secretName": settings.secret_cert_name, "defaultMode": TLS_MODE}}
    mount = {"name": "dask-tls", "mountPath": TLS_DIR, "readOnly": True}
    return [volume], [mount]


def _pod_security(settings: Settings) -> dict[str, Any]:
    """fsGroup with TLS: the group that may read the Secret's 0440 files (the kubelet sets it on them)."""
    return {"securityContext": {"fsGroup": TLS_GROUP}} if settings.use_ssl else {}


def scheduler_address(settings: Settings, name: str) -> str:
    """The in-cluster address workers use; set explicitly because the operator would write tcp:// under TLS."""
    protocol = "tls" if settings.use_ssl else "tcp"
    return f"{protocol}://{name}-scheduler.{settings.kube_namespace}.svc.cluster.local:{SCHEDULER_PORT}"


def worker_pod_spec(settings: Settings, name: str, cores: int, memory: int | None) -> dict[str, Any]:
    """One pod per node: `cores` cores, worker threads equal to the pod's cores (or one process per core)."""
    processes = cores if settings.worker_mode == "processes" else 1
    args = ["dask", "worker", "--name", "$(DASK_WORKER_NAME)", "--nthreads", str(cores // processes),
            "--nworkers", str(processes), "--dashboard-address", str(WORKER_DASHBOARD), *_tls_args(settings)]
    resources: dict[str, dict[str, str]] = {"requests": {"cpu": str(cores)}, "limits": {"cpu": str(cores)}}
    if memory:
        args += ["--memory-limit", str(memory // processes)]
        resources["requests"]["memory"] = resources["limits"]["memory"] = _kube_memory(memory)
    volumes, mounts = _tls_volume(settings)
    container = {
        "name": "worker", "image": settings.container_image, "args": _shell(args),
        "env": [*_env(settings), {"name": "DASK_SCHEDULER_ADDRESS", "value": scheduler_address(settings, name)}],
        "resources": resources, "volumeMounts": mounts,
        "ports": [{"name": "http-dashboard", "containerPort": WORKER_DASHBOARD, "protocol": "TCP"}],
    }
    return {"containers": [container], "volumes": volumes, **_pod_security(settings)}


def scheduler_spec(settings: Settings, name: str, service_type: str = "ClusterIP") -> dict[str, Any]:
    args = ["dask", "scheduler", "--host", "0.0.0.0", "--port", str(SCHEDULER_PORT),
            "--dashboard-address", f":{SCHEDULER_DASHBOARD}", *_tls_args(settings)]
    if settings.use_ssl:
        args += ["--protocol", "tls"]
    volumes, mounts = _tls_volume(settings)
    cores, memory = str(settings.scheduler_cores), _kube_memory(settings.scheduler_mem_bytes)
    container = {
        "name": "scheduler", "image": settings.container_image, "args": _shell(args), "env": _env(settings),
        "resources": {"requests": {"cpu": cores, "memory": memory}, "limits": {"cpu": cores, "memory": memory}},
        "volumeMounts": mounts,
        "ports": [{"name": "tcp-comm", "containerPort": SCHEDULER_PORT, "protocol": "TCP"},
                  {"name": "http-dashboard", "containerPort": SCHEDULER_DASHBOARD, "protocol": "TCP"}],
        "readinessProbe": {"tcpSocket": {"port": "tcp-comm"}, "periodSeconds": 1, "timeoutSeconds": 5},
    }
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes, **_pod_security(settings)}
    if settings.scheduler_host:
        pod["affinity"] = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In",
                                   "values": [settings.scheduler_host]}]}]}}}
    service = {
        "type": service_type,
        "selector": {"dask.org/cluster-name": name, "dask.org/component": "scheduler"},
        "ports": [{"name": "tcp-comm", "protocol": "TCP", "port": SCHEDULER_PORT, "targetPort": "tcp-comm"},
                  {"name": "http-dashboard", "protocol": "TCP", "port": SCHEDULER_DASHBOARD,
                   "targetPort": "http-dashboard"}],
    }
    return {"spec": pod, "service": service}


def manifests(settings: Settings, step: Step, run_id: str, service_type: str = "ClusterIP") -> list[dict[str, Any]]:
    """The DaskCluster for the step's largest pods, plus a DaskWorkerGroup for a smaller last node."""
    name = cluster_name(settings, run_id, step)
    largest = max(step.node_cores)
    full = sum(1 for cores in step.node_cores if cores == largest)
    per_core = (step.memory_per_node // settings.node_cores) if step.memory_per_node else None
    labels = {"app.kubernetes.io/part-of": "daskweak", "daskweak/run": run_label(run_id),
              "daskweak/step": str(step.index)}
    cluster = {
        "apiVersion": "kubernetes.dask.org/v1",
        "kind": "DaskCluster",
        "metadata": {"name": name, "namespace": settings.kube_namespace, "labels": labels},
        "spec": {
            "idleTimeout": 0,  # the operator's idle check hangs its deletion when the scheduler is down
            "worker": {"replicas": full,
                       "spec": worker_pod_spec(settings, name, largest, per_core and per_core * largest)},
            "scheduler": scheduler_spec(settings, name, service_type),
        },
    }
    resources = [cluster]
    for cores in sorted({c for c in step.node_cores if c != largest}):
        resources.append({
            "apiVersion": "kubernetes.dask.org/v1",
            "kind": "DaskWorkerGroup",
            "metadata": {"name": f"{name}-c{cores}", "namespace": settings.kube_namespace, "labels": labels},
            "spec": {"cluster": name, "worker": {
                "replicas": sum(1 for c in step.node_cores if c == cores),
                "spec": worker_pod_spec(settings, name, cores, per_core and per_core * cores)}},
        })
    return resources
