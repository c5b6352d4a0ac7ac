"""daskweak on the multi-node development Slurm (slurm/dev-cluster/up --nodes 3): the driver on the login node,
workers on node1…node3 over eth0; TLS across hosts, both DAGs, faults of a node, where jobs land, the shared
environment, and runs killed on the login node (issue 12)."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from daskweak.store import ResultStore
from tests.conftest import wait_until
from tests.slurm_cluster import address, namespace, veth

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python")
LOGIN_ETH0 = address("login")


def write_env(work: Path, env: str, net_interface: str = "eth0") -> Path:
    """A settings file for a run on the login node: the cluster's account and partition, OUT_DIR and RES_DIR
    on the shared directory, a tiny tasks suite."""
    env_file = work / "bench.env"
    env_file.write_text(f"BACKEND=slurm\nACCOUNT=daskweak\nPARTITION=debug\nSUITES=tasks\nPROBLEM_SIZE_TASKS=20\n"
                        f"OBS_PER_ITER=1\nNET_INTERFACE={net_interface}\nOUT_DIR={work / 'out'}\n"
                        f"RES_DIR={work / 'results'}\n{env}")
    return env_file


def login_run(cluster, work: Path, env: str, net_interface: str = "eth0",
              timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """`daskweak run` on the login node with `env` (`write_env`), as a user runs it there."""
    env_file = write_env(work, env, net_interface)
    return cluster.login(PYTHON, "-m", "daskweak", "--env-file", str(env_file), "run", cwd=work, check=False,
                         timeout=timeout)


def steps_of(work: Path):
    with ResultStore(f"sqlite:///{work / 'results' / 'daskweak.sqlite'}") as store:
        [run_id] = store.runs()["run_id"]
        return run_id, store.steps(run_id), store.observations(run_id)


# --- TLS across hosts ---


def test_tls_across_hosts_certificates_name_the_address_workers_dial_and_plaintext_is_refused(slurm_multinode):
    """USE_SSL with CERT_DIR on the shared directory: 3 one-core jobs on 3 hosts measure over TLS; the
    scheduler's certificate holds the login node's eth0 address the step recorded (what the workers dial);
    a plaintext client is refused by a live scheduler of the same settings."""
    from cryptography import x509

    cluster = slurm_multinode
    work = cluster.scratch("tls")
    certs = work / "certs"
    settings = ("MAX_N_CORES=3\nSTEP_BY=3\nCORES_PER_NODE=1\nSLURM_EXCLUSIVE=True\nUSE_SSL=True\n"
                f"CERT_DIR={certs}\nTIMEOUT=300\n")
    env_file = write_env(work, settings)
    done = cluster.login(PYTHON, "-m", "daskweak", "--env-file", str(env_file), "run", cwd=work, check=False,
                         timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    _, steps, _ = steps_of(work)
    last = steps.iloc[-1]
    assert last["status"] == "ok" and last["cores_actual"] == 3
    assert sorted(job["node"] for job in last["details"]["jobs"]) == ["node1", "node2", "node3"]
    scheduler = last["details"]["scheduler"]
    assert scheduler.startswith(f"tls://{LOGIN_ETH0}:"), scheduler
    host = scheduler.removeprefix("tls://").rsplit(":", 1)[0]
    for role in ("scheduler", "worker"):
        cert = x509.load_pem_x509_certificate((certs / f"{role}.crt").read_bytes())
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert ipaddress.ip_address(host) in sans.get_values_for_type(x509.IPAddress), (role, sans)

    # a live scheduler with the same settings: the certified client works, a plaintext one is refused
    script = work / "plaintext.py"
    script.write_text(
        "import json\nfrom distributed import Client\n"
        "from daskweak.backends.base import open_cluster\nfrom daskweak.plan import make_plan\n"
        "from daskweak.settings import load_settings\n"
        f"settings = load_settings('{env_file}', max_n_cores=1, step_by=1)\n"
        "with open_cluster(settings, make_plan(settings)[-1], 'tls') as deployment:\n"
        "    address = deployment.client.scheduler.address\n"
        "    total = deployment.client.submit(sum, [1, 2]).result()\n"
        "    try:\n"
        "        Client(address.replace('tls://', 'tcp://'), timeout=3).close()\n"
        "        refused = None\n"
        "    except (OSError, TimeoutError) as exc:\n"
        "        refused = type(exc).__name__\n"
        "print(json.dumps({'address': address, 'total': total, 'refused': refused}))\n")
    done = cluster.login(PYTHON, str(script), cwd=work, check=False, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["address"].startswith(f"tls://{LOGIN_ETH0}:") and found["total"] == 3, found
    assert found["refused"], found
    assert wait_until(lambda: not cluster.jobs(), 30)


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
    airflow.migrate()
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


def start_run(cluster, work: Path, env: str) -> subprocess.Popen:
    env_file = write_env(work, env)
    return subprocess.Popen([*cluster.login_command, PYTHON, "-m", "daskweak", "--env-file", str(env_file), "run"],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def measuring(work: Path) -> bool:
    """An observation is under way: the verbose log of the run (VERBOSE=True) named a measured operation."""
    log = work / "driver.log"
    return log.exists() and "cores=3 suite=tasks observation=1 operation=" in log.read_text(errors="replace")


def follow(driver: subprocess.Popen, work: Path) -> threading.Thread:
    """Copy the driver's output to work/driver.log as it comes (the condition the faults wait for)."""
    def copy() -> None:
        with open(work / "driver.log", "a") as log:
            for line in driver.stdout:
                log.write(line)
                log.flush()

    thread = threading.Thread(target=copy, daemon=True)
    thread.start()
    return thread


def node_of_step(cluster, work: Path, host: str) -> str | None:
    """The job of this run running on `host`, from squeue."""
    for line in cluster.login("squeue", "-h", "-o", "%i %N %T").stdout.splitlines():
        job_id, node, state = line.split()
        if node == host and state == "RUNNING":
            return job_id
    return None


FAULT_RUN = ("MAX_N_CORES=3\nSTEP_BY=3\nCORES_PER_NODE=1\nSLURM_EXCLUSIVE=True\nVERBOSE=True\nWARMUP=0\n"
             "OBS_PER_ITER=40\nPROBLEM_SIZE_TASKS=200\nTIMEOUT=300\nOPERATION_TIMEOUT=20\n")


def fault_result(cluster, work: Path, driver: subprocess.Popen, copier: threading.Thread, job_id: str, host: str):
    code = driver.wait(900)
    copier.join(30)
    output = (work / "driver.log").read_text(errors="replace")
    _, steps, rows = steps_of(work)
    last = steps.iloc[-1]
    assert last["cores_requested"] == 3 and last["status"] == "failed", (last["status"], last["error"], output[-3000:])
    assert (rows[rows["step"] == last["step"]]["status"] == "ok").any()  # measured before the fault: kept
    assert code != 0 or last["status"] == "failed"
    assert host in last["error"] and job_id in last["error"], last["error"]
    return last, output


def test_a_node_that_loses_its_network_mid_observation_fails_the_step_naming_node_and_job(slurm_multinode):
    cluster = slurm_multinode
    work = cluster.scratch("linkdown")
    driver = start_run(cluster, work, FAULT_RUN)
    copier = follow(driver, work)
    link = veth("node2")
    try:
        assert wait_until(lambda: measuring(work), 300, 0.2), (work / "driver.log").read_text()[-3000:]
        job_id = node_of_step(cluster, work, "node2")
        assert job_id
        subprocess.run(["ip", "link", "set", link, "down"], check=True)
        fault_result(cluster, work, driver, copier, job_id, "node2")
    finally:
        subprocess.run(["ip", "link", "set", link, "up"], check=True)
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
        # Slurm marked node2 DOWN while it did not answer: back in service for the next test
        cluster.login("scontrol", "update", "NodeName=node2", "State=RESUME", check=False)
    assert wait_until(lambda: cluster.node_states().get("node2") == "idle", 120, 1.0), cluster.node_states()
    assert wait_until(lambda: not cluster.jobs(), 120, 1.0), cluster.jobs()


def test_a_node_whose_slurmd_dies_with_its_job_fails_the_step_naming_node_and_job(slurm_multinode):
    cluster = slurm_multinode
    work = cluster.scratch("slurmd")
    driver = start_run(cluster, work, FAULT_RUN)
    copier = follow(driver, work)
    try:
        assert wait_until(lambda: measuring(work), 300, 0.2), (work / "driver.log").read_text()[-3000:]
        job_id = node_of_step(cluster, work, "node2")
        assert job_id
        # node2's slurmd, slurmstepd and worker, as a crashed host loses them: the processes in node2's network
        # namespace (the PID namespace is the machine's, so no pkill by name), except its holder
        for pid in subprocess.run(["ip", "netns", "pids", namespace("node2")], capture_output=True, text=True,
                                  check=True).stdout.split():
            with contextlib.suppress(psutil.NoSuchProcess):
                proc = psutil.Process(int(pid))
                if proc.name() != "sleep":
                    proc.kill()
        assert wait_until(lambda: cluster.node_states().get("node2", "").startswith(("down", "idle*", "mixed*",
                                                                                      "allocated*")), 300, 1.0)
        fault_result(cluster, work, driver, copier, job_id, "node2")
    finally:
        with contextlib.suppress(ProcessLookupError):
            driver.kill()
        subprocess.run([str(ROOT / "slurm" / "dev-cluster" / "up"), "--nodes", "3", "--accounting"], cwd=ROOT,
                       capture_output=True, timeout=600)
        cluster.login("scontrol", "update", "NodeName=node2", "State=RESUME", check=False)
    assert wait_until(lambda: cluster.node_states().get("node2") == "idle", 300, 1.0), cluster.node_states()
    assert wait_until(lambda: not cluster.jobs(), 120, 1.0), cluster.jobs()


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
        done = login_run(cluster, work, "MAX_N_CORES=3\nSTEP_BY=3\nCORES_PER_NODE=1\nSLURM_EXCLUSIVE=True\n"
                                        "OPERATION_TIMEOUT=120\nTIMEOUT=300\n", timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    finally:
        subprocess.run(["tc", "qdisc", "del", "dev", link, "root"], check=False, capture_output=True)
    _, steps, rows = steps_of(work)
    assert list(steps["status"]) == ["ok", "ok"], list(steps["error"])
    last = steps.iloc[-1]
    assert "node3" in [job["node"] for job in last["details"]["jobs"]]
    assert len(rows) and (rows["status"] == "ok").all() and (rows["duration"] < 120).all()
    assert wait_until(lambda: not cluster.jobs(), 30)


# --- the driver on the login node: placement, certificates, environments, interfaces, killed runs ---


def test_three_jobs_land_on_three_hosts_over_eth0_and_the_step_records_them(slurm_multinode):
    """Whole nodes (SLURM_EXCLUSIVE: each node declares 2 CPUs) for 1-core jobs: 3 jobs, 3 hosts, read back
    from Slurm and stored with the step; scheduler and workers on eth0; every job's log on the shared OUT_DIR."""
    cluster = slurm_multinode
    work = cluster.scratch("hosts")
    done = login_run(cluster, work, "MAX_N_CORES=3\nSTEP_BY=3\nCORES_PER_NODE=1\nSLURM_EXCLUSIVE=True\n")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with ResultStore(f"sqlite:///{work / 'results' / 'daskweak.sqlite'}") as store:
        [run_id] = store.runs()["run_id"]
        last = store.steps(run_id).iloc[-1]
    assert last["cores_actual"] == 3
    assert sorted(job["node"] for job in last["details"]["jobs"]) == ["node1", "node2", "node3"]
    assert last["details"]["scheduler"].startswith("tcp://10.77.0.1:")  # the login node's eth0
    logs = {path.name for path in (work / "out").glob("*.err")}
    assert {f"{slurm_jobs_name(run_id, 1)}-{job['job_id']}.err" for job in last["details"]["jobs"]} <= logs
    assert wait_until(lambda: not cluster.jobs(), 30)


def slurm_jobs_name(run_id: str, step: int) -> str:
    from daskweak.backends.slurm.jobs import job_name

    return job_name(run_id, step)


def test_a_cert_dir_in_the_login_nodes_tmp_fails_at_once_naming_the_node(slurm_multinode):
    cluster = slurm_multinode
    work = cluster.scratch("certs")
    certs = f"/tmp/daskweak-certs-{work.name}"  # the login node's private /tmp
    done = login_run(cluster, work, f"MAX_N_CORES=1\nUSE_SSL=True\nCERT_DIR={certs}\nTIMEOUT=3600\n")
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, output[-3000:]
    assert f"CERT_DIR={certs}" in output and "not readable" in output, output[-3000:]
    assert re.search(r"\(on node\d\)", output), output[-3000:]
    cluster.login("rm", "-rf", certs)
    assert wait_until(lambda: not cluster.jobs(), 30)


def test_workers_run_the_shared_environments_python_on_the_compute_nodes(slurm_multinode):
    """A worker environment that exists on the shared file system only, a driver environment that exists on
    the login node only (its /tmp): the workers on the compute nodes report the shared one's interpreter."""
    cluster = slurm_multinode
    work = cluster.scratch("env")
    env = work / "worker-env"
    packages = str(next((ROOT / ".venv").glob("lib/python*/site-packages")))
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    [site] = env.glob("lib/python*/site-packages")
    (site / "project.pth").write_text(packages + "\n")
    driver = f"/tmp/driver-env-{work.name}"
    cluster.login(sys.executable, "-m", "venv", "--without-pip", driver, cwd=work)
    cluster.login("sh", "-c", f'printf "%s\\n" "{packages}" "{ROOT}" > "$(echo {driver}/lib/python*/site-packages)/'
                  'project.pth"', cwd=work)  # the checkout too: daskweak is installed from it (editable)
    assert cluster.on("node1", "test", "-e", f"{driver}/bin/python", check=False).returncode != 0
    script = work / "executables.py"
    script.write_text(
        "import json, sys\n"
        "from daskweak.backends.base import open_cluster\nfrom daskweak.plan import make_plan\n"
        "from daskweak.settings import load_settings\n"
        f"settings = load_settings(backend='slurm', account='daskweak', partition='debug', max_n_cores=2, "
        f"step_by=2, cores_per_node=1, slurm_exclusive=True, net_interface='eth0', env_to_source='{env}', "
        f"out_dir='{work / 'out'}', res_dir='{work / 'results'}')\n"
        "with open_cluster(settings, make_plan(settings)[-1], 'env') as deployment:\n"
        "    found = deployment.client.run(lambda: (__import__('socket').gethostname(), sys.executable))\n"
        "print(json.dumps(sorted(found.values())))\n")
    done = cluster.login(f"{driver}/bin/python", str(script), cwd=work, check=False)
    cluster.login("rm", "-rf", driver, cwd=work)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert {python for _, python in found} == {str(env / "bin" / "python")}
    assert len({host for host, _ in found}) == 2 and all(host.startswith("node") for host, _ in found)
    assert wait_until(lambda: not cluster.jobs(), 30)


def test_a_net_interface_the_login_node_lacks_is_refused_listing_its_interfaces(slurm_multinode):
    work = slurm_multinode.scratch("nic")
    done = login_run(slurm_multinode, work, "MAX_N_CORES=1\n", net_interface="ib0")
    output = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 2, output[-2000:]
    assert "NET_INTERFACE='ib0'" in output and "eth0, lo" in output, output[-2000:]
    assert slurm_multinode.jobs() == []


def test_on_the_login_node_the_next_run_cancels_the_jobs_of_a_sigkilled_run(slurm_multinode):
    """4 whole-node jobs on 3 nodes: 3 run, 1 waits; the driver on the login node is SIGKILLed, and the next
    `daskweak run` there (same results table) cancels them."""
    from daskweak.backends.slurm.jobs import of_run

    cluster = slurm_multinode
    work = cluster.scratch("killed")
    env_file = write_env(work, "MAX_N_CORES=4\nSTEP_BY=4\nCORES_PER_NODE=1\nSLURM_EXCLUSIVE=True\nTIMEOUT=3600\n")
    log = (work / "driver.txt").open("w")
    driver = subprocess.Popen([*cluster.login_command, PYTHON, "-m", "daskweak", "--env-file", str(env_file), "run"],
                              cwd=work, stdout=log, stderr=log)

    def states(run_id: str) -> list[str]:
        rows = [line.split() for line in cluster.jobs()]
        mine = of_run({job_id: name for job_id, name, _ in rows}, run_id)
        return sorted(state for job_id, _, state in rows if job_id in mine)

    def killed_run() -> str | None:
        database = work / "results" / "daskweak.sqlite"
        if not database.exists():
            return None
        with ResultStore(f"sqlite:///{database}") as store:
            runs = list(store.runs()["run_id"])
        return runs[0] if runs and states(runs[0]) == ["PENDING", "RUNNING", "RUNNING", "RUNNING"] else None

    try:
        assert wait_until(killed_run, 240, 1.0), cluster.jobs()
        run_id = killed_run()
        # The driver's python is the wrapper's one child (`login` runs nsenter, which execs env, which execs
        # python). Not found by name or command line: the Dask scheduler it runs renames the process ("dask
        # scheduler [tcp://…]", setproctitle) whenever an ancestor ran a Dask cluster before (__DASK_PARENT_PID,
        # which pytest has once any LocalCluster ran in the session).
        drivers = psutil.Process(driver.pid).children()
        assert len(drivers) == 1, (driver.poll(), drivers, (work / "driver.txt").read_text()[-3000:])
        [python] = drivers
        assert "python" in Path(python.exe()).name, (python.exe(), python.cmdline())
        python.send_signal(signal.SIGKILL)
        driver.wait(30)
        assert len(states(run_id)) == 4  # nobody cancelled them …
        done = login_run(cluster, work, "MAX_N_CORES=1\n")
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        assert wait_until(lambda: not states(run_id), 30)  # … until the next run
    finally:  # the driver this test started, below its wrapper, if the test failed before killing it
        with contextlib.suppress(psutil.NoSuchProcess):
            for proc in psutil.Process(driver.pid).children(recursive=True):
                proc.kill()
        driver.kill()
        log.close()
    assert wait_until(lambda: not cluster.jobs(), 60)
