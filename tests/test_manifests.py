"""The Kubernetes manifests, validated without a cluster: the CRD schemas shipped in the dask-kubernetes wheel
(jsonschema) and the Kubernetes OpenAPI schema for every pod spec (kubernetes-validate)."""

from __future__ import annotations

import json
import re
from importlib.resources import files

import jsonschema
import kubernetes_validate
import pytest
import yaml

from daskweak.backends.kubernetes.manifests import cluster_name, manifests
from daskweak.plan import make_plan
from daskweak.settings import load_settings

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
