"""The benchmark's settings: the origin's `.env` contract plus daskweak's own keys, validated once.

Sources, weakest first: a `.env` file, environment variables, explicit overrides (CLI ``--set`` and the
Airflow params). Nothing is read until :func:`load_settings` is called.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from daskweak.errors import ConfigError, Problem
from daskweak.memory import MEMORY_PATTERN, to_bytes

Backend = Literal["local", "slurm", "kubernetes"]
Suite = Literal["arrays", "dataframes", "tasks"]
ALL_SUITES: tuple[Suite, ...] = ("arrays", "dataframes", "tasks")
DNS_1123 = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"


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
        "daskweak", "a DNS-1123 label (lowercase letters, digits, '-'; ≤ 63 chars)",
        "Prefix of the DaskCluster name.", pattern=DNS_1123,
    )
    scheduler_cores: int = _setting(1, "an integer ≥ 1", "Scheduler pod cores.", ge=1)
    scheduler_mem: str = _setting(
        "2Gi", "a memory size such as 4Gi or 4GB (bare numbers are Gi)", "Scheduler pod memory.",
        pattern=MEMORY_PATTERN,
    )
    out_dir: Path = _setting(Path("out"), "a directory path", "Slurm job logs and job scripts.")
    res_dir: Path = _setting(Path("results"), "a directory path", "CSV exports and the default SQLite file.")
    use_ssl: bool = _setting(False, "True or False", "Encrypt scheduler/worker/client traffic with TLS.")
    cert_dir: Path | None = _setting(None, "a directory path", "Where TLS certificates live or are generated.")
    secret_cert_name: str | None = _setting(None, "a Kubernetes Secret name", "kubernetes.io/tls Secret.")
    res_file_name: str = _setting(
        "daskweak", "a file name without extension (letters, digits, '_', '-')", "Prefix of the CSV exports.",
        pattern=r"^[A-Za-z0-9_-]+$",
    )
    max_n_cores: int = _setting(2, "an integer ≥ 1", "Largest core count of the sweep.", ge=1)
    cores_per_node: int | None = _setting(
        None, "an integer ≥ 1 (empty: all cores on one node)", "Cores of one node (job, pod).", ge=1
    )
    step_by: int = _setting(1, "an integer ≥ 1", "Core counts are 1, STEP_BY, 2·STEP_BY, …", ge=1)
    obs_per_iter: int = _setting(3, "an integer ≥ 1", "Measured observations per step and suite.", ge=1)
    mem_per_node: str | None = _setting(
        None, "a memory size such as 300GB or 300Gi (bare numbers: GB, Gi on kubernetes)",
        "Memory of one node (job, pod).", pattern=MEMORY_PATTERN,
    )
    verbose: bool = _setting(False, "True or False", "Log each step and observation.")
    net_interface: str | None = _setting(None, "a network interface name (see `ip link show`)", "Dask NIC.")
    account: str | None = _setting(None, "a Slurm account name", "sbatch --account.")
    partition: str | None = _setting(None, "a Slurm partition name", "sbatch --partition.")
    slurm_exclusive: bool = _setting(
        False, "True or False", "Ask Slurm for whole nodes (--exclusive); a 1-core step then holds a node."
    )
    sbatch_extra: Annotated[list[str], NoDecode] = _setting(
        [], "sbatch options separated by ';', e.g. --qos=long;--constraint=ib", "Extra #SBATCH directives."
    )
    time_limit: str = _setting(
        "01:00:00", "a duration hh:mm:ss", "sbatch --time of each worker job.",
        pattern=r"^\d{1,4}:[0-5]\d:[0-5]\d$",
    )
    env_to_source: Path | None = _setting(
        None, "an existing virtualenv directory or activate script", "Environment the worker jobs activate."
    )
    timeout: float = _setting(120.0, "a number of seconds > 0", "Wait this long for the workers.", gt=0)
    operation_timeout: float = _setting(
        600.0, "a number of seconds > 0", "An operation still running after this long is cancelled and recorded.",
        gt=0,
    )
    poll_interval: float = _setting(1.0, "a number of seconds > 0", "How often a backend polls its API.", gt=0)
    problem_size_array: int = _setting(
        7500, "an integer ≥ 16", "Side of the 1-core array; weak scaling grows it by √cores.", ge=16
    )
    problem_size_dataframes: int = _setting(
        6_000_000, "an integer ≥ 1000", "Rows of the 1-core dataframe; weak scaling grows it by cores.", ge=1000
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
    regression_baseline_runs: int = _setting(
        10, "an integer ≥ 1", "Baseline of the regression check: the last K successful runs with the same fingerprint.",
        ge=1,
    )
    regression_min_baseline_runs: int = _setting(
        3, "an integer ≥ 2", "Fewer baseline runs than this: the verdict is 'no baseline'.", ge=2,
    )
    regression_threshold_pct: float = _setting(
        10.0, "a percentage ≥ 0", "A median must be slower than the baseline's by more than this (and 3σ).", ge=0,
    )
    regression_sigmas: float = _setting(
        3.0, "a number ≥ 0", "… and by more than this many standard deviations of the baseline runs' medians.", ge=0,
    )
    regression_p_value: float = _setting(
        0.01, "a number in (0, 1)", "… and a one-sided Mann-Whitney U test must give p below this.", gt=0, lt=1,
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

    @field_validator("suites", "sbatch_extra", mode="before")
    @classmethod
    def _split_lists(cls, value: Any, info: ValidationInfo) -> Any:
        """Lists come from .env lines: suites comma-separated, sbatch options (which may hold commas) by ';'."""
        if isinstance(value, str):
            separator = ";" if info.field_name == "sbatch_extra" else ","
            return [part.strip() for part in value.split(separator) if part.strip()]
        return value

    @field_validator("suites")
    @classmethod
    def _unique_suites(cls, value: list[Suite]) -> list[Suite]:
        return list(dict.fromkeys(value))

    @field_validator(
        "kube_namespace", "container_image", "scheduler_host", "secret_cert_name", "mem_per_node",
        "net_interface", "account", "partition", "results_url", "cert_dir", "env_to_source", "results_conn_id",
        "step_timeout", "cores_per_node", "backend", "kube", mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: Any) -> Any:
        # `KEY=` in a .env file means "not set", as in the origin's template.
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="wrap")
    @classmethod
    def _validate_together(cls, data: Any, handler: Any) -> Settings:
        """Field errors and cross-setting errors are reported in one ConfigError."""
        try:
            settings = handler(data)
        except ValidationError as exc:
            failed = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            problems = [_field_problem(cls, err) for err in exc.errors()]
            problems += _consistency_problems(_lenient_values(cls, data, failed))
            raise ConfigError(problems) from None
        settings.backend = _resolve_backend(settings.backend, settings.kube)
        problems = _consistency_problems(settings.model_dump())
        if problems:
            raise ConfigError(problems)
        return settings

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
        return to_bytes(self.mem_per_node, bare_unit="Gi" if self.backend == "kubernetes" else "GB")

    @property
    def scheduler_mem_bytes(self) -> int:
        return to_bytes(self.scheduler_mem, bare_unit="Gi")

    @property
    def database_url(self) -> str:
        if self.results_url:
            return self.results_url
        return f"sqlite:///{(self.res_dir / 'daskweak.sqlite').resolve()}"

    def public(self) -> dict[str, Any]:
        """The settings as JSON-able values with secrets (the results URL's password) hidden."""
        values = self.model_dump(mode="json")
        if self.results_url:
            from sqlalchemy.engine import make_url

            values["results_url"] = make_url(self.results_url).render_as_string(hide_password=True)
        return values

    def fingerprint(self) -> str:
        """A hash of the settings that change what is measured: runs with equal fingerprints are comparable."""
        values = self.public()
        measured = {key: values[key] for key in sorted(MEASURED)}
        return hashlib.sha256(json.dumps(measured, sort_keys=True).encode()).hexdigest()[:16]


# Settings that change the numbers; the rest (paths, verbosity, observation count, URLs) do not.
MEASURED = frozenset({
    "backend", "scaling", "suites", "max_n_cores", "step_by", "cores_per_node", "mem_per_node",
    "problem_size_array", "problem_size_dataframes", "problem_size_tasks", "use_ssl", "worker_mode",
    "restart_between_obs", "container_image", "partition", "net_interface", "scheduler_cores",
    "scheduler_mem", "scheduler_host", "slurm_exclusive", "sbatch_extra",
})


def load_settings(env_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Read `.env` (if given or present in the working directory), the environment and `overrides`."""
    fields = Settings.model_fields
    overrides = {key.lower(): value for key, value in overrides.items()}
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        names = ", ".join(name.upper() for name in fields)
        raise ConfigError([Problem(key.upper(), overrides[key], f"one of {names}") for key in unknown])
    if env_file is None:
        env_file = Path(".env") if Path(".env").is_file() else None
    elif not Path(env_file).is_file():
        raise ConfigError([Problem("settings file", str(env_file), "an existing .env file")])
    return Settings(_env_file=env_file, **overrides)


def _resolve_backend(backend: str | None, kube: bool | None) -> str:
    if backend:
        return backend
    if kube is None:
        return "local"
    return "kubernetes" if kube else "slurm"


def _field_problem(cls: type[Settings], err: Any) -> Problem:
    name = str(err["loc"][0]) if err["loc"] else "settings"
    field = cls.model_fields.get(name)
    extra = field.json_schema_extra if field else None
    accepted = extra["accepted"] if isinstance(extra, dict) else err["msg"]
    return Problem(name.upper(), err.get("input"), str(accepted))


def _lenient_values(cls: type[Settings], data: Any, failed: set[str]) -> dict[str, Any]:
    """Parse what did validate, so cross-setting checks still run beside the field errors."""
    raw = {str(k).lower(): v for k, v in dict(data or {}).items()}
    values: dict[str, Any] = {}
    for name, field in cls.model_fields.items():
        if name in failed:
            values[name] = None
            continue
        value = raw.get(name, field.default)
        try:
            values[name] = TypeAdapter(field.annotation).validate_python(
                None if isinstance(value, str) and not value.strip() else value
            )
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
    if backend == "kubernetes" and v.get("use_ssl") and not v.get("secret_cert_name"):
        problems.append(Problem("SECRET_CERT_NAME", None, "a Secret name: required when USE_SSL=True on kubernetes"))
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
    url = v.get("results_url")
    if url:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            make_url(url)
        except ArgumentError:
            problems.append(Problem("RESULTS_URL", "<hidden>", "an SQLAlchemy URL such as sqlite:///path.db"))
    return problems

