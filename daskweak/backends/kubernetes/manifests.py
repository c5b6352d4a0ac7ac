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
- Worker pods of a step are spread one per node by default (KUBE_WORKER_PLACEMENT=spread): a required pod
  anti-affinity on `kubernetes.io/hostname` against the worker pods of the same DaskCluster (every worker group:
  the selector is the operator's `dask.org/cluster-name` and `dask.org/component=worker` labels), nothing else.
  The plan's "node" is a host: on Slurm each worker job asks for CORES_PER_NODE cores, a node's worth, so its jobs
  hold distinct nodes (wholly with SLURM_EXCLUSIVE=True), and a step of N nodes measures N hosts talking over the
  network. Kubernetes' scheduler would put pods smaller than a node wherever they fit, several on one node,
  measuring a faster network than Slurm's steps of the same plan; spread makes the two comparable, and a step
  with more pods than nodes stays Pending with the scheduler's reason instead of measuring something else. pack
  (no anti-affinity) is for nodes much larger than CORES_PER_NODE, as Slurm's shared nodes without --exclusive.
- Scheduler and worker pods meet the Pod Security Standards' "restricted" profile (POD_SECURITY,
  CONTAINER_SECURITY): they run as the image's non-root user and group (docker/Dockerfile: 10001), with the
  runtime's default seccomp profile, no privilege escalation and every capability dropped; their volumes are a
  Secret at most.
- With TLS, the kubernetes.io/tls Secret SECRET_CERT_NAME is mounted read-only at TLS_DIR and every Dask
  process requires encryption. Its files are mode 0440, owner root and group TLS_GROUP (the pod's fsGroup, which
  every container process gets as a supplementary group, whatever user the image runs as): `tls.key` is not
  world-readable, yet the image's non-root user reads it.
- What a site needs on the pods (KUBE_IMAGE_PULL_SECRETS, KUBE_NODE_SELECTOR, KUBE_TOLERATIONS,
  KUBE_PRIORITY_CLASS, KUBE_SERVICE_ACCOUNT, KUBE_POD_LABELS, KUBE_POD_ANNOTATIONS) goes on the scheduler and
  every worker pod alike; labels and annotations through the operator's pod `metadata`.
- Names: the Service `<cluster>-scheduler` is a DNS-1035 label and the operator's label
  `dask.org/workergroup-name` (`<cluster>-default`, `<cluster>-c<cores>`) a label value, both ≤ 63 characters:
  `cluster_name` keeps the DaskCluster's name short enough for the longest of these suffixes; KUBECLUSTER_NAME
  itself is a DNS-1035 label (settings), so the Service's name starts with a letter.
"""

from __future__ import annotations

import copy
import hashlib
import re
import shlex
from typing import Any

from daskweak.plan import Step
from daskweak.settings import Settings

TLS_DIR = "/etc/dask/tls"
POD_USER = POD_GROUP = 10001  # docker/Dockerfile: `useradd --uid 10001 --user-group`, `USER 10001:10001`
TLS_MODE, TLS_GROUP = 0o440, POD_GROUP  # the Secret's files: owner root, group fsGroup (the image's group)
SCHEDULER_PORT, SCHEDULER_DASHBOARD, WORKER_DASHBOARD = 8786, 8787, 8788
NOFILE = 65536
NAME_MAX = 63  # a DNS-1035 label (Service), a label value (dask.org/cluster-name, dask.org/workergroup-name)
OBJECT_SUFFIXES = ("-scheduler", "-default")  # the operator's Service/Deployment and default worker group
POD_SECURITY = {"runAsNonRoot": True, "runAsUser": POD_USER, "runAsGroup": POD_GROUP, "fsGroup": TLS_GROUP,
                "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def run_label(run_id: str) -> str:
    """A label value naming the run (run ids may hold characters labels refuse)."""
    return hashlib.sha256(run_id.encode()).hexdigest()[:8]


def longest_object_suffix(settings: Settings) -> int:
    """The longest suffix the operator and `manifests` add to a DaskCluster's name in a name or label value."""
    return max(len(suffix) for suffix in (*OBJECT_SUFFIXES, f"-c{settings.max_n_cores}"))


def cluster_name(settings: Settings, run_id: str, step: Step) -> str:
    """KUBECLUSTER_NAME made unique per run and step, short enough that every name derived from it is valid.

    KUBECLUSTER_NAME is a DNS-1035 label (settings): its first letter stays first. Cut, it is still unique per run
    and step through the run label and step index, which are never cut."""
    suffix = f"-{run_label(run_id)}-s{step.index}"
    room = NAME_MAX - longest_object_suffix(settings) - len(suffix)
    prefix = re.sub(r"[^a-z0-9-]", "-", settings.kubecluster_name.lower())[:room].rstrip("-")
    if not prefix or not prefix[0].isalpha():
        prefix = "daskweak"[:room]
    return f"{prefix}{suffix}"


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


def _site_pod_fields(settings: Settings) -> dict[str, Any]:
    """The pod fields a site asks for, on scheduler and workers alike; unset ones are left out."""
    fields: dict[str, Any] = {
        "imagePullSecrets": [{"name": name} for name in settings.kube_image_pull_secrets],
        "nodeSelector": dict(settings.kube_node_selector),
        "tolerations": [dict(toleration) for toleration in settings.kube_tolerations],
        "priorityClassName": settings.kube_priority_class,
        "serviceAccountName": settings.kube_service_account,
    }
    return {key: value for key, value in fields.items() if value}


def _pod(settings: Settings, container: dict[str, Any], volumes: list[dict[str, Any]]) -> dict[str, Any]:
    """A pod spec of the restricted profile: the image's non-root user and group, fsGroup always (with TLS the
    group that may read the Secret's 0440 files, the kubelet sets it on them), the runtime's seccomp profile."""
    container = {**container, "securityContext": copy.deepcopy(CONTAINER_SECURITY)}
    return {"containers": [container], "volumes": volumes, "securityContext": copy.deepcopy(POD_SECURITY),
            **_site_pod_fields(settings)}


def pod_metadata(settings: Settings) -> dict[str, Any]:
    """The operator's `metadata` of the scheduler and worker pods: the site's extra labels and annotations."""
    metadata = {"labels": dict(settings.kube_pod_labels), "annotations": dict(settings.kube_pod_annotations)}
    return {key: value for key, value in metadata.items() if value}


def worker_spread(name: str) -> dict[str, Any]:
    """Required anti-affinity of a DaskCluster's worker pods (all its worker groups) to each other, per node."""
    return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
        "labelSelector": {"matchLabels": {"dask.org/cluster-name": name, "dask.org/component": "worker"}},
        "topologyKey": "kubernetes.io/hostname",
    }]}}


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
    pod = _pod(settings, container, volumes)
    if settings.kube_worker_placement == "spread":
        pod["affinity"] = worker_spread(name)
    return pod


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
    pod = _pod(settings, container, volumes)
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
    return {**({"metadata": metadata} if (metadata := pod_metadata(settings)) else {}), "spec": pod, "service": service}


def worker(settings: Settings, name: str, replicas: int, cores: int, memory: int | None) -> dict[str, Any]:
    """A worker group's `worker`: `replicas` pods of `cores` cores, with the site's pod metadata."""
    metadata = pod_metadata(settings)
    return {"replicas": replicas, **({"metadata": metadata} if metadata else {}),
            "spec": worker_pod_spec(settings, name, cores, memory)}


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
            "worker": worker(settings, name, full, largest, per_core and per_core * largest),
            "scheduler": scheduler_spec(settings, name, service_type),
        },
    }
    resources = [cluster]
    for cores in sorted({c for c in step.node_cores if c != largest}):
        resources.append({
            "apiVersion": "kubernetes.dask.org/v1",
            "kind": "DaskWorkerGroup",
            "metadata": {"name": f"{name}-c{cores}", "namespace": settings.kube_namespace, "labels": labels},
            "spec": {"cluster": name, "worker": worker(
                settings, name, sum(1 for c in step.node_cores if c == cores), cores, per_core and per_core * cores)},
        })
    return resources
