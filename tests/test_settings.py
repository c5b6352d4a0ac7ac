"""Settings: sources and precedence, the origin's rules, and a clear error for every bad input."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from daskweak.errors import ConfigError
from daskweak.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]

BAD = [
    ({"max_n_cores": 0}, "MAX_N_CORES"),
    ({"max_n_cores": -3}, "MAX_N_CORES"),
    ({"max_n_cores": "many"}, "MAX_N_CORES"),
    ({"step_by": 0}, "STEP_BY"),
    ({"step_by": "1.5"}, "STEP_BY"),
    ({"step_by": 8, "max_n_cores": 4}, "STEP_BY"),
    ({"cores_per_node": 0}, "CORES_PER_NODE"),
    ({"obs_per_iter": 0}, "OBS_PER_ITER"),
    ({"warmup": -1}, "WARMUP"),
    ({"timeout": 0}, "TIMEOUT"),
    ({"timeout": "soon"}, "TIMEOUT"),
    ({"poll_interval": -1}, "POLL_INTERVAL"),
    ({"time_limit": "1h"}, "TIME_LIMIT"),
    ({"time_limit": "01:61:00"}, "TIME_LIMIT"),
    ({"backend": "yarn"}, "BACKEND"),
    ({"kube": "maybe"}, "KUBE"),
    ({"kube": True, "backend": "slurm", "account": "a", "partition": "p"}, "KUBE"),
    ({"backend": "slurm", "partition": "p"}, "ACCOUNT"),
    ({"backend": "slurm", "account": "a"}, "PARTITION"),
    ({"kube": False, "account": "a"}, "PARTITION"),
    ({"backend": "kubernetes", "container_image": "img"}, "KUBE_NAMESPACE"),
    ({"kube": True, "kube_namespace": "ns"}, "CONTAINER_IMAGE"),
    ({"use_ssl": True}, "CERT_DIR"),
    ({"use_ssl": "sometimes"}, "USE_SSL"),
    ({"mem_per_node": "lots"}, "MEM_PER_NODE"),
    ({"mem_per_node": "300XB"}, "MEM_PER_NODE"),
    ({"scheduler_mem": "-2Gi"}, "SCHEDULER_MEM"),
    ({"scheduler_cores": 0}, "SCHEDULER_CORES"),
    ({"suites": "arrays,graphs"}, "SUITES"),
    ({"suites": ""}, "SUITES"),
    ({"scaling": "sideways"}, "SCALING"),
    ({"worker_mode": "fibers"}, "WORKER_MODE"),
    ({"problem_size_array": 1}, "PROBLEM_SIZE_ARRAY"),
    ({"problem_size_dataframes": 10}, "PROBLEM_SIZE_DATAFRAMES"),
    ({"problem_size_tasks": 0}, "PROBLEM_SIZE_TASKS"),
    ({"res_file_name": "results.csv"}, "RES_FILE_NAME"),
    ({"res_file_name": "../x"}, "RES_FILE_NAME"),
    ({"kubecluster_name": "Not_A_DNS_Name"}, "KUBECLUSTER_NAME"),
    ({"env_to_source": "/no/such/venv"}, "ENV_TO_SOURCE"),
    ({"net_interface": "no-such-nic0"}, "NET_INTERFACE"),
    ({"results_url": "not a url"}, "RESULTS_URL"),
    ({"max_n_coers": 4}, "MAX_N_COERS"),
]


@pytest.mark.parametrize(("overrides", "setting"), BAD, ids=[f"{s}-{i}" for i, (_, s) in enumerate(BAD)])
def test_bad_input_names_the_setting_and_what_is_accepted(overrides, setting):
    with pytest.raises(ConfigError) as caught:
        load_settings(**overrides)
    problems = {p.setting: p for p in caught.value.problems}
    assert setting in problems, caught.value
    assert "expected" in str(caught.value)
    assert problems[setting].accepted


def test_a_file_in_place_of_a_directory_is_refused(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match="RES_DIR"):
        load_settings(res_dir=str(tmp_path / "taken"))


def test_all_problems_are_reported_together():
    with pytest.raises(ConfigError) as caught:
        load_settings(max_n_cores=0, timeout=-1, backend="slurm", time_limit="x")
    names = {p.setting for p in caught.value.problems}
    assert {"MAX_N_CORES", "TIMEOUT", "TIME_LIMIT", "ACCOUNT", "PARTITION"} <= names


def test_precedence_is_env_file_then_environment_then_overrides(tmp_path, monkeypatch):
    env_file = tmp_path / "bench.env"
    env_file.write_text("MAX_N_CORES=8\nSTEP_BY=2\nOBS_PER_ITER=5\n")
    assert load_settings(env_file).max_n_cores == 8
    monkeypatch.setenv("STEP_BY", "4")
    settings = load_settings(env_file, obs_per_iter=7)
    assert (settings.max_n_cores, settings.step_by, settings.obs_per_iter) == (8, 4, 7)


def test_dot_env_in_working_directory_is_read_by_default(tmp_path):
    (tmp_path / ".env").write_text("MAX_N_CORES=6\n# a comment\nACCOUNT=\n")
    settings = load_settings()
    assert settings.max_n_cores == 6
    assert settings.account is None


def test_missing_settings_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="settings file"):
        load_settings(tmp_path / "nope.env")


def test_nothing_is_read_at_import_time(tmp_path):
    code = "import daskweak.settings, daskweak.runner, daskweak.cli, daskweak.store; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                            env={"MAX_N_CORES": "not-a-number", "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.parametrize(("given", "expected"), [
    ({}, "local"),
    ({"kube": True, "kube_namespace": "ns", "container_image": "img"}, "kubernetes"),
    ({"kube": False, "account": "a", "partition": "p"}, "slurm"),
    ({"backend": "local", "kube": False}, "local"),
])
def test_backend_defaults_to_local_and_kube_still_decides(given, expected):
    assert load_settings(**given).backend == expected


def test_memory_units_follow_the_backend_and_explicit_units_win():
    slurm = load_settings(backend="slurm", account="a", partition="p", mem_per_node="300")
    kube = load_settings(backend="kubernetes", kube_namespace="n", container_image="i", mem_per_node="300")
    assert slurm.mem_per_node_bytes == 300 * 10**9
    assert kube.mem_per_node_bytes == 300 * 2**30
    assert load_settings(mem_per_node="300Gi").mem_per_node_bytes == 300 * 2**30
    assert load_settings(mem_per_node="300GB").mem_per_node_bytes == 300 * 10**9
    assert load_settings(scheduler_mem="4").scheduler_mem_bytes == 4 * 2**30


def test_suites_parse_from_a_comma_separated_list():
    assert load_settings(suites="tasks, arrays,tasks").suites == ["tasks", "arrays"]


def test_public_config_hides_the_database_password():
    settings = load_settings(results_url="postgresql+psycopg://bench:s3cret@db.example/bench")
    assert "s3cret" not in str(settings.public())
    assert "s3cret" not in settings.fingerprint()


def test_fingerprint_changes_with_what_is_measured_only():
    base = load_settings()
    assert base.fingerprint() == load_settings(obs_per_iter=9, verbose=True).fingerprint()
    assert base.fingerprint() != load_settings(problem_size_array=1024).fingerprint()
    assert base.fingerprint() != load_settings(scaling="strong").fingerprint()


def test_env_example_documents_every_setting():
    text = (ROOT / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Z_]+)=", text, flags=re.MULTILINE))
    assert {name.upper() for name in Settings.model_fields} == documented


def test_dot_env_is_git_ignored():
    assert ".env" in (ROOT / ".gitignore").read_text().split()


def test_readme_documents_every_setting_with_its_default():
    text = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `([A-Z_]+)`[^|]*\| (?:`([^`]*)`|—) \|", text, flags=re.MULTILINE))
    for name, field in Settings.model_fields.items():
        default = field.default
        shown = "" if default is None else ",".join(default) if isinstance(default, list) else str(default)
        assert rows.get(name.upper()) == shown, name
