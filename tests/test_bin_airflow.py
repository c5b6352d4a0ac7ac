"""`bin/airflow` as a new user meets it: `standalone` serves the UI's API from a fresh clone (its services are
started as `airflow …` from PATH), and the database is migrated again when the installed Airflow changes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import signal
import subprocess
from pathlib import Path

import httpx
import psutil

from tests.airflow_harness import AIRFLOW, free_port
from tests.conftest import wait_until
from tests.test_readme import ROOT, as_written, from_this_checkout

DAG = "dask_weak_scaling"


def fresh_clone_environment(home: Path) -> dict[str, str]:
    """The user's environment without Airflow variables and without this venv on PATH (as on a fresh clone)."""
    venv_bin = str(ROOT / ".venv" / "bin")
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW") and k != "VIRTUAL_ENV"}
    return env | {"PATH": path, "AIRFLOW_HOME": str(home)}


def session_processes(sid: int) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            pass
    return found


def stop_like_an_interrupt(proc: subprocess.Popen) -> bool:
    """SIGINT to standalone, which then stops its services itself; False (and everything killed) if it hangs."""
    os.kill(proc.pid, signal.SIGINT)
    try:
        proc.wait(120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
        return False
    # Its services exit with it; give the last of their children a bounded moment.
    wait_until(lambda: not session_processes(proc.pid), timeout=60)
    return True


def default_sigint() -> None:
    """Ctrl-C must reach standalone even when the test runs where SIGINT is ignored (a background CI job)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_standalone_as_the_readme_starts_it_serves_the_ui_api(tmp_path):
    """`./bin/airflow standalone`, then the README's REST calls with the password standalone generated."""
    [command] = as_written("./bin/airflow standalone")
    home, port = tmp_path / "airflow-home", free_port()
    env = fresh_clone_environment(home) | {"AIRFLOW__API__PORT": str(port)}
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "standalone.log"
    with log.open("w") as out:
        proc = subprocess.Popen(["bash", "-c", from_this_checkout(command.source)], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                preexec_fn=default_sigint)
    try:
        def answers() -> bool:
            assert proc.poll() is None, f"standalone exited {proc.returncode}:\n{log.read_text()[-4000:]}"
            # Services started as `airflow …` without the venv on PATH die at once; standalone itself stays.
            assert "FileNotFoundError" not in log.read_text(), log.read_text()[-4000:]
            try:
                return httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_until(answers, timeout=240, interval=1), f"no api-server on {url}:\n{log.read_text()[-4000:]}"
        passwords = home / "simple_auth_manager_passwords.json.generated"
        assert wait_until(passwords.exists, timeout=30), "standalone wrote no admin password"
        password = json.loads(passwords.read_text())["admin"]
        login = httpx.post(f"{url}/auth/token", json={"username": "admin", "password": password}, timeout=10)
        assert login.status_code in (200, 201), login.text
        client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {login.json()['access_token']}"},
                              timeout=10)
        assert client.get("/api/v2/dags").status_code == 200
        # The README's REST block, as written but for the password and the port: it needs the DAG parsed.
        assert wait_until(lambda: client.get(f"/api/v2/dags/{DAG}").status_code == 200, timeout=240, interval=1), (
            log.read_text()[-4000:])
        rest = as_written("TOKEN=$(curl ") + as_written("curl ")
        assert len(rest) == 2, [c.text for c in rest]
        script = "\n".join(c.source for c in sorted(rest, key=lambda c: c.line))
        script = script.replace('"password": "…"', f'"password": "{password}"').replace(":8080/", f":{port}/")
        done = subprocess.run(["bash", "-euo", "pipefail", "-c", script], env=env, capture_output=True, text=True,
                              timeout=60)
        assert done.returncode == 0, done.stderr
        created = json.loads(done.stdout)
        assert created["dag_id"] == DAG and created["conf"]["suites"] == ["arrays", "tasks"], created
        assert client.get(f"/api/v2/dags/{DAG}/dagRuns/{created['dag_run_id']}").status_code == 200
        client.close()
    finally:
        stopped = stop_like_an_interrupt(proc)
    assert stopped, f"standalone did not stop on SIGINT:\n{log.read_text()[-3000:]}"
    assert proc.returncode == 0, log.read_text()[-3000:]
    left = session_processes(proc.pid)
    if left:
        os.killpg(proc.pid, signal.SIGKILL)
    assert not left, f"left behind: {[p.cmdline() for p in left]}"


def test_the_database_is_migrated_again_when_the_installed_airflow_changes(tmp_path):
    """A home migrated by another Airflow version (or marked by the old, version-less marker) is migrated again."""
    home = tmp_path / "airflow-home"
    home.mkdir()
    marker = home / ".migrated"
    marker.write_text("apache-airflow-core 3.0.0\n")  # no database at all: only a migration makes it usable
    env = fresh_clone_environment(home)
    check = subprocess.run([AIRFLOW, "db", "check-migrations", "-t", "0"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    installed = importlib.metadata.version("apache-airflow-core")
    assert marker.read_text().strip() == f"apache-airflow-core {installed}"
    assert re.search(r"migrating .* for apache-airflow-core", check.stderr)
    again = subprocess.run([AIRFLOW, "db", "check-migrations", "-t", "0"], env=env, capture_output=True,
                           text=True, timeout=600)
    assert again.returncode == 0 and "migrating" not in again.stderr  # the same version: no second migration

    marker.write_text("")  # what the old bin/airflow left: `touch .migrated`
    (home / "airflow.db").unlink()
    assert subprocess.run([AIRFLOW, "db", "check-migrations", "-t", "0"], env=env, capture_output=True,
                          timeout=600).returncode == 0
    assert marker.read_text().strip() == f"apache-airflow-core {installed}"


def test_the_migration_marker_is_not_written_when_the_migration_fails(tmp_path):
    home = tmp_path / "airflow-home"
    env = fresh_clone_environment(home) | {"AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "sqlite:////nonexistent/dir/x.db"}
    done = subprocess.run([AIRFLOW, "version"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and not (home / ".migrated").exists()
