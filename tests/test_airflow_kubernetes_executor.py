"""The DAG under Airflow's KubernetesExecutor: every task is a pod on the API server of KUBECONFIG.

The scheduler (cncf-kubernetes provider) creates one pod per task instance from a pod template and watches
it; the pod runs the Task SDK's `execute_workload` against the api-server. Under k8s-local the pod is a
local process of this project's venv (no image is run), which is what makes the test possible here.
Results go to PostgreSQL through an Airflow Connection (RESULTS_CONN_ID), as the chart's example values
have it: a SQLite file inside a task pod is refused by `validate` (each pod would write its own).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from daskweak.store import ResultStore
from tests.airflow_harness import Services
from tests.conftest import kubectl, wait_until

DAG = "dask_weak_scaling"
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kubernetes_executor(kube, postgres_url, tmp_path_factory):
    base = tmp_path_factory.mktemp("airflow-k8s-executor")
    namespace = f"dw-exec-{base.name[-6:].lower().replace('_', '-')}"
    kubectl("create", "namespace", namespace)
    template = base / "pod-template.yaml"
    services = Services(base, "KubernetesExecutor", extra_env={
        "KUBECONFIG": kube,
        "AIRFLOW__KUBERNETES_EXECUTOR__NAMESPACE": namespace,
        "AIRFLOW__KUBERNETES_EXECUTOR__POD_TEMPLATE_FILE": str(template),
        "AIRFLOW__KUBERNETES_EXECUTOR__IN_CLUSTER": "False",
        "AIRFLOW__KUBERNETES_EXECUTOR__CONFIG_FILE": kube,
        "AIRFLOW__KUBERNETES_EXECUTOR__DELETE_WORKER_PODS": "False",  # kept, to be counted; the namespace goes
        # the results database of every task pod (and of the UI page), as the example values' Connection
        "AIRFLOW_CONN_DW_RESULTS": postgres_url.replace("postgresql+psycopg://", "postgresql://"),
    })
    # The task pods get what a worker image and the chart's ConfigMap would give them: Airflow's and
    # daskweak's settings as environment.
    env = {name: value for name, value in services.home.env.items()
           if name.startswith(("AIRFLOW", "DASKWEAK")) and name != "AIRFLOW__CORE__EXECUTOR"}
    env |= {"AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"), "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            # for backend=kubernetes: the task pods reach the API through this Connection only
            "AIRFLOW_CONN_BENCH_K8S": json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": kube}})}
    with services.home.env_file.open("a") as settings:
        settings.write(f"KUBE_NAMESPACE={namespace}\nCONTAINER_IMAGE=registry.example.org/daskweak:0.1.0\n"
                       "KUBE_SERVICE_TYPE=LoadBalancer\nKUBE_CONN_ID=bench_k8s\nRESULTS_CONN_ID=dw_results\n")
    template.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "placeholder"},
        "spec": {"restartPolicy": "Never", "containers": [{
            "name": "base", "image": "registry.example.org/daskweak-airflow:0.1.0",
            "env": [{"name": name, "value": value} for name, value in sorted(env.items())]}]},
    }))
    with services:
        yield services, namespace, postgres_url
    kubectl("delete", "namespace", namespace, "--wait=false")


def test_the_dag_runs_with_one_pod_per_task(kubernetes_executor):
    services, namespace, results_url = kubernetes_executor
    run_id, state = services.trigger(DAG, {"max_cores": 2, "obs_per_iter": 1, "suites": ["tasks"]})
    log = (services.base / "scheduler.log").read_text()
    assert state == "success", log[-3000:]
    steps = services.home.task_instances(run_id, "run_step")
    assert [(t[1], t[2]) for t in steps] == [("cores=1", "success"), ("cores=2", "success")]
    store = ResultStore(results_url)
    assert list(store.steps(run_id)["cores_actual"]) == [1, 2]
    store.close()
    def pods() -> list[dict]:
        return json.loads(kubectl("get", "pods", "-n", namespace, "-o", "json"))["items"]

    tasks = sorted(pod["metadata"]["labels"].get("task_id", "?") for pod in pods())
    assert tasks == sorted(["validate", "plan", "run_step", "run_step", "collect", "finish", "report"]), tasks
    # The last task reports success before its pod's process has exited: the node says so a little later.
    assert wait_until(lambda: {pod["status"]["phase"] for pod in pods()} == {"Succeeded"}, timeout=120), \
        [(pod["metadata"]["name"], pod["status"].get("phase")) for pod in pods()]


def test_task_pods_run_the_sweep_on_dask_clusters_in_the_same_cluster(kubernetes_executor):
    """Airflow on Kubernetes as deployed: task pods create the steps' DaskClusters, with the credentials of
    an Airflow Connection (the pod template sets no KUBECONFIG; k8s-local gives pods no service-account token)."""
    services, namespace, results_url = kubernetes_executor
    run_id, state = services.trigger(DAG, {"backend": "kubernetes", "max_cores": 2, "obs_per_iter": 1,
                                           "suites": ["tasks"]})
    assert state == "success", (services.base / "scheduler.log").read_text()[-3000:]
    store = ResultStore(results_url)
    steps = store.steps(run_id)
    store.close()
    assert list(steps["workers_actual"]) == [1, 2]
    assert all(details["namespace"] == namespace for details in steps["details"])
    assert kubectl("get", "daskclusters", "-n", namespace, "-o", "name") == ""
