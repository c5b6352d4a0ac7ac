"""Real Airflow for the tests: a private AIRFLOW_HOME (SQLite), the project's DAGs, and optional servers."""

from __future__ import annotations

import fcntl
import importlib.metadata
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
AIRFLOW = str(ROOT / "bin" / "airflow")
SMALL_ENV = """\
PROBLEM_SIZE_ARRAY=256
PROBLEM_SIZE_DATAFRAMES=20000
PROBLEM_SIZE_TASKS=20
OBS_PER_ITER=1
WARMUP=1
TIMEOUT=60
"""


def migrated_template() -> Path:
    """A migrated Airflow metadata database, made by one real `airflow db migrate` (bin/airflow's first use) per
    Airflow version on this machine and shared by every test's home and every xdist worker: migrating takes
    10-20 s, a copy of the file milliseconds, and a copy is as fresh as a new migration."""
    version = importlib.metadata.version("apache-airflow-core")
    root = Path(tempfile.gettempdir()) / "daskweak-tests"
    template = root / f"airflow-{version}"
    if (template / ".migrated").exists():
        return template
    root.mkdir(exist_ok=True)
    with open(root / "airflow-template.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another worker may be making it: wait for it
        if not (template / ".migrated").exists():
            building = Path(tempfile.mkdtemp(dir=root, prefix="building-"))
            env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {"AIRFLOW_HOME": str(building)}
            done = subprocess.run([AIRFLOW, "version"], env=env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise AssertionError(f"airflow db migrate failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
            building.rename(template)
    return template


class AirflowHome:
    """One AIRFLOW_HOME, its environment for `bin/airflow`, and reads of its metadata database."""

    def __init__(self, home: Path, env_file: Path, extra: dict[str, str] | None = None):
        self.home, self.env_file = home, env_file
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")} | {
            "AIRFLOW_HOME": str(home),
            "DASKWEAK_ENV_FILE": str(env_file),
            "AIRFLOW__API_AUTH__JWT_SECRET": "daskweak-tests-" + "x" * 64,
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": "admin:admin,viewer:viewer",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        } | (extra or {})
        home.mkdir(parents=True, exist_ok=True)
        (home / "passwords.json").write_text(json.dumps({"admin": "admin-password", "viewer": "viewer-password"}))

    def migrate(self) -> None:
        """A freshly migrated metadata database: a copy of the shared template (bin/airflow then sees it migrated)."""
        template = migrated_template()
        for name in ("airflow.db", ".migrated"):
            shutil.copy(template / name, self.home / name)

    def run(self, *args: str, timeout: float = 600, env: dict[str, str] | None = None,
            check: bool = False, prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
        """`airflow ARGS`, run through `prefix` (a command that runs its arguments, e.g. in a CPU limit)."""
        result = subprocess.run([*(prefix or []), AIRFLOW, *args], env=self.env | (env or {}), capture_output=True,
                                text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"airflow {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        return result

    def query(self, sql: str, *params: Any) -> list[tuple]:
        with sqlite3.connect(self.home / "airflow.db") as db:
            return db.execute(sql, params).fetchall()

    def task_instances(self, run_id: str, task_id: str) -> list[tuple]:
        return self.query(
            "select map_index, rendered_map_index, state, try_number, start_date, end_date from task_instance "
            "where run_id = ? and task_id = ? order by map_index", run_id, task_id)

    def xcoms(self, run_id: str, task_id: str) -> dict[int, Any]:
        rows = self.query("select map_index, value from xcom where run_id = ? and task_id = ? and key = ?",
                          run_id, task_id, "return_value")
        return {index: json.loads(value) for index, value in rows}

    def latest_run_id(self, dag_id: str) -> str:
        [(run_id,)] = self.query("select run_id from dag_run where dag_id = ? order by id desc limit 1", dag_id)
        return run_id


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def measured(res_dir: Path, cores: int) -> bool:
    """Whether the `cores`-core step has measured an observation: its spool checkpoint holds one."""
    for path in (Path(res_dir) / "spool").glob("*/step-*.json"):
        try:
            payload = json.loads(path.read_text())
        except (OSError, ValueError):  # replaced or loaded meanwhile
            continue
        if payload["step"]["cores_requested"] == cores and any(not row["warmup"] for row in payload["rows"]):
            return True
    return False


def signal_step_process(cores: int, res_dir: Path, sig: int = signal.SIGTERM, timeout: float = 600) -> int:
    """Wait until the process running the `cores`-core step has measured an observation, then signal it.

    The step process is looked for among this test process's descendants: other tests run beside this one
    (pytest-xdist), and a step process of theirs may have the same command line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if measured(res_dir, cores):
            for proc in psutil.Process().children(recursive=True):
                try:
                    cmdline = proc.cmdline()
                except psutil.Error:
                    continue
                if "daskweak.isolated" in cmdline and f"--cores={cores}" in cmdline:
                    proc.send_signal(sig)
                    return proc.pid
        time.sleep(0.1)
    raise AssertionError(f"the {cores}-core step measured nothing within {timeout}s")


def dask_processes(home: Path) -> list[psutil.Process]:
    """Step processes and Dask workers still alive anywhere on the machine that were started under the Airflow
    home `home` (their AIRFLOW_HOME): a leaked worker is orphaned, so not found as a descendant, and other tests
    running beside this one (pytest-xdist) have Dask processes of their own."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        text = " ".join(proc.info["cmdline"] or [])
        if "daskweak.isolated" in text or "spawn_main" in text:
            try:
                if proc.environ().get("AIRFLOW_HOME") == str(home):
                    found.append(proc)
            except psutil.Error:
                continue
    return found


class Services:
    """api-server + scheduler + dag-processor (+ extra services) on loopback, each in its own session."""

    def __init__(self, base: Path, executor: str, extra_env: dict[str, str] | None = None,
                 extra_services: list[tuple[str, list[str]]] | None = None):
        self.base = base
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env_file = base / "bench.env"
        env_file.write_text(SMALL_ENV + f"RES_DIR={base / 'results'}\nSUITES=tasks,arrays\n")
        self.home = AirflowHome(base / "home", env_file, extra={
            "AIRFLOW__CORE__EXECUTOR": executor,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        } | (extra_env or {}))
        self.services = [("api-server", [AIRFLOW, "api-server", "-H", "127.0.0.1", "-p", str(self.port)]),
                         ("scheduler", [AIRFLOW, "scheduler"]), ("dag-processor", [AIRFLOW, "dag-processor"]),
                         *(extra_services or [])]
        self.procs: list[tuple[subprocess.Popen, Any]] = []

    def __enter__(self) -> Services:
        self.home.migrate()
        for name, cmd in self.services:
            log = open(self.base / f"{name}.log", "w")
            self.procs.append((subprocess.Popen(cmd, env=self.home.env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True), log))
        import httpx

        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError((self.base / "api-server.log").read_text()[-3000:])
            time.sleep(1)
        token = httpx.post(f"{self.url}/auth/token", json={"username": "admin", "password": "admin-password"},
                           timeout=10).json()["access_token"]
        self.client = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {token}"}, timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        for proc, _ in self.procs:
            os.killpg(proc.pid, signal.SIGTERM)
        for proc, log in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(30)
            log.close()

    def trigger(self, dag_id: str, conf: dict[str, Any], timeout: float = 400) -> tuple[str, str]:
        """Unpause, POST a run with `logical_date: null` (as the README shows), wait for its end state."""
        deadline = time.monotonic() + 120
        while self.client.get(f"/api/v2/dags/{dag_id}").status_code != 200:  # parsed by the dag-processor
            assert time.monotonic() < deadline, "DAG never appeared"
            time.sleep(1)
        self.client.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        created = self.client.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        created.raise_for_status()
        run_id = created.json()["dag_run_id"]
        deadline = time.monotonic() + timeout
        while (state := self.client.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()["state"]) not in (
                "success", "failed"):
            assert time.monotonic() < deadline, f"run still {state}"
            time.sleep(2)
        return run_id, state
