"""The kubernetes backend on several nodes of a real API server (k8s-local with K8S_LOCAL_NODES=3): many worker
pods, where they ran, a pinned scheduler, and pods the API refuses at admission.

k8s-local's stand-in scheduler does not implement pod anti-affinity (KUBE_WORKER_PLACEMENT=spread): it puts a
pod on the fitting node with the fewest unfinished pods, counting the previous step's pods while they terminate,
so two worker pods of a step can share a node there. What the tests hold the record against is where the API
says the pods ran, and that every worker pod, as the API stored it, carries the required anti-affinity a real
scheduler enforces (no two worker pods of the step on one node). Pinned pods honour required node affinity.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from daskweak.backends.base import open_cluster
from daskweak.errors import ConfigError
from daskweak.plan import make_plan
from daskweak.runner import QuietProgress, run_sweep
from daskweak.store import ResultStore
from tests.conftest import create_secret, daskclusters, kubectl, wait_until

NODES = [f"k8s-local-node-{k}" for k in (1, 2, 3)]


@pytest.fixture
def three_nodes(kube) -> list[str]:
    names = kubectl("get", "nodes", "-o", "jsonpath={.items[*].metadata.name}").split()
    if not set(NODES) <= set(names):
        from tests.conftest import need

        need(f"k8s-local with 3 nodes (K8S_LOCAL_NODES=3); the cluster has {names}")
    # The stand-in scheduler counts every live pod of a node: pods an earlier test's namespace still holds while
    # it goes (deleted with --wait=false) would tip its choice. Start on an idle rig.
    assert wait_until(lambda: not live_pods(), timeout=180), live_pods()
    return NODES


def live_pods() -> list[str]:
    """Every pod of the rig not finished, as namespace/name@node."""
    every = json.loads(kubectl("get", "pods", "-A", "-o", "json"))["items"]
    return sorted(f"{p['metadata']['namespace']}/{p['metadata']['name']}@{p['spec'].get('nodeName')}"
                  for p in every if p.get("status", {}).get("phase") in ("Pending", "Running"))


class PodsSeen(QuietProgress):
    """Reads the step's pods from the API while the step measures, to hold the record against."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.seen: dict[int, dict[str, tuple[str, str]]] = {}
        self.unspread: dict[int, list[str]] = {}  # worker pods the API stored without the spread rule

    def observation_done(self, step, suite, observation) -> None:
        pods = json.loads(kubectl("get", "pods", "-n", self.namespace, "-l", "dask.org/cluster-name",
                                  "-o", "json"))["items"]
        self.seen[step.index] = {p["metadata"]["name"]: (p["metadata"]["labels"]["dask.org/component"],
                                                         p["spec"]["nodeName"])
                                 for p in pods if not p["metadata"].get("deletionTimestamp")}
        self.unspread[step.index] = [p["metadata"]["name"] for p in pods if p["metadata"]["labels"][
            "dask.org/component"] == "worker" and not keeps_apart_per_node(p)]


def keeps_apart_per_node(pod: dict[str, Any]) -> bool:
    """The pod's required anti-affinity forbids a node that runs another worker pod of its DaskCluster."""
    terms = pod["spec"].get("affinity", {}).get("podAntiAffinity", {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution", [])
    labels = pod["metadata"]["labels"]
    return any(term.get("topologyKey") == "kubernetes.io/hostname"
               and set(term["labelSelector"].get("matchLabels", {})) >= {"dask.org/cluster-name",
                                                                        "dask.org/component"}
               and term["labelSelector"]["matchLabels"].items() <= labels.items()
               and not term["labelSelector"].get("matchExpressions") for term in terms)


def check_step_record(details: dict[str, Any], seen: dict[str, tuple[str, str]], pods: int,
                      unspread: list[str]) -> None:
    """The record names every pod the API showed during the step, on the node the API said, with start times."""
    workers = details["worker_pods"]
    assert details["pods"] == len(workers) == pods
    recorded = {w["name"]: ("worker", w["node"]) for w in workers}
    recorded[details["scheduler_pod"]["name"]] = ("scheduler", details["scheduler_pod"]["node"])
    assert recorded == seen
    assert {node for _, node in seen.values()} <= set(NODES)
    assert unspread == []  # a real scheduler puts each worker pod on a node of its own
    starts = [w["start_s"] for w in workers] + [details["scheduler_pod"]["start_s"]]
    assert all(isinstance(s, float) and s >= 0 for s in starts) and details["pod_start_max_s"] == max(starts)
    # k8s-local's stand-in kubelet writes no Node.status.images: no size, and the record says why
    assert details["image_size_bytes"] is None and "status.images" in details["image_size_unknown"]


LAYOUTS = {
    # CORES_PER_NODE=1: 1 → 2 → 3 worker pods of one core
    "one-core-pods": ({"cores_per_node": 1}, [1, 2, 3], [1, 2, 3]),
    # CORES_PER_NODE=2: 1 pod of 1 core, 1 of 2, then 2 cores + the smaller last node (a DaskWorkerGroup of 1 core)
    "smaller-last-node": ({"cores_per_node": 2}, [1, 2, 3], [1, 1, 2]),
}


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_a_sweep_records_its_worker_pods_and_their_nodes(three_nodes, kube_settings, tls_settings, tls, layout):
    extra, workers, pods = LAYOUTS[layout]
    settings = (tls_settings if tls else kube_settings)(max_n_cores=3, step_by=1, **extra)
    if tls:
        create_secret(settings)
    seen = PodsSeen(settings.kube_namespace)
    result = run_sweep(settings, progress=seen)
    assert result.status == "ok", [s["error"] for s in result.summaries]
    with ResultStore(settings.database_url) as store:
        steps = store.steps(result.run_id)
    assert list(steps["workers_actual"]) == workers  # Dask workers: one process per core
    for index, details, count in zip(steps["step"], steps["details"], pods, strict=True):
        check_step_record(details, seen.seen[index], count, seen.unspread[index])
        assert details["scheduler"].startswith("tls://" if tls else "tcp://")
    if layout == "smaller-last-node":
        groups = sorted(w["group"].rsplit("-", 1)[-1] for w in steps["details"].iloc[-1]["worker_pods"])
        assert groups == ["c1", "default"]  # the 2-core pod of the DaskCluster, the 1-core pod of the extra group
    assert daskclusters(settings.kube_namespace) == []
    assert kubectl("get", "pods", "-n", settings.kube_namespace, "-o", "name") == ""


def test_the_scheduler_pod_runs_on_scheduler_host(three_nodes, kube_settings):
    """Pinned to node 2 of 3 by a required node affinity, which the rig's scheduler honours."""
    settings = kube_settings(max_n_cores=2, cores_per_node=1, scheduler_host="k8s-local-node-2")
    seen = PodsSeen(settings.kube_namespace)
    result = run_sweep(settings, progress=seen)
    assert result.status == "ok", [s["error"] for s in result.summaries]
    with ResultStore(settings.database_url) as store:
        steps = store.steps(result.run_id)
    for index, details, count in zip(steps["step"], steps["details"], [1, 2], strict=True):
        check_step_record(details, seen.seen[index], count, seen.unspread[index])
        assert details["scheduler_pod"]["node"] == "k8s-local-node-2"


def test_the_image_size_is_what_the_nodes_report(three_nodes, kube_settings):
    """A real kubelet lists the images it holds in Node.status.images; k8s-local's does not, so the test writes
    that list through the API as a kubelet would (a status patch), under the name a kubelet normalises
    `daskweak:test` to, and removes it afterwards."""
    settings = kube_settings(max_n_cores=1)
    images = {"status": {"images": [{"names": ["docker.io/library/other@sha256:" + "0" * 64], "sizeBytes": 1},
                                    {"names": ["docker.io/library/daskweak:test"], "sizeBytes": 734003200}]}}
    try:
        for node in NODES:
            kubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p", json.dumps(images))
        [step] = make_plan(settings)
        with open_cluster(settings, step, "image-size") as deployment:
            assert deployment.details["image_size_bytes"] == 734003200
            assert "image_size_unknown" not in deployment.details
    finally:
        for node in NODES:
            kubectl("patch", "node", node, "--subresource=status", "--type=merge", "-p",
                    json.dumps({"status": {"images": None}}))


def quota(namespace: str, hard: dict[str, str]) -> None:
    """A ResourceQuota, once the quota controller has counted it (before that, admission says "status unknown")."""
    kubectl("create", "-n", namespace, "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "ResourceQuota", "metadata": {"name": "dw-quota"}, "spec": {"hard": hard}}))
    assert wait_until(lambda: kubectl("get", "resourcequota", "dw-quota", "-n", namespace, "-o",
                                      "jsonpath={.status.hard}") != "", 60, 0.2)


def test_a_scheduler_pod_refused_by_a_quota_fails_the_step_at_once_with_the_apis_message(kube_settings):
    """A ResourceQuota of no pods: the ReplicaSet cannot create the scheduler pod. TIMEOUT is an hour: the step
    ends on the refusal (pytest's own time limit would stop a wait for TIMEOUT)."""
    settings = kube_settings(max_n_cores=1, timeout=3600)
    quota(settings.kube_namespace, {"pods": "0"})
    [summary] = run_sweep(settings).summaries
    assert summary["status"] == "failed"
    error = summary["error"]
    assert "the API refused the pods of DaskCluster" in error and "scheduler pod (ReplicaSet" in error, error
    assert "is forbidden: exceeded quota: dw-quota" in error and "limited: pods=0" in error, error
    assert "TIMEOUT" not in error
    assert daskclusters(settings.kube_namespace) == []


def test_a_worker_pod_refused_by_a_limit_range_fails_the_step_at_once_with_the_apis_message(kube_settings):
    """A LimitRange allows 1500m cpu per container: the 1-core scheduler and worker pods of the first step are
    admitted, the 2-core worker pod of the second is not. That step fails while it waits for its workers, with
    the LimitRanger's message."""
    settings = kube_settings(max_n_cores=2, cores_per_node=2, timeout=3600)
    kubectl("create", "-n", settings.kube_namespace, "-f", "-", stdin=json.dumps({
        "apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "dw-limits"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "1500m"}}]}}))
    first, summary = run_sweep(settings).summaries
    assert first["status"] == "ok" and summary["status"] == "failed"
    error = summary["error"]
    assert "worker pod (ReplicaSet" in error and "maximum cpu usage per Container is 1500m, but limit is 2" in error, \
        error
    assert "scheduler pod (ReplicaSet" not in error and "TIMEOUT" not in error
    assert daskclusters(settings.kube_namespace) == []


def test_clusterip_from_outside_the_cluster_is_refused_before_anything_starts(kube_settings):
    """This test process is outside the cluster: no service account, cluster names do not resolve here."""
    from daskweak import orchestration

    settings = kube_settings(kube_service_type="ClusterIP", timeout=3600)
    with pytest.raises(ConfigError) as refused:
        run_sweep(settings)
    message = str(refused.value)
    assert "KUBE_SERVICE_TYPE='ClusterIP'" in message and "LoadBalancer or NodePort" in message
    assert "outside the cluster" in message
    with pytest.raises(ConfigError):
        orchestration.validate(None, {k: v for k, v in settings.model_dump(mode="json").items() if v is not None})
    assert daskclusters(settings.kube_namespace) == []
    with ResultStore(settings.database_url) as store:
        assert store.runs().empty  # nothing recorded either


@pytest.mark.parametrize(("reference", "listed", "same"), [
    ("daskweak:test", "docker.io/library/daskweak:test", True),
    ("daskweak", "docker.io/library/daskweak:latest", True),
    ("team/daskweak:1", "docker.io/team/daskweak:1", True),
    ("registry.example.org:5000/daskweak:1", "registry.example.org:5000/daskweak:1", True),
    ("localhost/daskweak:1", "localhost/daskweak:1", True),
    ("ghcr.io/team/daskweak:1", "docker.io/team/daskweak:1", False),
    ("daskweak:1", "docker.io/library/daskweak:2", False),
])
def test_a_pods_image_is_found_under_the_name_a_kubelet_lists_it(reference, listed, same):
    from daskweak.backends.kubernetes.placement import same_image

    assert same_image(reference, listed) is same


def test_clusterip_is_accepted_where_the_clusters_names_resolve(small, monkeypatch):
    """A client whose resolver knows the cluster's names (in a pod, or over a VPN into the cluster) may use
    ClusterIP. This host's resolver does not know kubernetes.default.svc.cluster.local, so the probe asks for a
    name it does know instead: a stand-in for the cluster's DNS, not a mock of the check."""
    from daskweak.backends.kubernetes import incluster

    settings = small(backend="kubernetes", kube_namespace="ns", container_image="i", kube_service_type="ClusterIP")
    with pytest.raises(ConfigError):
        incluster.check_service_reachable(settings)
    monkeypatch.setattr(incluster, "CLUSTER_NAME", "localhost")
    incluster.check_service_reachable(settings)
