"""Scheduler and workers run from the worker image (docker/Dockerfile) on k8s-local's podman runtime, 3 nodes.

The module switches the shared rig to K8S_LOCAL_RUNTIME=podman and back (tests/podman_rig.py), holding the rig's
lock exclusively the whole time: run it without the shared-lock wrapper the process-runtime tests use. On this
runtime each pod is a `podman run` of its image with the pod's user, fsGroup and Secret modes, so what the
process runtime cannot show is shown here: the image's user, PATH and packages, and the key's permissions.
"""

from __future__ import annotations

import json
import os

import pytest

from daskweak.backends.base import open_cluster
from daskweak.plan import make_plan
from daskweak.runner import run_sweep
from daskweak.store import ResultStore
from tests.conftest import create_secret, daskclusters, kubectl, need
from tests.podman_rig import build_image, k8s_local, podman, podman_rig

pytestmark = pytest.mark.timeout(1800)  # building the image on a fresh machine; the rig's lock may be busy
KEY = "/etc/dask/tls/tls.key"


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0:
        need("podman and k8s-local need root")
    return build_image()  # before the switch: the rig's exclusive lock is held no longer than needed


@pytest.fixture(scope="module")
def podman_runtime(kube, image):
    if not (k8s_local() / "up").exists():
        need(f"k8s-local is not at {k8s_local()} (set K8S_LOCAL): the podman runtime is switched with its `up`")
    with podman_rig():
        yield image


@pytest.fixture
def settings(podman_runtime, small, kube_namespace, tmp_path):
    """tests/test_kubernetes.py's TLS settings, with the image and one core per worker pod (1 → 2 pods)."""
    settings = small(backend="kubernetes", kube_namespace=kube_namespace, container_image=podman_runtime,
                     kube_service_type="LoadBalancer", max_n_cores=2, cores_per_node=1, suites="tasks",
                     obs_per_iter=1, timeout=180, use_ssl=True, cert_dir=str(tmp_path / "certs"),
                     secret_cert_name="dw-tls")
    create_secret(settings)
    return settings


def test_a_tls_sweep_runs_scheduler_and_workers_from_the_image(podman_runtime, settings):
    result = run_sweep(settings)
    assert result.status == "ok", [s["error"] for s in result.summaries]
    store = ResultStore(settings.database_url)
    steps = store.steps(result.run_id)
    assert list(steps["workers_actual"]) == [1, 2]  # 1 then 2 worker pods of 1 core (CORES_PER_NODE=1)
    assert all(details["scheduler"].startswith("tls://") for details in steps["details"])
    assert len(store.observations(result.run_id)) > 0
    store.close()
    assert daskclusters(settings.kube_namespace) == []


def test_the_pods_run_the_image_as_its_non_root_user_who_alone_reads_the_key(podman_runtime, settings):
    step = make_plan(settings)[-1]
    assert step.workers == 2
    image_id = json.loads(podman("image", "inspect", podman_runtime).stdout)[0]["Id"]

    def identity() -> dict:
        """In a scheduler or worker process: who it runs as, and what it may do with the TLS key. (Nested, so
        cloudpickle sends it by value: the pods' image has no tests package.)"""
        import os
        import sys

        st = os.stat("/etc/dask/tls/tls.key")
        with open("/etc/dask/tls/tls.key", "rb") as f:
            key = f.read()
        return {"uid": os.getuid(), "euid": os.geteuid(), "gid": os.getgid(), "groups": sorted(os.getgroups()),
                "key_mode": st.st_mode & 0o777, "key_owner": (st.st_uid, st.st_gid),
                "read_key": b"PRIVATE KEY" in key, "python": sys.executable}

    with open_cluster(settings, step, "podman-check") as deployment:
        seen = [deployment.client.run_on_scheduler(identity), *deployment.client.run(identity).values()]
        pods = json.loads(kubectl("get", "pods", "-n", settings.kube_namespace, "-o", "json"))["items"]
        assert len(pods) == 3  # the scheduler and 2 workers, each a container of the image
        for pod in pods:
            [status] = pod["status"]["containerStatuses"]
            assert status["imageID"] == f"sha256:{image_id}" and "running" in status["state"]
            assert pod["spec"]["nodeName"] in {f"k8s-local-node-{n}" for n in (1, 2, 3)}
            # another user of the container (not the pod's user, not in fsGroup) cannot read the key
            other = podman("exec", "--user", "4242:4242", f"k8s-local-{pod['metadata']['uid']}", "cat", KEY,
                           check=False)
            assert other.returncode != 0 and "Permission denied" in other.stderr, other
    for process in seen:
        assert process["uid"] == process["euid"] == 10001 and process["uid"] != 0
        assert process["gid"] == 10001 and 10001 in process["groups"]
        assert process["key_mode"] == 0o440 and process["key_owner"] == (0, 10001) and process["read_key"]
        assert process["python"].startswith("/opt/daskweak/")  # the image's environment, not a host venv
    assert daskclusters(settings.kube_namespace) == []
