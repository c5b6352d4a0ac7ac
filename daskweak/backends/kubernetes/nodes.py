"""The node types a run's Dask pods can land on: the Kubernetes part of its hardware class (`runinfo.hardware`).

A night on another node pool or instance type must not be judged against the old baseline, and only the
cluster's Nodes say which hardware the pods get. One list request with the backend's credentials, bounded by a
timeout. Nodes are cluster-scoped, so reading them takes a ClusterRole (the Helm chart's `rbac.readNodes`);
when the API refuses or does not answer, the caller gets None and why: the hardware record never fails a run.
"""

from __future__ import annotations

from typing import Any

import httpx
import kr8s
from dask.utils import parse_bytes
from kr8s.objects import Node

from daskweak.backends.kubernetes.backend import KubernetesError, api

# Where managed Kubernetes offerings name a node's pool (GKE, EKS, Karpenter, AKS and AKS' older label).
POOL_LABELS = ("cloud.google.com/gke-nodepool", "eks.amazonaws.com/nodegroup", "karpenter.sh/nodepool",
               "kubernetes.azure.com/agentpool", "agentpool")
LIST_TIMEOUT = 10.0  # seconds for the list request: a slow API must not hold up the run's start


def node_types(client: Any | None = None, timeout: float = LIST_TIMEOUT) -> tuple[list[str] | None, str | None]:
    """The sorted distinct types of the nodes Dask pods can land on, and None; or None and why they are unknown.

    `client` is a kr8s API; by default the backend's (`backend.api`: the credentials the steps use)."""
    try:
        items = list(Node.list(api=client if client is not None else api(), raw=True, timeout=timeout))
    except kr8s.ServerError as exc:
        if exc.response is not None and exc.response.status_code == 403:
            return None, "403 Forbidden: this account may not list nodes (the Helm chart's rbac.readNodes grants it)"
        return None, f"the API refused to list nodes: {exc}"
    except kr8s.APITimeoutError:
        return None, f"the API did not list the nodes within {timeout:g}s"
    except (KubernetesError, httpx.HTTPError, OSError, ValueError) as exc:
        return None, f"no Kubernetes API: {exc}"
    return sorted({node_type(node) for node in items if pods_can_land(node)}), None


def node_type(node: dict[str, Any]) -> str:
    """The node's type from its labels and capacity, "pool=… type=… arch=… cpu=… memory=…Gi", absent parts left out.

    Memory is rounded to GiB: nodes of one instance type may differ by a few KiB the kernel keeps."""
    labels = node.get("metadata", {}).get("labels") or {}
    capacity = node.get("status", {}).get("capacity") or {}
    parts = {
        "pool": next((labels[key] for key in POOL_LABELS if labels.get(key)), None),
        "type": labels.get("node.kubernetes.io/instance-type"),
        "arch": labels.get("kubernetes.io/arch"),
        "cpu": capacity.get("cpu"),
        "memory": _gib(capacity["memory"]) if capacity.get("memory") else None,
    }
    return " ".join(f"{key}={value}" for key, value in parts.items() if value)


def pods_can_land(node: dict[str, Any]) -> bool:
    """No taint keeps Dask pods off (the manifests tolerate none), e.g. a control plane or a dedicated GPU pool.

    Kubernetes' own node.kubernetes.io/ taints (not ready, unreachable, cordoned, under pressure) come and go
    with a node's health, which is not its hardware: they do not count."""
    return not any(taint.get("effect") in ("NoSchedule", "NoExecute")
                   and not taint.get("key", "").startswith("node.kubernetes.io/")
                   for taint in node.get("spec", {}).get("taints") or [])


def _gib(quantity: str) -> str:
    """A Kubernetes memory quantity ("32879836Ki", "64Gi", "1e9") in whole GiB; as it is when unreadable."""
    try:
        return f"{round(parse_bytes(quantity) / 2**30)}Gi"
    except (ValueError, TypeError):
        return quantity
