"""The Helm chart charts/daskweak, rendered and linted by Helm's own engine (helm-python-sdk: the Helm v4 Go SDK
through ctypes, no helm binary), checked against the Kubernetes schemas and against what the benchmark needs;
with KUBECONFIG (../shared/k8s-local), applied to a real API server and used by a sweep as its ServiceAccount."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import helm_python as helm
import jsonschema
import kubernetes_validate
import pytest
import yaml

from daskweak.backends.kubernetes.nodes import node_type, pods_can_land
from daskweak.errors import ConfigError
from daskweak.settings import Settings, load_settings
from daskweak.store import ResultStore
from daskweak.tls import ensure_certificates, mounted_secret, security
from tests.conftest import kubectl

CHART = Path(__file__).resolve().parents[1] / "charts" / "daskweak"
AIRFLOW_EXAMPLE = CHART / "examples" / "airflow-values.yaml"
KUBERNETES = "1.37.0"  # the newest schema set kubernetes-validate ships
NAMESPACE = "bench"
CLUSTER_SCOPED = {"ClusterRole", "ClusterRoleBinding"}
SETTING_NAMES = {name.upper() for name in Settings.model_fields}
# The CronJob keeps its results in a database (a Secret with RESULTS_URL) or on a claim: one of them is required.
CRON = {"cronjob": {"enabled": True}, "results": {"existingSecret": "results-db"}}


def render(values=None, release="daskweak", namespace=NAMESPACE, chart_dir=CHART):
    """`helm template`: every rendered object, NOTES.txt left out."""
    with helm.Chart.load(chart_dir) as chart:
        manifests = chart.render(values, name=release, namespace=namespace)
    return [doc for name, text in sorted(manifests.items()) if not name.endswith("NOTES.txt")
            for doc in yaml.safe_load_all(text) if doc]


def notes(values=None):
    with helm.Chart.load(CHART) as chart:
        return chart.render(values, name="daskweak", namespace=NAMESPACE)["daskweak/templates/NOTES.txt"]


def by_kind(objects):
    kinds = {}
    for obj in objects:
        assert obj["kind"] not in kinds, f"two {obj['kind']} objects"
        kinds[obj["kind"]] = obj
    return kinds


def validate(objects):
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES, strict=True)
        assert obj["metadata"].get("namespace") == (None if obj["kind"] in CLUSTER_SCOPED else NAMESPACE)


def lint_problems(values=None, strict=True):
    """`helm lint [--strict]`: the findings above info level (1), as text."""
    report = helm.lint(CHART, values, strict=strict, namespace=NAMESPACE)
    assert report["total_charts_linted"] == 1
    return [f"{m['path']}: {m['error']}" for m in report["messages"] if m["severity"] >= 2] + report["errors"]


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("certs")
    ensure_certificates(path, hosts=[f"*.{NAMESPACE}.svc.cluster.local", f"*.{NAMESPACE}.svc"])
    return path


@pytest.fixture(scope="module")
def tls_values(cert_dir):
    """What `--set tls.enabled=true --set-file tls.caCrt=... tls.tlsCrt=... tls.tlsKey=...` gives."""
    return {"tls": {"enabled": True, "caCrt": (cert_dir / "ca.crt").read_text(),
                    "tlsCrt": (cert_dir / "scheduler.crt").read_text(),
                    "tlsKey": (cert_dir / "scheduler.key").read_text()}}


def allows(role, group, resource, verb, name=None):
    """Kubernetes RBAC's decision for one request, from the Role's rules."""
    for rule in role["rules"]:
        if (group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
                and (not rule.get("resourceNames") or name in rule["resourceNames"])):
            return True
    return False


def snapshot(directory):
    """A directory's files with their bytes, modes and times, and its own mode: equal when nothing was written."""
    files = {path.name: (path.read_bytes(), path.stat().st_mode, path.stat().st_mtime_ns)
             for path in sorted(directory.iterdir())}
    return directory.stat().st_mode, files


# --- rendering -------------------------------------------------------------------------------------------


def test_defaults_render_account_role_binding_node_reader_and_configmap():
    objects = render()
    validate(objects)
    kinds = by_kind(objects)
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ConfigMap"}
    account = kinds["ServiceAccount"]["metadata"]["name"]
    assert account == "daskweak"
    binding = kinds["RoleBinding"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": kinds["Role"]["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}]
    node_binding = kinds["ClusterRoleBinding"]
    assert node_binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                                       "name": kinds["ClusterRole"]["metadata"]["name"]}
    assert node_binding["subjects"] == binding["subjects"]
    data = kinds["ConfigMap"]["data"]
    assert data["BACKEND"] == "kubernetes"
    assert data["KUBE_NAMESPACE"] == NAMESPACE
    assert data["CONTAINER_IMAGE"] == "ghcr.io/daskweak/daskweak:0.1.0"
    assert data["KUBE_SERVICE_TYPE"] == "ClusterIP"
    assert "SCHEDULER_HOST" not in data  # empty: left out, the setting's default applies
    assert "USE_SSL" not in data and "RESULTS_URL" not in data


def test_names_follow_the_release_and_an_existing_service_account():
    kinds = by_kind(render(release="nightly"))
    assert kinds["ConfigMap"]["metadata"]["name"] == "nightly-daskweak"
    # cluster-wide names: one release name in two namespaces makes two node readers
    assert kinds["ClusterRole"]["metadata"]["name"] == "nightly-daskweak-bench-read-nodes"
    other = by_kind(render(release="nightly", namespace="bench-2"))
    assert other["ClusterRoleBinding"]["metadata"]["name"] == "nightly-daskweak-bench-2-read-nodes"
    kinds = by_kind(render({"serviceAccount": {"create": False, "name": "benchmark"}}))
    assert "ServiceAccount" not in kinds
    assert kinds["RoleBinding"]["subjects"][0]["name"] == "benchmark"
    assert kinds["ClusterRoleBinding"]["subjects"] == [{"kind": "ServiceAccount", "name": "benchmark",
                                                        "namespace": NAMESPACE}]


# What backend.py does through the API (kr8s), per resource: the runtime Role's exact grants.
SWEEP_NEEDS = {
    # start/stop (kr8s' wait for deletion is a watch: list + watch), delete_run
    ("kubernetes.dask.org", "daskclusters"): {"get", "list", "watch", "create", "delete"},
    ("kubernetes.dask.org", "daskworkergroups"): {"get", "list", "watch", "create", "delete"},
    ("", "pods"): {"get", "list"},  # Pod.list by label, Pod.ready
    ("", "services"): {"get", "list"},  # Service.get: a list with fieldSelector metadata.name
    ("", "events"): {"list"},  # a refused pod's FailedCreate events (the API's message): Event.list only
    ("apps", "deployments"): set(),  # the events say why; the operator's Deployments are not read
    ("apps", "replicasets"): set(),
}
ALL_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_role_grants_what_the_benchmark_does_and_no_more(tls):
    role = by_kind(render({"tls": {"enabled": True, "create": False}} if tls else None))["Role"]
    for (group, resource), verbs in SWEEP_NEEDS.items():
        for verb in ALL_VERBS:
            assert allows(role, group, resource, verb) is (verb in verbs), (resource, verb)
    # check_tls_secret, only with TLS: kr8s' Secret.get is a list with fieldSelector metadata.name, which RBAC
    # matches against resourceNames. No Secret write at all: with create, the account could make a
    # service-account-token Secret for another account (named as the TLS Secret, which it may read) and get its
    # token; creating or patching the TLS Secret is the installer's or an admin's.
    for verb in ALL_VERBS:
        assert allows(role, "", "secrets", verb, "daskweak-tls") is (tls and verb in ("get", "list")), verb
        assert not allows(role, "", "secrets", verb, "someone-elses-secret"), verb
        assert not allows(role, "", "secrets", verb), verb  # no name: create, or a list of all Secrets
    for resource, verb in [("pods/exec", "create"), ("pods/log", "get"), ("configmaps", "get"),
                           ("serviceaccounts/token", "create"), ("events", "create"), ("events", "delete")]:
        assert not allows(role, "", resource, verb, "daskweak-tls"), (resource, verb)
    for rule in role["rules"]:
        assert "*" not in rule["apiGroups"] + rule["resources"] + rule["verbs"]


NODE_READER_VERBS = {"get", "list"}  # nodes.py lists the Nodes once per run (get: the same data, one node)


@pytest.mark.parametrize("read_nodes", [True, False], ids=["read-nodes", "no-node-reader"])
def test_the_node_reader_grants_get_and_list_on_nodes_only(read_nodes):
    """The run's hardware class holds its node types; Nodes are cluster-scoped, so a ClusterRole reads them. It
    must grant nothing else: no other verb on nodes, no subresource (nodes/proxy is the kubelet's API), no other
    resource anywhere in the cluster."""
    kinds = by_kind(render({"rbac": {"readNodes": read_nodes}}))
    if not read_nodes:
        assert not CLUSTER_SCOPED & set(kinds)
        assert "ClusterRole" not in notes({"rbac": {"readNodes": False}})
        return
    reader = kinds["ClusterRole"]
    assert reader["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": sorted(NODE_READER_VERBS)}]
    for verb in ALL_VERBS:
        assert allows(reader, "", "nodes", verb) is (verb in NODE_READER_VERBS), verb
    for resource in ("nodes/proxy", "nodes/status", "secrets", "pods", "namespaces"):
        assert not any(allows(reader, "", resource, verb) for verb in ALL_VERBS), resource
    assert "get and list Nodes only" in notes()


def test_role_follows_the_tls_secret_name(tls_values):
    values = {"tls": {**tls_values["tls"], "secretName": "dask-certs"}}
    role = by_kind(render(values))["Role"]
    assert allows(role, "", "secrets", "get", "dask-certs")
    assert not allows(role, "", "secrets", "get", "daskweak-tls")


def test_configmap_holds_only_real_settings_that_validate(cert_dir, tls_values):
    for values in (None, tls_values, CRON):
        data = by_kind(render(values))["ConfigMap"]["data"]
        assert set(data) <= SETTING_NAMES, set(data) - SETTING_NAMES
        settings = Settings(_env_file=None, **{key.lower(): value for key, value in data.items()})
        assert settings.backend == "kubernetes"
        assert settings.kube_namespace == NAMESPACE
        assert settings.use_ssl is (values is tls_values)
    schema = json.loads((CHART / "values.schema.json").read_text())
    described = set(schema["properties"]["settings"]["properties"])
    assert described <= SETTING_NAMES, described - SETTING_NAMES
    assert "RESULTS_URL" not in described  # it may hold a password: results.existingSecret


def test_numbers_and_booleans_reach_the_configmap_as_settings_read_them():
    # Helm hands numbers to templates as float64: 6000000 must not become "6e+06".
    values = helm.values_from_yaml("settings:\n  PROBLEM_SIZE_DATAFRAMES: 6000000\n  TIMEOUT: 90.5\n"
                                   "  VERBOSE: true\n  MAX_N_CORES: 64\n  STEP_BY: 16\n  MEM_PER_NODE: 300\n")
    data = by_kind(render(values))["ConfigMap"]["data"]
    assert (data["PROBLEM_SIZE_DATAFRAMES"], data["TIMEOUT"], data["VERBOSE"]) == ("6000000", "90.5", "true")
    settings = Settings(_env_file=None, **{key.lower(): value for key, value in data.items()})
    assert settings.problem_size_dataframes == 6_000_000
    assert settings.timeout == 90.5 and settings.verbose is True
    assert settings.mem_per_node_bytes == 300 * 2**30


def test_tls_secret_from_pem_values(cert_dir, tls_values):
    objects = render(tls_values)
    validate(objects)
    kinds = by_kind(objects)
    secret = kinds["Secret"]
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["metadata"]["name"] == "daskweak-tls"
    files = {"ca.crt": "ca.crt", "tls.crt": "scheduler.crt", "tls.key": "scheduler.key"}
    assert {key: base64.b64decode(value) for key, value in secret["data"].items()} == {
        key: (cert_dir / name).read_bytes() for key, name in files.items()}
    data = kinds["ConfigMap"]["data"]
    assert (data["USE_SSL"], data["SECRET_CERT_NAME"]) == ("true", "daskweak-tls")
    assert data["CERT_DIR"].startswith("/")
    configmap = yaml.safe_dump(kinds["ConfigMap"])
    key = (cert_dir / "scheduler.key").read_text()
    assert "PRIVATE KEY" not in configmap
    for secret_text in (key, base64.b64encode(key.encode()).decode(), key.splitlines()[1]):
        assert secret_text not in configmap


def test_tls_needs_the_three_pems(tls_values):
    for missing in ("caCrt", "tlsCrt", "tlsKey"):
        values = {"tls": {**tls_values["tls"], missing: ""}}
        with pytest.raises(helm.HelmRenderError, match=re.escape(f"tls.{missing} is required")):
            render(values)


def test_tls_with_an_existing_secret_only_configures_the_benchmark():
    kinds = by_kind(render({"tls": {"enabled": True, "create": False, "secretName": "made-by-k8s-secret"}}))
    assert "Secret" not in kinds
    assert kinds["ConfigMap"]["data"]["SECRET_CERT_NAME"] == "made-by-k8s-secret"
    text = re.sub(r"\s+", " ", notes({"tls": {"enabled": True, "create": False}}))
    assert "daskweak k8s-secret" in text
    assert "credentials that may write Secrets" in text and "the ServiceAccount only reads it" in text
    assert "it writes no Secret" in text and "an admin creates it" in text


def test_cronjob_runs_the_sweep_as_the_service_account():
    objects = render(CRON)
    validate(objects)
    kinds = by_kind(objects)
    cron = kinds["CronJob"]["spec"]
    assert cron["schedule"] == "0 2 * * *"
    assert cron["concurrencyPolicy"] == "Forbid"
    pod = cron["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == kinds["ServiceAccount"]["metadata"]["name"]
    assert pod["restartPolicy"] == "Never"
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 10001
    assert "initContainers" not in pod
    [container] = pod["containers"]
    assert container["image"] == kinds["ConfigMap"]["data"]["CONTAINER_IMAGE"]
    assert container["command"] == ["daskweak", "run"]
    assert container["envFrom"] == [{"configMapRef": {"name": kinds["ConfigMap"]["metadata"]["name"]}}]
    assert {"name": "RES_DIR", "value": "/results"} in container["env"]
    assert {"name": "RESULTS_URL", "valueFrom": {"secretKeyRef": {"name": "results-db", "key": "RESULTS_URL"}}} \
        in container["env"]
    assert not any(env["name"] == "RESULTS_SQLITE_PERSISTENT" for env in container["env"])
    assert container["resources"]["limits"]["memory"]
    assert {"name": "results", "mountPath": "/results"} in container["volumeMounts"]
    assert {"name": "results", "emptyDir": {}} in pod["volumes"]  # the CSV exports only: the rows are in the database


def test_cronjob_results_from_a_secret_and_a_claim():
    values = {"cronjob": {"enabled": True, "schedule": "@daily"},
              "results": {"existingSecret": "results-db", "persistentVolumeClaim": "daskweak-results"}}
    objects = render(values)
    validate(objects)
    pod = by_kind(objects)["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {"name": "RESULTS_URL", "valueFrom": {"secretKeyRef": {"name": "results-db", "key": "RESULTS_URL"}}} \
        in pod["containers"][0]["env"]
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "daskweak-results"}} in pod["volumes"]


def cron_environment(kinds, secrets=None):
    """The CronJob container's environment as the kubelet makes it: the ConfigMap (envFrom), then `env`, a
    secretKeyRef read from `secrets` ({(secret, key): value}, the stand-in for the Secret's content)."""
    [container] = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    env = dict(kinds["ConfigMap"]["data"])
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = item["value"]
        else:
            ref = item["valueFrom"]["secretKeyRef"]
            env[item["name"]] = (secrets or {})[ref["name"], ref["key"]]
    return env


def settings_in_the_pod(env, monkeypatch):
    """The settings `daskweak run` reads in the CronJob's pod (KUBERNETES_SERVICE_HOST is in every pod's env)."""
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    return load_settings(**{key.lower(): value for key, value in env.items()})


def test_cronjob_without_a_database_or_a_claim_is_refused_by_helm():
    """A CronJob writing SQLite into its pod's emptyDir loses every result with the pod: `helm template` fails,
    saying what to give."""
    with pytest.raises(helm.HelmRenderError) as caught:
        render({"cronjob": {"enabled": True}})
    text = str(caught.value)
    assert "results.existingSecret or results.persistentVolumeClaim is required when cronjob.enabled" in text
    assert "postgresql+psycopg://" in text
    assert "CronJob" not in by_kind(render())  # no CronJob: nothing required


def test_the_cronjobs_settings_validate_in_its_pod_with_a_database(monkeypatch):
    kinds = by_kind(render(CRON))
    url = "postgresql+psycopg://bench:pw@db.bench.svc:5432/daskweak"
    settings = settings_in_the_pod(cron_environment(kinds, {("results-db", "RESULTS_URL"): url}), monkeypatch)
    assert settings.database_url == url and settings.results_sqlite_persistent is False


def test_cronjob_with_only_a_claim_keeps_sqlite_on_it_on_purpose(monkeypatch):
    values = {"cronjob": {"enabled": True}, "results": {"persistentVolumeClaim": "daskweak-results"}}
    objects = render(values)
    validate(objects)
    kinds = by_kind(objects)
    pod = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {"name": "results", "persistentVolumeClaim": {"claimName": "daskweak-results"}} in pod["volumes"]
    env = cron_environment(kinds)
    assert env["RESULTS_SQLITE_PERSISTENT"] == "true" and "RESULTS_URL" not in env
    settings = settings_in_the_pod(env, monkeypatch)
    assert settings.database_url == "sqlite:////results/daskweak.sqlite"
    with pytest.raises(ConfigError, match="RESULTS_SQLITE_PERSISTENT"):  # what the chart spares the user
        settings_in_the_pod({k: v for k, v in env.items() if k != "RESULTS_SQLITE_PERSISTENT"}, monkeypatch)


DASK_PODS = {"imagePullSecrets": [{"name": "registry-a"}, {"name": "registry-b"}], "daskPods": {
    "placement": "pack", "nodeSelector": {"example.org/pool": "dask"},
    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"},
                    {"key": "spot", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 60}],
    "priorityClassName": "benchmark", "serviceAccountName": "dask-pods",
    "labels": {"team": "hpc"}, "annotations": {"example.org/note": "nightly, by the chart"}}}


def test_dask_pod_values_reach_the_scheduler_and_worker_pods_through_the_configmap():
    data = by_kind(render(helm.values_from_yaml(yaml.safe_dump(DASK_PODS))))["ConfigMap"]["data"]
    settings = Settings(_env_file=None, **{key.lower(): value for key, value in data.items()})
    dask_pods = DASK_PODS["daskPods"]
    assert settings.kube_worker_placement == "pack"
    assert settings.kube_image_pull_secrets == ["registry-a", "registry-b"]
    assert settings.kube_node_selector == dask_pods["nodeSelector"]
    assert settings.kube_tolerations == dask_pods["tolerations"]  # tolerationSeconds still an integer
    assert (settings.kube_priority_class, settings.kube_service_account) == ("benchmark", "dask-pods")
    assert settings.kube_pod_labels == {"team": "hpc"}
    assert settings.kube_pod_annotations == {"example.org/note": "nightly, by the chart"}
    from daskweak.backends.kubernetes.manifests import manifests
    from daskweak.plan import make_plan

    [cluster] = manifests(settings, make_plan(settings)[-1], "r")
    for part in (cluster["spec"]["scheduler"], cluster["spec"]["worker"]):
        spec = part["spec"]
        assert spec["imagePullSecrets"] == [{"name": "registry-a"}, {"name": "registry-b"}]
        assert spec["nodeSelector"] == dask_pods["nodeSelector"] and spec["tolerations"] == dask_pods["tolerations"]
        assert (spec["priorityClassName"], spec["serviceAccountName"]) == ("benchmark", "dask-pods")
        assert part["metadata"] == {"labels": dask_pods["labels"], "annotations": dask_pods["annotations"]}
    defaults = by_kind(render())["ConfigMap"]["data"]
    assert defaults["KUBE_WORKER_PLACEMENT"] == "spread"
    assert not {key for key in defaults if key.startswith("KUBE_")} - {
        "KUBE_NAMESPACE", "KUBE_SERVICE_TYPE", "KUBE_WORKER_PLACEMENT"}  # the rest unset: their defaults


def cronjob_tls_volume(kinds):
    """The CronJob's container, its TLS volume and the mount of that volume."""
    pod = kinds["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    [container] = pod["containers"]
    [volume] = [volume for volume in pod["volumes"] if "secret" in volume]
    [mount] = [mount for mount in container["volumeMounts"] if mount["name"] == volume["name"]]
    return pod, container, volume, mount


@pytest.mark.parametrize("created", [True, False], ids=["chart-secret", "k8s-secret"])
def test_cronjob_with_tls_mounts_the_secret_read_only_at_cert_dir(created, tls_values):
    tls = {**tls_values["tls"]} if created else {"enabled": True, "create": False, "secretName": "made-by-k8s-secret"}
    objects = render({**CRON, "tls": tls})
    validate(objects)
    kinds = by_kind(objects)
    assert ("Secret" in kinds) is created
    data = kinds["ConfigMap"]["data"]
    pod, container, volume, mount = cronjob_tls_volume(kinds)
    assert container["command"] == ["daskweak", "run"]
    assert "args" not in container and "initContainers" not in pod
    assert mount == {"name": volume["name"], "mountPath": data["CERT_DIR"], "readOnly": True}
    assert volume["secret"]["secretName"] == data["SECRET_CERT_NAME"] == (
        kinds["Secret"]["metadata"]["name"] if created else "made-by-k8s-secret")
    # Only the three kubernetes.io/tls keys reach CERT_DIR (so mounted_secret applies: no ca.key), readable by
    # owner root and the group fsGroup, which the non-root user is in.
    assert volume["secret"]["items"] == [{"key": key, "path": key} for key in ("ca.crt", "tls.crt", "tls.key")]
    assert volume["secret"]["defaultMode"] == 0o440
    context = pod["securityContext"]
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0 and context["fsGroup"] is not None
    assert [v["name"] for v in pod["volumes"]] == ["results", volume["name"]]  # no writable copy of the certificates


def test_cronjob_with_tls_needs_an_fs_group(tls_values):
    values = {**CRON, **tls_values, "securityContext": {"fsGroup": None}}
    with pytest.raises(helm.HelmRenderError, match=re.escape("securityContext.fsGroup is required")):
        render(values)
    assert "Secret" in by_kind(render({**tls_values, "securityContext": {"fsGroup": None}}))  # no CronJob: no need


def test_the_secret_as_the_cronjob_mounts_it_is_the_clients_cert_dir(tmp_path, cert_dir, tls_values):
    """The chart's Secret laid out as its CronJob volume (items, mode, read-only directory): the client's Security
    takes tls.crt/tls.key as they are, writes nothing and needs no CA key."""
    kinds = by_kind(render({**CRON, **tls_values}))
    _, _, volume, _ = cronjob_tls_volume(kinds)
    data = kinds["Secret"]["data"]
    mounted = tmp_path / "certs"
    mounted.mkdir()
    for item in volume["secret"]["items"]:
        (mounted / item["path"]).write_bytes(base64.b64decode(data[item["key"]]))
        (mounted / item["path"]).chmod(volume["secret"]["defaultMode"])
    mounted.chmod(0o555)
    try:
        before = snapshot(mounted)
        assert mounted_secret(mounted) is not None
        tls = security(mounted)
        assert snapshot(mounted) == before
    finally:
        mounted.chmod(0o755)
    assert tls.require_encryption
    assert (tls.tls_ca_file, tls.tls_client_cert, tls.tls_client_key) == tuple(
        str(mounted / name) for name in ("ca.crt", "tls.crt", "tls.key"))
    assert (mounted / "tls.crt").read_bytes() == (cert_dir / "scheduler.crt").read_bytes()


def test_no_ca_key_goes_into_the_cluster(cert_dir, tls_values):
    ca_key = (cert_dir / "ca.key").read_text()
    for values in (tls_values, {**CRON, **tls_values},
                   {**CRON, "tls": {"enabled": True, "create": False}}):
        text = "\n".join(yaml.safe_dump(obj) for obj in render(values))
        assert "ca.key" not in text
        for secret_text in (ca_key, base64.b64encode(ca_key.encode()).decode(), ca_key.splitlines()[1]):
            assert secret_text not in text
    assert "ca.key" not in AIRFLOW_EXAMPLE.read_text()


# --- lint and schema -------------------------------------------------------------------------------------


@pytest.mark.parametrize("strict", [False, True], ids=["lint", "lint-strict"])
def test_lint_is_clean(strict, tls_values):
    assert lint_problems(None, strict) == []
    assert lint_problems(tls_values, strict) == []
    with_cron = {**CRON, **tls_values}
    assert lint_problems(with_cron, strict) == []
    assert lint_problems({**CRON, "tls": {"enabled": True, "create": False}}, strict) == []


def test_schema_is_draft_07_and_accepts_the_defaults():
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    jsonschema.Draft7Validator(schema).validate(yaml.safe_load((CHART / "values.yaml").read_text()))


def test_global_values_are_accepted_so_the_chart_works_as_a_subchart(tmp_path):
    """Helm gives every subchart the parent's `global` values (an empty map at least): a schema refusing unknown
    top-level keys must allow that one, or the chart cannot be a dependency."""
    values = helm.parse_set_string("global.imageRegistry=registry.example.org")  # `--set global.…`
    with helm.Chart.load(CHART) as chart:
        chart.validate_schema(values)
    assert render(values) == render()
    assert lint_problems(values) == []
    parent = tmp_path / "parent"
    shutil.copytree(CHART, parent / "charts" / "daskweak")
    (parent / "templates").mkdir()
    (parent / "Chart.yaml").write_text("apiVersion: v2\nname: parent\nversion: 1.0.0\n"
                                       "dependencies:\n  - name: daskweak\n    version: 0.1.0\n")
    (parent / "values.yaml").write_text("global:\n  imageRegistry: registry.example.org\n"
                                        "daskweak:\n  settings:\n    MAX_N_CORES: 8\n")
    objects = render(chart_dir=parent)
    validate(objects)
    kinds = by_kind(objects)
    assert set(kinds) == {"ServiceAccount", "Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding", "ConfigMap"}
    assert kinds["ConfigMap"]["data"]["MAX_N_CORES"] == "8"
    report = helm.lint(parent, None, strict=True, namespace=NAMESPACE, with_subcharts=True)
    assert [m for m in report["messages"] if m["severity"] >= 2] == [] and report["errors"] == []


SCHEMA_VIOLATIONS = [
    ("cronjob:\n  schedule: 5\n", "/cronjob/schedule"),
    ("cronjob:\n  schedule: every night\n", "/cronjob/schedule"),
    ("replicas: 3\n", "replicas"),
    ("settings:\n  MAX_N_CORE: 8\n", "MAX_N_CORE"),
    ("settings:\n  STEP_BY: 0\n", "/settings/STEP_BY"),
    ("settings:\n  SUITES: arrays,graphs\n", "/settings/SUITES"),
    ("settings:\n  KUBE_SERVICE_TYPE: Ingress\n", "/settings/KUBE_SERVICE_TYPE"),
    ("settings:\n  RESULTS_URL: postgresql://u:secret@db/bench\n", "RESULTS_URL"),
    ("settings:\n  KUBE_NAMESPACE: other\n", "/settings/KUBE_NAMESPACE"),
    ("tls:\n  enabled: yes please\n", "/tls/enabled"),
    ("tls:\n  clientSecretName: client-tls\n", "clientSecretName"),  # gone: the TLS Secret is mounted as it is
    ("image:\n  pullPolicy: Sometimes\n", "/image/pullPolicy"),
    ("rbac:\n  readNodes: maybe\n", "/rbac/readNodes"),
    ("rbac:\n  readSecrets: true\n", "readSecrets"),
    ("settings:\n  KUBECLUSTER_NAME: 1bench\n", "/settings/KUBECLUSTER_NAME"),
    ("settings:\n  KUBE_NODE_SELECTOR: pool=dask\n", "/settings/KUBE_NODE_SELECTOR"),
    ("daskPods:\n  placement: scatter\n", "/daskPods/placement"),
    ("daskPods:\n  nodeSelector:\n    pool: has space\n", "/daskPods/nodeSelector/pool"),
    ("daskPods:\n  labels:\n    dask.org/component: x\n", "dask.org/component"),
    ("daskPods:\n  tolerations:\n    - key: spot\n      effect: Never\n", "/daskPods/tolerations/0/effect"),
    ("daskPods:\n  tolerations:\n    - key: spot\n      when: always\n", "when"),
    ("daskPods:\n  priorityClassName: High\n", "/daskPods/priorityClassName"),
    ("daskPods:\n  hostNetwork: true\n", "hostNetwork"),
    ("imagePullSecrets:\n  - name: Registry_A\n", "/imagePullSecrets/0/name"),
]


@pytest.mark.parametrize(("text", "named"), SCHEMA_VIOLATIONS,
                         ids=[text.replace("\n  ", ".").strip() for text, _ in SCHEMA_VIOLATIONS])
def test_schema_rejects_a_values_file_naming_the_value(tmp_path, text, named):
    values_file = tmp_path / "values.yaml"
    values_file.write_text(text)
    values = helm.values_from_yaml(values_file.read_text())
    with helm.Chart.load(CHART) as chart:
        with pytest.raises(helm.HelmValuesError, match=re.escape(named)):
            chart.validate_schema(values)
        with pytest.raises(helm.HelmValuesError, match=re.escape(named)):  # `helm template -f values.yaml`
            chart.render(values, name="daskweak", namespace=NAMESPACE)
    assert any(named in problem for problem in lint_problems(values))


# --- notes and the Airflow example -----------------------------------------------------------------------


def test_notes_tell_how_to_install_the_operator_and_run():
    text = notes()
    assert "helm repo add dask https://helm.dask.org" in text
    assert "helm install --create-namespace -n dask-operator --generate-name dask/dask-kubernetes-operator" in text
    assert "daskweak k8s-secret" in text
    assert "kubectl -n bench create job --from=cronjob/daskweak" in notes(CRON)
    tls_notes = notes({"tls": {"enabled": True, "create": False}})
    assert "CERT_DIR=/etc/dask/tls" in tls_notes and "workers.extraVolumes/extraVolumeMounts" in tls_notes


def test_airflow_example_uses_this_charts_account_and_configmap():
    values = yaml.safe_load(AIRFLOW_EXAMPLE.read_text())
    kinds = by_kind(render())  # a release named daskweak, as the example assumes
    assert values["executor"] == "KubernetesExecutor"
    assert values["images"]["airflow"]["repository"] and values["images"]["airflow"]["tag"]
    assert values["workers"]["serviceAccount"] == {"create": False,
                                                   "name": kinds["ServiceAccount"]["metadata"]["name"]}
    assert yaml.safe_load(values["extraEnvFrom"]) == [
        {"configMapRef": {"name": kinds["ConfigMap"]["metadata"]["name"]}}]
    assert values["dags"]["persistence"]["enabled"] is False
    assert values["dags"]["gitSync"]["enabled"] is False


def test_airflow_example_keeps_results_in_a_postgresql_connection_every_task_pod_reaches(monkeypatch):
    """A task pod of the example (KubernetesExecutor): its environment (the ConfigMap, the example's `env`, the
    Connection from its `secret`) passes validation at parse time, and the Connection's URL, as the DAG hands it
    to the validate task, is PostgreSQL; a SQLite Connection would be refused there."""
    from airflow.models.connection import Connection

    from daskweak.orchestration import connection_url

    values = yaml.safe_load(AIRFLOW_EXAMPLE.read_text())
    env = dict(by_kind(render())["ConfigMap"]["data"]) | {item["name"]: item["value"] for item in values["env"]}
    [secret] = values["secret"]
    assert secret["secretName"] == "daskweak-results" and secret["envName"] == secret["secretKey"]
    conn_id = env["RESULTS_CONN_ID"]
    assert secret["envName"] == f"AIRFLOW_CONN_{conn_id.upper()}"
    assert f"{secret['envName']}='postgresql://" in AIRFLOW_EXAMPLE.read_text()  # the kubectl line shown
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", values["executor"])
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    overrides = {key.lower(): value for key, value in env.items()}
    load_settings(**overrides)  # the DAG processor's parse: the Connection is resolved at run time
    url = connection_url(Connection(conn_id=conn_id, uri="postgresql://daskweak:pw@db.bench.svc:5432/daskweak"))
    assert url.startswith("postgresql+psycopg://")
    assert load_settings(**overrides, results_url=url).database_url == url
    with pytest.raises(ConfigError, match="RESULTS_URL"):
        load_settings(**overrides, results_url=connection_url(Connection(conn_id=conn_id, uri="sqlite:///x.db")))


def test_airflow_example_mounts_the_tls_secret_at_cert_dir_like_the_cronjob(tls_values):
    """Task pods (the Airflow chart's pod-template-file renders workers.extraVolumes/extraVolumeMounts) get the
    same Secret volume as the CronJob, at the CERT_DIR the ConfigMap gives them."""
    workers = yaml.safe_load(AIRFLOW_EXAMPLE.read_text())["workers"]
    kinds = by_kind(render({**CRON, **tls_values}))
    _, _, volume, mount = cronjob_tls_volume(kinds)
    [task_volume] = workers["extraVolumes"]
    [task_mount] = workers["extraVolumeMounts"]
    assert task_mount == {**mount, "name": task_volume["name"]}
    assert task_mount["mountPath"] == kinds["ConfigMap"]["data"]["CERT_DIR"]
    # optional: task pods still start while TLS is off and no Secret exists.
    assert task_volume["secret"] == {**volume["secret"], "optional": True}
    kubernetes_validate.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "task"}, "spec": {
        "containers": [{"name": "base", "image": "airflow", "volumeMounts": [task_mount]}],
        "volumes": [task_volume]}}, KUBERNETES, strict=True)


# --- on a real API server --------------------------------------------------------------------------------


def service_account_kubeconfig(namespace, account, path):
    """A kubeconfig that authenticates as the ServiceAccount (its token Secret), nothing of the admin's."""
    token_secret = ""
    deadline = time.monotonic() + 60
    while not token_secret and time.monotonic() < deadline:
        token_secret = kubectl("get", "serviceaccount", account, "-n", namespace,
                               "-o", "jsonpath={.secrets[0].name}", check=False)
        time.sleep(0.2)
    if not token_secret:  # Kubernetes ≥ 1.24 makes no token Secrets: ask for a token
        token = kubectl("create", "token", account, "-n", namespace)
    else:
        token = base64.b64decode(kubectl("get", "secret", token_secret, "-n", namespace,
                                         "-o", "jsonpath={.data.token}")).decode()
    admin = json.loads(kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json"))
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "sa",
        "clusters": [{"name": "cluster", "cluster": admin["clusters"][0]["cluster"]}],
        "users": [{"name": "sa", "user": {"token": token}}],
        "contexts": [{"name": "sa", "context": {"cluster": "cluster", "user": "sa", "namespace": namespace}}],
    }))
    return path


def read_only_at(directory, command):
    """`command` in a mount namespace of its own where `directory` is bind-mounted read-only, as a Secret volume is
    (root ignores mode bits, not a read-only mount); as it is where unshare/mount are not permitted (a non-root
    user, for whom the directory's mode 0555 does it)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    wrapped = ["unshare", "--mount", "sh", "-c", script, str(directory)]
    if shutil.which("unshare") and subprocess.run([*wrapped, "true"], capture_output=True, timeout=30).returncode == 0:
        return [*wrapped, *command]
    return command


def can_i(namespace, account, verb, resource, where=None):
    """The real API server's RBAC decision (SelfSubjectAccessReview) for the ServiceAccount, impersonated with the
    admin's credentials: `kubectl auth can-i --as=system:serviceaccount:NS:SA`. `resource` may name one object
    (secrets/NAME) or add a subresource (pods --subresource=log: kubectl reads pods/log as the pod named log)."""
    scope = ["--all-namespaces"] if where == "*" else ["-n", where or namespace]
    done = subprocess.run(["kubectl", "auth", "can-i", verb, *resource.split(), *scope,
                           f"--as=system:serviceaccount:{namespace}:{account}"],
                          capture_output=True, text=True, timeout=60)
    answer = done.stdout.strip()
    assert answer in ("yes", "no") and not done.stderr.strip(), (verb, resource, done.stdout, done.stderr)
    return answer == "yes"


def node_types_as_the_admin_sees_them():
    """The node types Dask pods can land on, from the Nodes the admin's kubectl lists."""
    items = json.loads(kubectl("get", "nodes", "-o", "json"))["items"]
    assert items
    return sorted({node_type(node) for node in items if pods_can_land(node)})


def api_resource(group, resource):
    return f"{resource}.{group}" if group else resource


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
def test_the_runtime_account_may_do_what_a_sweep_does_and_nothing_else(kube_namespace, tls):
    """`helm install` into the real API server, then its RBAC asked about the ServiceAccount: every request
    backend.py and nodes.py make is allowed, every other verb on those resources, any Secret write, any other
    Secret, anything in another namespace or cluster-wide but reading Nodes is not; and the token-Secret attack
    fails (see the Role's comment). `helm uninstall` removes the cluster-wide node reader too."""
    namespace = kube_namespace
    values = {"tls": {"enabled": True, "create": False}} if tls else {}  # TLS: an admin makes the Secret, later
    # explicit: the Go library behind helm_python read the environment when it was loaded, maybe before the
    # `kube` fixture set KUBECONFIG (.ci/run brings the rig up beside the first tests)
    with helm.Config(namespace=namespace, kubeconfig_path=os.environ["KUBECONFIG"]) as helm_config:
        release = helm_config.install(CHART, "daskweak", values, namespace=namespace, timeout=120)
        try:
            assert release["status"] == "deployed"
            runtime_account_may_only_do_what_a_run_does(namespace, release, tls)
        finally:  # the node reader is cluster-scoped: deleting the namespace would leave it behind
            helm_config.uninstall("daskweak")
    reader = by_kind(obj for obj in yaml.safe_load_all(release["manifest"]) if obj)["ClusterRole"]["metadata"]["name"]
    assert kubectl("get", "clusterrole,clusterrolebinding", "--field-selector", f"metadata.name={reader}",
                   "-o", "name") == ""


def runtime_account_may_only_do_what_a_run_does(namespace, release, tls):
    kinds = by_kind(obj for obj in yaml.safe_load_all(release["manifest"]) if obj)
    account = kinds["ServiceAccount"]["metadata"]["name"]
    decisions = {}
    for (group, resource), verbs in SWEEP_NEEDS.items():
        for verb in ALL_VERBS:
            decisions[verb, api_resource(group, resource)] = verb in verbs
    for verb in ALL_VERBS:
        decisions[verb, "secrets/daskweak-tls"] = tls and verb in ("get", "list")
        decisions[verb, "secrets/someone-elses-secret"] = False
        decisions[verb, "secrets"] = False
    for verb, resource in [("create", "pods --subresource=exec"), ("get", "pods --subresource=log"),
                           ("create", "serviceaccounts --subresource=token"),
                           ("get", "configmaps"), ("create", "events"), ("create", "roles.rbac.authorization.k8s.io"),
                           ("create", "rolebindings.rbac.authorization.k8s.io"), ("impersonate", "serviceaccounts")]:
        decisions[verb, resource] = False
    answers = {key: can_i(namespace, account, *key) for key in decisions}
    assert answers == decisions
    # Nothing of that elsewhere: another namespace, all namespaces, cluster-scoped resources.
    for (group, resource), verbs in SWEEP_NEEDS.items():
        for verb in verbs:
            assert not can_i(namespace, account, verb, api_resource(group, resource), "default"), (verb, resource)
            assert not can_i(namespace, account, verb, api_resource(group, resource), "*"), (verb, resource)
    assert not can_i(namespace, account, "get", "secrets/daskweak-tls", "default")
    # The node reader (rbac.readNodes, on by default): get and list Nodes, which have no namespace, and nothing
    # else cluster-wide: no other verb on Nodes, not the kubelet's API (nodes/proxy), no Secret anywhere.
    for verb in ALL_VERBS:
        assert can_i(namespace, account, verb, "nodes", "*") is (verb in NODE_READER_VERBS), verb
    for verb, resource in [("get", "nodes --subresource=proxy"), ("patch", "nodes --subresource=status"),
                           ("get", "secrets"), ("list", "secrets"), ("list", "namespaces")]:
        assert not can_i(namespace, account, verb, resource, "*"), (verb, resource)

    # The attack a Secret create allowed: a service-account-token Secret for another account, named as the TLS
    # Secret (which the Role may read, and which does not exist yet), filled with that account's token by the
    # token controller. Refused by the API server now, so no such Secret exists.
    token_secret = {"apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/service-account-token",
                    "metadata": {"name": "daskweak-tls", "namespace": namespace,
                                 "annotations": {"kubernetes.io/service-account.name": "default"}}}
    done = subprocess.run(["kubectl", "create", "-f", "-", f"--as=system:serviceaccount:{namespace}:{account}"],
                          input=json.dumps(token_secret), capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "forbidden" in done.stderr, done.stdout + done.stderr
    assert kubectl("get", "secrets", "-n", namespace, "--field-selector", "metadata.name=daskweak-tls",
                   "-o", "name") == ""


def test_the_service_account_runs_a_tls_sweep_with_the_charts_settings(kube, kube_namespace, cert_dir, tls_values,
                                                                      tmp_path):
    """`helm install` of the chart into a real API server; the benchmark, as its ServiceAccount and with its
    ConfigMap as environment, runs a TLS sweep (the client outside the cluster, so a LoadBalancer scheduler
    service) with only the chart's Secret as CERT_DIR, as a client in the cluster has it mounted."""
    namespace = kube_namespace
    values = {**tls_values, "settings": {"KUBE_SERVICE_TYPE": "LoadBalancer", "MAX_N_CORES": 1, "STEP_BY": 1,
                                         "CORES_PER_NODE": 1, "SUITES": "tasks", "OBS_PER_ITER": 1,
                                         "PROBLEM_SIZE_TASKS": 20, "TIMEOUT": 90}}
    # `helm install`, by Helm's own engine, into the real API; the kubeconfig explicit (see above)
    with helm.Config(namespace=namespace, kubeconfig_path=kube) as helm_config:
        release = helm_config.install(CHART, "daskweak", values, namespace=namespace, timeout=120)
        try:
            sweep_as_the_service_account(namespace, release, values, kube, cert_dir, tmp_path)
        finally:  # the node reader is cluster-scoped: deleting the namespace would leave it behind
            helm_config.uninstall("daskweak")
    assert kubectl("get", "serviceaccount,role,rolebinding,configmap", "-n", namespace, "-l",
                   "app.kubernetes.io/instance=daskweak", "-o", "name") == ""
    assert kubectl("get", "clusterrole,clusterrolebinding", "--field-selector",
                   f"metadata.name=daskweak-{namespace}-read-nodes", "-o", "name") == ""


def sweep_as_the_service_account(namespace, release, values, kube, cert_dir, tmp_path):
    assert release["status"] == "deployed"
    objects = [obj for obj in yaml.safe_load_all(release["manifest"]) if obj]
    kinds = by_kind(objects)
    config = service_account_kubeconfig(namespace, kinds["ServiceAccount"]["metadata"]["name"], tmp_path / "sa")

    def can(verb, resource):
        return kubectl("auth", "can-i", verb, resource, "-n", namespace, kubeconfig=config, check=False) == "yes"

    assert can("create", "daskclusters.kubernetes.dask.org") and can("delete", "daskworkergroups.kubernetes.dask.org")
    assert can("list", "pods") and can("get", "services") and can("get", "secrets/daskweak-tls")
    assert not can("list", "secrets") and not can("get", "secrets/other") and not can("delete", "pods")
    assert kubectl("auth", "can-i", "list", "pods", "-n", "default", kubeconfig=config, check=False) == "no"

    # The client's CERT_DIR as the CronJob and Airflow task pods have it: the Secret's three keys as the API gives
    # them to the ServiceAccount, mode 0440, on a read-only file system; no CA key anywhere.
    _, _, volume, _ = cronjob_tls_volume(by_kind(render({**CRON, **values})))
    secret = json.loads(kubectl("get", "secret", volume["secret"]["secretName"], "-o", "json", kubeconfig=config))
    assert secret["type"] == "kubernetes.io/tls" and "ca.key" not in secret["data"]
    mounted = tmp_path / "mounted-secret"
    mounted.mkdir()
    for item in volume["secret"]["items"]:
        (mounted / item["path"]).write_bytes(base64.b64decode(secret["data"][item["key"]]))
        (mounted / item["path"]).chmod(volume["secret"]["defaultMode"])
    assert sorted(path.name for path in mounted.iterdir()) == ["ca.crt", "tls.crt", "tls.key"]
    env = {key: value for key, value in os.environ.items() if key.lower() not in Settings.model_fields}
    env |= kinds["ConfigMap"]["data"] | {"KUBECONFIG": str(config), "CERT_DIR": str(mounted),
                                         "RES_DIR": str(tmp_path / "results")}
    mounted.chmod(0o555)
    try:
        before = snapshot(mounted)
        done = subprocess.run(read_only_at(mounted, [sys.executable, "-m", "daskweak", "run"]), env=env,
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert snapshot(mounted) == before
    finally:
        mounted.chmod(0o755)
    assert (tmp_path / "results" / "daskweak.sqlite").is_file()
    # The run's hardware class as this account made it: the node reader let it list the Nodes.
    store = ResultStore(f"sqlite:///{tmp_path / 'results' / 'daskweak.sqlite'}")
    [hardware] = list(store.runs()["hardware"])
    store.close()
    assert hardware["nodes"] == node_types_as_the_admin_sees_them() and "nodes_unknown" not in hardware

    # `daskweak k8s-secret` from the CERT_DIR with the CA key, outside the cluster: refused as the ServiceAccount,
    # which may only read the Secret, saying what it takes; an admin's credentials (KUBECONFIG) renew it.
    admin_certs = tmp_path / "admin-certs"
    admin_certs.mkdir()
    for name in ("ca.crt", "ca.key"):
        shutil.copy(cert_dir / name, admin_certs / name)
    stored = kubectl("get", "secret", volume["secret"]["secretName"], "-n", namespace, "-o", "json")
    done = subprocess.run([sys.executable, "-m", "daskweak", "k8s-secret"], env=env | {"CERT_DIR": str(admin_certs)},
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "the benchmark's ServiceAccount only reads it" in re.sub(r"\s+", " ", done.stdout + done.stderr)
    assert kubectl("get", "secret", volume["secret"]["secretName"], "-n", namespace, "-o", "json") == stored
    done = subprocess.run([sys.executable, "-m", "daskweak", "k8s-secret"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=env | {"CERT_DIR": str(admin_certs), "KUBECONFIG": kube})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    patched = json.loads(kubectl("get", "secret", volume["secret"]["secretName"], "-n", namespace, "-o", "json"))
    assert sorted(patched["data"]) == ["ca.crt", "tls.crt", "tls.key"]
    assert base64.b64decode(patched["data"]["ca.crt"]) == (cert_dir / "ca.crt").read_bytes()
    assert patched["data"]["tls.crt"] != json.loads(stored)["data"]["tls.crt"]  # the admin-side certificate
