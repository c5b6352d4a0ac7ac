"""Every pod daskweak makes meets the Pod Security Standards' "restricted" profile (tests/pod_security.py: its rules
as data): the scheduler and worker pods of the backend's manifests, and the pods of the Helm chart. The checker is
shown to find each rule's violation and name its field; the real API server accepts the pods (server-side dry run).

k8s-local's API server is Kubernetes 1.20, older than the Pod Security admission controller (1.23), so no API
server here enforces the profile: the rules are checked field by field instead, and the dry run shows the API
accepts these pods as they are."""

from __future__ import annotations

import copy
import json
import subprocess

import pytest

from daskweak.backends.kubernetes.manifests import manifests
from daskweak.plan import make_plan
from daskweak.settings import load_settings
from tests.conftest import kubectl
from tests.pod_security import pod, violations
from tests.test_manifests import SITE, operator_pod_templates, settings_for

TLS = {"use_ssl": True, "cert_dir": "/tmp/certs", "secret_cert_name": "dask-tls"}
VARIANTS = {
    "tcp": {},
    "tls": TLS,
    "pack": {"kube_worker_placement": "pack"},
    "site-settings": SITE,
    "scheduler-host-tls-threads": {**TLS, "scheduler_host": "node-2", "worker_mode": "threads"},
    "one-pod": {"cores_per_node": None, "max_n_cores": 2, "step_by": 1},
}


def backend_pods(**overrides) -> list[dict]:
    """The Pods the operator makes of every step's manifests: scheduler, full-node and smaller-last-node workers."""
    settings = settings_for(**overrides)
    found = []
    for step in make_plan(settings):
        templates = operator_pod_templates(manifests(settings, step, "manual__2026-11-30T08:00:00+00:00"))
        found += [pod(t["spec"], t["metadata"]) for t in templates["scheduler"] + templates["worker"]]
    return found


@pytest.mark.parametrize("overrides", VARIANTS.values(), ids=VARIANTS.keys())
def test_every_scheduler_and_worker_pod_meets_the_restricted_profile(overrides):
    pods = backend_pods(**overrides)
    assert {p["metadata"]["labels"]["dask.org/component"] for p in pods} == {"scheduler", "worker"}
    for checked in pods:
        assert violations(checked) == [], checked["metadata"]["name"]
        context = checked["spec"]["securityContext"]
        assert (context["runAsUser"], context["runAsGroup"], context["fsGroup"]) == (10001, 10001, 10001)


def test_a_smaller_last_node_has_its_own_worker_group_and_it_meets_the_profile_too():
    settings = settings_for(**TLS)
    resources = manifests(settings, make_plan(settings)[-1], "r")
    assert [r["kind"] for r in resources] == ["DaskCluster", "DaskWorkerGroup"]
    assert violations(pod(resources[1]["spec"]["worker"]["spec"])) == []


def chart_pods(values) -> list[dict]:
    """The pods the chart's workloads would create (the CronJob's Job template), as Pods."""
    from tests.test_chart import render

    found = []
    for obj in render(values):
        if obj["kind"] == "CronJob":
            template = obj["spec"]["jobTemplate"]["spec"]["template"]
            found.append(pod(template["spec"], {"name": "cron", **template.get("metadata", {})}))
        assert obj["kind"] not in ("Pod", "Deployment", "StatefulSet", "DaemonSet", "Job"), obj["kind"]
    return found


CHART_VALUES = {
    "cronjob-postgresql": {"cronjob": {"enabled": True}, "results": {"existingSecret": "results-db"}},
    "cronjob-pvc-tls": {"cronjob": {"enabled": True}, "results": {"persistentVolumeClaim": "daskweak-results"},
                        "tls": {"enabled": True, "create": False}},
    "cronjob-site": {"cronjob": {"enabled": True, "nodeSelector": {"pool": "clients"},
                                 "tolerations": [{"key": "dedicated", "operator": "Exists"}]},
                     "results": {"existingSecret": "results-db"}, "imagePullSecrets": [{"name": "registry"}]},
}


@pytest.mark.parametrize("values", CHART_VALUES.values(), ids=CHART_VALUES.keys())
def test_every_pod_the_chart_renders_meets_the_restricted_profile(values):
    [cron] = chart_pods(values)
    assert violations(cron) == []


def chart_dask_pods(values) -> list[dict]:
    """The scheduler and worker pods of every step of the sweep the chart configures: its ConfigMap, read as the
    CronJob's (or an Airflow task's) `envFrom` gives it to `daskweak run`, made into manifests and the operator's
    pods."""
    from tests.test_chart import by_kind, render

    data = by_kind(render(values))["ConfigMap"]["data"]
    settings = load_settings(**{key.lower(): value for key, value in data.items()})
    found = []
    for step in make_plan(settings):
        templates = operator_pod_templates(manifests(settings, step, "scheduled__2026-11-30T02:00:00+00:00"))
        found += [pod(t["spec"], t["metadata"]) for t in templates["scheduler"] + templates["worker"]]
    return found


DASK_POD_VALUES = {
    "defaults": {},
    "tls": {"tls": {"enabled": True, "create": False}},
    "site": {"imagePullSecrets": [{"name": "registry"}], "settings": {"SCHEDULER_HOST": "node-2"}, "daskPods": {
        "placement": "pack", "nodeSelector": {"pool": "dask"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "dask", "effect": "NoSchedule"}],
        "priorityClassName": "benchmark", "serviceAccountName": "dask-pods", "labels": {"team": "hpc"},
        "annotations": {"example.org/note": "nightly"}}},
}


@pytest.mark.parametrize("values", DASK_POD_VALUES.values(), ids=DASK_POD_VALUES.keys())
def test_every_dask_pod_the_charts_settings_make_meets_the_restricted_profile(values):
    pods = chart_dask_pods(values)
    assert {p["metadata"]["labels"]["dask.org/component"] for p in pods} == {"scheduler", "worker"}
    assert len(pods) >= 5  # the chart's sweep (MAX_N_CORES 4, nodes of 2): 1, 2 and 2 + 2 cores, a scheduler each
    for checked in pods:
        assert violations(checked) == [], checked["metadata"]["name"]
        if "daskPods" in values:  # the site's values did reach these pods
            assert checked["spec"]["serviceAccountName"] == "dask-pods"
            assert checked["metadata"]["labels"]["team"] == "hpc"
        if "tls" in values:
            assert checked["spec"]["volumes"][0]["secret"]["defaultMode"] == 0o440


def compliant() -> dict:
    settings = settings_for(**TLS)
    templates = operator_pod_templates(manifests(settings, make_plan(settings)[-1], "r"))
    return pod(templates["worker"][0]["spec"], templates["worker"][0]["metadata"])


def container_security(p):
    return p["spec"]["containers"][0].setdefault("securityContext", {})


# (what is changed, the field the checker must name, the control)
BREAKS = [
    (lambda p: p["spec"].update(hostNetwork=True), "spec.hostNetwork", "Host Namespaces"),
    (lambda p: p["spec"].update(hostPID=True), "spec.hostPID", "Host Namespaces"),
    (lambda p: p["spec"].update(hostIPC=True), "spec.hostIPC", "Host Namespaces"),
    (lambda p: container_security(p).update(privileged=True), "spec.containers[0].securityContext.privileged",
     "Privileged Containers"),
    (lambda p: container_security(p)["capabilities"].update(add=["SYS_ADMIN"]),
     "spec.containers[0].securityContext.capabilities.add[0]", "Capabilities"),
    (lambda p: container_security(p)["capabilities"].update(add=["CHOWN"]),  # baseline allows it, restricted not
     "spec.containers[0].securityContext.capabilities.add[0]", "restricted, Capabilities"),
    (lambda p: container_security(p)["capabilities"].update(drop=["NET_RAW"]),
     "spec.containers[0].securityContext.capabilities.drop", "Capabilities"),
    (lambda p: p["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}}),
     "spec.volumes[1].hostPath", "HostPath Volumes"),
    (lambda p: p["spec"]["volumes"].append({"name": "nfs", "nfs": {"server": "nas", "path": "/"}}),
     "spec.volumes[1]", "Volume Types"),
    (lambda p: p["spec"]["containers"][0]["ports"][0].update(hostPort=8788),
     "spec.containers[0].ports[0].hostPort", "Host Ports"),
    (lambda p: container_security(p).update(appArmorProfile={"type": "Unconfined"}),
     "spec.containers[0].securityContext.appArmorProfile.type", "AppArmor"),
    (lambda p: p["metadata"].setdefault("annotations", {}).update(
        {"container.apparmor.security.beta.kubernetes.io/worker": "unconfined"}),
     "metadata.annotations[container.apparmor.security.beta.kubernetes.io/worker]", "AppArmor"),
    (lambda p: p["spec"]["securityContext"].update(seLinuxOptions={"type": "spc_t"}),
     "spec.securityContext.seLinuxOptions.type", "SELinux"),
    (lambda p: container_security(p).update(seLinuxOptions={"user": "system_u"}),
     "spec.containers[0].securityContext.seLinuxOptions.user", "SELinux"),
    (lambda p: container_security(p).update(procMount="Unmasked"),
     "spec.containers[0].securityContext.procMount", "/proc Mount Type"),
    (lambda p: p["spec"]["securityContext"].update(sysctls=[{"name": "kernel.msgmax", "value": "1"}]),
     "spec.securityContext.sysctls[0].name", "Sysctls"),
    (lambda p: container_security(p).update(allowPrivilegeEscalation=True),
     "spec.containers[0].securityContext.allowPrivilegeEscalation", "Privilege Escalation"),
    (lambda p: container_security(p).pop("allowPrivilegeEscalation"),
     "spec.containers[0].securityContext.allowPrivilegeEscalation", "Privilege Escalation"),
    (lambda p: (container_security(p).pop("runAsNonRoot"), p["spec"]["securityContext"].pop("runAsNonRoot")),
     "spec.containers[0].securityContext.runAsNonRoot", "Running as Non-root"),
    (lambda p: p["spec"]["securityContext"].update(runAsNonRoot=False),
     "spec.securityContext.runAsNonRoot", "Running as Non-root"),
    (lambda p: p["spec"]["securityContext"].update(runAsUser=0),
     "spec.securityContext.runAsUser", "Running as Non-root user"),
    (lambda p: container_security(p).update(runAsUser=0),
     "spec.containers[0].securityContext.runAsUser", "Running as Non-root user"),
    (lambda p: p["spec"]["securityContext"].pop("seccompProfile"),
     "spec.containers[0].securityContext.seccompProfile.type", "Seccomp"),
    (lambda p: p["spec"]["securityContext"].update(seccompProfile={"type": "Unconfined"}),
     "spec.securityContext.seccompProfile.type", "Seccomp"),
    (lambda p: p["spec"].setdefault("initContainers", []).append({"name": "init", "image": "busybox"}),
     "spec.initContainers[0].securityContext.allowPrivilegeEscalation", "Privilege Escalation"),
    (lambda p: p["spec"]["securityContext"].update(windowsOptions={"hostProcess": True}),
     "spec.securityContext.windowsOptions.hostProcess", "HostProcess"),
]


@pytest.mark.parametrize(("breaking", "field", "control"), BREAKS,
                         ids=[f"{i}-{field}" for i, (_, field, _) in enumerate(BREAKS)])
def test_the_checker_names_the_field_that_breaks_the_profile(breaking, field, control):
    checked = compliant()
    assert violations(checked) == []
    broken = copy.deepcopy(checked)
    breaking(broken)
    found = violations(broken)
    assert any(line.startswith(f"{field}: ") and control in line for line in found), found


def test_the_baseline_profile_alone_allows_what_only_restricted_forbids():
    checked = compliant()
    container_security(checked).update(allowPrivilegeEscalation=True, capabilities={"add": ["CHOWN"]})
    checked["spec"]["securityContext"] = {}
    assert violations(checked, "baseline") == []
    assert len(violations(checked, "restricted")) >= 4


# --- on a real API server --------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides", [VARIANTS["tls"], VARIANTS["site-settings"]], ids=["tls", "site-settings"])
def test_the_api_server_accepts_every_pod_of_the_manifests(kube_namespace, overrides):
    """`kubectl apply --dry-run=server`: the API server's validation and admission of each Pod, as the operator's
    ReplicaSets would create it; what comes back (defaults filled in) still meets the profile. k8s-local is
    Kubernetes 1.20, without Pod Security admission (see the module's doc); its Priority admission does run: a
    PriorityClass that does not exist gets the pods refused by the same dry run."""
    overrides = dict(overrides)
    if "kube_priority_class" in overrides:  # cluster-scoped: a name of this test's own
        overrides["kube_priority_class"] = f"{overrides['kube_priority_class']}-{kube_namespace}"
        priority = {"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "value": 1000,
                    "metadata": {"name": overrides["kube_priority_class"]}}
        kubectl("apply", "-f", "-", stdin=json.dumps(priority))
    try:
        pods = manifest_pods(kube_namespace, overrides)
        accepted = dry_run(pods)
        assert accepted.returncode == 0, accepted.stderr
        back = json.loads(accepted.stdout)["items"]
        assert [p["metadata"]["name"] for p in back] == [p["metadata"]["name"] for p in pods]
        for sent, stored in zip(pods, back, strict=True):
            assert stored["spec"]["securityContext"] == sent["spec"]["securityContext"]
            assert stored["spec"]["containers"][0]["securityContext"] == \
                sent["spec"]["containers"][0]["securityContext"]
            assert violations(pod(stored["spec"], stored["metadata"])) == []
            if "kube_priority_class" in overrides:
                assert stored["spec"]["priority"] == 1000  # the Priority admission resolved the class
        assert kubectl("get", "pods", "-n", kube_namespace, "-o", "name") == ""  # a dry run: nothing created
        if "kube_priority_class" in overrides:
            kubectl("delete", "priorityclass", overrides["kube_priority_class"])
            refused = dry_run(pods)
            assert refused.returncode != 0 and "no PriorityClass with name" in refused.stderr, refused.stderr
    finally:
        if "kube_priority_class" in overrides:  # the namespace's deletion would leave it
            kubectl("delete", "priorityclass", overrides["kube_priority_class"], "--ignore-not-found")


def manifest_pods(kube_namespace: str, overrides: dict) -> list[dict]:
    """The Pods of the sweep's largest step as the operator's Deployments would create them, in the namespace."""
    settings = settings_for(kube_namespace=kube_namespace, **overrides)
    pods = []
    for templates in operator_pod_templates(manifests(settings, make_plan(settings)[-1], "r")).values():
        for template in templates:
            metadata = {**template["metadata"], "name": f"{template['metadata']['name']}-5d4f8b7c9f-x2x7q",
                        "namespace": kube_namespace}
            pods.append(pod(template["spec"], metadata))
    assert len(pods) == 4  # the scheduler, two full-node workers, the smaller last node's worker
    return pods


def dry_run(pods: list[dict]) -> subprocess.CompletedProcess:
    listed = {"apiVersion": "v1", "kind": "List", "items": pods}
    return subprocess.run(["kubectl", "apply", "--dry-run=server", "-o", "json", "-f", "-"],
                          input=json.dumps(listed), capture_output=True, text=True, timeout=120)
