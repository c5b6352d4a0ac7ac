"""Where the client runs: in a pod of the cluster (which pod), or outside, where ClusterIP services are unreachable.

Two questions only the client's host can answer. Its own pod: a DaskCluster owned by it is deleted by
Kubernetes' garbage collector with the pod, so a SIGKILLed or OOM-killed client (a CronJob's pod) leaves no
cluster. The pod's name is POD_NAME (the downward API: `fieldRef: metadata.name`) or, in a pod with a service
account, HOSTNAME (a pod's hostname is its name unless its spec sets another); its namespace POD_NAMESPACE or
the service account's namespace file. And reachability: a ClusterIP scheduler service answers only inside the
cluster, by its DNS name; a client with no service account whose resolver does not know the cluster's names
would wait TIMEOUT for a connection that cannot happen, so the run is refused before anything starts.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from daskweak.errors import ConfigError, Problem
from daskweak.settings import Settings

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
CLUSTER_NAME = "kubernetes.default.svc.cluster.local"  # the API's own service: every cluster's DNS knows it


def has_service_account() -> bool:
    return (SERVICE_ACCOUNT / "namespace").is_file()


def own_pod() -> tuple[str, str | None] | None:
    """(name, namespace or None when unknown) of the pod this process runs in; None outside a pod."""
    name = os.environ.get("POD_NAME") or (os.environ.get("HOSTNAME") if has_service_account() else None)
    if not name:
        return None
    namespace = os.environ.get("POD_NAMESPACE")
    if not namespace and has_service_account():
        namespace = (SERVICE_ACCOUNT / "namespace").read_text().strip() or None
    return name, namespace


def resolves(name: str) -> bool:
    try:
        socket.getaddrinfo(name, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True


def check_service_reachable(settings: Settings) -> None:
    """KUBE_SERVICE_TYPE=ClusterIP outside the cluster is refused, naming the types that work from there."""
    if settings.kube_service_type != "ClusterIP" or has_service_account() or resolves(CLUSTER_NAME):
        return
    raise ConfigError([Problem(
        "KUBE_SERVICE_TYPE", "ClusterIP",
        f"LoadBalancer or NodePort: this client runs outside the cluster (no service account at {SERVICE_ACCOUNT}, "
        f"and cluster service names such as {CLUSTER_NAME} do not resolve here), so it could not reach a "
        "ClusterIP scheduler service; ClusterIP is for a client in the cluster (the chart's CronJob, Airflow "
        "task pods)")])
