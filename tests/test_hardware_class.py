"""A kubernetes run's hardware class holds the types of the nodes its Dask pods can land on, read from the real
API of KUBECONFIG (../shared/k8s-local in CI): another instance type is another class, and credentials that may
not list Nodes, or no API at all, leave the nodes unknown without failing the run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dask.utils import parse_bytes

from daskweak import runinfo
from daskweak.backends.kubernetes.nodes import pods_can_land
from daskweak.settings import Settings
from tests.conftest import kubectl
from tests.test_chart import service_account_kubeconfig

IMAGE = "daskweak:test"


def nodes() -> list[dict]:
    return json.loads(kubectl("get", "nodes", "-o", "json"))["items"]


@contextmanager
def labelled(node: str, labels: dict[str, str]) -> Iterator[None]:
    """The node carries `labels` inside the block; its own values (or their absence) come back afterwards."""
    before = next(n for n in nodes() if n["metadata"]["name"] == node)["metadata"].get("labels") or {}
    kubectl("label", "node", node, "--overwrite", *(f"{key}={value}" for key, value in labels.items()))
    try:
        yield
    finally:
        kubectl("label", "node", node, "--overwrite",
                *(f"{key}={before[key]}" if key in before else f"{key}-" for key in labels))


@contextmanager
def tainted(node: str, taint: str) -> Iterator[None]:
    kubectl("taint", "node", node, taint)
    try:
        yield
    finally:
        kubectl("taint", "node", node, f"{taint.split('=')[0]}:{taint.rsplit(':', 1)[1]}-")


def hardware_with(kubeconfig: Path, namespace: str, cwd: Path) -> tuple[dict, str]:
    """`runinfo.hardware` and its class as a run with these credentials records them, in a process of its own (kr8s
    keeps one client per process: this one's is the admin's)."""
    code = ("import json; from daskweak import runinfo; from daskweak.settings import load_settings; "
            "found = runinfo.hardware(load_settings()); print(json.dumps([found, runinfo.hardware_class(found)]))")
    env = {key: value for key, value in os.environ.items() if key.lower() not in Settings.model_fields}
    env |= {"KUBECONFIG": str(kubeconfig), "BACKEND": "kubernetes", "KUBE_NAMESPACE": namespace,
            "CONTAINER_IMAGE": IMAGE}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    found, hardware_class = json.loads(done.stdout.splitlines()[-1])
    return found, hardware_class


def test_a_kubernetes_run_records_its_node_types_and_another_instance_type_is_another_class(kube, small):
    settings = small(backend="kubernetes", kube_namespace="default", container_image=IMAGE)
    found = runinfo.hardware(settings)
    assert found["namespace"] == "default" and found["image"] == IMAGE and "nodes_unknown" not in found
    node = next(node for node in nodes() if pods_can_land(node))
    capacity = node["status"]["capacity"]
    assert any(f"cpu={capacity['cpu']} " in entry for entry in found["nodes"]), found["nodes"]
    assert found["nodes"] == sorted(set(found["nodes"]))
    before = runinfo.hardware_class(found)
    assert runinfo.hardware_class(runinfo.hardware(settings)) == before  # a second night on the same nodes

    # The nightly run moves to another node pool with another instance type.
    name, instance_type = node["metadata"]["name"], f"dw-{uuid.uuid4().hex[:6]}.xlarge"
    arch = node["metadata"].get("labels", {}).get("kubernetes.io/arch")
    memory = f"{round(parse_bytes(capacity['memory']) / 2**30)}Gi"
    expected = " ".join(["pool=dw-pool", f"type={instance_type}", *([f"arch={arch}"] if arch else []),
                         f"cpu={capacity['cpu']}", f"memory={memory}"])
    pool = {"cloud.google.com/gke-nodepool": "dw-pool", "node.kubernetes.io/instance-type": instance_type}
    with labelled(name, pool):
        moved = runinfo.hardware(settings)
        assert expected in moved["nodes"], moved["nodes"]
        assert runinfo.hardware_class(moved) != before

        # A taint the Dask pods do not tolerate (a dedicated pool) keeps its nodes out of the record.
        with tainted(name, "daskweak-test/dedicated=gpu:NoSchedule"):
            assert expected not in runinfo.hardware(settings)["nodes"]
        assert expected in runinfo.hardware(settings)["nodes"]
    assert runinfo.hardware_class(runinfo.hardware(settings)) == before  # labels restored: the old class


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_without_the_right_to_list_nodes_a_run_records_why_and_goes_on(kube, kube_namespace, tmp_path):
    """A ServiceAccount without the chart's node reader (rbac.readNodes=false), and an API that does not answer:
    `nodes` is None with the reason, nothing raises, and both are one class (the reason is not hashed)."""
    kubectl("create", "serviceaccount", "no-node-reader", "-n", kube_namespace)
    config = service_account_kubeconfig(kube_namespace, "no-node-reader", tmp_path / "sa")
    assert kubectl("auth", "can-i", "list", "nodes", kubeconfig=config, check=False) == "no"
    forbidden, forbidden_class = hardware_with(config, kube_namespace, tmp_path)
    assert forbidden["nodes"] is None and forbidden["nodes_unknown"].startswith("403 Forbidden"), forbidden
    assert forbidden["namespace"] == kube_namespace and forbidden["image"] == IMAGE

    nowhere = json.loads(config.read_text())
    nowhere["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{_closed_port()}"
    (tmp_path / "nowhere").write_text(json.dumps(nowhere))
    unreachable, unreachable_class = hardware_with(tmp_path / "nowhere", kube_namespace, tmp_path)
    assert unreachable["nodes"] is None and "no Kubernetes API" in unreachable["nodes_unknown"], unreachable
    assert unreachable_class == forbidden_class

    admin, admin_class = hardware_with(Path(kube), kube_namespace, tmp_path)
    assert admin["nodes"] and admin_class != forbidden_class  # unknown nodes are never taken for known ones
