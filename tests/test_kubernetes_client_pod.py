"""A client that runs in a pod (the chart's CronJob) and is SIGKILLed leaves no DaskCluster for ever: the
DaskCluster is owned by the client's Pod. Real pods on k8s-local (process runtime: the client pod's command is
`python -m daskweak run` from this project's environment, a process of this host) and the real garbage collector
of kube-controller-manager. An OOM kill is a SIGKILL too; the process runtime sets no memory limit, so the test
sends the signal itself.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import uuid
from pathlib import Path

import psutil
import pytest

from daskweak.runner import run_sweep
from tests.conftest import daskclusters, kubectl, wait_until


def client_pod(namespace: str, kube: str, res_dir: str) -> dict:
    """A pod that runs a long sweep; POD_NAME/POD_NAMESPACE from the downward API, as the chart's CronJob has."""
    env = {"BACKEND": "kubernetes", "KUBE_NAMESPACE": namespace, "CONTAINER_IMAGE": "daskweak:test",
           "KUBE_SERVICE_TYPE": "LoadBalancer", "MAX_N_CORES": "1", "SUITES": "tasks", "OBS_PER_ITER": "500",
           "PROBLEM_SIZE_TASKS": "20", "TIMEOUT": "90", "RES_DIR": res_dir, "KUBECONFIG": kube,
           # a process pod's RES_DIR is on this host's disk, which outlives the pod: SQLite on purpose
           "RESULTS_SQLITE_PERSISTENT": "True"}
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"client-{uuid.uuid4().hex[:6]}", "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "client", "image": "daskweak:test", "command": [sys.executable, "-m", "daskweak", "run"],
            "workingDir": res_dir,  # no developer's .env is read
            "env": [{"name": key, "value": value} for key, value in env.items()] + [
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}}],
        }]},
    }


def pod_log(namespace: str, name: str) -> str:
    """k8s-local keeps a pod's output in its state directory (no `kubectl logs` there)."""
    path = Path(os.environ.get("K8S_LOCAL_STATE", "/tmp/k8s-local")) / "logs" / "pods" / f"{namespace}_{name}.log"
    return path.read_text(errors="replace")[-3000:] if path.exists() else f"(no log at {path})"


def get(kind: str, namespace: str, selector: str | None = None) -> list[dict]:
    args = ["get", kind, "-n", namespace, "-o", "json", *(["-l", selector] if selector else [])]
    return json.loads(kubectl(*args))["items"]


def owned_cluster(namespace: str, pod: dict) -> dict | None:
    """The client's DaskCluster once it is owned by the client's pod and its worker pod runs."""
    for cluster in get("daskclusters", namespace):
        owners = cluster["metadata"].get("ownerReferences") or []
        workers = get("pods", namespace, f"dask.org/cluster-name={cluster['metadata']['name']},"
                                         "dask.org/component=worker")
        if owners == [{"apiVersion": "v1", "kind": "Pod", "name": pod["metadata"]["name"],
                       "uid": pod["metadata"]["uid"]}] and any(
                p.get("status", {}).get("phase") == "Running" for p in workers):
            return cluster
    return None


def client_process(res_dir: str) -> psutil.Process | None:
    """The client pod's python, by its environment (RES_DIR is this test's own)."""
    for proc in psutil.process_iter():
        try:
            if "daskweak" in proc.cmdline() and proc.environ().get("RES_DIR") == res_dir:
                return proc
        except psutil.Error:
            continue
    return None


@pytest.mark.parametrize("afterwards", ["pod-deleted", "pod-kept"])
def test_a_sigkilled_client_pod_leaves_no_daskcluster(kube, kube_namespace, kube_settings, tmp_path, afterwards):
    """pod-deleted: the Job's history deletes the pod, the garbage collector the DaskCluster and its pods.
    pod-kept: the failed pod stays (a Job keeps it for its logs); the next run in the namespace deletes it."""
    res_dir = str(tmp_path / "client-results")
    manifest = client_pod(kube_namespace, kube, res_dir)
    name = manifest["metadata"]["name"]
    kubectl("create", "-f", "-", stdin=json.dumps(manifest))
    pod = json.loads(kubectl("get", "pod", name, "-n", kube_namespace, "-o", "json"))
    found: dict[str, dict | None] = {}

    def phase() -> str:
        return json.loads(kubectl("get", "pod", name, "-n", kube_namespace, "-o", "json"))["status"].get("phase")

    def owned() -> bool:
        found["cluster"] = owned_cluster(kube_namespace, pod)
        return found["cluster"] is not None or phase() == "Failed"

    assert wait_until(owned, 180, 0.5) and found["cluster"], (
        kubectl("get", "pods,daskclusters", "-n", kube_namespace) + pod_log(kube_namespace, name))
    cluster = found["cluster"]["metadata"]["name"]
    process = client_process(res_dir)
    assert process is not None
    process.send_signal(signal.SIGKILL)  # this test's own client pod's process

    assert wait_until(lambda: phase() == "Failed", 60, 0.5), phase()

    def gone() -> bool:
        return not daskclusters(kube_namespace) and not get("pods", kube_namespace, f"dask.org/cluster-name={cluster}")

    if afterwards == "pod-deleted":
        kubectl("delete", "pod", name, "-n", kube_namespace, "--wait=true")
    else:
        assert cluster in " ".join(daskclusters(kube_namespace))  # its owner exists: nobody deletes it …
        result = run_sweep(kube_settings(max_n_cores=1))  # … until the next run starts a step here
        assert result.status == "ok", [s["error"] for s in result.summaries]
    assert wait_until(gone, 120, 0.5), kubectl("get", "pods,daskclusters", "-n", kube_namespace)
    if afterwards == "pod-kept":
        kubectl("delete", "pod", name, "-n", kube_namespace)
