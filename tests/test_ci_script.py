"""`.ci/run` fails loudly: a Kubernetes rig that does not come up stops CI with the rig's message.

The script runs in a copy of the project's skeleton whose `bin/test` and `ruff` only report that they ran
(the real ones would run this very suite again) and whose rig is a stand-in `up`: a rig that fails on
purpose cannot be had otherwise.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/usr/bin/env bash\n" + text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def _project(tmp_path: Path, up: str) -> tuple[Path, dict[str, str]]:
    project = tmp_path / "project"
    (project / ".ci").mkdir(parents=True)
    shutil.copy(ROOT / ".ci" / "run", project / ".ci" / "run")
    _script(project / "bin" / "_venv.sh", "VENV=\"$(pwd)/.venv\"\n")
    _script(project / "bin" / "test", 'echo "tests ran with CI=$CI"\n')
    _script(project / ".venv" / "bin" / "ruff", "echo ruff ran\n")
    _script(tmp_path / "rig" / "up", up)
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "CI")}
    return project, env | {"K8S_LOCAL": str(tmp_path / "rig")}


def test_a_rig_that_does_not_come_up_stops_ci_with_its_message(tmp_path):
    project, env = _project(tmp_path, 'echo "k8s-local: etcd did not start (log tail …)" >&2; exit 1\n')
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "etcd did not start" in done.stderr and "failed twice" in done.stderr
    assert "tests ran" not in done.stdout


def test_ci_runs_the_tests_with_ci_set_once_the_rig_is_up(tmp_path):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("apiVersion: v1\n")
    project, env = _project(tmp_path, f'echo "export KUBECONFIG={kubeconfig}"\n')
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "tests ran with CI=true" in done.stdout and "ruff ran" in done.stdout


def test_a_rig_that_fails_once_is_tried_again_and_then_ci_goes_on(tmp_path):
    """k8s-local's up can take a just-forked daemon for a dead one; its second up finds the daemon running."""
    kubeconfig, marker = tmp_path / "kubeconfig", tmp_path / "tried"
    kubeconfig.write_text("apiVersion: v1\n")
    project, env = _project(tmp_path, (
        f'if [ ! -e {marker} ]; then touch {marker}; echo "apiserver exited while waiting" >&2; exit 1; fi\n'
        f'echo "K8S_LOCAL_NODES=$K8S_LOCAL_NODES" >&2; echo "export KUBECONFIG={kubeconfig}"\n'))
    done = subprocess.run(["bash", ".ci/run"], cwd=project, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "apiserver exited while waiting" in done.stderr and "trying once more" in done.stderr
    assert "K8S_LOCAL_NODES=3" in done.stderr
    assert "tests ran with CI=true" in done.stdout
