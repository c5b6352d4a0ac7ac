"""Who owns a step's DaskCluster: the client's pod, so no killed client leaves a cluster behind for ever.

A client in a pod (the chart's CronJob, an Airflow task pod) that is SIGKILLed or OOM-killed cannot delete its
DaskCluster. Owned by the client's Pod (ownerReferences), the DaskCluster goes with the pod: Kubernetes'
garbage collector deletes it when the pod is deleted (a Job's history limit, the KubernetesExecutor). A pod
that ended but is kept (a failed Job's pod stays for its logs) still exists, so the next step started in the
namespace deletes the DaskClusters whose owner pod has ended. Owner references cannot cross namespaces (the
collector would take a foreign owner for a missing one and delete the cluster at once), so a client in another
namespace than KUBE_NAMESPACE owns nothing; `delete_run` at the end of its run still applies. Reading the pod
takes `get` on pods, which the chart's Role grants.
"""

from __future__ import annotations

import logging
from contextlib import suppress
from typing import Any

import kr8s
from kr8s.objects import Pod

from daskweak.backends.kubernetes import incluster
from daskweak.backends.kubernetes.api import API_ERRORS

log = logging.getLogger(__name__)

ENDED = ("Succeeded", "Failed")


def client_owner(api: Any, namespace: str) -> dict[str, Any] | None:
    """The owner reference to this client's own pod when it runs in a pod of `namespace`; else None."""
    found = incluster.own_pod()
    if found is None:
        return None
    name, pod_namespace = found
    if pod_namespace not in (None, namespace):
        log.info("the client's pod %s/%s is not in KUBE_NAMESPACE=%s: its DaskClusters are not owned by it",
                 pod_namespace, name, namespace)
        return None
    try:
        pod = Pod.get(name, namespace=namespace, api=api).raw
    except kr8s.NotFoundError:
        log.info("no pod %s in %s (POD_NAME/HOSTNAME): the DaskClusters are not owned by the client", name, namespace)
        return None
    except API_ERRORS as exc:
        log.warning("could not read the client's pod %s/%s, its DaskClusters are not owned by it: %s",
                    namespace, name, exc)
        return None
    return {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": pod["metadata"]["uid"]}


def delete_orphans(api: Any, namespace: str, clusters: Any) -> list[str]:
    """Delete the daskweak DaskClusters of `namespace` whose owner pod has ended or is gone; returns their names.

    `clusters` is the DaskCluster class (kr8s' `new_class`). Deletion is not awaited: the operator and the
    garbage collector remove the pods while this step starts."""
    deleted = []
    try:
        found = list(clusters.list(namespace=namespace, api=api,
                                   label_selector={"app.kubernetes.io/part-of": "daskweak"}))
    except API_ERRORS as exc:
        log.warning("could not look for DaskClusters left by killed clients: %s", exc)
        return []
    for cluster in found:
        meta = cluster.raw["metadata"]
        owners = [ref for ref in meta.get("ownerReferences") or [] if ref.get("kind") == "Pod"]
        if owners and not meta.get("deletionTimestamp") and all(_ended(api, namespace, ref) for ref in owners):
            with suppress(kr8s.NotFoundError):
                cluster.delete(propagation_policy="Foreground")
            deleted.append(cluster.name)
            log.warning("deleted DaskCluster %s: its client pod %s has ended", cluster.name, owners[0]["name"])
    return deleted


def _ended(api: Any, namespace: str, ref: dict[str, Any]) -> bool:
    try:
        pod = Pod.get(ref["name"], namespace=namespace, api=api).raw
    except kr8s.NotFoundError:
        return True  # the garbage collector deletes it too; deleting it here costs nothing
    except API_ERRORS:
        return False  # unknown: leave it
    return pod["metadata"].get("uid") != ref.get("uid") or pod.get("status", {}).get("phase") in ENDED
