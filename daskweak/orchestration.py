"""The bodies of the Airflow tasks, free of Airflow: validate → plan → run steps → collect → finish.

Settings travel between tasks as (settings file, overrides from the params), never as resolved values, so
no secret (a database password) lands in XCom; each task resolves them again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from daskweak.errors import ConfigError, DaskweakError, ResultsNotWritten
from daskweak.plan import make_plan
from daskweak.settings import Settings, load_settings

if TYPE_CHECKING:
    from daskweak.store import ResultStore

log = logging.getLogger(__name__)

PROJECT = Path(__file__).resolve().parents[1]

# DAG param name → setting
PARAMS = {
    "backend": "backend", "max_cores": "max_n_cores", "step_by": "step_by", "cores_per_node": "cores_per_node",
    "obs_per_iter": "obs_per_iter", "suites": "suites", "scaling": "scaling",
    "problem_size_array": "problem_size_array", "problem_size_dataframes": "problem_size_dataframes",
    "problem_size_tasks": "problem_size_tasks", "use_ssl": "use_ssl",
}


# fields of the cncf-kubernetes Connection that carry credentials
KUBE_CREDENTIAL_FIELDS = ("in_cluster", "kube_config_path", "kube_config")


class StepsFailed(DaskweakError):
    """Some steps of the run did not finish cleanly; their rows (if any) are kept."""


class ResultsMissing(DaskweakError):
    """The run's rows are not in the table `finish` reads: its tasks wrote another database (a SQLite file of
    their own, inside a task pod)."""


def default_env_file() -> str | None:
    """DASKWEAK_ENV_FILE, else the project's `.env` when present."""
    explicit = os.environ.get("DASKWEAK_ENV_FILE")
    if explicit:
        return explicit
    candidate = PROJECT / ".env"
    return str(candidate) if candidate.is_file() else None


def request(
    params: dict[str, Any], results_url: str | None = None, defaults: dict[str, Any] | None = None
) -> tuple[str | None, dict[str, Any]]:
    """(settings file, overrides) from a DAG run's params; `results_url` comes from an Airflow Connection.

    A param left at its form default (`defaults`, read from the `.env` when the DAG was parsed) is not an
    override, so a settings file chosen in the form is not overruled by untouched fields.
    """
    env_file = params.get("settings_file") or default_env_file()
    defaults = defaults or {}
    overrides = {PARAMS[k]: v for k, v in params.items()
                 if k in PARAMS and v is not None and (k not in defaults or v != defaults[k])}
    if results_url:
        overrides["results_url"] = results_url
    # A task's working directory is Airflow's choice: anchor relative paths at the settings file's
    # directory (or the project) so every task, and the user, find the same results.
    base = Path(env_file).resolve().parent if env_file else PROJECT
    try:
        settings = load_settings(env_file, **overrides)
    except ConfigError:
        return env_file, overrides  # the validate task reports it
    for key in ("res_dir", "out_dir", "cert_dir"):
        path = getattr(settings, key)
        if path is not None and not path.is_absolute() and settings.applies(key):
            overrides[key] = str(base / path)
    return env_file, overrides


def connection_url(connection: Any) -> str:
    """An SQLAlchemy URL from an Airflow Connection (its `postgres` scheme means psycopg here)."""
    uri = connection.get_uri()
    for scheme in ("postgres://", "postgresql://"):
        if uri.startswith(scheme):
            return "postgresql+psycopg://" + uri.removeprefix(scheme)
    return uri


def results_store(results_url: str | None = None) -> ResultStore:
    """The run's results store as the tasks see it (paths anchored like theirs), for the UI page."""
    from daskweak.store import ResultStore

    env_file, overrides = request({}, results_url)
    return ResultStore.of(load_settings(env_file, **overrides))


def parse_time_config() -> tuple[Settings, ConfigError | None]:
    """Settings for building the DAGs (param defaults, schedule, step retries and limits), and the error when
    they are invalid.

    A broken `.env` must not break parsing (the DAG would vanish behind an import error): the DAG is then
    built from the code's defaults, and the error is returned so that the validate task fails with it —
    a run must never go ahead on defaults the user did not choose.
    """
    try:
        return load_settings(default_env_file()), None
    except ConfigError as exc:
        log.warning("daskweak settings are invalid; the DAGs are built from defaults and their validate task "
                    "fails until they are fixed: %s", exc)
        defaults = {name: f.default for name, f in Settings.model_fields.items()}
        return Settings.model_construct(**defaults | {"backend": "local"}), exc


def parse_time_settings() -> Settings:
    """The settings a DAG or page is built from (the code's defaults when the `.env` is broken)."""
    return parse_time_config()[0]


def param_defaults(settings: Settings) -> dict[str, Any]:
    return {param: getattr(settings, key) for param, key in PARAMS.items()}


def validate(
    env_file: str | None, overrides: dict[str, Any], parse_error: ConfigError | None = None
) -> dict[str, Any]:
    """Raises ConfigError with every problem; returns the public (secret-free) settings for the log.

    `parse_error` is the error the DAG was built with (see `parse_time_config`): even if the settings read
    well now, the DAG's schedule and task limits came from defaults, so the run stops here.
    """
    if parse_error is not None:
        raise ConfigError(parse_error.problems)
    settings = load_settings(env_file, **overrides)
    from daskweak.backends import usable_backend

    usable_backend(settings)
    if settings.ignored:
        log.info("ignored on %s (they configure another backend): %s", settings.backend,
                 ", ".join(name.upper() for name in settings.ignored))
    return settings.public()


def kube_conn_id(env_file: str | None, overrides: dict[str, Any]) -> str | None:
    """The Connection to take Kubernetes credentials from, when the run uses the kubernetes backend."""
    settings = load_settings(env_file, **overrides)
    return settings.kube_conn_id if settings.backend == "kubernetes" else None


def plan(env_file: str | None, overrides: dict[str, Any], run_id: str, kind: str = "manual") -> list[dict[str, Any]]:
    """Record the run as `kind` (nightly or manual; spooled if the database does not answer, `finish` loads
    it) and return one JSON-able step per mapped task."""
    from daskweak.runner import start_run
    from daskweak.spool import spool_for
    from daskweak.store import ResultStore

    settings = load_settings(env_file, **overrides)
    with ResultStore.of(settings) as store:
        spool = spool_for(settings.res_dir, store)
        if not start_run(settings, spool, run_id, kind=kind):
            log.warning("%s", spool.message(spool.pending(run_id), spool.last_error))
    return [step.as_dict() for step in make_plan(settings)]


def collect(summaries: list[dict[str, Any] | None], steps: list[dict[str, Any]]) -> dict[str, Any]:
    """Reduce the steps' XCom summaries: median time per operation and core count, and what failed."""
    done = [s for s in summaries if s]
    finished = {s["cores_requested"] for s in done if s["status"] == "ok"}
    medians: dict[str, dict[str, float | None]] = {}
    for summary in done:
        for name, op in summary["operations"].items():
            medians.setdefault(name, {})[str(summary["cores_requested"])] = op["median_s"]
    return {
        "steps": len(steps),
        "ok": sorted(finished),
        "failed": sorted({s["cores"] for s in steps} - finished),
        "time_to_ready": {str(s["cores_requested"]): s["time_to_ready"] for s in done},
        "median_s": medians,
    }


def finish(
    env_file: str | None, overrides: dict[str, Any], run_id: str, collected: dict[str, Any] | None
) -> str:
    """Load what the run's tasks spooled, close the run record (whatever happened to the steps: `collected`
    is None when collecting failed), write the CSV exports, and return the table for the task log.

    Raises ResultsNotWritten when the database still does not answer (the spool keeps everything), and
    StepsFailed after writing when a step failed, so the Airflow run turns red.
    """
    from daskweak.analysis.stats import efficiency
    from daskweak.analysis.tables import as_text, efficiency_table, noise_note
    from daskweak.export import export_run
    from daskweak.runner import now
    from daskweak.spool import spool_for
    from daskweak.store import ResultStore

    settings = load_settings(env_file, **overrides)
    collected = collected or {"failed": ["unknown (collect failed)"]}
    status = "ok" if not collected["failed"] else "failed"
    with ResultStore.of(settings) as store:
        spool = spool_for(settings.res_dir, store)
        with store.patient(settings.results_final_wait_seconds):
            written = spool.finish_run(run_id, status, now())
        unwritten = None if written else spool.message(spool.pending(run_id), spool.last_error)
        missing = _missing_rows(store, run_id, collected) if unwritten is None else None
        if unwritten is None and missing is None:
            rows = store.observations(run_id)
            files = export_run(store, run_id, settings.res_dir, settings.res_file_name)
    leftovers = _delete_leftovers(settings, run_id)
    if unwritten is not None:
        raise ResultsNotWritten("\n".join([unwritten, *(f"  {line}" for line in leftovers)]))
    if missing is not None:
        raise ResultsMissing("\n".join([_missing_message(run_id, missing, settings.masked_database_url),
                                        *(f"  {line}" for line in leftovers)]))
    lines = []
    if len(rows):
        table = efficiency(rows, settings.scaling, settings.noise_limit_pct / 100)
        lines.append(as_text(efficiency_table(table, settings.scaling)))
        lines += [note] if (note := noise_note(table, settings.noise_limit_pct / 100)) else []
    lines.append(f"run {run_id}: {status}; results in {settings.masked_database_url}")
    lines += [f"  wrote {path}" for path in files]
    lines += [f"  {line}" for line in leftovers]
    text = "\n".join(lines)
    if collected["failed"]:
        raise StepsFailed(f"{text}\nsteps that failed: cores={collected['failed']}")
    return text



def _missing_rows(store: ResultStore, run_id: str, collected: dict[str, Any]) -> str | None:
    """What the table lacks of the run: its record (the plan task writes it), or the rows of steps that reported
    back (`collected`: a step writes its record whatever happened to it). None when all is there."""
    if run_id not in set(store.runs()["run_id"]):
        return "no record of the run (the plan task writes it)"
    reported = {int(cores) for cores in collected.get("time_to_ready", {})}
    missing = sorted(reported - {int(cores) for cores in store.steps(run_id)["cores_requested"]})
    return f"no rows of the steps with cores={missing}, which reported back" if missing else None


def _missing_message(run_id: str, missing: str, masked_url: str) -> str:
    return (
        f"run {run_id}: its results are not in the database this task reads ({masked_url}): {missing}. The tasks "
        "wrote somewhere else: with RESULTS_URL unset each task writes RES_DIR/daskweak.sqlite where it runs, and "
        "every KubernetesExecutor or CronJob pod has its own file system. Point RESULTS_URL at a database every "
        "task reaches (e.g. postgresql+psycopg://user@host/db), or set RESULTS_CONN_ID to an Airflow Connection "
        "of one; keep SQLite only on a volume every task mounts (a PersistentVolumeClaim)."
    )


def secret_values(env_file: str | None, overrides: dict[str, Any]) -> list[Any]:
    """The run's credentials in clear, for Airflow's log masker (none when the settings are invalid)."""
    try:
        return load_settings(env_file, **overrides).secret_values()
    except ConfigError:
        return []


def release_credentials(run_id: str) -> None:
    """Remove the run's exported kubeconfigs (a SIGKILLed task leaves its own) and those of dead processes."""
    from daskweak.backends.kubernetes.kubeconfig import remove_run, remove_stale

    remove_run(run_id)
    remove_stale()


def _delete_leftovers(settings: Settings, run_id: str) -> list[str]:
    """A step process killed with SIGKILL cannot delete its DaskCluster or cancel its Slurm jobs; the end of
    the run does. Returns a line per thing removed."""
    if settings.backend == "slurm":
        from daskweak.backends.slurm import cancel_run

        return [f"cancelled Slurm job {job_id}, left behind by a killed step" for job_id in cancel_run(run_id)]
    if settings.backend != "kubernetes":
        return []
    from daskweak.backends.kubernetes.backend import delete_run

    return [f"deleted DaskCluster {name}, left behind by a killed step" for name in delete_run(settings, run_id)]


def report(env_file: str | None, overrides: dict[str, Any], run_id: str) -> str:
    """Write the run's HTML report and plots under RES_DIR/reports/RUN; returns the report's path."""
    from daskweak.analysis.report import run_report
    from daskweak.store import ResultStore

    settings = load_settings(env_file, **overrides)
    with ResultStore.of(settings) as store:
        paths = run_report(store, run_id).write(report_dir(settings, run_id))
    return str(paths[0])


def report_dir(settings: Settings, run_id: str) -> Path:
    return settings.res_dir / "reports" / run_id


def check_regressions(env_file: str | None, overrides: dict[str, Any], run_id: str) -> dict[str, str]:
    """Judge the run against its baseline, store the verdict with the run, and write it beside the report.

    Returns {"status", "markdown"}; the caller decides what a regression does (the nightly DAG fails and
    notifies on "regression" only: a "suspected" night is shown in the verdict, not red).
    """
    from daskweak.analysis.regression import check_run
    from daskweak.store import ResultStore

    settings = load_settings(env_file, **overrides)
    with ResultStore.of(settings) as store:
        verdict = check_run(store, run_id, settings)
    directory = report_dir(settings, run_id)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "regressions.md").write_text(verdict["markdown"], encoding="utf-8")
    return {"status": verdict["status"], "markdown": verdict["markdown"]}


def suspects(env_file: str | None, overrides: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
    """The nightly DAG's first look: judge the run without saving, and return one re-measure request per core
    count with a suspected comparison ({"step", "only"}; none when REMEASURE_OBS is 0). A re-measure step
    gets a step number after the sweep's, so the sweep's rows stay as they were."""
    from daskweak.analysis.regression import check_run, remeasure_plan
    from daskweak.schedule import stored_loops
    from daskweak.store import ResultStore

    settings = load_settings(env_file, **overrides)
    if not settings.remeasure_obs:
        return []
    with ResultStore.of(settings) as store:
        verdict = check_run(store, run_id, settings, save=False)
        taken = store.steps(run_id)
    plan = remeasure_plan(verdict["comparisons"])
    steps = {step.cores: step for step in make_plan(settings)}
    first = int(taken["step"].max()) + 1 if len(taken) else len(steps)
    requests = []
    for number, (cores, only) in enumerate((c, o) for c, o in plan.items() if c in steps):
        step = steps[cores].as_dict() | {"index": first + number}
        requests.append({"step": step, "only": only, "loops": stored_loops(taken, cores)})
        log.info("re-measuring %s at %d cores with %d observations each", only, cores, settings.remeasure_obs)
    return requests


def notifier(env_file: str | None, overrides: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """REGRESSION_NOTIFIER (a notifier class path, or None) and its arguments."""
    settings = load_settings(env_file, **overrides)
    return settings.regression_notifier, settings.regression_notifier_args
