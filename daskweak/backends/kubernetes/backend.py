"""Kubernetes through the dask-kubernetes operator: a DaskCluster per step, created and deleted over the API.

Not through `KubeCluster`: dask-kubernetes 2026.3 builds `tcp://` addresses and retries them forever
against a TLS-only scheduler. One path serves both modes instead: the manifests (`manifests` beside this module) are
created with kr8s, the scheduler service's address is read back (LoadBalancer ingress, node IP and node port,
or the in-cluster DNS name for ClusterIP), and the client connects with a time limit. Credentials are
KUBECONFIG, then ~/.kube/config, then the pod's service account (kr8s' own order); under Airflow the DAG
points KUBECONFIG at the Connection KUBE_CONN_ID first.
"""

from __future__ import annotations

import base64
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import kr8s
from distributed import Client
from kr8s.objects import Pod, Secret, Service, new_class

from daskweak.backends.kubernetes import admission, incluster, manifests, ownership, placement
from daskweak.backends.polling import poll_until
from daskweak.errors import DaskweakError, ScaleTimeout
from daskweak.plan import Step
from daskweak.settings import Settings
from daskweak.tls import security

DaskCluster = new_class("DaskCluster", "kubernetes.dask.org/v1", asyncio=False, plural="daskclusters")
DaskWorkerGroup = new_class("DaskWorkerGroup", "kubernetes.dask.org/v1", asyncio=False, plural="daskworkergroups")
DELETE_WAIT = 120.0


class KubernetesError(DaskweakError):
    """The API refused a request, or a prerequisite (the TLS Secret) is missing or wrong."""


@dataclass
class KubeDeployment:
    """What a step created: its objects (deleted by `stop`), and where its scheduler answers."""

    api: Any
    name: str
    namespace: str
    deadline: float
    poll_interval: float  # POLL_INTERVAL, for the waits on the scheduler service
    objects: list[Any] = field(default_factory=list)
    address: str | None = None
    image: str | None = None
    created: str | None = None  # the DaskCluster's creationTimestamp: events before it are an earlier attempt's


def api() -> Any:
    try:
        return kr8s.api()
    except Exception as exc:  # kr8s raises plain exceptions when no credentials are found
        raise KubernetesError(
            f"no Kubernetes credentials: set KUBECONFIG, or run in a pod with a service account ({exc})"
        ) from exc


def preflight(settings: Settings) -> None:
    """What the client's host decides before anything is created: a ClusterIP service needs a client inside."""
    incluster.check_service_reachable(settings)


def start(settings: Settings, step: Step, run_id: str) -> KubeDeployment:
    """Create the step's DaskCluster and wait for the scheduler's address; delete everything on failure.

    The DaskCluster is owned by the client's pod when the client runs in one (`ownership`), and a smaller last
    node's DaskWorkerGroup by the DaskCluster, so deleting the one deletes the rest. DaskClusters whose client
    pod has ended are deleted first."""
    preflight(settings)
    deadline = time.monotonic() + settings.timeout
    client = api()
    if settings.use_ssl:
        check_tls_secret(client, settings)
    ownership.delete_orphans(client, settings.kube_namespace, DaskCluster)
    specs = manifests.manifests(settings, step, run_id, settings.kube_service_type)
    owner = ownership.client_owner(client, settings.kube_namespace)
    if owner:
        specs[0]["metadata"]["ownerReferences"] = [owner]
    deployment = KubeDeployment(client, specs[0]["metadata"]["name"], settings.kube_namespace, deadline,
                                settings.poll_interval, image=settings.container_image)
    try:
        for spec in specs:
            kind = DaskCluster if spec["kind"] == "DaskCluster" else DaskWorkerGroup
            if kind is DaskWorkerGroup and deployment.objects:
                cluster = deployment.objects[0].raw["metadata"]
                spec["metadata"]["ownerReferences"] = [{"apiVersion": "kubernetes.dask.org/v1", "kind": "DaskCluster",
                                                        "name": cluster["name"], "uid": cluster["uid"]}]
            obj = kind(spec, api=client)
            if obj.exists():  # left by a killed attempt of this very step: replace it
                _delete_and_wait([obj], deadline)
            deployment.objects.append(obj)  # before create: a signal during the call must not hide it from stop
            obj.create()
            if kind is DaskCluster:
                deployment.created = obj.raw["metadata"].get("creationTimestamp")
        deployment.address = _wait_for_address(deployment, settings)
    except BaseException:
        stop(deployment)
        raise
    return deployment


def connect(deployment: KubeDeployment, settings: Settings) -> Client:
    """Connect within what is left of TIMEOUT; on expiry report what the scheduler pod is doing."""
    remaining = max(deployment.deadline - time.monotonic(), 0.1)
    try:
        return Client(deployment.address, timeout=remaining, **client_options(settings))
    except (OSError, TimeoutError) as exc:
        raise ScaleTimeout(
            f"no scheduler at {deployment.address} within TIMEOUT={settings.timeout:g}s: "
            f"{_scheduler_state(deployment)} ({exc})"
        ) from None


def client_options(settings: Settings) -> dict[str, Any]:
    return {"security": security(settings.cert_dir)} if settings.use_ssl and settings.cert_dir else {}


def not_ready(deployment: KubeDeployment) -> str:
    """Why planned workers are missing: the state of every worker pod that is not ready, and refused pods."""
    pods = Pod.list(namespace=deployment.namespace, api=deployment.api,
                    label_selector={"dask.org/cluster-name": deployment.name, "dask.org/component": "worker"})
    states = [f"{pod.name}: {_pod_state(pod)}" for pod in pods if not pod.ready()]
    states += admission.refusals(deployment.api, deployment.namespace, deployment.name, deployment.created)
    return "; ".join(states) or "all worker pods are ready"


def stalled(deployment: KubeDeployment) -> None:
    """Asked every POLL_INTERVAL while the step waits for its workers: a worker pod the API refused (a quota
    the scheduler pod still fitted in) fails the step now, with the API's message."""
    admission.raise_if_refused(deployment.api, deployment.namespace, deployment.name, deployment.created)


def describe(deployment: KubeDeployment) -> dict[str, Any]:
    """The step's record: the DaskCluster, the scheduler's address, and its pods with their nodes and start
    times and the image's size (`placement`)."""
    return {"daskcluster": deployment.name, "namespace": deployment.namespace, "scheduler": deployment.address,
            **placement.step_pods(deployment.api, deployment.namespace, deployment.name, deployment.image)}


def stop(deployment: KubeDeployment) -> None:
    """Delete the DaskCluster (its pods, services and worker groups go with it) and wait until it is gone."""
    _delete_and_wait(list(reversed(deployment.objects)), time.monotonic() + DELETE_WAIT)


def delete_run(settings: Settings, run_id: str) -> list[str]:
    """Delete whatever DaskClusters of `run_id` are left (a step process killed with SIGKILL)."""
    client = api()
    found = list(DaskCluster.list(namespace=settings.kube_namespace, api=client,
                                  label_selector={"daskweak/run": manifests.run_label(run_id)}))
    _delete_and_wait(found, time.monotonic() + DELETE_WAIT)
    return [obj.name for obj in found]


def check_tls_secret(client: Any, settings: Settings) -> None:
    """The Secret must exist and carry the CA of CERT_DIR, or no client certificate would be trusted."""
    try:
        secret = Secret.get(settings.secret_cert_name, namespace=settings.kube_namespace, api=client)
    except kr8s.NotFoundError:
        raise KubernetesError(
            f"SECRET_CERT_NAME={settings.secret_cert_name!r}: no such Secret in namespace "
            f"{settings.kube_namespace!r}; create it with `daskweak k8s-secret` (or the Helm chart's tls values)"
        ) from None
    ca = security(settings.cert_dir).tls_ca_file if settings.cert_dir else None
    stored = base64.b64decode(secret.raw.get("data", {}).get("ca.crt", ""))
    if ca is None or stored.strip() != Path(ca).read_bytes().strip():
        raise KubernetesError(
            f"SECRET_CERT_NAME={settings.secret_cert_name!r} holds a different CA than CERT_DIR "
            f"({settings.cert_dir}); recreate it with `daskweak k8s-secret`"
        )


def _wait_for_address(deployment: KubeDeployment, settings: Settings) -> str:
    port = manifests.SCHEDULER_PORT
    protocol = "tls" if settings.use_ssl else "tcp"
    service_name = f"{deployment.name}-scheduler"
    host: tuple[str, int] | None = None

    def reachable() -> bool:
        """Polled: a refused pod ends the wait at once; ClusterIP waits for the scheduler pod to be ready."""
        nonlocal host
        stalled(deployment)
        if settings.kube_service_type == "ClusterIP":
            pod = _scheduler_pod(deployment)
            if pod is not None and pod.ready():
                host = (f"{service_name}.{deployment.namespace}.svc.cluster.local", port)
        else:
            host = _reachable_host(deployment, settings, service_name)
        return host is not None

    if poll_until(reachable, interval=deployment.poll_interval, deadline=deployment.deadline) and host:
        return f"{protocol}://{host[0]}:{host[1]}"
    what = "had no ready pod" if settings.kube_service_type == "ClusterIP" else "had no address"
    raise ScaleTimeout(
        f"the scheduler service {service_name} ({settings.kube_service_type}) {what} within "
        f"TIMEOUT={settings.timeout:g}s: {_scheduler_state(deployment)}"
    )


def _reachable_host(deployment: KubeDeployment, settings: Settings, service_name: str) -> tuple[str, int] | None:
    try:
        service = Service.get(service_name, namespace=deployment.namespace, api=deployment.api)
    except kr8s.NotFoundError:
        return None  # the operator has not made it yet
    if settings.kube_service_type == "LoadBalancer":
        ingress = (service.raw.get("status", {}).get("loadBalancer", {}).get("ingress") or [{}])[0]
        host = ingress.get("ip") or ingress.get("hostname")
        return (host, manifests.SCHEDULER_PORT) if host else None
    node_port = next(p["nodePort"] for p in service.spec["ports"] if p["name"] == "tcp-comm")
    pod = _scheduler_pod(deployment)
    host_ip = pod and pod.raw.get("status", {}).get("hostIP")
    return (host_ip, node_port) if host_ip else None


def _scheduler_pod(deployment: KubeDeployment) -> Any:
    pods = list(Pod.list(namespace=deployment.namespace, api=deployment.api,
                         label_selector={"dask.org/cluster-name": deployment.name,
                                         "dask.org/component": "scheduler"}))
    return pods[0] if pods else None


def _scheduler_state(deployment: KubeDeployment) -> str:
    pod = _scheduler_pod(deployment)
    if pod:
        return f"scheduler pod {pod.name}: {_pod_state(pod)}"
    refused = admission.refusals(deployment.api, deployment.namespace, deployment.name, deployment.created)
    return "; ".join(refused) if refused else "no scheduler pod was created"


def _pod_state(pod: Any) -> str:
    """Phase, unmet conditions and container waiting/terminated reasons, as `kubectl describe` would say."""
    status = pod.raw.get("status", {})
    parts = [status.get("phase", "Unknown")]
    for condition in status.get("conditions", []):
        if condition.get("status") != "True" and condition.get("reason"):
            parts.append(f"{condition['type']}: {condition['reason']} {condition.get('message', '')}".strip())
    for container in status.get("containerStatuses", []):
        for key in ("waiting", "terminated"):
            state = container.get("state", {}).get(key) or container.get("lastState", {}).get(key)
            if state:
                parts.append(f"{key} {state.get('reason', '')}: {state.get('message', '')}".strip(": "))
                break
        if container.get("restartCount"):
            parts.append(f"restarts={container['restartCount']}")
    return ", ".join(parts)


def _delete_and_wait(objects: list[Any], deadline: float) -> None:
    """Delete in the foreground (pods and services first) and wait on kr8s' watch until each is gone."""
    for obj in objects:
        with suppress(kr8s.NotFoundError):
            obj.delete(propagation_policy="Foreground")
    for obj in objects:
        with suppress(TimeoutError):
            obj.wait("delete", timeout=max(deadline - time.monotonic(), 0.001))
