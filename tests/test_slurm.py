"""The Slurm backend against the real single-node development Slurm (slurm/dev-cluster/up)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
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
    airflow.migrate()
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


def test_the_dags_finish_cancels_the_jobs_of_a_sigkilled_step(slurm_airflow):
    """SIGKILL leaves the step no time to cancel its jobs (2 running, 1 pending that would wait forever); the
    DAG's finish task cancels them by the run's name."""
    killed: dict[str, int] = {}

    def kill_when_queued() -> None:
        def queued() -> bool:
            states = sorted(line.split()[2] for line in jobs() if line.split()[1].startswith("daskweak-"))
            return states == ["PENDING", "RUNNING", "RUNNING"]

        if wait_until(queued, 300):
            # this test's step process: one of its descendants (other tests' step processes run beside it)
            for proc in psutil.Process().children(recursive=True):
                try:
                    cmdline = proc.cmdline()
                except psutil.Error:
                    continue
                if "daskweak.isolated" in cmdline and "--cores=3" in cmdline:
                    proc.send_signal(signal.SIGKILL)
                    killed["pid"] = proc.pid

    killer = threading.Thread(target=kill_when_queued, daemon=True)
    killer.start()
    result = slurm_airflow.run("dags", "test", "dask_weak_scaling", "-c",
                               '{"backend": "slurm", "max_cores": 3, "step_by": 3, "cores_per_node": 1}',
                               env={"STEP_RETRIES": "0", "TIMEOUT": "3600"})
    killer.join()
    assert killed and result.returncode != 0
    run_id = slurm_airflow.latest_run_id("dask_weak_scaling")
    assert {t[1]: t[2] for t in slurm_airflow.task_instances(run_id, "run_step")}["cores=3"] == "failed"
    assert [t[2] for t in slurm_airflow.task_instances(run_id, "finish")] == ["failed"]  # a step failed
    assert wait_until(lambda: not run_jobs(run_id), 30)  # the pending job too: nobody else would cancel it


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
    activate = tmp_path / "activate"  # the project's environment (its python runs the workers) plus the shadow
    activate.write_text(f"source {ROOT / '.venv' / 'bin' / 'activate'}\nexport PYTHONPATH={shadow.parent}\n")
    settings = slurm_settings(env_to_source=str(activate), max_n_cores=1, suites="tasks", obs_per_iter=1)
    result = run_sweep(settings)
    [summary] = result.summaries
    assert result.status == "failed" and summary["status"] == "failed"
    assert "different versions of toolz" in summary["error"] and "workers 0.0.1" in summary["error"]
    assert "numpy" not in summary["error"]  # only what differs is named
    assert wait_until(lambda: not jobs(), 60)


# --- a run's jobs carry its name; a killed driver's jobs are cancelled by whoever comes next ---


def test_job_names_carry_the_run_and_step_and_stay_valid_file_names():
    from daskweak.backends.slurm import jobs as slurm_jobs

    assert slurm_jobs.job_name("20261130T155200-abcdef", 2) == "daskweak-20261130T155200-abcdef-s2"
    airflow = slurm_jobs.job_name("manual__2026-11-30T15:52:00.123456+00:00", 1)
    assert airflow.startswith("daskweak-manual__2026-11-30T15_52_00.123456_00_00-") and airflow.endswith("-s1")
    assert slurm_jobs.run_part("a b") != slurm_jobs.run_part("a_b")  # a changed id keeps a hash of itself
    assert len(slurm_jobs.job_name("x" * 200, 10)) <= 72
    named = {"1": slurm_jobs.job_name("run-s1", 2), "2": slurm_jobs.job_name("run", 1), "3": "daskweak-other-s1",
             "4": "x"}
    assert slurm_jobs.of_run(named, "run") == ["2"] and slurm_jobs.of_run(named, "run-s1") == ["1"]


@pytest.mark.parametrize(("reason", "hopeless"), [
    ("QOSMaxJobsPerUserLimit", True), ("AssocMaxJobsLimit", True), ("PartitionNodeLimit", True),
    ("ReqNodeNotAvail, UnavailableNodes:node2", True), ("JobHeldUser", True),
    ("Resources", False), ("Priority", False), ("None", False), ("BeginTime", False),
])
def test_only_reasons_that_need_someone_to_act_fail_a_step_before_timeout(reason, hopeless):
    from daskweak.backends.slurm import watch

    assert watch.hopeless(reason) is hopeless


def run_jobs(run_id: str) -> dict[str, str]:
    """job id → state of `run_id`'s jobs in squeue."""
    from daskweak.backends.slurm.jobs import of_run

    out = subprocess.run(["squeue", "-h", "-o", "%i|%j|%T"], capture_output=True, text=True, check=True).stdout
    rows = [line.split("|") for line in out.splitlines() if line.strip()]
    states = {job_id: state for job_id, _, state in rows}
    return {job_id: states[job_id] for job_id in of_run({job_id: name for job_id, name, _ in rows}, run_id)}


def two_running_one_pending(run_id: str) -> bool:
    states = sorted(run_jobs(run_id).values())
    return states == ["PENDING", "RUNNING", "RUNNING"]


def held_job(name: str) -> str:
    """A job of someone else's run (held, so it takes no CPU): clean-ups must leave it alone."""
    return subprocess.run(["sbatch", "--parsable", "--hold", "-A", "daskweak", "-p", "debug", "-J", name, "-c", "1",
                           "--mem=100M", "-o", "/dev/null", "--wrap", "sleep 600"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_the_runs_finish_cancels_the_jobs_of_a_sigkilled_step(slurm_settings, tmp_path):
    """The node has 2 CPUs: a 3-job step has 2 jobs running and 1 pending when its process is SIGKILLed; the
    finish task (Airflow's last word on the run) cancels them, and no other run's job."""
    from daskweak import orchestration
    from daskweak.backends.slurm import jobs as slurm_jobs
    from daskweak.isolated import run_step_isolated

    settings = slurm_settings(max_n_cores=3, step_by=3, cores_per_node=1, timeout=3600)
    overrides = {k: v for k, v in settings.model_dump(mode="json").items() if v is not None and v != []}
    run_id = "manual__2026-11-30T15:52:00+00:00"  # an Airflow run id: characters a job name cannot keep
    step = orchestration.plan(None, overrides, run_id)[-1]  # the 3-core step
    other = held_job(slurm_jobs.job_name("another-run", 1))
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            run_step_isolated({"env_file": None, "overrides": overrides, "step": step, "run_id": run_id})
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        assert wait_until(lambda: two_running_one_pending(run_id), 120), run_jobs(run_id)
        [child] = [p for p in psutil.Process().children() if "daskweak.isolated" in p.cmdline()]
        child.send_signal(signal.SIGKILL)  # this test's own step process, nobody else's
        thread.join(120)
        assert "error" in outcome
        assert len(run_jobs(run_id)) == 3  # nobody cancelled them …
        with pytest.raises(orchestration.StepsFailed) as failed:
            orchestration.finish(None, overrides, run_id, {"failed": [3]})
        assert failed.value.args[0].count("left behind by a killed step") == 3
        assert wait_until(lambda: not run_jobs(run_id), 30)  # … until the run's finish
        assert other in slurm_jobs.queued([other])  # another run's job stays
    finally:
        subprocess.run(["scancel", other], check=False)
    assert wait_until(lambda: not jobs(), 30)


def test_the_next_run_cancels_the_jobs_of_a_sigkilled_command_line_run(slurm_settings, tmp_path):
    """`daskweak run` is SIGKILLed mid-step (2 jobs running, 1 pending); the next `daskweak run` cancels
    them, because the results table knows that run and its driver is gone. A live run's job and a job of a run
    the table does not know stay."""
    from daskweak.backends.slurm import jobs as slurm_jobs
    from daskweak.runner import start_run
    from daskweak.spool import spool_for
    from daskweak.store import this_driver

    settings = slurm_settings(max_n_cores=1, suites="tasks", obs_per_iter=1)
    env_file = tmp_path / "killed.env"
    env_file.write_text(f"BACKEND=slurm\nACCOUNT=daskweak\nPARTITION=debug\nMAX_N_CORES=3\nSTEP_BY=3\n"
                        f"CORES_PER_NODE=1\nTIMEOUT=3600\nSUITES=tasks\nRES_DIR={settings.res_dir}\n"
                        f"OUT_DIR={settings.out_dir}\n")
    with ResultStore(settings.database_url) as store:  # a run driven right now, by this very process
        start_run(settings, spool_for(settings.res_dir, store), "live-run", driver=this_driver())
    live, unknown = held_job(slurm_jobs.job_name("live-run", 1)), held_job(slurm_jobs.job_name("not-in-the-table", 1))
    driver = subprocess.Popen([sys.executable, "-m", "daskweak", "--env-file", str(env_file), "run"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        def killed_run() -> str | None:
            with ResultStore(settings.database_url) as store:
                runs = store.runs()
            ids = [r for r in runs["run_id"] if r != "live-run"] if not runs.empty else []
            return ids[0] if ids and two_running_one_pending(ids[0]) else None

        assert wait_until(killed_run, 180), jobs()
        run_id = killed_run()
        driver.send_signal(signal.SIGKILL)  # the driver this test started
        driver.wait(30)
        assert len(run_jobs(run_id)) == 3
        result = run_sweep(settings)  # the next run
        assert result.status == "ok"
        assert wait_until(lambda: not run_jobs(run_id), 30)
        assert sorted(slurm_jobs.queued([live, unknown]), key=int) == sorted([live, unknown], key=int)
    finally:
        driver.kill()
        subprocess.run(["scancel", live, unknown], check=False)
    assert wait_until(lambda: not jobs(), 30)


# --- held or failed jobs fail the step fast, with Slurm's reason ---


@pytest.fixture
def qos_limit(slurm):
    """Set a limit on the QOS `normal` (the association's) with sacctmgr; the limit is removed afterwards."""
    changed: list[str] = []

    def set_limit(name: str, value: int) -> None:
        subprocess.run(["sacctmgr", "-i", "modify", "qos", "normal", "set", f"{name}={value}"], check=True,
                       capture_output=True)
        changed.append(name)

    yield set_limit
    for name in changed:
        subprocess.run(["sacctmgr", "-i", "modify", "qos", "normal", "set", f"{name}=-1"], check=True,
                       capture_output=True)


def test_jobs_a_qos_limit_holds_fail_the_step_at_once_naming_the_reason_and_jobs(slurm_settings, qos_limit):
    """MaxJobsPerUser=1 lets one of the step's two jobs run; the other waits for it forever. TIMEOUT is longer
    than the test may take: only Slurm's own reason ends the step in time."""
    qos_limit("MaxJobsPerUser", 1)
    settings = slurm_settings(max_n_cores=2, step_by=2, cores_per_node=1, timeout=3600)
    result = run_sweep(settings)
    [summary] = [s for s in result.summaries if s["cores_requested"] == 2]
    assert summary["status"] == "failed"
    assert "QOSMaxJobsPerUserLimit" in summary["error"] and "waiting will not help" in summary["error"]
    assert re.search(r"job \d+ \(QOSMaxJobsPerUserLimit\)", summary["error"]), summary["error"]
    assert wait_until(lambda: not jobs(), 30)


def test_a_job_sbatch_refuses_while_scaling_fails_the_step_at_once(slurm_settings, qos_limit):
    """MaxSubmitJobsPerUser=1: `--test-only` passes (nothing is queued yet) and the first job is accepted, the
    second refused by sbatch itself."""
    qos_limit("MaxSubmitJobsPerUser", 1)
    settings = slurm_settings(max_n_cores=2, step_by=2, cores_per_node=1, timeout=3600)
    step = make_plan(settings)[-1]
    summary = run_step(settings, step, "submit-limit")
    assert summary["status"] == "failed"
    assert "refused a worker job while scaling" in summary["error"], summary["error"]
    assert "QOSMaxSubmitJobPerUserLimit" in summary["error"]
    assert wait_until(lambda: not jobs(), 30)


def test_a_step_that_times_out_names_the_pending_reason(slurm_settings):
    """Three 1-core jobs on the 2-CPU node: the third waits for Resources, which may free up, so the step
    waits until TIMEOUT and then says why."""
    settings = slurm_settings(max_n_cores=3, step_by=3, cores_per_node=1, timeout=20)
    step = make_plan(settings)[-1]
    summary = run_step(settings, step, "resources")
    assert summary["status"] == "failed" and "TIMEOUT=20s" in summary["error"]
    assert re.search(r"job \d+ PENDING \((Resources|Priority)\)", summary["error"]), summary["error"]
    assert wait_until(lambda: not jobs(), 30)


def test_a_cert_dir_the_compute_node_cannot_read_fails_the_step_at_once(slurm_settings, tmp_path):
    """On one host every path is visible to the jobs; here the sourced environment re-runs the job script in a
    private mount namespace with an empty directory over CERT_DIR, as a login node's private /tmp looks from a
    compute node (the driver and its scheduler still see the certificates)."""
    certs, empty = tmp_path / "certs", tmp_path / "empty"
    empty.mkdir()
    activate = tmp_path / "activate"
    activate.write_text(
        f"source {ROOT / '.venv' / 'bin' / 'activate'}\n"
        'if [ -z "${CERTS_HIDDEN:-}" ]; then\n  export CERTS_HIDDEN=1\n'
        f"""  exec unshare --mount sh -c 'mount --bind "$1" "$2" && exec bash "$0"' "$0" {empty} {certs}\nfi\n""")
    settings = slurm_settings(max_n_cores=1, use_ssl=True, cert_dir=str(certs), env_to_source=str(activate),
                              timeout=3600)
    [summary] = run_sweep(settings).summaries
    assert summary["status"] == "failed"
    assert f"CERT_DIR={certs}" in summary["error"] and "not readable" in summary["error"], summary["error"]
    assert re.search(r"Slurm job \d+ on \S+ ended before its workers joined", summary["error"]), summary["error"]
    assert wait_until(lambda: not jobs(), 30)


# --- ENV_TO_SOURCE decides the workers' interpreter ---


def test_workers_run_the_python_of_the_sourced_environment(slurm_settings, tmp_path):
    """A second environment (its own python; the project's packages through a .pth file, so versions match)
    that only the workers use: they report its interpreter, not the driver's."""
    from daskweak.backends.base import open_cluster

    env = tmp_path / "shared" / "worker-env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    [site] = env.glob("lib/python*/site-packages")
    (site / "project.pth").write_text(str(next((ROOT / ".venv").glob("lib/python*/site-packages"))) + "\n")
    settings = slurm_settings(max_n_cores=2, step_by=2, cores_per_node=1, env_to_source=str(env))
    step = make_plan(settings)[-1]
    with open_cluster(settings, step, "worker-env") as deployment:
        executables = deployment.client.run(lambda: sys.executable)
        script = deployment.details["job_script"]
    assert set(executables.values()) == {str(env / "bin" / "python")}, executables
    assert f"source {env / 'bin' / 'activate'}" in script and f"{sys.executable} -m" not in script
    assert wait_until(lambda: not jobs(), 30)


def test_without_env_to_source_workers_run_the_drivers_python(slurm_settings):
    from daskweak.backends.base import open_cluster

    settings = slurm_settings(max_n_cores=1)
    [step] = make_plan(settings)
    with open_cluster(settings, step, "driver-python") as deployment:
        assert set(deployment.client.run(lambda: sys.executable).values()) == {sys.executable}
        # the allocation read back from Slurm names the host of each job (the step record keeps it)
        [job] = deployment.details["jobs"]
        nodes = subprocess.run(["sinfo", "-h", "-N", "-o", "%N"], capture_output=True, text=True).stdout.split()
        assert job["node"] in nodes and job["cpus"] == 1
    assert wait_until(lambda: not jobs(), 30)


# --- NET_INTERFACE is checked where the scheduler runs ---


def test_a_net_interface_this_host_lacks_is_refused_before_anything_is_submitted(slurm_settings):
    from daskweak.errors import ConfigError

    settings = slurm_settings(max_n_cores=1, net_interface="no-such-nic0")
    with pytest.raises(ConfigError) as refused:
        run_sweep(settings)
    message = str(refused.value)
    assert "NET_INTERFACE='no-such-nic0'" in message and "where the scheduler runs" in message
    assert all(name in message for name in psutil.net_if_addrs())
    with ResultStore(settings.database_url) as store:
        assert store.runs().empty  # nothing recorded, nothing submitted
    assert jobs() == []
