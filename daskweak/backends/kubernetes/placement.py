"""Where a step's pods ran, how long each took to start, and how big their image is: part of the step's record.

A Kubernetes step's timings depend on where its pods landed (one node or several) and on how fast they
started (an image pull costs seconds to minutes), so the step record keeps, per pod: its name, its node and
its start time, from the pod's creationTimestamp to its container's `running.startedAt`, both as the API gives
them (whole seconds). Pods are counted apart from Dask workers (WORKER_MODE=processes runs several workers per
pod). The image size is what the node's kubelet reports in Node.status.images[].sizeBytes; reading it takes
`get` on nodes (the chart's rbac.readNodes); it is None, with why, when the API does not say.
"""

from __future__ import annotations

from typing import Any

import kr8s
from kr8s.objects import Node, Pod

from daskweak.backends.kubernetes.api import API_ERRORS, api_seconds


def step_pods(api: Any, namespace: str, cluster: str, image: str | None) -> dict[str, Any]:
    """The scheduler pod and worker pods of `cluster` with their nodes and start times, and the image's size."""
    try:
        pods = [pod.raw for pod in Pod.list(namespace=namespace, api=api,
                                            label_selector={"dask.org/cluster-name": cluster})]
    except API_ERRORS as exc:
        return {"pods_unknown": f"the API did not list the pods: {exc}"}
    records: dict[str, list[dict[str, Any]]] = {"scheduler": [], "worker": []}
    for pod in sorted(pods, key=lambda p: p["metadata"]["name"]):
        component = pod["metadata"].get("labels", {}).get("dask.org/component")
        if component in records and not pod["metadata"].get("deletionTimestamp"):
            records[component].append(pod_record(pod))
    every = records["scheduler"] + records["worker"]
    starts = [r["start_s"] for r in every if r["start_s"] is not None]
    size, why = image_size(api, image, sorted({r["node"] for r in every if r["node"]}))
    return {
        "scheduler_pod": records["scheduler"][0] if records["scheduler"] else None,
        "worker_pods": records["worker"],
        "pods": len(records["worker"]),
        "pod_start_max_s": max(starts) if starts else None,
        "image": image,
        "image_size_bytes": size,
        **({"image_size_unknown": why} if why else {}),
    }


def pod_record(pod: dict[str, Any]) -> dict[str, Any]:
    """Name, node, worker group and seconds from creation to the first container running (None if it is not)."""
    containers = pod.get("status", {}).get("containerStatuses") or [{}]
    started = (containers[0].get("state", {}).get("running") or {}).get("startedAt")
    created = pod["metadata"].get("creationTimestamp")
    record = {"name": pod["metadata"]["name"], "node": pod.get("spec", {}).get("nodeName"),
              "start_s": api_seconds(started) - api_seconds(created) if started and created else None}
    group = pod["metadata"].get("labels", {}).get("dask.org/workergroup-name")
    return record | ({"group": group} if group else {})


def image_size(api: Any, image: str | None, nodes: list[str]) -> tuple[int | None, str | None]:
    """sizeBytes of `image` as the first of `nodes` that lists it reports; or None and why not."""
    if not image or not nodes:
        return None, "no image or no node to ask"
    silent = []
    for name in nodes:
        try:
            node = Node.get(name, api=api).raw
        except API_ERRORS as exc:
            forbidden = isinstance(exc, kr8s.ServerError) and exc.response is not None \
                and exc.response.status_code == 403
            return None, ("403 Forbidden: this account may not read nodes (the chart's rbac.readNodes grants it)"
                          if forbidden else f"the API did not return node {name}: {exc}")
        listed = node.get("status", {}).get("images") or []
        if not listed:
            silent.append(name)
        for entry in listed:
            if any(same_image(image, listed_name) for listed_name in entry.get("names") or []):
                return entry.get("sizeBytes"), None
    if silent:
        return None, (f"node(s) {', '.join(silent)} report no status.images (a kubelet writes them; "
                      "k8s-local's stand-in kubelet does not)")
    return None, f"no node of {', '.join(nodes)} lists {image} in status.images"


def same_image(reference: str, listed: str) -> bool:
    """Whether a pod's image reference names a node's listed image; kubelets list references normalised
    (`daskweak:1` as `docker.io/library/daskweak:1`) and by digest."""
    def normal(ref: str) -> str:
        first, _, rest = ref.partition("/")
        if not rest or not ("." in first or ":" in first or first == "localhost"):
            ref = f"docker.io/{ref}" if rest else f"docker.io/library/{ref}"
        return ref if "@" in ref or ":" in ref.rsplit("/", 1)[-1] else f"{ref}:latest"

    return normal(reference) == normal(listed)

