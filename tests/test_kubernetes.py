"""The kubernetes backend against a real API server with the Dask operator, taken from KUBECONFIG.

CI gets one from ../shared/k8s-local/up (see .ci/run); without one these tests skip, saying so.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import threading
from pathlib import Path

import pytest

from daskweak.backends.kubernetes import manifests
from daskweak.plan import make_plan
from daskweak.runner import run_sweep
from daskweak.store import ResultStore
from tests.airflow_harness import signal_step_process
from tests.conftest import assert_tls_only, create_secret, daskclusters, kubectl, wait_until


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_a_sweep_runs_on_one_then_two_worker_pods_and_leaves_nothing(kube_settings, tls_settings, tls):
    settings = tls_settings() if tls else kube_settings()
    if tls:
        create_secret(settings)
    result = run_sweep(settings)
    assert result.status == "ok", [s["error"] for s in result.summaries]
    store = ResultStore(settings.database_url)
    steps = store.steps(result.run_id)
    assert list(steps["cores_actual"]) == [1, 2] and list(steps["workers_actual"]) == [1, 2]
    names = [details["daskcluster"] for details in steps["details"]]
    assert len(set(names)) == 2 and all(len(n) <= 63 for n in names)
    assert all(details["scheduler"].startswith("tls://" if tls else "tcp://") for details in steps["details"])
    assert len(store.observations(result.run_id)) == 2 * 4 * 2
    store.close()
    assert daskclusters(settings.kube_namespace) == []
    assert kubectl("get", "pods", "-n", settings.kube_namespace, "-o", "name") == ""


def test_tls_pods_refuse_a_plaintext_client_and_mount_the_secret(tls_settings):
    from daskweak.backends.base import open_cluster

    settings = tls_settings(max_n_cores=1)
    create_secret(settings)
    [step] = make_plan(settings)
    with open_cluster(settings, step, "tls-check") as deployment:
        assert_tls_only(deployment)
        (mounted,) = deployment.client.run(lambda: sorted(os.listdir("/etc/dask/tls"))).values()
        assert mounted == ["ca.crt", "tls.crt", "tls.key"]
    assert daskclusters(settings.kube_namespace) == []


def test_the_tls_secret_must_exist_and_match_cert_dir(tls_settings, tmp_path):
    settings = tls_settings()
    [summary, *_] = run_sweep(settings).summaries
    assert "SECRET_CERT_NAME='dw-tls': no such Secret" in summary["error"] and "k8s-secret" in summary["error"]
    create_secret(settings)
    other = tls_settings(cert_dir=str(tmp_path / "other-ca"))
    [summary, *_] = run_sweep(other).summaries
    assert "holds a different CA than CERT_DIR" in summary["error"]
    assert daskclusters(settings.kube_namespace) == []


def test_a_crashing_scheduler_is_reported_within_timeout(tls_settings):
    """A Secret whose key does not load: the scheduler exits at start, again and again."""
    settings = tls_settings(timeout=15, max_n_cores=1)
    create_secret(settings)
    broken = base64.b64encode(b"-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n").decode()
    kubectl("patch", "secret", "dw-tls", "-n", settings.kube_namespace, "-p", json.dumps({"data": {"tls.key": broken}}))
    [summary] = run_sweep(settings).summaries  # returns (pytest-timeout would catch a hang)
    assert summary["status"] == "failed" and "TIMEOUT=15s" in summary["error"]
    assert "scheduler pod" in summary["error"] and ("CrashLoopBackOff" in summary["error"] or
                                                    "terminated" in summary["error"]), summary["error"]
    assert daskclusters(settings.kube_namespace) == []


def test_a_scheduler_that_stays_pending_is_reported_within_timeout(kube_settings, monkeypatch):
    """Something else holds the scheduler's port on the node: the pod cannot start (k8s-local: PortInUse).

    The test holds a port the kernel picks as free and gives the scheduler that port, so a busy 8786 on the
    host cannot turn the test into a skip."""
    settings = kube_settings(timeout=10, max_n_cores=1)
    with socket.socket() as blocker:
        blocker.bind(("0.0.0.0", 0))
        blocker.listen()
        monkeypatch.setattr(manifests, "SCHEDULER_PORT", blocker.getsockname()[1])
        [summary] = run_sweep(settings).summaries
    assert summary["status"] == "failed" and "TIMEOUT=10s" in summary["error"]
    assert "Pending" in summary["error"], summary["error"]
    assert daskclusters(settings.kube_namespace) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_step_leaves_no_daskcluster(kube_settings, sig):
    """SIGTERM: the step deletes its cluster. SIGKILL: the end of the run (the DAG's finish task) does."""
    from daskweak import orchestration
    from daskweak.isolated import run_step_isolated

    settings = kube_settings(max_n_cores=1, obs_per_iter=200)
    [step] = make_plan(settings)
    overrides = {k: v for k, v in settings.model_dump(mode="json").items() if v is not None}
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            run_step_isolated({"env_file": None, "overrides": overrides, "step": step.as_dict(), "run_id": "killed"})
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    signal_step_process(1, settings.res_dir, sig, timeout=120)  # once it has measured something
    thread.join(120)
    assert "error" in outcome  # no summary: the step did not finish
    if sig == signal.SIGKILL:
        assert daskclusters(settings.kube_namespace) != []  # nobody could delete it …
        from daskweak.backends.kubernetes.backend import delete_run

        assert len(delete_run(settings, "killed")) == 1  # … until the run ends
        assert orchestration.kube_conn_id(None, overrides) == "kubernetes_default"
    assert wait_until(lambda: not daskclusters(settings.kube_namespace), 60, 0.5)


def test_both_dags_run_on_kubernetes_with_credentials_from_an_airflow_connection(kube, kube_namespace, tmp_path):
    """KUBECONFIG is unset for Airflow: the only way to the cluster is the Connection KUBE_CONN_ID."""
    import yaml

    from tests.airflow_harness import SMALL_ENV, AirflowHome

    env_file = tmp_path / "bench.env"
    env_file.write_text(SMALL_ENV + f"RES_DIR={tmp_path / 'results'}\nSUITES=tasks\nKUBE_NAMESPACE={kube_namespace}\n"
                        "CONTAINER_IMAGE=daskweak:test\nKUBE_SERVICE_TYPE=LoadBalancer\nKUBE_CONN_ID=bench_k8s\n")
    inline = yaml.safe_load(Path(kube).read_text())  # the Connection carries the kubeconfig itself
    connection = {"conn_type": "kubernetes", "extra": {"kube_config": inline}}
    airflow = AirflowHome(tmp_path / "home", env_file,
                          extra={"AIRFLOW_CONN_BENCH_K8S": json.dumps(connection), "HOME": str(tmp_path)})
    airflow.env.pop("KUBECONFIG", None)
    airflow.migrate()
    airflow.run("dags", "test", "dask_weak_scaling", "-c", '{"backend": "kubernetes", "max_cores": 2}', check=True)
    airflow.run("dags", "test", "dask_weak_scaling_nightly", env={"BACKEND": "kubernetes", "MAX_N_CORES": "1"},
                check=True)
    store = ResultStore(f"sqlite:///{tmp_path / 'results' / 'daskweak.sqlite'}")
    runs = store.runs()
    assert sorted(runs["backend"]) == ["kubernetes", "kubernetes"] and set(runs["status"]) == {"ok"}
    # the plan task, which records the hardware, also reached the cluster through the Connection
    assert all(record["nodes"] for record in runs["hardware"]), list(runs["hardware"])
    manual = airflow.latest_run_id("dask_weak_scaling")
    assert list(store.steps(manual)["workers_actual"]) == [1, 2]
    store.close()
    assert daskclusters(kube_namespace) == []
