"""The Kubernetes manifests, validated without a cluster: the CRD schemas shipped in the dask-kubernetes wheel
(jsonschema) and the Kubernetes OpenAPI schema for every pod spec (kubernetes-validate)."""

from __future__ import annotations

import json
import re
import stat
from importlib.resources import files
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from daskweak.backends.kubernetes.manifests import TLS_DIR, cluster_name, manifests
from daskweak.backends.kubernetes.tls_secret import tls_secret
from daskweak.plan import make_plan
from daskweak.settings import load_settings
from tests.conftest import kubectl, wait_until

CRDS = files("dask_kubernetes.operator") / "customresources"


def crd_schema(kind: str) -> dict:
    """The CRD's openAPIV3Schema with the wheel's `python://` references resolved.

    References into the Kubernetes schema (PodSpec, ServiceSpec) become plain objects here: those parts
    are checked against the real Kubernetes schema by kubernetes-validate instead.
    """
    definitions = yaml.safe_load((CRDS / "templates.yaml").read_text())["definitions"]
    crd = yaml.safe_load((CRDS / f"{kind.lower()}.yaml").read_text())
    schema = {**crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "definitions": definitions}
    text = json.dumps(schema)
    text = re.sub(r'"python://dask_kubernetes/[^"#]*#', '"#', text)
    text = re.sub(r'\{"\$ref": "python://k8s_crd_resolver/[^"]*"\}', '{"type": "object"}', text)
    return json.loads(text)


def settings_for(**overrides):
    return load_settings(**({"backend": "kubernetes", "kube_namespace": "bench", "container_image": "daskweak:1",
                             "max_n_cores": 5, "step_by": 5, "cores_per_node": 2} | overrides))


def validate_all(resources: list[dict]) -> None:
    for resource in resources:
        jsonschema.validate(resource, crd_schema(resource["kind"]))
        worker = resource["spec"]["worker"]["spec"]
        pods = [worker] + ([resource["spec"]["scheduler"]["spec"]] if resource["kind"] == "DaskCluster" else [])
        for spec in pods:
            pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "probe"}, "spec": spec}
            kubernetes_validate.validate(pod, "1.37.0", strict=True)


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_manifests_match_the_crd_and_kubernetes_schemas(tls):
    extra = {"use_ssl": True, "cert_dir": "/tmp/certs", "secret_cert_name": "dask-tls"} if tls else {}
    settings = settings_for(mem_per_node="8Gi", scheduler_host="node-a", **extra)
    step = make_plan(settings)[-1]  # 5 cores on nodes of 2: 2 + 2 + 1
    resources = manifests(settings, step, "manual__2026-11-26T08:00:00+00:00")
    validate_all(resources)
    cluster, group = resources
    assert cluster["spec"]["worker"]["replicas"] == 2 and group["spec"]["worker"]["replicas"] == 1
    assert group["spec"]["cluster"] == cluster["metadata"]["name"]
    worker = cluster["spec"]["worker"]["spec"]["containers"][0]
    command = worker["args"][-1]
    assert command.startswith("ulimit -n") and "exec dask worker" in command
    assert worker["resources"]["limits"] == {"cpu": "2", "memory": "8192Mi"}  # a full node's pod
    small = group["spec"]["worker"]["spec"]["containers"][0]["resources"]["limits"]
    assert small == {"cpu": "1", "memory": "4096Mi"}  # the last node's pod: 1 of 2 cores, half the memory
    scheduler = cluster["spec"]["scheduler"]["spec"]
    assert "exec dask scheduler" in scheduler["containers"][0]["args"][-1]
    terms = scheduler["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchExpressions"][0]["values"] == ["node-a"]
    assert scheduler["containers"][0]["resources"]["limits"] == {"cpu": "1", "memory": "2048Mi"}
    if tls:
        assert "--tls-ca-file" in command and scheduler["volumes"][0]["secret"]["secretName"] == "dask-tls"
        assert {"name": "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION", "value": "True"} in worker["env"]


def test_threads_mode_gives_each_pod_one_worker_with_a_thread_per_core():
    settings = settings_for(worker_mode="threads")
    [cluster, _] = manifests(settings, make_plan(settings)[-1], "r")
    args = cluster["spec"]["worker"]["spec"]["containers"][0]["args"][-1]
    assert "--nthreads 2 --nworkers 1" in args


def test_cluster_names_are_unique_dns_labels():
    settings = settings_for(kubecluster_name="a" * 63)
    steps = make_plan(settings)
    names = {cluster_name(settings, run, step) for run in ("run-1", "run-2") for step in steps}
    assert len(names) == 2 * len(steps)
    assert all(len(n) <= 63 and re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", n) for n in names)


def test_an_invalid_manifest_is_caught_by_the_schemas():
    settings = settings_for()
    [cluster, _] = manifests(settings, make_plan(settings)[-1], "r")
    cluster["spec"]["worker"]["replicas"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(cluster, crd_schema("DaskCluster"))
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"containers": [{"name": "w", "image": "i", "ports": [{"containerPort": "http"}]}]}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(pod, "1.37.0", strict=True)


def pod_specs(resources: list[dict]) -> list[dict]:
    """Every pod spec of the manifests: workers of each resource, the DaskCluster's scheduler."""
    return [spec for resource in resources for spec in
            [resource["spec"]["worker"]["spec"]]
            + ([resource["spec"]["scheduler"]["spec"]] if resource["kind"] == "DaskCluster" else [])]


def test_the_tls_secret_is_mounted_readable_by_owner_and_pod_group_only():
    """tls.key must not be world-readable in the pods (a Secret volume's default mode is 0644): 0440, owner root
    and group fsGroup, which the image's non-root user gets as a supplementary group."""
    settings = settings_for(use_ssl=True, cert_dir="/tmp/certs", secret_cert_name="dask-tls")
    resources = manifests(settings, make_plan(settings)[-1], "r")
    specs = pod_specs(resources)
    assert len(specs) == 3  # scheduler, full workers, the smaller last worker
    for spec in specs:
        [volume] = spec["volumes"]
        assert volume["secret"] == {"secretName": "dask-tls", "defaultMode": 0o440}
        assert '"defaultMode": 288' in json.dumps(volume)  # what the API receives: 0o440 in decimal
        assert "items" not in volume["secret"] or all("mode" not in item for item in volume["secret"]["items"])
        assert spec["securityContext"] == {"fsGroup": 10001}  # docker/Dockerfile's user 10001, group 10001
        [mount] = spec["containers"][0]["volumeMounts"]
        assert mount == {"name": volume["name"], "mountPath": TLS_DIR, "readOnly": True}
    plain = settings_for()
    for spec in pod_specs(manifests(plain, make_plan(plain)[-1], "r")):
        assert spec["volumes"] == [] and "securityContext" not in spec


def pod_processes(pod_ip: str) -> list:
    """The local processes of a k8s-local pod (process runtime): those listening on the pod's IP. (Its
    K8S_LOCAL_POD_UID variable is no guide: Dask's setproctitle overwrites /proc/PID/environ.)"""
    import psutil

    pids = {conn.pid for conn in psutil.net_connections(kind="tcp")
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.ip == pod_ip and conn.pid}
    return [psutil.Process(pid) for pid in sorted(pids)]


def test_a_real_pod_sees_the_tls_key_without_world_read(kube_namespace, tmp_path):
    """A TLS DaskCluster on the real API server (k8s-local): the operator's scheduler and worker pods get the
    Secret volume as the manifest says, and the files as a process in the pod sees them (its mount namespace,
    through /proc/PID/root) are mode 0440. k8s-local's process runtime applies defaultMode but runs pods as root and
    sets no fsGroup group; its podman runtime (not switched here: the rig is shared) would set that too."""
    namespace = kube_namespace
    settings = load_settings(backend="kubernetes", kube_namespace=namespace, container_image="daskweak:1",
                             max_n_cores=1, step_by=1, cores_per_node=1, use_ssl=True,
                             cert_dir=str(tmp_path / "certs"), secret_cert_name="dask-tls",
                             res_dir=str(tmp_path / "results"))
    kubectl("apply", "-f", "-", stdin=json.dumps(tls_secret(settings)))  # the admin side: `daskweak k8s-secret`
    [cluster] = manifests(settings, make_plan(settings)[-1], "mode-check", "LoadBalancer")
    name = cluster["metadata"]["name"]
    kubectl("apply", "-f", "-", stdin=json.dumps(cluster))
    try:
        def running_pods() -> dict[str, str]:
            pods = json.loads(kubectl("get", "pods", "-n", namespace, "-l", f"dask.org/cluster-name={name}",
                                      "-o", "json"))["items"]
            return {pod["metadata"]["labels"]["dask.org/component"]: pod["status"]["podIP"] for pod in pods
                    if pod["status"].get("phase") == "Running" and pod["status"].get("podIP")}

        assert wait_until(lambda: set(running_pods()) == {"scheduler", "worker"}, timeout=120), running_pods()
        for component, pod_ip in running_pods().items():
            def mounted(pod_ip: str = pod_ip) -> Path | None:
                for proc in pod_processes(pod_ip):
                    directory = Path(f"/proc/{proc.pid}/root{TLS_DIR}")
                    if (directory / "tls.key").exists():
                        return directory
                return None

            assert wait_until(lambda: mounted() is not None, timeout=60), f"{component}: no process with {TLS_DIR}"
            directory = mounted()
            assert directory is not None
            modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in directory.iterdir()}
            assert modes == {"ca.crt": 0o440, "tls.crt": 0o440, "tls.key": 0o440}, (component, modes)
    finally:
        kubectl("delete", "daskcluster", name, "-n", namespace, "--ignore-not-found", "--timeout=120s")
