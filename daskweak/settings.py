"""The benchmark's settings: the origin's `.env` contract plus daskweak's own keys, validated once.

Sources, weakest first: a `.env` file, environment variables, explicit overrides (CLI ``--set`` and the
Airflow params). Nothing is read until :func:`load_settings` is called.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from dask.utils import parse_bytes
from pydantic import (
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from daskweak.backends.kubernetes import names
from daskweak.errors import ConfigError, Problem

Backend = Literal["local", "slurm", "kubernetes"]
Suite = Literal["arrays", "dataframes", "tasks"]
ALL_SUITES: tuple[Suite, ...] = ("arrays", "dataframes", "tasks")
DNS_1035 = r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS_1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
# Every form `sbatch --time` accepts: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS, and no limit.
TIME_LIMIT = re.compile(
    r"\d+(:[0-5]?\d){0,2}|\d+-(2[0-3]|[01]?\d)(:[0-5]?\d){0,2}|UNLIMITED|INFINITE", re.IGNORECASE
)
# Keys that only one kind of cluster reads. On another backend they are dropped before validation (not
# checked, not used, not in the fingerprint) and `daskweak plan` lists them as ignored: an origin `.env`
# carries both blocks, and placeholders in the unused one (ACCOUNT=<your account>) must not refuse a run.
SLURM_ONLY = ("account", "partition", "time_limit", "env_to_source", "out_dir", "slurm_exclusive", "sbatch_extra")
KUBERNETES_ONLY = ("kube_namespace", "container_image", "scheduler_host", "kubecluster_name", "scheduler_cores",
                   "scheduler_mem", "secret_cert_name", "kube_service_type", "kube_conn_id", "kube_worker_placement",
                   "kube_image_pull_secrets", "kube_node_selector", "kube_tolerations", "kube_priority_class",
                   "kube_service_account", "kube_pod_labels", "kube_pod_annotations")
APPLIES_TO: dict[str, frozenset[str]] = {
    **dict.fromkeys(SLURM_ONLY, frozenset({"slurm"})),
    **dict.fromkeys(KUBERNETES_ONLY, frozenset({"kubernetes"})),
    # Pods get their network from Kubernetes; on Slurm it names the compute nodes' NIC (checked there, by
    # Dask), on local this machine's (checked here).
    "net_interface": frozenset({"local", "slurm"}),
}
# An environment variable this close to a setting's name is probably a typo of it (a warning, not an error:
# the environment also holds other programs' variables). 0.88 keeps TIMEOUT_S or SSL_CERT_DIR quiet.
ENV_NEAR_MISS = 0.88

log = logging.getLogger(__name__)


def _setting(default: Any, accepted: str, doc: str, **constraints: Any) -> Any:
    """A field whose `accepted` text is what a validation error tells the user."""
    return Field(default, description=doc, json_schema_extra={"accepted": accepted}, **constraints)


class Settings(BaseSettings):
    """Every key of the origin's `.env` table, then daskweak's additions (documented in `.env.example`)."""

    model_config = SettingsConfigDict(env_file=None, extra="ignore", case_sensitive=False)

    # --- the origin's table ---
    kube: bool | None = _setting(None, "True or False", "Origin's switch: True=kubernetes, False=slurm.")
    kube_namespace: str | None = _setting(None, "a Kubernetes namespace", "Namespace of the DaskCluster.")
    container_image: str | None = _setting(None, "a container image reference", "Scheduler/worker image.")
    scheduler_host: str | None = _setting(None, "a node name", "Node the scheduler pod is pinned to.")
    kubecluster_name: str = _setting(
        "daskweak", "a DNS-1035 label: a lowercase letter, then lowercase letters, digits, '-' (≤ 63 chars; "
        "cut to fit in object names)",
        "Prefix of the DaskCluster name (its Service is <name>-scheduler).", pattern=DNS_1035,
    )
    scheduler_cores: int = _setting(1, "an integer ≥ 1", "Scheduler pod cores.", ge=1)
    scheduler_mem: str = _setting(
        "2Gi", "a memory size such as 4Gi or 4GB (bare numbers are Gi)", "Scheduler pod memory.",
    )
    out_dir: Path = _setting(Path("out"), "a directory path", "Slurm job logs and job scripts.")
    res_dir: Path = _setting(Path("results"), "a directory path", "CSV exports and the default SQLite file.")
    use_ssl: bool = _setting(False, "True or False", "Encrypt scheduler/worker/client traffic with TLS.")
    cert_dir: Path | None = _setting(None, "a directory path", "Where TLS certificates live or are generated.")
    secret_cert_name: str = _setting(
        "daskweak-tls", "a Kubernetes Secret name (lowercase letters, digits, '-', '.')",
        "kubernetes.io/tls Secret (the Helm chart's tls.secretName).", pattern=DNS_1123_SUBDOMAIN,
    )
    res_file_name: str = _setting(
        "daskweak", "a file name without extension (letters, digits, '_', '-')", "Prefix of the CSV exports.",
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    max_n_cores: int = _setting(2, "an integer ≥ 1", "Largest core count of the sweep.", ge=1)
    cores_per_node: int | None = _setting(
        None, "an integer ≥ 1 (empty: all cores on one node)", "Cores of one node (job, pod).", ge=1
    )
    step_by: int = _setting(1, "an integer ≥ 1", "Core counts are 1, STEP_BY, 2·STEP_BY, …", ge=1)
    obs_per_iter: int | None = _setting(
        None, "an integer ≥ 1 (empty: observe until TARGET_PRECISION)",
        "Measured observations per step and suite, a fixed count (the origin's); empty: each operation is observed "
        "until its median is precise (TARGET_PRECISION, MIN_OBS, MAX_OBS, STEP_BUDGET).", ge=1,
    )
    target_precision: float = _setting(
        5.0, "a percentage > 0",
        "Observe each operation until the 95 % interval of its median is within ± this % of it.", gt=0,
    )
    min_obs: int = _setting(
        9, "an integer ≥ 1", "Fewest measured observations per operation and step when OBS_PER_ITER is empty "
        "(9: the fewest whose median's 95 % interval leaves out the smallest and largest observation).", ge=1,
    )
    max_obs: int = _setting(
        25, "an integer ≥ MIN_OBS", "Most measured observations per operation and step when OBS_PER_ITER is empty.",
        ge=1,
    )
    step_budget: float = _setting(
        120.0, "seconds > 0", "Measuring time per step when OBS_PER_ITER is empty: past it no new observation "
        "starts once MIN_OBS are in (cluster start and warm-ups not counted).", gt=0,
    )
    mem_per_node: str | None = _setting(
        None, "a memory size such as 300GB or 300Gi (bare numbers: GB, Gi on kubernetes)",
        "Memory of one node (job, pod).",
    )
    verbose: bool = _setting(
        False, "True or False", "Log each step and each observation (cores, suite, operation, seconds) at INFO."
    )
    net_interface: str | None = _setting(
        None, "a network interface name (see `ip link show`)",
        "Dask NIC (checked against the scheduler's host on local and slurm; ignored on kubernetes).",
    )
    account: str | None = _setting(None, "a Slurm account name", "sbatch --account.")
    partition: str | None = _setting(None, "a Slurm partition name", "sbatch --partition.")
    slurm_exclusive: bool = _setting(
        False, "True or False", "Ask Slurm for whole nodes (--exclusive); a 1-core step then holds a node."
    )
    sbatch_extra: Annotated[list[str], NoDecode] = _setting(
        [], "sbatch options separated by ';', e.g. --qos=long;--constraint=ib", "Extra #SBATCH directives."
    )
    time_limit: str = _setting(
        "01:00:00", "an sbatch --time: MM, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED",
        "sbatch --time of each worker job.",
    )
    env_to_source: Path | None = _setting(
        None, "an existing virtualenv directory or activate script",
        "Environment the worker jobs activate; its python (from PATH) runs the workers.",
    )
    timeout: float = _setting(120.0, "a number of seconds > 0", "Wait this long for the workers.", gt=0)
    operation_timeout: float = _setting(
        600.0, "a number of seconds > 0", "An operation still running after this long is cancelled and recorded.",
        gt=0,
    )
    poll_interval: float = _setting(
        1.0, "a number of seconds > 0", "How often a backend polls its API (Slurm's squeue, Kubernetes).", gt=0
    )
    problem_size_array: int = _setting(
        6000, "an integer ≥ 16", "Side of the 1-core array; weak scaling grows it by √cores.", ge=16
    )
    problem_size_dataframes: int = _setting(
        2_000_000, "an integer ≥ 1000", "Rows of the 1-core dataframe; weak scaling grows it by cores.", ge=1000
    )

    # --- daskweak's additions ---
    backend: Backend | None = _setting(
        None, "one of local, slurm, kubernetes", "Where the cluster runs (default local; KUBE still decides)."
    )
    suites: Annotated[list[Suite], NoDecode] = _setting(
        list(ALL_SUITES), "a comma-separated subset of arrays, dataframes, tasks", "Suites to run.",
        min_length=1,
    )
    scaling: Literal["weak", "strong"] = _setting("weak", "weak or strong", "Grow the problem with the cores?")
    problem_size_tasks: int = _setting(
        200, "an integer ≥ 10", "Tasks per core in the task-scheduling suite.", ge=10
    )
    results_url: str | None = _setting(
        None, "an SQLAlchemy URL such as sqlite:///x.db or postgresql+psycopg://…", "Results database."
    )
    warmup: int = _setting(1, "an integer ≥ 0", "Observations per step run first and left out of statistics.",
                           ge=0)
    worker_mode: Literal["processes", "threads"] = _setting(
        "processes", "processes or threads",
        "processes: one single-threaded worker per core; threads: one worker per node, a thread per core.",
    )
    restart_between_obs: bool = _setting(
        False, "True or False", "client.restart() between observations (slow; default only releases memory)."
    )


    # --- orchestration (Airflow) ---
    nightly_schedule: str = _setting(
        "0 2 * * *", "a cron expression with five fields", "Schedule of the nightly DAG.",
        pattern=r"^\S+(\s+\S+){4}$",
    )
    results_conn_id: str | None = _setting(
        None, "an Airflow Connection id", "Under Airflow, take the results database from this Connection."
    )
    step_concurrency: int = _setting(
        1, "an integer ≥ 1", "Steps Airflow may run at once (1: steps on shared hardware do not distort each other).",
        ge=1,
    )
    kube_service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = _setting(
        "ClusterIP", "ClusterIP, NodePort or LoadBalancer",
        "Scheduler service type: ClusterIP when the client runs in the cluster, else NodePort/LoadBalancer.",
    )
    kube_conn_id: str = _setting(
        "kubernetes_default", "an Airflow Connection id",
        "Under Airflow, take Kubernetes credentials from this Connection (then KUBECONFIG, then in-cluster).",
    )
    # What a site needs on the scheduler and worker pods (the CronJob's pod has the chart's own values).
    kube_worker_placement: Literal["spread", "pack"] = _setting(
        "spread", "spread or pack",
        "spread: a step's worker pods on distinct nodes, as Slurm's jobs of whole nodes; pack: wherever they fit.",
    )
    kube_image_pull_secrets: Annotated[list[str], NoDecode] = _setting(
        [], "Secret names separated by ',' (DNS-1123 subdomains)", "imagePullSecrets of the Dask pods.",
    )
    kube_node_selector: Annotated[dict[str, str], NoDecode] = _setting(
        {}, "label pairs k=v,k=v or a JSON object (keys [prefix/]name, values ≤ 63 chars, as Kubernetes accepts)",
        "nodeSelector of the Dask pods.",
    )
    kube_tolerations: Annotated[list[dict[str, Any]], NoDecode] = _setting(
        [], "a JSON list of tolerations: {key, operator (Equal or Exists), value, effect (NoSchedule, "
        "PreferNoSchedule or NoExecute), tolerationSeconds (NoExecute only)}", "tolerations of the Dask pods.",
    )
    kube_priority_class: str | None = _setting(
        None, "a PriorityClass name (lowercase letters, digits, '-', '.')", "priorityClassName of the Dask pods.",
        pattern=DNS_1123_SUBDOMAIN,
    )
    kube_service_account: str | None = _setting(
        None, "a ServiceAccount name (lowercase letters, digits, '-', '.')",
        "serviceAccountName of the Dask pods (empty: the namespace's default; they call no API).",
        pattern=DNS_1123_SUBDOMAIN,
    )
    kube_pod_labels: Annotated[dict[str, str], NoDecode] = _setting(
        {}, "label pairs k=v,k=v or a JSON object (keys [prefix/]name, values ≤ 63 chars, as Kubernetes accepts; "
        "not under dask.org/ or daskweak/)", "Extra labels of the Dask pods.",
    )
    kube_pod_annotations: Annotated[dict[str, str], NoDecode] = _setting(
        {}, "pairs k=v,k=v or a JSON object (keys [prefix/]name as Kubernetes accepts)",
        "Extra annotations of the Dask pods.",
    )
    results_sqlite_persistent: bool = _setting(
        False, "True or False",
        "In a pod (KubernetesExecutor, CronJob): the SQLite file in RES_DIR is on a volume that outlives the pod "
        "and every pod shares, on purpose.",
    )
    results_retry_seconds: float = _setting(
        30.0, "a number of seconds ≥ 0",
        "How long a write waits for a results database that does not answer before the spool keeps its rows.",
        ge=0, allow_inf_nan=False,
    )
    results_final_wait_seconds: float = _setting(
        180.0, "a number of seconds ≥ 0",
        "How long the end of a run waits for the results database (a restart, a fail-over) before it leaves "
        "the rows in the spool for `daskweak results sync`.",
        ge=0, allow_inf_nan=False,
    )
    regression_baseline_runs: int = _setting(
        20, "an integer ≥ 3 (a t test needs a spread)",
        "Baseline of the regression check: per comparison, the last K successful runs with the same fingerprint "
        "and hardware class that were not suspected (or were accepted).", ge=3,
    )
    regression_min_baseline_runs: int = _setting(
        5, "an integer ≥ 3 and ≤ REGRESSION_BASELINE_RUNS", "Fewer baseline runs than this: 'no baseline'.", ge=3,
    )
    noise_limit_pct: float = _setting(
        10.0, "a percentage > 0",
        "A value whose 95 % interval's half-width exceeds this share of it is shown as noisy, never as a result.",
        gt=0,
    )
    regression_threshold_pct: float = _setting(
        3.0, "a percentage ≥ 0", "A change smaller than this is never suspected, however significant.", ge=0,
    )
    regression_p_value: float = _setting(
        0.02, "a number in (0, 1)",
        "Level of the night's whole family of comparisons: family-wise error (holm) or false discovery rate (bh).",
        gt=0, lt=1,
    )
    regression_correction: Literal["holm", "bh"] = _setting(
        "holm", "holm or bh", "Multiple-comparison correction over the night's family: Holm or Benjamini–Hochberg.",
    )
    regression_confirm_m: int = _setting(
        2, "an integer ≥ 1 and ≤ REGRESSION_CONFIRM_N",
        "A suspected slowdown is a regression when suspected on M of the last N nights …", ge=1,
    )
    regression_confirm_n: int = _setting(3, "an integer ≥ 1", "… (N, tonight included).", ge=1)
    regression_restart_nights: int = _setting(
        0, "0, or an integer ≥ REGRESSION_MIN_BASELINE_RUNS",
        "A change flagged on this many consecutive nights is a change point: the baseline restarts there by "
        "itself (0: only `daskweak accept` restarts it).", ge=0,
    )
    remeasure_obs: int = _setting(
        20, "an integer ≥ 0",
        "The nightly DAG measures each suspected comparison again with this many observations before the verdict "
        "(0: no second look).", ge=0,
    )
    regression_notifier: str | None = _setting(
        None, "a dotted path to an Airflow notifier class (module.Class)",
        "Called with the summary when the nightly check finds a regression (empty: log and file only).",
        pattern=r"^[A-Za-z_][\w.]*\.[A-Za-z_]\w*$",
    )
    regression_notifier_args: Annotated[dict[str, Any], NoDecode] = _setting(
        {}, "a JSON object of the notifier's arguments (Jinja-templated, e.g. {{ summary }})",
        "Arguments of REGRESSION_NOTIFIER.",
    )
    step_retries: int = _setting(1, "an integer ≥ 0", "Airflow retries of a failed step.", ge=0)
    step_timeout: float | None = _setting(
        None, "a number of seconds > 0 (empty: no limit)", "Airflow execution_timeout of one step.", gt=0
    )

    @field_validator("regression_notifier_args", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        if isinstance(value, str):
            return json.loads(value) if value.strip() else {}
        return value

    @field_validator("suites", "sbatch_extra", "kube_image_pull_secrets", mode="before")
    @classmethod
    def _split_lists(cls, value: Any, info: ValidationInfo) -> Any:
        """Lists come from .env lines: suites comma-separated, sbatch options (which may hold commas) by ';'."""
        if isinstance(value, str):
            separator = ";" if info.field_name == "sbatch_extra" else ","
            return [part.strip() for part in value.split(separator) if part.strip()]
        return value

    @field_validator("kube_node_selector", "kube_pod_labels", "kube_pod_annotations", mode="before")
    @classmethod
    def _pairs(cls, value: Any) -> Any:
        return names.parse_pairs(value) if isinstance(value, str) else value

    @field_validator("kube_tolerations", mode="before")
    @classmethod
    def _json_list(cls, value: Any) -> Any:
        return names.parse_json_list(value) if isinstance(value, str) else value

    @field_validator("kube_image_pull_secrets")
    @classmethod
    def _secret_names(cls, value: list[str]) -> list[str]:
        return [names.dns_1123_subdomain(name, "Secret name") for name in value]

    @field_validator("kube_node_selector", "kube_pod_labels")
    @classmethod
    def _labels(cls, value: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        if info.field_name == "kube_node_selector":  # nodes' labels, not ours: any key Kubernetes accepts
            for key, label in value.items():
                names.label_value(label, names.qualified_name(key, "label key"))
            return value
        return names.labels(value)

    @field_validator("kube_pod_annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str]) -> dict[str, str]:
        return names.annotations(value)

    @field_validator("kube_tolerations")
    @classmethod
    def _tolerations(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [names.toleration(item) for item in value]

    @field_validator("suites")
    @classmethod
    def _unique_suites(cls, value: list[Suite]) -> list[Suite]:
        return list(dict.fromkeys(value))

    @field_validator("scheduler_mem", "mem_per_node")
    @classmethod
    def _memory_size(cls, value: str | None) -> str | None:
        if value is not None:
            memory_bytes(value, bare_unit="Gi")  # the unit only matters for use, not for validity
        return value

    @field_validator("time_limit")
    @classmethod
    def _sbatch_time(cls, value: str) -> str:
        if not TIME_LIMIT.fullmatch(value.strip()):
            raise ValueError("not an sbatch --time")
        return value.strip()

    @model_validator(mode="wrap")
    @classmethod
    def _validate_together(cls, data: Any, handler: Any) -> Settings:
        """Field errors and cross-setting errors are reported in one ConfigError.

        Before validation, an empty value is dropped (`KEY=` means "not set": the default applies, as in the
        origin's template), and so is a key that configures another backend than the chosen one.
        """
        ignored: list[str] = []
        if isinstance(data, dict):
            data = {str(k).lower(): v for k, v in data.items() if not (isinstance(v, str) and not v.strip())}
            backend = _chosen_backend(data)
            dropped = [key for key in data if backend and backend not in APPLIES_TO.get(key, {backend})]
            # worth telling only when the value would have changed something (not a template's default)
            ignored = [key for key in dropped if not _is_default(cls, key, data[key])]
            data = {k: v for k, v in data.items() if k not in dropped}
        try:
            settings = handler(data)
        except ValidationError as exc:
            failed = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            problems = [_field_problem(cls, err) for err in exc.errors()]
            problems += _consistency_problems(_lenient_values(cls, data, failed))
            raise ConfigError(problems) from None
        settings.backend = _resolve_backend(settings.backend, settings.kube)
        settings._ignored = tuple(sorted(ignored))
        problems = _consistency_problems(settings.model_dump())
        if problems:
            raise ConfigError(problems)
        return settings

    _ignored: tuple[str, ...] = PrivateAttr(default=())

    @property
    def ignored(self) -> tuple[str, ...]:
        """Keys set to a non-default value that configure another backend (field names): dropped, never
        checked."""
        return self._ignored

    def applies(self, name: str) -> bool:
        """Whether setting `name` is read on this backend (see APPLIES_TO)."""
        return self.backend in APPLIES_TO.get(name, {self.backend})

    # --- derived values ---
    @property
    def node_cores(self) -> int:
        """Cores of one node; unset means the whole sweep fits on one node."""
        return self.cores_per_node or self.max_n_cores

    @property
    def mem_per_node_bytes(self) -> int | None:
        """MEM_PER_NODE in bytes; a bare number is Gi on kubernetes and GB elsewhere, as in the origin."""
        if self.mem_per_node is None:
            return None
        return memory_bytes(self.mem_per_node, bare_unit="Gi" if self.backend == "kubernetes" else "GB")

    @property
    def scheduler_mem_bytes(self) -> int:
        return memory_bytes(self.scheduler_mem, bare_unit="Gi")

    @property
    def database_url(self) -> str:
        """The results database with its credentials: for connecting only; show `masked_database_url`."""
        if self.results_url:
            return self.results_url
        return f"sqlite:///{(self.res_dir / 'daskweak.sqlite').resolve()}"

    @property
    def masked_database_url(self) -> str:
        """Where the results go, fit to print or log: the URL without its password."""
        return masked_url(self.database_url)

    def public(self) -> dict[str, Any]:
        """The settings as JSON-able values, every SECRETS setting masked: what may be printed or stored."""
        return {name: masked(name, value) for name, value in self.model_dump(mode="json").items()}

    def secret_values(self) -> list[Any]:
        """The clear values behind SECRETS (a URL's password, the notifier's arguments), for a log masker."""
        found: list[Any] = []
        for name, kind in SECRETS.items():
            value = getattr(self, name)
            if value and kind == "url":
                from sqlalchemy.engine import make_url

                password = make_url(value).password
                found += [password] if password else []
            elif value:
                found.append(value)
        return found

    def fingerprint(self) -> str:
        """A hash of the settings that change what is measured: runs with equal fingerprints are comparable."""
        values = self.public()
        measured = {key: values[key] for key in sorted(MEASURED)}
        measured |= {key: values[key] for key, default in MEASURED_WHEN_SET.items() if values[key] != default}
        if values["obs_per_iter"] is None:  # observed to a precision: how precise is part of what is measured
            measured |= {key: values[key] for key in ADAPTIVE}
        return hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()[:16]


# Settings that can hold a credential, and how each is shown wherever settings are printed, logged or stored
# (stdout, task logs, XCom, runs.config, exports, reports): a URL keeps all but its password, a mapping keeps
# its keys. A new setting that can hold a credential belongs here.
SECRETS: dict[str, Literal["url", "values"]] = {"results_url": "url", "regression_notifier_args": "values"}
MASK = "***"
_CREDENTIAL_QUERY_KEY = re.compile(r"pass|secret|token", re.IGNORECASE)


def masked(name: str, value: Any) -> Any:
    """`value` of setting `name` as it may be shown: masked when the setting is in SECRETS."""
    kind = SECRETS.get(name)
    if kind is None or value is None:
        return value
    if kind == "url":
        return masked_url(str(value))
    return {key: MASK for key in value}


def masked_url(url: str) -> str:
    """`url` without its password (nor password-like query values such as `?sslpassword=`)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return "<hidden>"  # unparsable: no telling which part is the password
    query = {key: MASK if _CREDENTIAL_QUERY_KEY.search(key) else value for key, value in parsed.query.items()}
    return parsed.set(query=query).render_as_string(hide_password=True)


# Settings that change the numbers; the rest (paths, verbosity, observation count, URLs) do not.
MEASURED = frozenset({
    "backend", "scaling", "suites", "max_n_cores", "step_by", "cores_per_node", "mem_per_node",
    "problem_size_array", "problem_size_dataframes", "problem_size_tasks", "use_ssl", "worker_mode",
    "restart_between_obs", "container_image", "partition", "net_interface", "scheduler_cores",
    "scheduler_mem", "scheduler_host", "slurm_exclusive", "sbatch_extra",
})


# Measured settings added after runs were stored: hashed only when not at their default, so earlier runs keep their
# fingerprints and baselines (their worker pods were placed without a rule; every step so far had one worker pod;
# they took 3 observations). The observation count decides the noise of a run's median, which a baseline's spread
# stands for: another count starts another baseline.
MEASURED_WHEN_SET = {"kube_worker_placement": "spread", "obs_per_iter": 3}
# What decides the observation count when OBS_PER_ITER is empty (hashed then).
ADAPTIVE = ("target_precision", "min_obs", "max_obs", "step_budget")


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read `.env` (if given or present in the working directory), the environment and `overrides`.

    A key that is no setting is refused in the file and in `overrides` (a typo must not silently leave the
    default in place), together with every other problem; in the environment, which holds other programs'
    variables too, a near miss of a setting's name is only a warning.
    """
    overrides = {key.lower(): value for key, value in overrides.items()}
    for key in [key for key in overrides if key in RETIRED]:
        _warn_retired(key)
        del overrides[key]
    problems = [_unknown(key, value) for key, value in overrides.items() if key not in Settings.model_fields]
    if env_file is None:
        env_file = Path(".env") if Path(".env").is_file() else None
    elif not Path(env_file).is_file():
        problems.append(Problem("settings file", str(env_file), "an existing .env file"))
        env_file = None
    if env_file is not None:
        problems += env_file_problems(Path(env_file))
    _warn_near_misses(os.environ)
    try:
        settings = Settings(_env_file=env_file, **overrides)
    except ConfigError as exc:
        problems += exc.problems
    if problems:
        raise ConfigError(problems)
    return settings


def memory_bytes(text: str, *, bare_unit: str) -> int:
    """Bytes of "300GB", "300G" (decimal), "300Gi"/"300GiB" (binary), by dask's `parse_bytes`; a bare number
    takes `bare_unit` (the origin's rule: Gi on Kubernetes, GB on Slurm), not dask's bytes."""
    text = text.strip()
    try:
        float(text)
        text += bare_unit
    except ValueError:
        pass
    try:
        value = parse_bytes(text)
    except (ValueError, OverflowError):
        raise ValueError(f"not a memory size: {text!r}") from None
    if value <= 0:
        raise ValueError(f"not a positive memory size: {text!r}")
    return value


def env_file_problems(path: Path) -> list[Problem]:
    """Lines of a `.env` file that set no setting: unknown keys (with the closest known one) and lines
    python-dotenv cannot parse (it would skip them)."""
    from dotenv.parser import parse_stream

    problems = []
    with path.open(encoding="utf-8") as stream:
        for binding in parse_stream(stream):
            text = binding.original.string
            # a binding's text starts with the blank lines and comments before it
            line = binding.original.line + text[: len(text) - len(text.lstrip())].count("\n")
            where = f"{path}:{line}"
            if binding.error:
                # only its first word: the rest may be a credential
                first, *rest = re.split(r"(?=[=\s])", text.strip(), maxsplit=1)
                shown = first + ("…" if rest else "")
                problems.append(Problem("line", shown, "KEY=VALUE (python-dotenv cannot read it)", where=where))
            elif binding.key is not None and binding.key.lower() in RETIRED:
                _warn_retired(binding.key.lower(), where)
            elif binding.key is not None and binding.key.lower() not in Settings.model_fields:
                problems.append(_unknown(binding.key, binding.value, where))
    return problems


# Settings an earlier release documented and this one no longer reads: a `.env` written for that release keeps
# working (the key is ignored with a warning saying why) instead of being refused as a typo.
RETIRED = {
    "regression_sigmas": "the regression verdict is a t test of run medians against the baseline runs' medians "
                         "(REGRESSION_P_VALUE, REGRESSION_THRESHOLD_PCT, REGRESSION_CONFIRM_M/N)",
}


def _warn_retired(key: str, where: str = "") -> None:
    log.warning("%s%s is no longer used and is ignored: %s; remove it", f"{where}: " if where else "",
                key.upper(), RETIRED[key])


def _unknown(key: str, value: Any, where: str = "") -> Problem:
    known = [name.upper() for name in Settings.model_fields]
    close = difflib.get_close_matches(key.upper(), known, n=1)
    hint = f"did you mean {close[0]}?" if close else "see .env.example for every setting"
    if close and close[0].lower() in SECRETS:
        value = "<hidden>"  # a misspelt RESULTS_URL still holds the password
    return Problem(key.upper(), value, f"a known setting; {hint}", where=where)


def _warn_near_misses(environment: Any) -> None:
    known = [name.upper() for name in Settings.model_fields]
    for name in environment:
        if name.lower() in Settings.model_fields:
            continue
        close = difflib.get_close_matches(name.upper(), known, n=1, cutoff=ENV_NEAR_MISS)
        if close:
            log.warning("environment variable %s is not a daskweak setting and is ignored; did you mean %s?",
                        name, close[0])


def _is_default(cls: type[Settings], name: str, value: Any) -> bool:
    field = cls.model_fields.get(name)
    if field is None:
        return False
    try:
        return TypeAdapter(field.annotation).validate_python(value) == field.default
    except ValidationError:
        return False


def _chosen_backend(data: dict[str, Any]) -> str | None:
    """The backend raw values select, or None when BACKEND or KUBE is itself invalid (reported later)."""
    try:
        backend = TypeAdapter(Backend | None).validate_python(data.get("backend"))
        kube = TypeAdapter(bool | None).validate_python(data.get("kube"))
    except ValidationError:
        return None
    return _resolve_backend(backend, kube)


def _resolve_backend(backend: str | None, kube: bool | None) -> str:
    if backend:
        return backend
    if kube is None:
        return "local"
    return "kubernetes" if kube else "slurm"


# Settings made of many parts (pairs, lists): their error also says which part is wrong.
EXPLAINED = frozenset({"kube_image_pull_secrets", "kube_node_selector", "kube_tolerations", "kube_pod_labels",
                       "kube_pod_annotations"})


def _field_problem(cls: type[Settings], err: Any) -> Problem:
    name = str(err["loc"][0]) if err["loc"] else "settings"
    field = cls.model_fields.get(name)
    extra = field.json_schema_extra if field else None
    accepted = extra["accepted"] if isinstance(extra, dict) else err["msg"]
    if name in EXPLAINED and err["type"] == "value_error":
        accepted = f"{accepted}; here {err['ctx']['error']}"
    return Problem(name.upper(), "<hidden>" if name in SECRETS else err.get("input"), str(accepted))


def _lenient_values(cls: type[Settings], data: Any, failed: set[str]) -> dict[str, Any]:
    """Parse what did validate, so cross-setting checks still run beside the field errors."""
    raw = dict(data or {})
    values: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if name in failed:
            values[name] = None
            continue
        value = raw.get(name, field.default)
        try:
            values[name] = TypeAdapter(field.annotation).validate_python(value)
        except ValidationError:
            values[name] = None
    values["backend"] = _resolve_backend(values["backend"], values["kube"]) if "backend" not in failed else None
    return values


def _consistency_problems(v: dict[str, Any]) -> list[Problem]:
    """Rules that involve more than one setting, or the machine (paths, interfaces)."""
    problems: list[Problem] = []
    backend = v.get("backend")
    if v.get("kube") is True and backend not in (None, "kubernetes"):
        problems.append(Problem("KUBE", True, f"False or unset when BACKEND={backend} (KUBE=True means kubernetes)"))
    if backend == "slurm":
        for key in ("account", "partition"):
            if not v.get(key):
                problems.append(Problem(key.upper(), v.get(key), "a value: it is required when BACKEND=slurm"))
    if backend == "kubernetes":
        for key in ("kube_namespace", "container_image"):
            if not v.get(key):
                problems.append(Problem(key.upper(), v.get(key), "a value: it is required when BACKEND=kubernetes"))
    if v.get("use_ssl") and not v.get("cert_dir"):
        problems.append(Problem("CERT_DIR", None, "a directory path: it is required when USE_SSL=True"))
    if v.get("step_by") and v.get("max_n_cores") and v["step_by"] > v["max_n_cores"] and v["max_n_cores"] > 1:
        problems.append(Problem("STEP_BY", v["step_by"], f"an integer ≤ MAX_N_CORES ({v['max_n_cores']})"))
    for key in ("out_dir", "res_dir", "cert_dir"):
        path = v.get(key)
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            problems.append(Problem(key.upper(), str(path), "a directory (this path is a file)"))
    env = v.get("env_to_source")
    if env is not None and not Path(env).exists():
        problems.append(Problem("ENV_TO_SOURCE", str(env), "an existing virtualenv directory or activate script"))
    if backend == "local" and v.get("net_interface"):
        import psutil

        names = sorted(psutil.net_if_addrs())
        if v["net_interface"] not in names:
            problems.append(Problem("NET_INTERFACE", v["net_interface"], f"one of this machine's: {', '.join(names)}"))
    if v.get("min_obs") and v.get("max_obs") and v["max_obs"] < v["min_obs"]:
        problems.append(Problem("MAX_OBS", v["max_obs"], f"an integer ≥ MIN_OBS ({v['min_obs']})"))
    k, least = v.get("regression_baseline_runs"), v.get("regression_min_baseline_runs")
    if k and least and least > k:
        problems.append(Problem("REGRESSION_MIN_BASELINE_RUNS", least,
                                f"an integer ≤ REGRESSION_BASELINE_RUNS ({k}): otherwise no run is ever judged"))
    m, n = v.get("regression_confirm_m"), v.get("regression_confirm_n")
    if m and n and m > n:
        problems.append(Problem("REGRESSION_CONFIRM_M", m,
                                f"an integer ≤ REGRESSION_CONFIRM_N ({n}): otherwise nothing is ever confirmed"))
    restart = v.get("regression_restart_nights")
    if restart and least and restart < least:
        problems.append(Problem("REGRESSION_RESTART_NIGHTS", restart,
                                f"0 or an integer ≥ REGRESSION_MIN_BASELINE_RUNS ({least}): a restarted baseline "
                                "needs that many runs"))
    url = v.get("results_url")
    if url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except ArgumentError:
            problems.append(Problem("RESULTS_URL", "<hidden>", "an SQLAlchemy URL such as sqlite:///path.db"))
            return problems
    problems += _results_in_pod_problems(v)
    return problems


def running_in_pod(environ: Any = None) -> str | None:
    """Why this process runs in a Kubernetes pod whose files go with it, or None.

    KUBERNETES_SERVICE_HOST is in every pod's environment (the CronJob's, a KubernetesExecutor task's); Airflow's
    scheduler and DAG processor may run elsewhere, but under the KubernetesExecutor every task they start is a pod
    of its own, so the settings they parse with are those of pods."""
    environ = os.environ if environ is None else environ
    if environ.get("KUBERNETES_SERVICE_HOST"):
        return "KUBERNETES_SERVICE_HOST is set, so this runs in a Kubernetes pod"
    executor = environ.get("AIRFLOW__CORE__EXECUTOR", "")
    if "KubernetesExecutor" in executor:
        return f"AIRFLOW__CORE__EXECUTOR={executor}, so every task runs in a pod of its own"
    return None


def _results_in_pod_problems(v: dict[str, Any]) -> list[Problem]:
    """A SQLite results file in a pod is lost with the pod, and each task pod would write a file of its own: the run
    would turn green with no results kept. Unless the user says RES_DIR is a shared persistent volume.

    RESULTS_CONN_ID alone is not judged here: Airflow resolves the Connection at run time and hands its URL to
    the validate task as RESULTS_URL, which is judged then."""
    if v.get("results_sqlite_persistent"):
        return []
    url, conn_id = v.get("results_url"), v.get("results_conn_id")
    if url:
        from sqlalchemy.engine import make_url

        if make_url(url).get_backend_name() != "sqlite":
            return []
    elif conn_id:
        return []
    why = running_in_pod()
    if why is None:
        return []
    given = masked_url(url) if url else None
    return [Problem("RESULTS_URL", given, (
        "a database every pod reaches, e.g. postgresql+psycopg://user:password@host:5432/daskweak (under Airflow: "
        "RESULTS_CONN_ID naming a PostgreSQL Connection; the Helm chart: results.existingSecret). "
        f"{why}, and a SQLite file there is lost with the pod (each task pod would write its own). "
        "RESULTS_SQLITE_PERSISTENT=True keeps SQLite when RES_DIR is a persistent volume every pod mounts, on purpose"
    ))]

