"""The repository holds sources only: no job logs, databases or test artefacts."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARTEFACT = re.compile(
    r"(^|/)(slurm-\d+\.out|daskweak-driver-\d+\.out)$"  # Slurm job output
    r"|\.(log|out|err|sqlite|sqlite3|db|parquet)$"  # logs, databases, exported rows
    r"|(^|/)(test-artifacts|results|out|\.airflow|\.pytest_cache)/"  # what tests and runs write
)


def test_git_tracks_no_logs_databases_or_test_artefacts():
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
    assert tracked, "not a git checkout"
    assert [path for path in tracked if ARTEFACT.search(path)] == []


def test_gitignore_covers_what_runs_and_tests_write(tmp_path):
    samples = ["slurm-7.out", "slurm/dev-cluster/slurm-52.out", "daskweak-driver-12.out", "results/x.csv",
               "out/1.err", ".airflow/airflow.db", "test-artifacts/report.png", "a.sqlite", "migrate.log"]
    ignored = subprocess.run(["git", "-C", str(ROOT), "check-ignore", "--no-index", *samples],
                             capture_output=True, text=True).stdout.split()
    assert sorted(ignored) == sorted(samples)
