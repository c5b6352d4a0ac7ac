"""The two DAGs, built by one factory. Airflow is imported only when a DAG is built (by `dags/`).

    validate → plan → run_step.expand(step=…) → collect → finish → report            (manual)
    validate → plan → run_step.expand(step=…) → collect → finish → find_suspects
        → remeasure.expand(request=…) → check_regressions                                 (nightly)

The nightly DAG takes a first look at the run (`find_suspects`: judged, not saved), measures every suspected
comparison again with REMEASURE_OBS observations (one mapped task per core count with a suspect, none on a
quiet night), then the check stores the verdict with the run, writes the report, and on a regression calls
the configured notifier (REGRESSION_NOTIFIER) with the summary and fails, so the run turns red.

Every task body is a function of `daskweak.orchestration`; this module only wires them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from typing import Any

from daskweak import orchestration as orch
from daskweak.errors import ResultsUnavailable, UnknownRun
from daskweak.settings import ALL_SUITES


def build_dag(dag_id: str, *, nightly: bool) -> Any:
    from airflow.sdk import DAG, BaseHook, Param, get_current_context, task
    from airflow.sdk.exceptions import AirflowFailException

    settings, parse_error = orch.parse_time_config()
    defaults = orch.param_defaults(settings)

    def resolve() -> tuple[str | None, dict[str, Any]]:
        """(settings file, overrides) for this run; the results URL may come from an Airflow Connection."""
        params = get_current_context()["params"]
        url = None
        conn_id = settings.results_conn_id
        if conn_id:
            url = orch.connection_url(BaseHook.get_connection(conn_id))
        request = orch.request(params, url, defaults)
        from airflow.sdk.log import mask_secret

        for secret in orch.secret_values(*request):
            mask_secret(secret)  # whatever prints them by accident, the task log shows *** instead
        return request

    @contextmanager
    def kube_credentials(env_file: str | None, overrides: dict[str, Any], run_id: str) -> Iterator[None]:
        """On kubernetes, KUBECONFIG points at the Connection KUBE_CONN_ID's credentials while the block runs.

        A Connection with none of the provider's credential fields (the absent `kubernetes_default` among
        them) changes nothing: KUBECONFIG, then the pod's service account, as kr8s looks them up. The file
        lives in the run's private directory, which the run's last task removes (`orch.release_credentials`).
        """
        conn_id = orch.kube_conn_id(env_file, overrides)
        if conn_id is None:
            yield
            return
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        from daskweak.backends.kubernetes.kubeconfig import exported

        hook = KubernetesHook(conn_id=conn_id)
        extra = hook.get_connection(conn_id).extra_dejson
        if not any(extra.get(key) or extra.get(f"extra__kubernetes__{key}") for key in orch.KUBE_CREDENTIAL_FIELDS):
            yield
            return
        with exported(hook.get_conn().configuration, run_id):
            yield

    def notify(env_file: str | None, overrides: dict[str, Any], context: Any, summary: str) -> None:
        """Airflow's notifier mechanism: REGRESSION_NOTIFIER(**ARGS)(context), `summary` added to the context."""
        path, arguments = orch.notifier(env_file, overrides)
        if path is None:
            return
        import importlib

        module, _, name = path.rpartition(".")
        notifier = getattr(importlib.import_module(module), name)(**arguments)
        notifier({**context, "summary": summary})

    # Each param says in one line what it does, its unit and its range (the trigger form shows it under the
    # field); the `.env` key that sets its default comes last.
    params = {} if nightly else {
        "backend": Param(defaults["backend"], type="string", enum=["local", "slurm", "kubernetes"],
                         description="Where the Dask cluster runs: local (this machine), slurm (batch jobs) or "
                                     "kubernetes (pods) (BACKEND)."),
        "max_cores": Param(defaults["max_cores"], type="integer", minimum=1,
                           description="Largest core count of the sweep, in cores; an integer ≥ 1 (MAX_N_CORES)."),
        "step_by": Param(defaults["step_by"], type="integer", minimum=1,
                         description="Core counts measured: 1, then multiples of this up to max_cores; an integer "
                                     "≥ 1 (STEP_BY)."),
        "cores_per_node": Param(defaults["cores_per_node"], type=["null", "integer"], minimum=1,
                                description="Cores of one node (Slurm job, Kubernetes pod); an integer ≥ 1, empty: "
                                            "all cores on one node (CORES_PER_NODE)."),
        "obs_per_iter": Param(defaults["obs_per_iter"], type=["null", "integer"], minimum=1,
                              description="Measured observations per step and suite, a fixed count; an integer ≥ "
                                          "1, empty: each operation until its median is within TARGET_PRECISION "
                                          "(OBS_PER_ITER)."),
        "suites": Param(list(defaults["suites"]), type="array", minItems=1, uniqueItems=True,
                        items={"type": "string", "enum": list(ALL_SUITES)},
                        description="Workload suites to run: one or more of arrays, dataframes, tasks (SUITES)."),
        "scaling": Param(defaults["scaling"], type="string", enum=["weak", "strong"],
                         description="weak: the problem grows with the cores; strong: it stays the 1-core size "
                                     "(SCALING)."),
        "problem_size_array": Param(defaults["problem_size_array"], type="integer", minimum=16,
                                    description="Side of the 1-core square array, in elements (float64); an "
                                                "integer ≥ 16, grown by √cores (PROBLEM_SIZE_ARRAY)."),
        "problem_size_dataframes": Param(defaults["problem_size_dataframes"], type="integer", minimum=1000,
                                         description="Rows of the 1-core dataframe; an integer ≥ 1000, grown by "
                                                     "the cores (PROBLEM_SIZE_DATAFRAMES)."),
        "problem_size_tasks": Param(defaults["problem_size_tasks"], type="integer", minimum=10,
                                    description="Tasks per core in the task-scheduling suite; an integer ≥ 10 "
                                                "(PROBLEM_SIZE_TASKS)."),
        "use_ssl": Param(defaults["use_ssl"], type="boolean",
                         description="Encrypt scheduler and worker traffic with TLS (certificates from CERT_DIR) "
                                     "(USE_SSL)."),
        "settings_file": Param(None, type=["null", "string"],
                               description="Path of a .env settings file on the Airflow workers, used instead "
                                           "of the DAG's .env; fields changed above still override it; empty: "
                                           "the DAG's .env."),
    }

    with DAG(
        dag_id,
        schedule=settings.nightly_schedule if nightly else None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        max_active_runs=1,
        params=params,
        tags=["daskweak", "benchmark"],
        doc_md=__doc__ if parse_error is None else f"{__doc__}\n\n**Settings error** (built from defaults; "
        f"every run fails at `validate` until it is fixed):\n\n```\n{parse_error}\n```",
        default_args={"retries": 0},
    ) as dag:

        @task(multiple_outputs=False)
        def validate() -> dict[str, Any]:
            # A settings file chosen in the form replaces the `.env` the DAG was parsed from.
            chosen = get_current_context()["params"].get("settings_file")
            try:
                return orch.validate(*resolve(), None if chosen else parse_error)
            except orch.ConfigError as exc:
                raise AirflowFailException(str(exc)) from None  # retrying cannot fix a setting

        @task(multiple_outputs=False)
        def plan(_validated: dict[str, Any]) -> list[dict[str, Any]]:
            env_file, overrides = resolve()
            run_id = get_current_context()["run_id"]
            with kube_credentials(env_file, overrides, run_id):  # the run's record lists the cluster's nodes
                return orch.plan(env_file, overrides, run_id, "nightly" if nightly else "manual")

        @task(
            multiple_outputs=False,
            map_index_template="cores={{ cores }}",
            max_active_tis_per_dag=settings.step_concurrency,
            retries=settings.step_retries,
            retry_delay=timedelta(seconds=10),
            execution_timeout=timedelta(seconds=settings.step_timeout) if settings.step_timeout else None,
        )
        def run_step(step: dict[str, Any]) -> dict[str, Any]:
            return measure(step)

        def measure(step: dict[str, Any], only: dict[str, list[str]] | None = None,
                    loops: dict[str, int] | None = None) -> dict[str, Any]:
            from daskweak.isolated import run_step_isolated

            context = get_current_context()
            context["cores"] = step["cores"]  # type: ignore[typeddict-unknown-key]
            env_file, overrides = resolve()
            with kube_credentials(env_file, overrides, context["run_id"]):
                summary = run_step_isolated({"env_file": env_file, "overrides": overrides, "step": step,
                                             "run_id": context["run_id"], "only": only, "loops": loops})
            if summary["status"] != "ok":
                raise RuntimeError(f"step with {step['cores']} cores: {summary['status']}: {summary['error']}")
            return summary

        @task(multiple_outputs=False, trigger_rule="all_done")
        def find_suspects(finished: str | None) -> list[dict[str, Any]]:
            """The first look: what tonight's run makes suspect, to be measured again before the verdict."""
            if finished is None:
                return []
            env_file, overrides = resolve()
            run_id = get_current_context()["run_id"]
            with kube_credentials(env_file, overrides, run_id):
                return orch.suspects(env_file, overrides, run_id)

        @task(
            multiple_outputs=False,
            map_index_template="cores={{ cores }}",
            max_active_tis_per_dag=settings.step_concurrency,
            execution_timeout=timedelta(seconds=settings.step_timeout) if settings.step_timeout else None,
        )
        def remeasure(request: dict[str, Any]) -> dict[str, Any]:
            return measure(request["step"], request["only"], request.get("loops"))

        @task(multiple_outputs=False, trigger_rule="all_done")
        def collect(summaries: list[dict[str, Any] | None], steps: list[dict[str, Any]]) -> dict[str, Any]:
            # index up to the known length: iterating probes one offset past the end (a logged 404)
            return orch.collect([summaries[i] for i in range(len(summaries))], steps)

        @task(multiple_outputs=False, trigger_rule="all_done")
        def finish(collected: dict[str, Any]) -> str:
            env_file, overrides = resolve()
            run_id = get_current_context()["run_id"]
            with kube_credentials(env_file, overrides, run_id):
                try:
                    text = orch.finish(env_file, overrides, run_id, collected)
                except orch.ResultsNotWritten as exc:
                    raise AirflowFailException(str(exc)) from None  # the spool keeps them; the message says how
            print(text)
            return text

        def write_report(run_id: str) -> str:
            try:
                return f"report: {orch.report(*resolve(), run_id)}"
            except (orch.ConfigError, UnknownRun, ResultsUnavailable) as exc:
                return f"no report: {exc}"

        # The last task is the run's colour in Airflow (a run is judged by its leaves): it fails whenever
        # `finish` did not succeed (its XCom is then None), after writing what can be written.
        @task(multiple_outputs=False, trigger_rule="all_done")
        def report(finished: str | None) -> str:
            orch.release_credentials(get_current_context()["run_id"])
            text = write_report(get_current_context()["run_id"])
            print(text)
            if finished is None:
                raise AirflowFailException(f"the run did not finish cleanly (see the finish task); {text}")
            return text

        @task(multiple_outputs=False, trigger_rule="all_done")
        def check_regressions(finished: str | None) -> str:
            context = get_current_context()
            orch.release_credentials(context["run_id"])
            if finished is None:
                raise AirflowFailException("the run did not finish cleanly (see the finish task): no regression "
                                           f"check; {write_report(context['run_id'])}")
            env_file, overrides = resolve()
            verdict = orch.check_regressions(env_file, overrides, context["run_id"])
            print(verdict["markdown"])
            print(write_report(context["run_id"]))
            if verdict["status"] == "regression":
                notify(env_file, overrides, context, verdict["markdown"])
                raise AirflowFailException(f"performance regression:\n{verdict['markdown']}")
            return verdict["status"]

        steps = plan(validate())
        finished = finish(collect(run_step.expand(step=steps), steps))
        if nightly:
            # the verdict waits for the re-measure (none on a quiet night: the mapped task is then skipped)
            remeasure.expand(request=find_suspects(finished)) >> check_regressions(finished)
        else:
            report(finished)

    return dag
