"""Pods the API refused at admission (a ResourceQuota, a LimitRange, Pod Security): the API's message, at once.

The operator turns a DaskCluster into Deployments, whose ReplicaSets create the pods. A pod that admission
refuses never exists, so there is no pod state to report; the ReplicaSet controller records a `FailedCreate`
event with the API's own message ("pods … is forbidden: exceeded quota: …") and tries again, forever. Reading
those events lets a step fail as soon as the first refusal is recorded, saying why, instead of reporting "no
scheduler pod was created" at TIMEOUT. Reading events takes `list` on events in the namespace (the chart's
Role grants it); an account without it gets no answer here, and the step waits for TIMEOUT as before.
"""

from __future__ import annotations

from typing import Any

from kr8s.objects import Event

from daskweak.backends.kubernetes.api import API_ERRORS, api_seconds
from daskweak.errors import DaskweakError


class PodsRefused(DaskweakError):
    """The API refused to create the step's scheduler or worker pods; the message is the API's own."""


def refusals(api: Any, namespace: str, cluster: str, since: str | None) -> list[str]:
    """The refusals of `cluster`'s pods recorded at or after `since` (the DaskCluster's creationTimestamp: an
    earlier attempt of the same step had the same names), one line per ReplicaSet, newest message."""
    try:
        events = list(Event.list(namespace=namespace, api=api, field_selector={
            "involvedObject.kind": "ReplicaSet", "reason": "FailedCreate"}))
    except API_ERRORS:
        return []  # no right to read events (or no answer now): no early verdict, TIMEOUT still applies
    latest: dict[str, tuple[float, str]] = {}
    start = api_seconds(since)
    for event in events:
        raw = event.raw
        owner = raw.get("involvedObject", {}).get("name", "")
        at = api_seconds(raw.get("lastTimestamp") or raw.get("eventTime") or raw["metadata"].get("creationTimestamp"))
        if not owner.startswith(f"{cluster}-") or at < start:
            continue
        if owner not in latest or at >= latest[owner][0]:
            latest[owner] = (at, raw.get("message", "").strip())
    return [f"{_component(cluster, owner)} (ReplicaSet {owner}): {message}"
            for owner, (_, message) in sorted(latest.items())]


def raise_if_refused(api: Any, namespace: str, cluster: str, since: str | None) -> None:
    found = refusals(api, namespace, cluster, since)
    if found:
        raise PodsRefused(f"the API refused the pods of DaskCluster {cluster} in namespace {namespace!r}: "
                          + "; ".join(found))


def _component(cluster: str, replicaset: str) -> str:
    return "scheduler pod" if replicaset.startswith(f"{cluster}-scheduler-") else "worker pod"

