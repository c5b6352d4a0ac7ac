"""Settings: sources and precedence, the origin's rules, and a clear error for every bad input."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from daskweak.errors import ConfigError
from daskweak.settings import MEASURED, Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
SLURM = {"backend": "slurm", "account": "a", "partition": "p"}
KUBE = {"backend": "kubernetes", "kube_namespace": "ns", "container_image": "img"}

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
    ({**SLURM, "time_limit": "1h"}, "TIME_LIMIT"),
    ({**SLURM, "time_limit": "01:61:00"}, "TIME_LIMIT"),
    ({**SLURM, "time_limit": "1-24"}, "TIME_LIMIT"),
    ({**SLURM, "time_limit": "1-00:00:00:00"}, "TIME_LIMIT"),
    ({**SLURM, "time_limit": "forever"}, "TIME_LIMIT"),
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
    ({"mem_per_node": "0"}, "MEM_PER_NODE"),
    ({**KUBE, "scheduler_mem": "-2Gi"}, "SCHEDULER_MEM"),
    ({**KUBE, "scheduler_cores": 0}, "SCHEDULER_CORES"),
    ({**KUBE, "secret_cert_name": "Not A Secret"}, "SECRET_CERT_NAME"),
    ({"suites": "arrays,graphs"}, "SUITES"),
    ({"suites": ","}, "SUITES"),
    ({"scaling": "sideways"}, "SCALING"),
    ({"worker_mode": "fibers"}, "WORKER_MODE"),
    ({"problem_size_array": 1}, "PROBLEM_SIZE_ARRAY"),
    ({"problem_size_dataframes": 10}, "PROBLEM_SIZE_DATAFRAMES"),
    ({"problem_size_tasks": 0}, "PROBLEM_SIZE_TASKS"),
    ({"res_file_name": "results.csv"}, "RES_FILE_NAME"),
    ({"res_file_name": "../x"}, "RES_FILE_NAME"),
    ({**KUBE, "kubecluster_name": "Not_A_DNS_Name"}, "KUBECLUSTER_NAME"),
    ({**SLURM, "env_to_source": "/no/such/venv"}, "ENV_TO_SOURCE"),
    ({"net_interface": "no-such-nic0"}, "NET_INTERFACE"),
    ({"results_url": "not a url"}, "RESULTS_URL"),
    ({"max_n_coers": 4}, "MAX_N_COERS"),
    ({**KUBE, "kubecluster_name": "1bench"}, "KUBECLUSTER_NAME"),
    ({**KUBE, "kube_worker_placement": "scatter"}, "KUBE_WORKER_PLACEMENT"),
    ({**KUBE, "kube_image_pull_secrets": "registry,Registry_B"}, "KUBE_IMAGE_PULL_SECRETS"),
    ({**KUBE, "kube_node_selector": "pool"}, "KUBE_NODE_SELECTOR"),
    ({**KUBE, "kube_node_selector": "disk type=ssd"}, "KUBE_NODE_SELECTOR"),
    ({**KUBE, "kube_node_selector": '{"cpus": 8}'}, "KUBE_NODE_SELECTOR"),
    ({**KUBE, "kube_node_selector": "pool=" + "x" * 64}, "KUBE_NODE_SELECTOR"),
    ({**KUBE, "kube_tolerations": '{"key": "dedicated"}'}, "KUBE_TOLERATIONS"),
    ({**KUBE, "kube_tolerations": "[{'key': 'dedicated'}]"}, "KUBE_TOLERATIONS"),
    ({**KUBE, "kube_tolerations": '[{"key": "a", "operator": "Exists", "value": "b"}]'}, "KUBE_TOLERATIONS"),
    ({**KUBE, "kube_tolerations": '[{"key": "a", "effect": "Never"}]'}, "KUBE_TOLERATIONS"),
    ({**KUBE, "kube_tolerations": '[{"key": "a", "tolerationSeconds": 5}]'}, "KUBE_TOLERATIONS"),
    ({**KUBE, "kube_tolerations": '[{"operator": "Equal", "value": "x"}]'}, "KUBE_TOLERATIONS"),
    ({**KUBE, "kube_tolerations": '[{"key": "a", "when": "always"}]'}, "KUBE_TOLERATIONS"),
    ({**KUBE, "kube_priority_class": "High"}, "KUBE_PRIORITY_CLASS"),
    ({**KUBE, "kube_service_account": "dask_pods"}, "KUBE_SERVICE_ACCOUNT"),
    ({**KUBE, "kube_pod_labels": "dask.org/component=scheduler"}, "KUBE_POD_LABELS"),
    ({**KUBE, "kube_pod_labels": "team=a b"}, "KUBE_POD_LABELS"),
    ({**KUBE, "kube_pod_labels": "-team=a"}, "KUBE_POD_LABELS"),
    ({**KUBE, "kube_pod_annotations": "/note=x"}, "KUBE_POD_ANNOTATIONS"),
    ({**KUBE, "kube_pod_annotations": "Example.org/note=x"}, "KUBE_POD_ANNOTATIONS"),
    ({"results_sqlite_persistent": "perhaps"}, "RESULTS_SQLITE_PERSISTENT"),
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
    assert load_settings(**KUBE, scheduler_mem="4").scheduler_mem_bytes == 4 * 2**30
    assert load_settings(**SLURM, scheduler_mem="4GB").scheduler_mem_bytes == 2 * 2**30  # ignored on slurm
    assert load_settings(mem_per_node="1.5Gi").mem_per_node_bytes == int(1.5 * 2**30)
    assert load_settings(mem_per_node=" 300 G ").mem_per_node_bytes == 300 * 10**9


def test_suites_parse_from_a_comma_separated_list():
    assert load_settings(suites="tasks, arrays,tasks").suites == ["tasks", "arrays"]


def test_public_config_hides_the_database_password():
    settings = load_settings(results_url="postgresql+psycopg://bench:s3cret@db.example/bench")
    assert "s3cret" not in str(settings.public())
    assert "s3cret" not in settings.fingerprint()


def test_fingerprint_changes_with_what_is_measured_only():
    base = load_settings()
    assert base.fingerprint() == load_settings(verbose=True, results_retry_seconds=5).fingerprint()
    # another observation count is another noise of each run's median: another baseline (10 → 3 kept the old one
    # and turned 4 % of nights red); so is another precision target
    fixed = load_settings(obs_per_iter=3)
    assert len({base.fingerprint(), fixed.fingerprint(), load_settings(obs_per_iter=9).fingerprint(),
                load_settings(target_precision=2).fingerprint()}) == 4
    assert fixed.fingerprint() == load_settings(obs_per_iter=3, target_precision=2).fingerprint()  # not used
    # the seed's 3 keeps the fingerprints stored before this rule (the hash of the measured settings alone)
    values = fixed.public()
    before = json.dumps({key: values[key] for key in sorted(MEASURED)}, sort_keys=True).encode()
    assert fixed.fingerprint() == hashlib.sha256(before).hexdigest()[:16]
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


# A `.env` written for the origin (its table, KUBE=True), the Slurm keys still holding the template's
# placeholders and SECRET_CERT_NAME not set.
ORIGIN_KUBE_ENV = """\
KUBE=True
KUBE_NAMESPACE=dask
CONTAINER_IMAGE=registry.example/dask-bench:latest
SCHEDULER_HOST=node01.example
KUBECLUSTER_NAME=dask-bench
SCHEDULER_CORES=2
SCHEDULER_MEM=8
OUT_DIR=./slurm-out
SLURM_EXCLUSIVE=False
RES_DIR=./results
USE_SSL=False
CERT_DIR=./certs
RES_FILE_NAME=results
MAX_N_CORES=4
CORES_PER_NODE=2
STEP_BY=2
OBS_PER_ITER=5
MEM_PER_NODE=16
VERBOSE=False
NET_INTERFACE=ib0
ACCOUNT=<your account>
PARTITION=<your partition>
TIME_LIMIT=1-00:00:00
ENV_TO_SOURCE=/path/to/venv
TIMEOUT=300
POLL_INTERVAL=5
PROBLEM_SIZE_ARRAY=10000
PROBLEM_SIZE_DATAFRAMES=1000000
"""


def test_an_empty_value_means_unset_for_every_key(tmp_path):
    (tmp_path / ".env").write_text("".join(f"{name.upper()}=\n" for name in Settings.model_fields))
    settings = load_settings()
    for name, field in Settings.model_fields.items():
        expected = "local" if name == "backend" else field.default
        assert getattr(settings, name) == expected, name


def test_a_misspelled_key_in_a_settings_file_is_refused_with_its_line_and_the_closest_key(tmp_path):
    env_file = tmp_path / "bench.env"
    env_file.write_text("MAX_N_CORES=2\n# the sweep\n\nMAX_N_CORE=8\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file)
    [problem] = caught.value.problems
    assert (problem.setting, problem.given, problem.where) == ("MAX_N_CORE", "8", f"{env_file}:4")
    assert "did you mean MAX_N_CORES?" in str(caught.value)
    assert f"{env_file}:4: MAX_N_CORE='8'" in str(caught.value)


def test_a_misspelled_override_is_refused_with_the_closest_key():
    expected = "MAX_N_CORE='8': expected a known setting; did you mean MAX_N_CORES?"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_settings(MAX_N_CORE="8")


def test_a_line_python_dotenv_cannot_parse_is_refused(tmp_path):
    (tmp_path / ".env").write_text("MAX_N_CORES=2\nSTEP_BY 2\n")
    with pytest.raises(ConfigError, match=r"\.env:2: line='STEP_BY…': expected KEY=VALUE"):
        load_settings()


def test_an_environment_variable_close_to_a_setting_is_a_warning_only(monkeypatch, caplog):
    monkeypatch.setenv("MAX_N_CORE", "8")
    monkeypatch.setenv("TIMEOUT_S", "5")  # another program's variable, not close enough to TIMEOUT
    with caplog.at_level("WARNING", logger="daskweak.settings"):
        settings = load_settings()
    assert settings.max_n_cores == 2
    [record] = caplog.records
    assert "MAX_N_CORE" in record.getMessage() and "did you mean MAX_N_CORES?" in record.getMessage()


def test_every_problem_is_reported_at_once_unknown_keys_included(tmp_path):
    env_file = tmp_path / "bench.env"
    env_file.write_text("STEP_BY=0\nOBS_PER_ITR=3\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env_file, max_n_cores=0, warmupp=1)
    names = {p.setting for p in caught.value.problems}
    assert names == {"STEP_BY", "OBS_PER_ITR", "MAX_N_CORES", "WARMUPP"}


@pytest.mark.parametrize("limit", ["30", "30:00", "01:00:00", "48:00:00", "1-00", "1-12:30", "1-00:00:00",
                                   "7-23:59:59", "UNLIMITED", "infinite"])
def test_time_limit_accepts_every_form_of_sbatch_time(limit):
    assert load_settings(**SLURM, time_limit=limit).time_limit == limit


def test_an_origin_env_for_kubernetes_ignores_the_slurm_placeholders(tmp_path):
    (tmp_path / ".env").write_text(ORIGIN_KUBE_ENV)
    settings = load_settings()
    assert settings.backend == "kubernetes"
    # SLURM_EXCLUSIVE=False is its default: ignoring it changes nothing, so it is not worth a mention
    assert set(settings.ignored) == {"account", "partition", "time_limit", "env_to_source", "out_dir",
                                     "net_interface"}
    assert (settings.account, settings.env_to_source, settings.net_interface) == (None, None, None)
    assert settings.mem_per_node_bytes == 16 * 2**30 and settings.scheduler_mem_bytes == 8 * 2**30
    assert settings.secret_cert_name == "daskweak-tls"


def test_on_slurm_the_kubernetes_keys_are_ignored_and_the_interface_is_not_checked_here(tmp_path):
    venv = tmp_path / "venv"
    venv.mkdir()
    settings = load_settings(**SLURM, env_to_source=str(venv), net_interface="no-such-nic0",
                             scheduler_mem="lots", kubecluster_name="Not_A_DNS_Name", container_image="img")
    assert settings.net_interface == "no-such-nic0"
    assert set(settings.ignored) == {"scheduler_mem", "kubecluster_name", "container_image"}
    assert settings.fingerprint() == load_settings(**SLURM, env_to_source=str(venv),
                                                   net_interface="no-such-nic0").fingerprint()


def test_secret_cert_name_defaults_to_the_charts_secret():
    import yaml

    values = yaml.safe_load((ROOT / "charts" / "daskweak" / "values.yaml").read_text())
    assert load_settings(**KUBE).secret_cert_name == values["tls"]["secretName"] == "daskweak-tls"


def test_airflow_tasks_anchor_only_the_paths_their_backend_reads(tmp_path):
    from daskweak.orchestration import request

    env_file = tmp_path / "bench.env"
    env_file.write_text("MAX_N_CORES=1\n")
    path, overrides = request({"settings_file": str(env_file)})
    assert overrides == {"res_dir": str(tmp_path / "results")}  # no OUT_DIR: Slurm's, not local's
    assert load_settings(path, **overrides).ignored == ()


def test_the_validate_task_logs_the_ignored_keys(tmp_path, caplog):
    from daskweak.orchestration import validate

    (tmp_path / "origin.env").write_text(ORIGIN_KUBE_ENV)
    with caplog.at_level("INFO", logger="daskweak.orchestration"):
        # LoadBalancer: this test runs outside any cluster, where a ClusterIP scheduler is refused
        validate(str(tmp_path / "origin.env"), {"kube_service_type": "LoadBalancer"})
    assert "ignored on kubernetes (they configure another backend): ACCOUNT, ENV_TO_SOURCE" in caplog.text


def test_a_misspelt_or_unreadable_secret_is_not_shown(tmp_path):
    env = tmp_path / "bench.env"
    env.write_text("RESULT_URL=postgresql://u:S3ntinel@db/x\nRESULTS_URL 'postgresql://u:S3ntinel@db/x\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(env, regresion_notifier_args='{"token": "S3ntinel"}')
    text = str(caught.value)
    assert "RESULT_URL" in text and "REGRESION_NOTIFIER_ARGS" in text and "bench.env:2" in text
    assert "S3ntinel" not in text


def test_a_retired_setting_of_an_earlier_env_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "old.env").write_text("MAX_N_CORES=2\nREGRESSION_SIGMAS=3\n")
    with caplog.at_level("WARNING", logger="daskweak.settings"):
        settings = load_settings(tmp_path / "old.env", regression_sigmas=2)
    assert settings.max_n_cores == 2
    assert "REGRESSION_SIGMAS is no longer used" in caplog.text and "old.env:2" in caplog.text


# --- what a site puts on the Dask pods -------------------------------------------------------------------


def test_pairs_read_as_k_equals_v_or_as_json_alike():
    pairs = load_settings(**KUBE, kube_node_selector=" pool = dask , example.org/disk=ssd",
                          kube_pod_labels="", kube_pod_annotations='{"example.org/note": "a, b=c"}')
    assert pairs.kube_node_selector == {"pool": "dask", "example.org/disk": "ssd"}
    assert pairs.kube_node_selector == load_settings(
        **KUBE, kube_node_selector='{"pool": "dask", "example.org/disk": "ssd"}').kube_node_selector
    assert pairs.kube_pod_labels == {} and pairs.kube_pod_annotations == {"example.org/note": "a, b=c"}
    assert load_settings(**KUBE, kube_image_pull_secrets="a, b.c ,").kube_image_pull_secrets == ["a", "b.c"]


def test_a_bad_part_of_a_pod_setting_is_named_in_the_error(monkeypatch):
    monkeypatch.setenv("KUBE_POD_LABELS", "team=hpc,dask.org/component=x")
    monkeypatch.setenv("KUBE_TOLERATIONS", '[{"key": "spot", "operator": "Exists", "value": "yes"}]')
    with pytest.raises(ConfigError) as caught:
        load_settings(**KUBE)
    problems = {p.setting: p for p in caught.value.problems}
    assert "'dask.org/component'" in problems["KUBE_POD_LABELS"].accepted
    assert "operator Exists takes no value" in problems["KUBE_TOLERATIONS"].accepted
    assert problems["KUBE_POD_LABELS"].given == "team=hpc,dask.org/component=x"


def test_the_pod_settings_configure_kubernetes_only():
    settings = load_settings(**SLURM, kube_pod_labels="not a label", kube_worker_placement="scatter")
    assert set(settings.ignored) == {"kube_pod_labels", "kube_worker_placement"}


def test_an_origin_kubecluster_name_still_reads():
    assert load_settings(**KUBE, kubecluster_name="dask-bench").kubecluster_name == "dask-bench"


# --- results in a pod --------------------------------------------------------------------------------------

IN_POD = [("KUBERNETES_SERVICE_HOST", "10.96.0.1", "KUBERNETES_SERVICE_HOST is set"),
          ("AIRFLOW__CORE__EXECUTOR", "KubernetesExecutor", "AIRFLOW__CORE__EXECUTOR=KubernetesExecutor"),
          ("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor,KubernetesExecutor", "every task runs in a pod")]


@pytest.mark.parametrize(("variable", "value", "why"), IN_POD, ids=["pod", "k8s-executor", "multi-executor"])
def test_in_a_pod_a_sqlite_results_file_is_refused_saying_how_to_share_one(monkeypatch, tmp_path, variable, value,
                                                                           why):
    monkeypatch.setenv(variable, value)
    for given in ({}, {"results_url": f"sqlite:///{tmp_path / 'x.db'}"}, {"results_url": "sqlite://"}):
        with pytest.raises(ConfigError) as caught:
            load_settings(**given)
        [problem] = caught.value.problems
        assert problem.setting == "RESULTS_URL" and problem.given == given.get("results_url")
        for hint in ("postgresql+psycopg://", "RESULTS_CONN_ID", "results.existingSecret", why,
                     "RESULTS_SQLITE_PERSISTENT=True"):
            assert hint in problem.accepted, hint
    load_settings(results_url="postgresql+psycopg://bench:pw@db:5432/daskweak")
    load_settings(results_conn_id="daskweak_results")  # Airflow hands the Connection's URL to validate
    load_settings(results_sqlite_persistent=True)  # RES_DIR on a volume every pod mounts, on purpose
    with pytest.raises(ConfigError):  # the Connection's URL, as the DAG resolves it, judged too
        load_settings(results_conn_id="daskweak_results", results_url="sqlite:////results/x.db")


def test_outside_a_pod_sqlite_is_the_default(monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert load_settings().database_url.startswith("sqlite:///")


def test_the_validate_task_and_the_cli_refuse_sqlite_in_a_pod(monkeypatch, tmp_path):
    from daskweak.orchestration import validate

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    with pytest.raises(ConfigError, match="RESULTS_SQLITE_PERSISTENT"):
        validate(None, {"max_n_cores": 1})
    assert validate(None, {"max_n_cores": 1, "results_url": "postgresql+psycopg://u:pw@db/x"})["results_url"] \
        == "postgresql+psycopg://u:***@db/x"
    for command in ("plan", "run"):
        done = subprocess.run([sys.executable, "-m", "daskweak", command, "--set", "MAX_N_CORES=1"], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode != 0 and "RESULTS_URL" in done.stdout + done.stderr, done.stdout + done.stderr
        assert "RESULTS_SQLITE_PERSISTENT" in done.stdout + done.stderr
    assert not (tmp_path / "results").exists()  # refused before anything was written
