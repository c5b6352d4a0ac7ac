"""daskweak on the multi-node development Slurm (slurm/dev-cluster/up --nodes 3): the driver on the login node,
workers on node1…node3 over eth0; both DAGs, and a slow node (issue 12)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from daskweak.store import ResultStore
from tests.conftest import wait_until
from tests.slurm_cluster import address, veth

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
LOGIN_ETH0 = address("login")


def write_env(work: Path, env: str) -> Path:
    """A settings file for a run on the login node: the cluster's account and partition, OUT_DIR and RES_DIR
    on the shared directory, a tiny tasks suite."""
    env_file = work / "bench.env"
    env_file.write_text(f"BACKEND=slurm\nACCOUNT=daskweak\nPARTITION=debug\nSUITES=tasks\nPROBLEM_SIZE_TASKS=20\n"
                        f"OBS_PER_ITER=1\nNET_INTERFACE=eth0\nOUT_DIR={work / 'out'}\nRES_DIR={work / 'results'}\n"
                        f"{env}")
    return env_file


def steps_of(work: Path):
    with ResultStore(f"sqlite:///{work / 'results' / 'daskweak.sqlite'}") as store:
        [run_id] = store.runs()["run_id"]
        return run_id, store.steps(run_id), store.observations(run_id)


# --- both DAGs on the login node ---


def login_airflow(cluster, work: Path, env: str):
    """An AIRFLOW_HOME on the shared directory whose `airflow` runs on the login node."""
    from tests.airflow_harness import SMALL_ENV, AirflowHome

    env_file = work / "bench.env"
    env_file.write_text(SMALL_ENV + f"RES_DIR={work / 'results'}\nOUT_DIR={work / 'out'}\nSUITES=tasks\n"
                        f"BACKEND=slurm\nACCOUNT=daskweak\nPARTITION=debug\nNET_INTERFACE=eth0\n{env}")
    airflow = AirflowHome(work / "home", env_file, extra={"SLURM_CONF": str(cluster.conf)})

    def run(*args: str, timeout: float = 900, env: dict[str, str] | None = None, check: bool = False):
        done = subprocess.run([*cluster.login_command, str(ROOT / "bin" / "airflow"), *args], cwd=work,
                              env=airflow.env | (env or {}), capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} on the login node failed:\n{done.stdout[-3000:]}\n"
                                 f"{done.stderr[-3000:]}")
        return done

    airflow.run = run
    airflow.run("db", "migrate", check=True)
    return airflow


@pytest.mark.parametrize("dag_id, conf", [
    ("dask_weak_scaling", '{"backend": "slurm", "max_cores": 3, "step_by": 3, "cores_per_node": 1}'),
    ("dask_weak_scaling_nightly", None),
])
def test_the_dag_runs_end_to_end_on_the_login_node_across_three_hosts(slurm_multinode, dag_id, conf):
    cluster = slurm_multinode
    work = cluster.scratch("dag")
    # the nightly DAG takes no params: its sizes come from the settings file
    airflow = login_airflow(cluster, work, "MAX_N_CORES=3\nSTEP_BY=3\nCORES_PER_NODE=1\nSLURM_EXCLUSIVE=True\n")
    airflow.run("dags", "test", dag_id, *(["-c", conf] if conf else []), check=True)
    run_id = airflow.latest_run_id(dag_id)
    assert [(t[1], t[2]) for t in airflow.task_instances(run_id, "run_step")] == [
        ("cores=1", "success"), ("cores=3", "success")]
    with ResultStore(f"sqlite:///{work / 'results' / 'daskweak.sqlite'}") as store:
        steps = store.steps(run_id)
        assert store.runs().set_index("run_id").loc[run_id, "backend"] == "slurm"
    assert list(steps["status"]) == ["ok", "ok"] and list(steps["cores_actual"]) == [1, 3]
    last = steps.iloc[-1]
    assert sorted(job["node"] for job in last["details"]["jobs"]) == ["node1", "node2", "node3"]
    assert last["details"]["scheduler"].startswith(f"tcp://{LOGIN_ETH0}:")
    assert wait_until(lambda: not cluster.jobs(), 30)


# --- faults of one node ---


def test_a_slow_node_behind_a_rate_limit_completes_the_sweep_and_the_step_records_it(slurm_multinode):
    """No netem in this kernel (no added latency or loss): node3's link is throttled with tbf instead (1 Mbit,
    a small queue). The sweep completes, node3 is recorded with the step, and no operation outlives
    OPERATION_TIMEOUT."""
    cluster = slurm_multinode
    work = cluster.scratch("slow")
    link = veth("node3")
    subprocess.run(["tc", "qdisc", "replace", "dev", link, "root", "tbf", "rate", "1mbit", "burst", "32kbit",
                    "latency", "400ms"], check=True)
    try:
        shown = subprocess.run(["tc", "qdisc", "show", "dev", link], capture_output=True, text=True).stdout
        assert "tbf" in shown, shown
        env_file = write_env(work, "MAX_N_CORES=3\nSTEP_BY=3\nCORES_PER_NODE=1\nSLURM_EXCLUSIVE=True\n"
                                   "OPERATION_TIMEOUT=120\nTIMEOUT=300\n")
        done = cluster.login(PYTHON, "-m", "daskweak", "--env-file", str(env_file), "run", cwd=work, check=False,
                             timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], check=False, capture_output=True)
    _, steps, rows = steps_of(work)
    assert list(steps["status"]) == ["ok", "ok"], list(steps["error"])
    last = steps.iloc[-1]
    assert "node3" in [job["node"] for job in last["details"]["jobs"]]
    assert len(rows) and (rows["status"] == "ok").all() and (rows["duration"] < 120).all()
    assert wait_until(lambda: not cluster.jobs(), 30)
