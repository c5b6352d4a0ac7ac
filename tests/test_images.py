"""The images install requirements.lock's versions, from wheels, as a non-root user.

No container engine runs here, so the images are not built; what their install step resolves to is
checked with the same uv/pip inputs (the built daskweak wheel, the extras, the lock as constraint).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UV = str(Path(sys.executable).parent / "uv")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([UV, "build", "--wheel", "-o", str(out), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    [built] = out.glob("daskweak-*.whl")
    return built


def dry_run(python: str, wheel: Path, extras: str) -> str:
    result = subprocess.run(
        [UV, "pip", "install", "--dry-run", "--python", python, "--only-binary", ":all:",
         "--constraint", str(ROOT / "requirements.lock"), f"daskweak[{extras}] @ {wheel.as_uri()}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr + result.stdout


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "airflow.Dockerfile"])
def test_an_image_gets_the_clients_exact_versions(wheel, dockerfile):
    extras = re.search(r"daskweak\S*\[([a-z,]+)\]", (ROOT / "docker" / dockerfile).read_text())
    assert extras, "the Dockerfile installs the daskweak wheel with extras"
    changes = [line for line in dry_run(sys.executable, wheel, extras[1]).splitlines() if line[:3] in (" + ", " - ")]
    # against the test's own (client) environment, only daskweak itself would be swapped: same versions
    assert {line.split()[1].split("=")[0] for line in changes} <= {"daskweak"}, changes


def test_the_worker_image_carries_no_airflow_and_no_test_tools(wheel, tmp_path):
    subprocess.run([UV, "venv", "-q", str(tmp_path / "venv"), "--python", sys.executable], check=True)
    plan = dry_run(str(tmp_path / "venv" / "bin" / "python"), wheel, "image")
    installed = {line.split()[1].split("=")[0] for line in plan.splitlines() if line.startswith(" + ")}
    assert {"dask", "distributed", "numpy", "pandas", "pyarrow", "psycopg-binary"} <= installed
    assert not {"apache-airflow", "pytest", "ruff", "dask-jobqueue"} & installed


def test_dockerfiles_use_the_locked_bases_and_a_non_root_user():
    lock = (ROOT / "requirements.lock").read_text()
    airflow_version = re.search(r"^apache-airflow==(\S+)$", lock, re.M)[1]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    worker = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG PYTHON_VERSION={python}" in worker
    final = worker.rsplit("\nFROM ", 1)[1]
    assert final.startswith("python:${PYTHON_VERSION}-slim") and "USER 10001" in final
    assert not re.search(r"gcc|build-essential|apt-get", final)
    airflow = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert f"FROM apache/airflow:{airflow_version}-python{python}" in airflow
