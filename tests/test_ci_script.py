"""`.ci/run` fails loudly: a rig (Kubernetes, either Slurm, the image), the packages or the check of the test
ids that fails stops CI with its own message; every phase prints its time.

The script runs in a copy of the project's skeleton whose scripts (`bin/test`, `ruff`, the rigs' `up`, the
image build, the package install) only report that they ran (the real ones would run this very suite again,
or take minutes): a rig that fails on purpose cannot be had otherwise.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _project(tmp_path: Path, up: str, **stand_ins: str) -> tuple[Path, dict[str, str]]:
    """The skeleton: .ci/run itself, and stand-ins (that only say they ran) for every script it calls."""
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", project / ".ci" / "run")
    scripts = {
        ".ci/packages": 'echo "packages installed"\n',
        "bin/_venv.sh": 'VENV="$(pwd)/.venv"\n',
        # as a Kubernetes test does (tests/conftest.py): wait for the rig's exports, or for why it never came
        "bin/test": ('echo "tests ran with CI=$CI"\n'
                     'while [ ! -e "$DASKWEAK_K8S_EXPORTS" ]; do\n'
                     '  [ -e "$DASKWEAK_K8S_EXPORTS.failed" ] && { echo "the tests saw the rig fail"; exit 1; }\n'
                     '  sleep 0.1\n'
                     'done\n'
                     'echo "the tests saw: $(cat "$DASKWEAK_K8S_EXPORTS")"\n'),
        ".venv/bin/ruff": "echo ruff ran\n",
        ".venv/bin/python": 'echo "python $*"\n',  # runs .ci/check-test-ids
        "slurm/dev-cluster/up": 'echo "slurm up $*"\n',
        "docker/build-images": "echo localhost/daskweak:test\n",
    } | stand_ins
    for name, text in scripts.items():
        _script(project / name, text)
    _script(tmp_path / "rig" / "up", up)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "CI")}
    return project, env | {"K8S_LOCAL": str(tmp_path / "rig"), "DASKWEAK_CI_TIMES": str(tmp_path / "times"),
                           "TMPDIR": str(tmp_path)}


def _kubeconfig(tmp_path: Path) -> str:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    return f'echo "export KUBECONFIG={kubeconfig}"\n'


def test_a_rig_that_does_not_come_up_stops_ci_with_its_message(tmp_path):
    """Its tests fail with its message (never skip), and CI fails with its log."""
    project, env = _project(tmp_path, 'echo "k8s-local: etcd did not start (log tail …)" >&2; exit 1\n')
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "etcd did not start" in done.stderr and "failed twice" in done.stderr
    assert "the tests saw the rig fail" in done.stdout  # a failure, never a skip


def test_ci_runs_the_tests_with_ci_set_once_the_rig_is_up(tmp_path):
    project, env = _project(tmp_path, _kubeconfig(tmp_path))
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tests ran with CI=true" in done.stdout
    assert f"the tests saw: export KUBECONFIG={tmp_path / 'kubeconfig'}" in done.stdout
    assert "ruff ran" in done.stdout
    assert "python .ci/check-test-ids" in done.stdout  # the check of the test ids prints its counts
    # every phase and every rig says how long it took, on stdout and in DASKWEAK_CI_TIMES
    timed = [line.split(": ", 1)[1].rsplit(None, 2)[0] for line in (tmp_path / "times").read_text().splitlines()]
    assert timed == ["packages", "venv", "phase packages", "slurm-multinode", "slurm", "test-ids", "phase rigs",
                     "phase tests", "k8s-local", "image", "phase lint", "total"]
    for phase in ("packages", "rigs", "tests", "lint"):
        assert f"phase {phase}" in done.stdout


@pytest.mark.parametrize("script", ["slurm/dev-cluster/up", ".ci/packages", ".venv/bin/python"])
def test_a_rig_or_check_needed_before_the_tests_that_fails_stops_ci_with_its_log(tmp_path, script):
    project, env = _project(tmp_path, _kubeconfig(tmp_path), **{script: 'echo "it broke: $*" >&2; exit 1\n'})
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "it broke" in done.stderr and "failed after" in done.stderr
    assert "tests ran" not in done.stdout


def test_an_image_that_fails_to_build_fails_ci_with_its_log(tmp_path):
    project, env = _project(tmp_path, _kubeconfig(tmp_path), **{"docker/build-images": 'echo "no base" >&2; exit 1\n'})
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "no base" in done.stderr and "image failed after" in done.stderr


def test_ci_fails_when_the_tests_fail_and_still_lints(tmp_path):
    project, env = _project(tmp_path, _kubeconfig(tmp_path), **{"bin/test": "echo tests failed; exit 1\n"})
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "ruff ran" in done.stdout


def test_a_rig_that_fails_once_is_tried_again_and_then_ci_goes_on(tmp_path):
    """k8s-local's up can take a just-forked daemon for a dead one; its second up finds the daemon running."""
    marker = tmp_path / "tried"
    project, env = _project(tmp_path, (
        f'if [ ! -e {marker} ]; then touch {marker}; echo "apiserver exited while waiting" >&2; exit 1; fi\n'
        f'echo "K8S_LOCAL_NODES=$K8S_LOCAL_NODES" >&2; {_kubeconfig(tmp_path)}'))
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "apiserver exited while waiting" in done.stderr and "trying once more" in done.stderr
    assert "K8S_LOCAL_NODES=3" in done.stderr
    assert "tests ran with CI=true" in done.stdout
