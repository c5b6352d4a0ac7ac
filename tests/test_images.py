"""The images install requirements.lock's versions, from wheels, as a non-root user.

The worker image is built for real with podman (docker/build-images: its base comes from Debian bookworm's
packages, Python 3.11 like the client, since Docker Hub's python image cannot be pulled here) and its
installed distributions are read inside a container. The Airflow image's base (apache/airflow) cannot be
pulled either: its install step is resolved with the same inputs (the daskweak wheel, its extras, the lock
as constraint) instead, and the lock is shown to pin every package distributed compares between client,
scheduler and workers.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from tests.conftest import need
from tests.podman_rig import build_image, image_size, podman

ROOT = Path(__file__).resolve().parents[1]
UV = str(Path(sys.executable).parent / "uv")
pytestmark = pytest.mark.timeout(1800)  # the first build on a fresh machine: base, PyPI downloads

INSIDE = r"""
import importlib.metadata as md, json, os, pwd, shutil, sys
print(json.dumps({
    "uid": os.getuid(), "gid": os.getgid(), "user": pwd.getpwuid(os.getuid()).pw_name, "home": os.environ["HOME"],
    "dask": shutil.which("dask"), "python": "%d.%d" % sys.version_info[:2], "prefix": sys.prefix,
    "versions": {d.metadata["Name"]: d.version for d in md.distributions()},
}))
"""


def lock_pins() -> dict[str, str]:
    text = (ROOT / "requirements.lock").read_text()
    return {canonicalize_name(m[1]): m[2] for m in re.finditer(r"^([A-Za-z0-9._-]+)==(\S+)$", text, re.M)}


def distributed_checked() -> set[str]:
    """What the version checks compare: distributed's required and optional packages, and daskweak's extra ones."""
    from distributed import versions

    from daskweak.backends.base import VERSION_CHECKED

    return {canonicalize_name(p) for p in [*versions.required_packages, *versions.optional_packages,
                                           *VERSION_CHECKED]}


@pytest.fixture(scope="module")
def image() -> str:
    if os.geteuid() != 0:
        need("building the image with podman needs root (podman's system storage, mmdebstrap)")
    return build_image()


@pytest.fixture(scope="module")
def inside(image) -> dict:
    """Python's view from inside a container of the image, run as the image says (its user, its PATH)."""
    return json.loads(podman("run", "--rm", "--network=none", image, "python", "-c", INSIDE).stdout)


def test_the_image_runs_as_a_non_root_user_with_dask_on_path(image, inside):
    assert (inside["uid"], inside["gid"], inside["user"], inside["home"]) == (10001, 10001, "dask", "/home/dask")
    assert inside["dask"] == "/opt/daskweak/bin/dask" and inside["prefix"] == "/opt/daskweak"
    assert inside["python"] == f"{sys.version_info.major}.{sys.version_info.minor}"  # the client's minor version
    [config] = json.loads(podman("image", "inspect", image).stdout)
    assert config["Config"]["User"] == "10001:10001"
    # the default command is the `dask` CLI the DaskCluster's pods run (`dask scheduler`, `dask worker`)
    ran = podman("run", "--rm", "--network=none", image)
    assert ran.stdout.strip() == f"dask, version {metadata.version('dask')}", ran.stdout + ran.stderr
    print(f"image {image}: {image_size(image) / 2**20:.0f} MiB")


def test_every_package_in_the_image_has_the_clients_and_the_locks_version(inside):
    image = {canonicalize_name(name): version for name, version in inside["versions"].items()}
    client = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    lock = lock_pins()
    differ = {name: (version, client.get(name), lock.get(name)) for name, version in image.items()
              if version != client.get(name) or (name != "daskweak" and version != lock.get(name))}
    assert differ == {}, "image, client, lock"
    assert image["daskweak"] == metadata.version("daskweak")
    assert distributed_checked() <= set(image)  # all of them there: a package one side lacks is a mismatch too
    assert not {"apache-airflow", "pytest", "ruff", "dask-jobqueue", "pip", "uv"} & set(image)


def test_the_lock_pins_every_package_the_version_checks_compare():
    assert distributed_checked() - set(lock_pins()) == set()
    # lz4 (optional for distributed) is daskweak's own dependency: the client, the worker image and the Airflow
    # image (whose base may carry another lz4) all install it at the lock's version
    requires = {canonicalize_name(re.split(r"[\s\[<>=;!~]", r, maxsplit=1)[0]) for r in metadata.requires("daskweak")}
    assert {"lz4", "numpy", "pandas", "pyarrow"} <= requires


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheels")
    subprocess.run([UV, "build", "--wheel", "-o", str(out), str(ROOT)], check=True, capture_output=True,
                   timeout=300)
    [built] = out.glob("daskweak-*.whl")
    return built


def test_the_airflow_images_install_step_gets_the_locks_versions(wheel, tmp_path):
    """apache/airflow cannot be pulled here: its install step is resolved into an empty venv, with the same
    wheel, extras and lock-as-constraint. Installed over the Airflow image's own packages, the constraint
    replaces any of these whose version differs (pip's resolver only keeps an installed one that fits)."""
    dockerfile = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert "--constraint /tmp/requirements.lock" in dockerfile
    extras = re.search(r"daskweak\S*\[([a-z,]+)\]", dockerfile)
    assert extras, "the Dockerfile installs the daskweak wheel with extras"
    subprocess.run([UV, "venv", "-q", str(tmp_path / "venv"), "--python", sys.executable], check=True)
    result = subprocess.run(
        [UV, "pip", "install", "--dry-run", "--python", str(tmp_path / "venv" / "bin" / "python"), "--only-binary",
         ":all:", "--constraint", str(ROOT / "requirements.lock"), f"daskweak[{extras[1]}] @ {wheel.as_uri()}"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    plan = dict(re.findall(r"^ \+ (\S+)==(\S+)$", result.stderr + result.stdout, re.M))
    plan = {canonicalize_name(name): version for name, version in plan.items()}
    lock = lock_pins()
    assert {name: (v, lock.get(name)) for name, v in plan.items() if name != "daskweak" and v != lock.get(name)} == {}
    assert distributed_checked() <= set(plan) and "apache-airflow" in plan


def test_dockerfiles_use_the_locked_bases_and_a_non_root_user():
    lock = (ROOT / "requirements.lock").read_text()
    airflow_version = re.search(r"^apache-airflow==(\S+)$", lock, re.M)[1]
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    worker = (ROOT / "docker" / "Dockerfile").read_text()
    assert f"ARG BASE_IMAGE=python:{python}-slim-bookworm" in worker  # the default where Docker Hub is reachable
    final = worker.rsplit("\nFROM ", 1)[1]
    assert final.startswith("${BASE_IMAGE}\n") and "USER 10001:10001" in final
    assert not re.search(r"gcc|build-essential|apt-get", final)
    airflow = (ROOT / "docker" / "airflow.Dockerfile").read_text()
    assert f"FROM apache/airflow:{airflow_version}-python{python}" in airflow
