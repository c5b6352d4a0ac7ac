"""The Slurm backend against the real single-node development Slurm (slurm/dev-cluster/up)."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from daskweak.plan import make_plan
from daskweak.runner import QuietProgress, run_step, run_sweep
from daskweak.store import ResultStore
from tests.conftest import assert_tls_only, need, wait_until

ROOT = Path(__file__).resolve().parents[1]


def start_slurm(*args: str) -> str:
    if not shutil.which("sbatch") and os.geteuid() != 0:
        need("Slurm (Debian's slurm-wlm and munge) is not installed and cannot be installed without root")
    result = subprocess.run([str(ROOT / "slurm" / "dev-cluster" / "up"), *args], capture_output=True, text=True,
                            timeout=600)
    if result.returncode != 0:
        need(f"the development Slurm did not start: {result.stderr[-2000:]}")
    return result.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")


def test_up_starts_daemons_whose_stale_pid_files_name_other_processes(tmp_path):
    """After a crash the PID files stay and their PIDs get reused: `up` must not take another process (here
    a `sleep`) for the daemon. A second, private cluster (own state directory and ports) beside the tests'."""
    if not shutil.which("slurmctld"):
        start_slurm()  # installs the packages, as the module's cluster would
    state = tmp_path / "slurm"
    env = os.environ | {"DASKWEAK_SLURM_STATE": str(state), "DASKWEAK_SLURMCTLD_PORT": "16917",
                        "DASKWEAK_SLURMD_PORT": "16918"}
    impostor = subprocess.Popen(["sleep", "600"])
    try:
        (state / "run").mkdir(parents=True)
        for daemon in ("munged", "slurmctld", "slurmd"):
            (state / "run" / f"{daemon}.pid").write_text(str(impostor.pid))
        up = subprocess.run([str(ROOT / "slurm" / "dev-cluster" / "up")], env=env, capture_output=True, text=True,
                            timeout=300)
        assert up.returncode == 0, up.stderr[-2000:]
        conf = up.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
        ping = subprocess.run(["scontrol", "ping"], env=env | {"SLURM_CONF": conf}, capture_output=True, text=True)
        assert "UP" in ping.stdout, ping.stdout + ping.stderr
        assert impostor.poll() is None  # the impostor was neither used nor killed
    finally:
        subprocess.run([str(ROOT / "slurm" / "dev-cluster" / "down")], env=env, capture_output=True, timeout=120)
        impostor.kill()
        impostor.wait()


@pytest.fixture(scope="module")
def slurm():
    # Accounting on (MariaDB + slurmdbd): --account is enforced, as on a production cluster.
    conf = start_slurm("--accounting")
    os.environ["SLURM_CONF"] = conf
    yield conf
    assert jobs() == [], "a test left Slurm jobs behind"


def jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i %j %T"], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.strip()]


@pytest.fixture
def slurm_settings(small, slurm, tmp_path):
    def make(**overrides):
        return small(**({"backend": "slurm", "account": "daskweak", "partition": "debug", "max_n_cores": 2,
                         "suites": "tasks", "out_dir": str(tmp_path / "out")} | overrides))

    return make


@pytest.mark.parametrize("tls", [False, True], ids=["plain", "tls"])
@pytest.mark.parametrize(("per_node", "jobs_at_two"), [(1, 2), (2, 1)], ids=["two-jobs", "one-job"])
def test_a_sweep_packs_cores_into_jobs(slurm_settings, tmp_path, per_node, jobs_at_two, tls):
    extra = {"use_ssl": True, "cert_dir": str(tmp_path / "certs")} if tls else {}
    settings = slurm_settings(cores_per_node=per_node, suites="tasks,arrays", **extra)
    result = run_sweep(settings)
    store = ResultStore(settings.database_url)
    steps = store.steps(result.run_id)
    assert result.status == "ok", steps[["status", "error"]]
    assert list(steps["cores_actual"]) == [1, 2]
    two = steps.iloc[1]["details"]
    assert len(two["jobs"]) == jobs_at_two
    assert sum(job["cpus"] for job in two["jobs"]) == 2  # what Slurm granted, read back
    assert two["scheduler"].startswith("tls://" if tls else "tcp://")
    assert "#SBATCH -A daskweak" in two["job_script"] and "ulimit -n" in two["job_script"]
    assert (store.observations(result.run_id)["status"] == "ok").all()
    store.close()
    assert jobs() == []


@pytest.mark.parametrize(("overrides", "message"), [
    ({"mem_per_node": "100000GB"}, "Requested node configuration is not available"),
    ({"account": "no-such-account"}, "Invalid account"),  # accounting is on: --account is enforced
], ids=["memory-larger-than-a-node", "invalid-account"])
def test_a_submission_slurm_would_refuse_fails_at_once(slurm_settings, overrides, message):
    # TIMEOUT beyond the test's own time limit: only a refusal before any job is queued ends the step in time
    settings = slurm_settings(max_n_cores=1, timeout=3600, **overrides)
    [summary] = run_sweep(settings).summaries
    assert summary["status"] == "failed"
    assert "Slurm refused the worker job" in summary["error"] and message in summary["error"]
    assert jobs() == []


def test_a_cancelled_worker_job_fails_the_observation_and_the_step_cleanly(slurm_settings):
    settings = slurm_settings(max_n_cores=2, step_by=2, cores_per_node=1, obs_per_iter=500,
                              operation_timeout=10)
    step = make_plan(settings)[-1]

    measured = threading.Event()

    class FirstObservation(QuietProgress):
        def observation_done(self, step, suite, observation):
            if observation >= settings.warmup:
                measured.set()

    def cancel_one_job() -> None:
        if measured.wait(120):  # some observations in
            job_id = jobs()[0].split()[0]
            subprocess.run(["scancel", job_id], check=True)

    canceller = threading.Thread(target=cancel_one_job, daemon=True)
    canceller.start()
    summary = run_step(settings, step, "scancel", progress=FirstObservation())
    canceller.join()
    assert summary["status"] == "failed"
    assert "lost workers" in summary["error"]
    store = ResultStore(settings.database_url)
    rows = store.observations("scancel")
    assert (rows["status"] == "ok").sum() > 0  # what was measured before is kept
    last = rows[rows["observation"] == rows["observation"].max()]
    assert (last["status"] == "failed").all()  # the observation during which the job went away
    assert last["error"].str.contains("lost workers|CancelledError|KilledWorker|OPERATION_TIMEOUT").all()
    store.close()
    assert jobs() == []


def test_tls_workers_refuse_a_plaintext_client(slurm_settings, tmp_path):
    from daskweak.backends.base import open_cluster

    settings = slurm_settings(max_n_cores=1, use_ssl=True, cert_dir=str(tmp_path / "certs"))
    [step] = make_plan(settings)
    with open_cluster(settings, step) as deployment:
        assert_tls_only(deployment)
    assert jobs() == []


def test_a_step_that_times_out_leaves_no_job(slurm_settings):
    settings = slurm_settings(max_n_cores=1, timeout=0.5)
    [summary] = run_sweep(settings).summaries
    assert summary["status"] == "failed" and "TIMEOUT=0.5" in summary["error"]
    assert jobs() == []


def test_the_driver_job_runs_the_sweep_without_airflow(slurm, tmp_path):
    env_file = tmp_path / "driver.env"
    env_file.write_text(
        "ACCOUNT=daskweak\nPARTITION=debug\nMAX_N_CORES=1\nSUITES=tasks\nPROBLEM_SIZE_TASKS=20\nOBS_PER_ITER=1\n"
        f"RES_DIR={tmp_path / 'results'}\nOUT_DIR={tmp_path / 'out'}\nENV_TO_SOURCE={ROOT / '.venv'}\n")
    # the node has 2 CPUs: the driver takes one, the worker job the other
    job = subprocess.run(["sbatch", "--parsable", "-c", "1", "--mem=3G", f"--chdir={tmp_path}",
                          str(ROOT / "slurm" / "run_benchmark.sbatch"), str(env_file)],
                         capture_output=True, text=True, check=True).stdout.strip()
    deadline = time.monotonic() + 240
    while any(line.split()[0] == job for line in jobs()):
        assert time.monotonic() < deadline, "the driver job did not finish"
        time.sleep(1)
    output = (tmp_path / f"daskweak-driver-{job}.out").read_text()
    assert ": ok; results in" in output, output[-3000:]
    store = ResultStore(f"sqlite:///{tmp_path / 'results' / 'daskweak.sqlite'}")
    [run] = store.runs().itertuples()
    assert run.backend == "slurm" and len(store.observations(run.run_id)) == 4 * 2
    store.close()


@pytest.fixture
def slurm_airflow(slurm, tmp_path):
    from tests.airflow_harness import SMALL_ENV, AirflowHome

    env_file = tmp_path / "bench.env"
    env_file.write_text(SMALL_ENV + f"RES_DIR={tmp_path / 'results'}\nOUT_DIR={tmp_path / 'out'}\n"
                        "SUITES=tasks\nACCOUNT=daskweak\nPARTITION=debug\nCORES_PER_NODE=1\n")
    airflow = AirflowHome(tmp_path / "home", env_file, extra={"SLURM_CONF": slurm})
    airflow.run("db", "migrate", check=True)
    return airflow


def test_a_killed_airflow_task_leaves_no_slurm_job(slurm_airflow, tmp_path):
    from tests.airflow_harness import signal_step_process

    killer = threading.Thread(target=signal_step_process, args=(2, tmp_path / "results"), daemon=True)
    killer.start()
    result = slurm_airflow.run("dags", "test", "dask_weak_scaling", "-c",
                               '{"backend": "slurm", "max_cores": 2, "obs_per_iter": 40}',
                               env={"STEP_RETRIES": "0"})
    killer.join()
    assert result.returncode != 0
    run_id = slurm_airflow.latest_run_id("dask_weak_scaling")
    assert {t[1]: t[2] for t in slurm_airflow.task_instances(run_id, "run_step")}["cores=2"] == "failed"
    store = ResultStore(f"sqlite:///{tmp_path / 'results' / 'daskweak.sqlite'}")
    assert list(store.steps(run_id)["status"]) == ["ok", "interrupted"]
    store.close()
    assert jobs() == []


def test_the_dag_runs_end_to_end_on_slurm(slurm_airflow, tmp_path):
    airflow = slurm_airflow
    airflow.run("dags", "test", "dask_weak_scaling", "-c", '{"backend": "slurm", "max_cores": 2}', check=True)
    run_id = airflow.latest_run_id("dask_weak_scaling")
    assert [(t[1], t[2]) for t in airflow.task_instances(run_id, "run_step")] == [
        ("cores=1", "success"), ("cores=2", "success")]
    store = ResultStore(f"sqlite:///{tmp_path / 'results' / 'daskweak.sqlite'}")
    steps = store.steps(run_id)
    assert list(steps["cores_actual"]) == [1, 2] and len(steps.iloc[1]["details"]["jobs"]) == 2
    assert store.runs().set_index("run_id").loc[run_id, "backend"] == "slurm"
    store.close()
    assert jobs() == []


def test_exclusive_nodes_hold_the_whole_node_and_threads_mode_runs_one_worker_per_job(slurm_settings):
    settings = slurm_settings(max_n_cores=2, step_by=2, cores_per_node=2, slurm_exclusive=True,
                              worker_mode="threads", net_interface="lo")
    result = run_sweep(settings)
    store = ResultStore(settings.database_url)
    steps = store.steps(result.run_id)
    store.close()
    assert result.status == "ok", steps[["status", "error"]]
    one, two = steps.iloc[0], steps.iloc[1]
    assert one["cores_actual"] == 1 and one["details"]["jobs"][0]["cpus"] == 2  # a 1-core step holds the node
    assert "--exclusive" in one["details"]["job_script"]
    assert (two["workers_actual"], two["threads_per_worker"], two["cores_actual"]) == (1, 2, 2)
    assert two["details"]["scheduler"].startswith("tcp://127.0.0.1:")  # NET_INTERFACE=lo
    assert jobs() == []


def test_workers_sourcing_another_environment_fail_the_step_naming_the_packages(slurm_settings, tmp_path):
    """The origin's common failure, for real: ENV_TO_SOURCE gives the workers another toolz distribution."""
    shadow = tmp_path / "other-env" / "toolz-0.0.1.dist-info"
    shadow.mkdir(parents=True)
    (shadow / "METADATA").write_text("Metadata-Version: 2.1\nName: toolz\nVersion: 0.0.1\n")
    activate = tmp_path / "activate"
    activate.write_text(f"export PYTHONPATH={shadow.parent}\n")
    settings = slurm_settings(env_to_source=str(activate), max_n_cores=1, suites="tasks", obs_per_iter=1)
    result = run_sweep(settings)
    [summary] = result.summaries
    assert result.status == "failed" and summary["status"] == "failed"
    assert "different versions of toolz" in summary["error"] and "workers 0.0.1" in summary["error"]
    assert "numpy" not in summary["error"]  # only what differs is named
    assert wait_until(lambda: not jobs(), 60)
