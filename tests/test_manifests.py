"""The Kubernetes manifests, validated without a cluster: the CRD schemas shipped in the dask-kubernetes wheel
(jsonschema) and the Kubernetes OpenAPI schema for every pod spec (kubernetes-validate)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
from importlib.resources import files
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from daskweak.backends.kubernetes.manifests import TLS_DIR, cluster_name, manifests, worker_spread
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
        assert spec["securityContext"]["fsGroup"] == 10001  # docker/Dockerfile's user 10001, group 10001
        [mount] = spec["containers"][0]["volumeMounts"]
        assert mount == {"name": volume["name"], "mountPath": TLS_DIR, "readOnly": True}
    plain = settings_for()
    for spec in pod_specs(manifests(plain, make_plan(plain)[-1], "r")):
        assert spec["volumes"] == [] and spec["securityContext"]["fsGroup"] == 10001  # fsGroup always


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


# --- placement and the site's pod settings ---------------------------------------------------------------


def operator_pod_templates(resources: list[dict]) -> dict[str, list[dict]]:
    """The pod templates the installed dask-kubernetes operator makes of the manifests (its own builder functions:
    the scheduler Deployment, one Deployment per worker), labels as its handlers merge them."""
    from dask_kubernetes.operator.controller.controller import (
        build_scheduler_deployment_spec,
        build_worker_deployment_spec,
    )

    [cluster] = [r for r in resources if r["kind"] == "DaskCluster"]
    name, namespace = cluster["metadata"]["name"], cluster["metadata"]["namespace"]
    cluster_labels = cluster["metadata"].get("labels", {})

    def merged(part: dict, meta: dict, key: str) -> dict:
        return {**meta.get(key, {}), **part.get("metadata", {}).get(key, {})}

    scheduler = cluster["spec"]["scheduler"]
    templates = {"scheduler": [build_scheduler_deployment_spec(
        name, scheduler["spec"], merged(scheduler, cluster["metadata"], "annotations"),
        merged(scheduler, cluster["metadata"], "labels"))["spec"]["template"]], "worker": []}
    groups = [(f"{name}-default", cluster["spec"]["worker"], cluster["metadata"])]
    groups += [(r["metadata"]["name"], r["spec"]["worker"], r["metadata"]) for r in resources
               if r["kind"] == "DaskWorkerGroup"]
    for group, worker, meta in groups:
        for index in range(worker["replicas"]):
            deployment = build_worker_deployment_spec(
                group, namespace, name, f"{index:010d}", worker["spec"], merged(worker, meta, "annotations"),
                {**cluster_labels, **merged(worker, meta, "labels")})
            templates["worker"].append(deployment["spec"]["template"])
    return templates


def selects(selector: dict, labels: dict) -> bool:
    return all(labels.get(key) == value for key, value in selector["matchLabels"].items())


def test_spread_keeps_every_worker_pod_of_the_step_off_the_others_nodes_and_nothing_else():
    """Default spread: each worker pod (the full-node group and the smaller last node's group alike) requires a node
    with no other worker pod of its DaskCluster. The selector is the labels the installed operator gives worker
    pods: it selects each of them, not the scheduler, not another step's workers. k8s-local's scheduler does not
    evaluate pod anti-affinity: this shows the field is right, a real cluster honours it."""
    settings = settings_for()  # 5 cores on nodes of 2: pods of 2, 2 and 1 cores
    assert settings.kube_worker_placement == "spread"
    resources = manifests(settings, make_plan(settings)[-1], "r")
    templates = operator_pod_templates(resources)
    assert len(templates["worker"]) == 3
    other = operator_pod_templates(manifests(settings, make_plan(settings)[-2], "r"))
    for template in templates["worker"]:
        [term] = template["spec"]["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert set(template["spec"]["affinity"]) == {"podAntiAffinity"}
        assert all(selects(term["labelSelector"], t["metadata"]["labels"]) for t in templates["worker"])
        assert not selects(term["labelSelector"], templates["scheduler"][0]["metadata"]["labels"])
        assert not any(selects(term["labelSelector"], t["metadata"]["labels"]) for t in other["worker"])
    scheduler = templates["scheduler"][0]["spec"]
    assert "affinity" not in scheduler  # no SCHEDULER_HOST: the scheduler may go anywhere, beside a worker too


def test_pack_leaves_worker_pods_where_the_scheduler_fits_them_and_scheduler_host_still_pins():
    settings = settings_for(kube_worker_placement="pack", scheduler_host="node-2")
    resources = manifests(settings, make_plan(settings)[-1], "r")
    validate_all(resources)
    for spec in [*pod_specs(resources)[:1], resources[1]["spec"]["worker"]["spec"]]:
        assert "affinity" not in spec
    scheduler = resources[0]["spec"]["scheduler"]["spec"]
    assert set(scheduler["affinity"]) == {"nodeAffinity"}
    assert settings_for().fingerprint() != settings.fingerprint()  # placement changes what is measured


SITE = {
    "kube_image_pull_secrets": "registry-a, registry-b",
    "kube_node_selector": "node.kubernetes.io/instance-type=c6i.4xlarge,pool=dask",
    "kube_tolerations": '[{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"},'
                        ' {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]',
    "kube_priority_class": "benchmark-high",
    "kube_service_account": "dask-pods",
    "kube_pod_labels": '{"team": "hpc", "example.org/cost-center": "b-42"}',
    "kube_pod_annotations": "cluster-autoscaler.kubernetes.io/safe-to-evict=false,example.org/note=nightly run",
}


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_sites_pod_settings_reach_the_scheduler_and_every_worker_pod(tls):
    extra = {"use_ssl": True, "cert_dir": "/tmp/certs"} if tls else {}
    settings = settings_for(**SITE, **extra)
    resources = manifests(settings, make_plan(settings)[-1], "r")
    validate_all(resources)
    specs = pod_specs(resources)
    assert len(specs) == 3
    for spec in specs:
        assert spec["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
        assert spec["nodeSelector"] == {"node.kubernetes.io/instance-type": "c6i.4xlarge", "pool": "dask"}
        assert spec["tolerations"] == [
            {"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"},
            {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}]
        assert (spec["priorityClassName"], spec["serviceAccountName"]) == ("benchmark-high", "dask-pods")
    templates = operator_pod_templates(resources)
    for template in templates["scheduler"] + templates["worker"]:
        labels, annotations = template["metadata"]["labels"], template["metadata"]["annotations"]
        assert labels["team"] == "hpc" and labels["example.org/cost-center"] == "b-42"
        assert annotations == {"cluster-autoscaler.kubernetes.io/safe-to-evict": "false",
                               "example.org/note": "nightly run"}
    # unset: none of these fields at all
    for spec in pod_specs(manifests(settings_for(), make_plan(settings_for())[-1], "r")):
        assert not {"imagePullSecrets", "nodeSelector", "tolerations", "priorityClassName",
                    "serviceAccountName"} & set(spec)


# --- names derived from KUBECLUSTER_NAME -----------------------------------------------------------------

DNS_1035 = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")


def derived_names(resources: list[dict]) -> dict[str, list[str]]:
    """Every name the API and the operator derive from the step's DaskCluster, by what rule each must meet."""
    from dask_kubernetes.operator.controller.controller import SCHEDULER_NAME_TEMPLATE

    cluster = resources[0]["metadata"]["name"]
    groups = [f"{cluster}-default"] + [r["metadata"]["name"] for r in resources[1:]]
    templates = operator_pod_templates(resources)
    return {
        "dns-1035": [SCHEDULER_NAME_TEMPLATE.format(cluster_name=cluster)],  # the Service
        "label value": [cluster, *groups] + [value for t in templates["scheduler"] + templates["worker"]
                                            for value in t["metadata"]["labels"].values()],
        "dns-1123 subdomain": [cluster, *groups] + [t["metadata"]["name"] + "-5d4f8b7c9f-x2x7q"  # a pod's name
                                                    for t in templates["scheduler"] + templates["worker"]],
    }


def test_the_longest_kubecluster_name_still_yields_valid_names_for_every_object():
    settings = settings_for(kubecluster_name="a" + "-b" * 31, max_n_cores=99_999_999, step_by=33_333_333,
                            cores_per_node=66_666_666)
    step = make_plan(settings)[-1]  # 99999999 cores: a pod of 66666666 and one of 33333333 (-c33333333)
    resources = manifests(settings, step, "scheduled__2026-11-30T02:00:00+00:00")
    rules = derived_names(resources)
    assert all(len(name) <= 63 and DNS_1035.fullmatch(name) for name in rules["dns-1035"]), rules["dns-1035"]
    assert all(len(v) <= 63 and LABEL_VALUE.fullmatch(v) for v in rules["label value"]), rules["label value"]
    subdomain = re.compile(r"[a-z0-9]([-a-z0-9.]*[a-z0-9])?")
    assert all(len(n) <= 253 and subdomain.fullmatch(n) for n in rules["dns-1123 subdomain"])
    assert resources[0]["metadata"]["name"].startswith("a-b-b")


@pytest.mark.parametrize("name", ["1bench", "Bench", "dask_bench", "bench-", "-bench", "a" * 64, "dask.bench"])
def test_a_kubecluster_name_that_cannot_name_a_service_is_refused(name):
    from daskweak.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        settings_for(kubecluster_name=name)
    [problem] = caught.value.problems
    assert problem.setting == "KUBECLUSTER_NAME" and problem.given == name
    assert "a lowercase letter" in problem.accepted and "DNS-1035" in problem.accepted


def dry_run(objects: list[dict], namespace: str, check: bool = True) -> str:
    """`kubectl create --dry-run=server`: the real API server validates and admits `objects`, stores nothing."""
    listed = {"apiVersion": "v1", "kind": "List", "items": [{**obj, "metadata": {**obj["metadata"],
                                                                                   "namespace": namespace}}
                                                              for obj in objects]}
    return kubectl("create", "--dry-run=server", "-o", "name", "-f", "-", stdin=json.dumps(listed), check=check)


def operator_objects(resources: list[dict]) -> list[dict]:
    """The objects the installed operator creates for the manifests (its own builders), and a Pod per template."""
    from dask_kubernetes.operator.controller.controller import build_scheduler_service_spec

    cluster = resources[0]
    name = cluster["metadata"]["name"]
    templates = operator_pod_templates(resources)
    service = build_scheduler_service_spec(name, cluster["spec"]["scheduler"]["service"], {},
                                           cluster["metadata"]["labels"])
    pods = [{"apiVersion": "v1", "kind": "Pod",
             "metadata": {**t["metadata"], "name": f"{t['metadata']['name']}-5d4f8b7c9f-x2x7q"}, "spec": t["spec"]}
            for t in templates["scheduler"] + templates["worker"]]
    deployments = [{"apiVersion": "apps/v1", "kind": "Deployment", "metadata": t["metadata"],
                    "spec": {"replicas": 1, "selector": {"matchLabels": t["metadata"]["labels"]}, "template": t}}
                   for t in templates["scheduler"] + templates["worker"]]
    return [service, *deployments, *pods]


def test_the_api_server_accepts_every_object_named_from_the_longest_kubecluster_name(kube_namespace):
    """The DaskCluster, its DaskWorkerGroup, and what the operator makes of them (the scheduler Service, the
    Deployments, their pods) for the longest KUBECLUSTER_NAME and the longest worker-group suffix, dry-run on the
    real API server: every name passes its rule there. A Service one character too long, or named after a
    leading digit, is refused by the same server."""
    settings = settings_for(kube_namespace=kube_namespace, kubecluster_name="a" + "-b" * 31,
                            max_n_cores=99_999_999, step_by=33_333_333, cores_per_node=66_666_666,
                            mem_per_node=None)
    step = make_plan(settings)[-1]
    resources = manifests(settings, step, "scheduled__2026-11-30T02:00:00+00:00")
    from dask_kubernetes.operator.validation import validate_cluster_name

    validate_cluster_name(resources[0]["metadata"]["name"])  # the operator's own rule (≤ 53: its Service's room)
    objects = [*resources, *operator_objects(resources)]
    created = dry_run(objects, kube_namespace).splitlines()
    assert len(created) == len(objects) == 2 + 1 + 3 + 3, created
    service = operator_objects(resources)[0]
    assert len(service["metadata"]["name"]) <= 63
    for bad in (service["metadata"]["name"] + "x" * (64 - len(service["metadata"]["name"])),
                "1" + service["metadata"]["name"][1:]):
        refused = subprocess.run(["kubectl", "create", "--dry-run=server", "-n", kube_namespace, "-f", "-"],
                                 input=json.dumps({**service, "metadata": {**service["metadata"], "name": bad}}),
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode != 0 and "Invalid value" in refused.stderr, refused.stderr
    assert kubectl("get", "daskclusters,services,deployments,pods", "-n", kube_namespace, "-o", "name") == ""


def test_the_sites_pod_settings_reach_the_pods_the_real_operator_makes(kube_namespace):
    """A DaskCluster with every site setting, on the real API server with the real operator (k8s-local): its
    scheduler and worker pods (both worker groups) carry the pull secrets, node selector, tolerations, priority
    class, service account, labels and annotations; the node selector is honoured (k8s-local's scheduler
    filters by it; pack, since spread would need a node per worker pod). The spread selector picks exactly the
    worker pods as the operator labelled them. The pods run (the process runtime ignores the non-root user; the
    podman tests run the image as it)."""
    node = kubectl("get", "nodes", "-o", "jsonpath={.items[-1:].metadata.name}")
    kubectl("create", "serviceaccount", "dask-pods", "-n", kube_namespace)
    priority = f"daskweak-test-{kube_namespace}"
    kubectl("apply", "-f", "-", stdin=json.dumps({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
                                                 "metadata": {"name": priority}, "value": 1000}))
    settings = settings_for(
        kube_namespace=kube_namespace, max_n_cores=3, step_by=3, cores_per_node=2, worker_mode="threads",
        kube_worker_placement="pack",
        kube_image_pull_secrets="registry-a", kube_node_selector=f"kubernetes.io/hostname={node}",
        kube_tolerations='[{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}]',
        kube_priority_class=priority, kube_service_account="dask-pods",
        kube_pod_labels="team=hpc", kube_pod_annotations='{"example.org/note": "nightly, site"}')
    resources = manifests(settings, make_plan(settings)[-1], "site-settings", "LoadBalancer")
    name = resources[0]["metadata"]["name"]
    try:
        for resource in resources:
            kubectl("apply", "-f", "-", stdin=json.dumps(resource))

        def pods() -> list[dict]:
            return json.loads(kubectl("get", "pods", "-n", kube_namespace, "-l", f"dask.org/cluster-name={name}",
                                      "-o", "json"))["items"]

        def running() -> bool:
            found = pods()
            return len(found) == 3 and all(p["status"].get("phase") == "Running" for p in found)

        assert wait_until(running, timeout=180), [(p["metadata"]["name"], p["status"]) for p in pods()]
        for found in pods():
            spec, metadata = found["spec"], found["metadata"]
            assert spec["nodeName"] == node
            assert spec["imagePullSecrets"] == [{"name": "registry-a"}]
            assert spec["nodeSelector"] == {"kubernetes.io/hostname": node}
            assert {"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"} \
                in spec["tolerations"]
            assert (spec["priorityClassName"], spec["serviceAccountName"]) == (priority, "dask-pods")
            assert spec["priority"] == 1000  # the Priority admission resolved the class
            assert metadata["labels"]["team"] == "hpc"
            assert metadata["annotations"]["example.org/note"] == "nightly, site"
            assert spec["securityContext"]["runAsUser"] == 10001
        workers = {p["metadata"]["name"] for p in pods() if p["metadata"]["labels"]["dask.org/component"] == "worker"}
        assert len(workers) == 2  # the DaskCluster's pod of 2 cores, the DaskWorkerGroup's of 1
        [term] = worker_spread(name)["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        selector = ",".join(f"{k}={v}" for k, v in term["labelSelector"]["matchLabels"].items())
        assert set(kubectl("get", "pods", "-n", kube_namespace, "-l", selector, "-o",
                           "jsonpath={.items[*].metadata.name}").split()) == workers
    finally:
        kubectl("delete", "daskcluster", name, "-n", kube_namespace, "--ignore-not-found", "--timeout=120s")
        kubectl("delete", "priorityclass", priority, "--ignore-not-found")
