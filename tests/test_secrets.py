"""Secrets never leave in clear: the results password and the notifier's token are masked wherever they show.

A whole run (CLI and `airflow dags test`, real PostgreSQL) with sentinel secrets, then a search of everything
it printed, logged or stored. Exported kubeconfigs are private and do not outlive their run, even when the
process holding one is SIGKILLed.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import uuid
from pathlib import Path

import pandas as pd
import pytest

from daskweak.settings import load_settings
from tests.airflow_harness import SMALL_ENV, AirflowHome

PASSWORD = "S3ntinelPassw0rd"
TOKEN = "S3ntinelT0ken"
SENTINELS = (PASSWORD, TOKEN)


def leaks(where: str, text: str | bytes) -> list[str]:
    """Sentinels found in `text`, also when a console wrapped them across lines."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    squeezed = re.sub(r"\s+", "", text)
    return [f"{sentinel} in {where}" for sentinel in SENTINELS if sentinel in text or sentinel in squeezed]


def files_leaks(root: Path) -> list[str]:
    """Every file below `root`, as bytes; Parquet (compressed) also through its decoded rows."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        found += leaks(str(path), path.read_bytes())
        if path.suffix == ".parquet":
            found += leaks(f"{path} (rows)", pd.read_parquet(path).to_csv())
    return found


@pytest.fixture
def secret_database(postgres_url: str) -> str:
    """A fresh database of the PostgreSQL fixture, as a URL carrying the sentinel password (trust auth)."""
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"secrets_{uuid.uuid4().hex[:8]}"
    base = make_url(postgres_url)
    with psycopg.connect(host=base.host, port=base.port, user=base.username, dbname=base.database,
                         autocommit=True) as conn:
        conn.execute(f"create database {name}")
    return base.set(password=PASSWORD, database=name).render_as_string(hide_password=False)


def database_leaks(url: str) -> tuple[list[str], dict[str, list[tuple]]]:
    """Every row of every table of the results database, as text."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(url)
    found, tables = [], {}
    with engine.connect() as conn:
        for table in inspect(conn).get_table_names():
            rows = conn.execute(text(f'select t::text from "{table}" t')).fetchall()
            tables[table] = rows
            found += leaks(f"table {table}", "\n".join(row[0] for row in rows))
    engine.dispose()
    return found, tables


def test_a_run_with_sentinel_secrets_shows_them_nowhere(tmp_path, secret_database):
    from daskweak.analysis import pages
    from daskweak.store import ResultStore

    results = tmp_path / "results"
    env_file = tmp_path / "secret.env"
    env_file.write_text(SMALL_ENV + f"RES_DIR={results}\nSUITES=tasks\nMAX_N_CORES=1\n"
                        f"RESULTS_URL={secret_database}\n"
                        f'REGRESSION_NOTIFIER_ARGS={{"token": "{TOKEN}", "text": "{{{{ summary }}}}"}}\n')
    outputs: dict[str, str] = {}

    def cli(*args: str, code: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", "daskweak", "--env-file", str(env_file), *args],
                              capture_output=True, text=True, timeout=600)
        outputs[f"daskweak {' '.join(args)}"] = done.stdout + done.stderr
        assert done.returncode == code, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout

    out = cli("run")
    [run_id] = re.findall(r"run (\S+): ok", out)
    assert run_id in cli("results")
    cli("results", run_id)
    cli("results", run_id, "--format", "parquet")
    cli("results", "no-such-run", code=1)
    cli("report", run_id)
    cli("check", run_id)
    cli("plan")

    home = AirflowHome(tmp_path / "home", env_file)
    home.migrate()
    dags_test = home.run("dags", "test", "dask_weak_scaling", check=True)
    outputs["airflow dags test"] = dags_test.stdout + dags_test.stderr
    airflow_run = home.latest_run_id("dask_weak_scaling")
    # The same database through an Airflow Connection (RESULTS_CONN_ID): the URL then travels as an override.
    connection = secret_database.replace("postgresql+psycopg://", "postgres://")
    dags_test = home.run("dags", "test", "dask_weak_scaling", check=True,
                         env={"RESULTS_CONN_ID": "secret_results", "AIRFLOW_CONN_SECRET_RESULTS": connection})
    outputs["airflow dags test (Connection)"] = dags_test.stdout + dags_test.stderr
    connection_run = home.latest_run_id("dask_weak_scaling")

    found = [leak for name, text in outputs.items() for leak in leaks(name, text)]
    found += files_leaks(home.home)  # task logs, airflow.db
    with sqlite3.connect(home.home / "airflow.db") as db:
        found += leaks("airflow.db rows", "\n".join(db.iterdump()))
        xcoms = db.execute("select run_id, task_id, value from xcom").fetchall()
    found += [leak for run, task_id, value in xcoms for leak in leaks(f"xcom of {run} {task_id}", str(value))]
    found += files_leaks(results)  # exports, reports, regression verdict
    database, tables = database_leaks(secret_database)
    found += database
    with ResultStore(secret_database) as store:
        found += leaks("runs page", pages.runs_page(store))
        for run in (run_id, airflow_run, connection_run):
            found += leaks(f"page of {run}", pages.run_page(store, run) or "")
        configs = store.runs().set_index("run_id")["config"]
    assert found == [], "\n".join(found)

    # Not a vacuous search: the masked settings are where they should be.
    assert "postgres:***@127.0.0.1" in out
    validated = [json.loads(value) for _, task_id, value in xcoms if task_id == "validate"]
    assert len(validated) == 2
    for config in (*validated, configs[run_id], configs[airflow_run], configs[connection_run]):
        assert config["regression_notifier_args"] == {"token": "***", "text": "***"}
        assert config["results_url"].startswith("postgresql+psycopg://postgres:***@127.0.0.1:")
    assert len(tables["observations"]) > 0 and {run_id, airflow_run, connection_run} <= set(configs.index)
    assert list(results.glob("**/report.html")) and list(results.glob("*.parquet"))


def test_notifier_still_receives_the_real_arguments(tmp_path):
    from daskweak.orchestration import notifier

    env_file = tmp_path / "n.env"
    env_file.write_text("REGRESSION_NOTIFIER=airflow.sdk.bases.notifier.BaseNotifier\n"
                        f'REGRESSION_NOTIFIER_ARGS={{"token": "{TOKEN}"}}\n')
    assert notifier(str(env_file), {}) == ("airflow.sdk.bases.notifier.BaseNotifier", {"token": TOKEN})


def test_a_bad_secret_setting_is_reported_without_its_value():
    from daskweak.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_settings(regression_notifier_args=f'{{"token": "{TOKEN}"')  # broken JSON
    assert "REGRESSION_NOTIFIER_ARGS" in str(caught.value) and leaks("error", str(caught.value)) == []


# --- exported kubeconfig ---

HOLDER = """
import sys
from kubernetes.client import Configuration
from daskweak.backends.kubernetes.kubeconfig import exported

configuration = Configuration()
configuration.host = "https://127.0.0.1:6443"
configuration.api_key = {"BearerToken": "Bearer %s"}
with exported(configuration, sys.argv[1]) as path:
    print(path, flush=True)
    sys.stdin.read()  # hold the credentials until killed
"""


def hold_kubeconfig(run_id: str) -> tuple[subprocess.Popen, Path]:
    """A real process inside `exported(...)`, and the kubeconfig it wrote."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER % TOKEN, run_id], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    path = Path(proc.stdout.readline().strip())
    assert path.is_file(), "the holder did not export a kubeconfig"
    return proc, path


def sigkill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def test_an_exported_kubeconfig_is_private_and_removed_after_its_block():
    from kubernetes.client import Configuration

    from daskweak.backends.kubernetes.kubeconfig import exported

    configuration = Configuration()
    configuration.host = "https://127.0.0.1:6443"
    configuration.api_key = {"BearerToken": f"Bearer {TOKEN}"}
    before = os.environ.get("KUBECONFIG")
    with exported(configuration, f"manual__{uuid.uuid4().hex}") as path:
        assert os.environ["KUBECONFIG"] == str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
        assert json.loads(path.read_text())["users"][0]["user"]["token"] == TOKEN
    assert not path.exists() and not path.parent.exists()
    assert os.environ.get("KUBECONFIG") == before


def test_the_runs_last_task_removes_a_kubeconfig_left_by_a_sigkilled_step():
    from daskweak.orchestration import release_credentials

    run_id = f"manual__{uuid.uuid4().hex}"
    proc, path = hold_kubeconfig(run_id)
    sigkill(proc)
    assert path.exists()  # SIGKILL skips every clean-up of the process itself
    release_credentials(run_id)
    assert not path.parent.exists()


def test_the_next_run_removes_kubeconfigs_left_by_dead_processes_of_other_runs():
    from daskweak.backends.kubernetes.kubeconfig import remove_stale

    killed, killed_path = hold_kubeconfig(f"manual__{uuid.uuid4().hex}")
    alive, alive_path = hold_kubeconfig(f"manual__{uuid.uuid4().hex}")
    try:
        sigkill(killed)
        remove_stale()  # what the next run does before exporting its own credentials
        assert not killed_path.parent.exists()
        assert alive_path.exists()  # a run still in progress keeps its credentials
    finally:
        alive.stdin.close()
        alive.wait(30)
    assert not alive_path.parent.exists()
