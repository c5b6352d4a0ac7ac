"""The runner on a real LocalCluster: every suite, warm-ups, failures, time-outs, idempotence, clean-up."""

from __future__ import annotations

import pytest
from distributed import Client

from daskweak import runner
from daskweak.analysis.stats import aggregate, efficiency
from daskweak.plan import make_plan
from daskweak.runner import run_step, run_sweep
from daskweak.store import ResultStore
from daskweak.workloads import Operation, get_suite
from tests.conftest import cluster_processes

OPERATIONS = {
    "arrays": {"create", "blockwise", "random_access", "std", "std_axis", "sin2_cos2", "transpose_add",
               "rechunk", "map_overlap"},
    "dataframes": {"create", "map_partitions", "loc_random_access", "std", "series_std", "groupby_mean",
                   "groupby_two_columns", "groupby_apply", "sort_values", "arithmetic", "set_index",
                   "rolling_mean"},
    "tasks": {"independent", "tree_reduction", "nearest_neighbour", "sequential_chain"},
}
UNITS = {"arrays": {"bytes"}, "dataframes": {"rows", "bytes"}, "tasks": {"tasks"}}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    from daskweak.settings import load_settings
    from tests.conftest import SMALL

    settings = load_settings(**SMALL, max_n_cores=2, res_dir=str(tmp_path_factory.mktemp("sweep")))
    result = run_sweep(settings)
    store = ResultStore(settings.database_url)
    yield settings, result, store.observations(result.run_id), store.steps(result.run_id), store.runs()
    store.close()


def test_sweep_measures_every_step_and_closes_its_clusters(sweep):
    settings, result, _, steps, runs = sweep
    assert result.status == "ok"
    assert list(steps["cores_requested"]) == [1, 2]
    assert list(steps["cores_actual"]) == [1, 2]
    assert list(steps["workers_actual"]) == [1, 2]
    assert (steps["time_to_ready"] > 0).all()
    assert list(steps["status"]) == ["ok", "ok"]
    run = runs.set_index("run_id").loc[result.run_id]
    assert run["status"] == "ok" and run["fingerprint"] == settings.fingerprint()
    assert run["versions"]["distributed"] and run["versions"]["dask"]
    assert cluster_processes() == []


@pytest.mark.parametrize("suite", ["arrays", "dataframes", "tasks"])
def test_each_suite_runs_on_one_and_two_workers_with_sane_rates(sweep, suite):
    settings, _, rows, _, _ = sweep
    rows = rows[rows["suite"] == suite]
    per_obs = settings.warmup + settings.obs_per_iter
    for cores in (1, 2):
        at = rows[rows["cores_requested"] == cores]
        assert set(at["operation"]) == OPERATIONS[suite]
        assert len(at) == len(OPERATIONS[suite]) * per_obs
        assert (at["status"] == "ok").all(), at[at["status"] != "ok"][["operation", "error"]]
        assert (at["cores_actual"] == cores).all() and (at["workers"] == cores).all()
        assert (at["duration"] > 0).all() and (at["rate"] > 0).all()
        assert (at["rate"] == at["size"] / at["duration"]).all()
        assert set(at["unit"]) <= UNITS[suite]
        assert (at["rate_unit"] == at["unit"] + "/s").all()
        assert (at["peak_memory"] > 0).all()
    # weak scaling: the problem doubles with the cores
    sizes = rows.groupby("cores_requested")["size"].sum()
    assert sizes[2] > 1.5 * sizes[1]


def test_warmups_are_recorded_but_left_out_of_statistics(sweep):
    settings, _, rows, _, _ = sweep
    assert rows["warmup"].sum() == len(rows) * settings.warmup // (settings.warmup + settings.obs_per_iter)
    table = aggregate(rows)
    assert (table["count"] == settings.obs_per_iter).all()
    measured = rows[~rows["warmup"]]
    one = measured[(measured["operation"] == "std") & (measured["suite"] == "arrays")
                   & (measured["cores_requested"] == 1)]
    row = table[(table["operation"] == "std") & (table["suite"] == "arrays") & (table["cores_requested"] == 1)]
    assert row["median"].item() == pytest.approx(one["duration"].median())
    eff = efficiency(rows, "weak")
    assert (eff[eff["cores_requested"] == 1]["efficiency"] == 1).all()


def test_a_failing_operation_is_recorded_and_the_sweep_goes_on(small, monkeypatch):
    def divide(a: int, b: int) -> float:
        return a / b

    def with_failure(name: str):
        real = get_suite(name)

        def operations(client: Client, step, seed: int):
            ops = list(real(client, step, seed))
            # a real task that raises on a real worker, between two real operations
            failing = Operation("divide_by_zero", "tasks", 1, lambda: client.submit(divide, 1, 0).result())
            return iter([ops[0], failing, *ops[1:]])

        return operations

    monkeypatch.setattr(runner, "get_suite", with_failure)
    settings = small(max_n_cores=2, suites="tasks", obs_per_iter=1, warmup=0)
    result = run_sweep(settings)
    store = ResultStore(settings.database_url)
    rows, steps = store.observations(result.run_id), store.steps(result.run_id)
    failed = rows[rows["status"] == "failed"]
    assert set(failed["operation"]) == {"divide_by_zero"}
    assert failed["error"].str.contains("ZeroDivisionError").all()
    assert failed["rate"].isna().all()
    assert (rows[rows["operation"] != "divide_by_zero"]["status"] == "ok").all()
    assert list(steps["status"]) == ["partial", "partial"]
    assert result.status == "failed"


def test_a_step_that_cannot_reach_its_cores_in_time_is_recorded_as_failed(small):
    settings = small(max_n_cores=2, timeout=0.001)
    result = run_sweep(settings)
    store = ResultStore(settings.database_url)
    steps = store.steps(result.run_id)
    assert list(steps["status"]) == ["failed", "failed"]  # the sweep went on to the second step
    assert steps["error"].str.contains("TIMEOUT=0.001").all()
    assert store.observations(result.run_id).empty
    assert [s["status"] for s in result.summaries] == ["failed", "failed"]
    assert result.status == "failed"
    assert store.runs().set_index("run_id").loc[result.run_id, "status"] == "failed"
    assert cluster_processes() == []


def test_running_a_step_again_replaces_its_rows(small):
    settings = small(max_n_cores=1, suites="tasks", obs_per_iter=1)
    [step] = make_plan(settings)
    store = ResultStore(settings.database_url)
    first = run_step(settings, step, "rerun", store=store)
    count = len(store.observations("rerun"))
    second = run_step(settings, step, "rerun", store=store)
    assert len(store.observations("rerun")) == count == 2 * len(OPERATIONS["tasks"])
    assert len(store.steps("rerun")) == 1
    assert first["status"] == second["status"] == "ok"


def test_step_summary_is_compact_json(small):
    import json

    settings = small(max_n_cores=1, suites="tasks", obs_per_iter=2)
    [step] = make_plan(settings)
    summary = run_step(settings, step, "summary")
    text = json.dumps(summary)
    assert len(text) < 4000
    assert summary["cores_requested"] == summary["cores_actual"] == 1
    assert summary["time_to_ready"] > 0
    independent = summary["operations"]["tasks.independent"]
    assert independent["median_s"] > 0 and independent["rate_unit"] == "tasks/s" and independent["failed"] == 0


@pytest.mark.parametrize(("per_node", "workers", "threads"), [(1, [1, 1, 1], 3), (2, [2, 1], 3)])
def test_threads_mode_reproduces_the_node_layout(small, per_node, workers, threads):
    from daskweak.backends.base import live_workers, open_cluster

    settings = small(worker_mode="threads", max_n_cores=3, step_by=3, cores_per_node=per_node)
    step = make_plan(settings)[-1]
    assert step.cores == 3
    with open_cluster(settings, step) as deployment:
        info = live_workers(deployment.client).values()
        assert sorted((w["nthreads"] for w in info), reverse=True) == workers
        assert deployment.cores == threads and deployment.workers == len(workers)


def test_a_healthy_cluster_is_never_taken_for_one_that_lost_workers(small):
    """CI once failed a step with "the cluster lost workers: 0 of 1 left" on a healthy LocalCluster:
    `Client.scheduler_info()` can return the client's periodic identity refresh, which lists no workers.
    Refreshing every 5 ms makes that race common (126 of 3000 reads of scheduler_info() on this machine)."""
    import dask

    from daskweak.backends.base import open_cluster

    settings = small(max_n_cores=1)
    with (dask.config.set({"distributed.client.scheduler-info-interval": "5ms"}),
          open_cluster(settings, make_plan(settings)[0]) as deployment):
        for _ in range(3000):
            runner.require_workers(deployment, [])


def test_an_operation_past_its_time_limit_is_cancelled_and_recorded(small, monkeypatch):
    """The stuck operation cannot end on its own: that the sweep ends at all, with the later operations measured,
    shows the cancellation (no upper bound on seconds: a loaded machine is slower, pytest's timeout stops a hang)."""

    def with_slow_operation(name: str):
        real = get_suite(name)

        def operations(client: Client, step, seed: int):
            ops = list(real(client, step, seed))
            # a real task no worker can take (no worker has a GPU): it waits forever without a time limit
            stuck = Operation("stuck", "tasks", 1, lambda: client.submit(sum, [seed], resources={"GPU": 1}).result())
            return iter([stuck, *ops])

        return operations

    monkeypatch.setattr(runner, "get_suite", with_slow_operation)
    settings = small(max_n_cores=1, suites="tasks", obs_per_iter=1, warmup=0, operation_timeout=2)
    result = run_sweep(settings)
    rows = ResultStore(settings.database_url).observations(result.run_id)
    stuck = rows[rows["operation"] == "stuck"].iloc[0]
    assert stuck["status"] == "failed" and "OPERATION_TIMEOUT=2" in stuck["error"]
    assert stuck["duration"] >= 2  # cancelled by the time limit, not by anything earlier
    assert (rows[rows["operation"] != "stuck"]["status"] == "ok").all(), rows[["operation", "error"]]



@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the swallowed signal, on purpose
def test_a_sigterm_lost_in_a_gc_callback_still_marks_the_step_interrupted(small, monkeypatch):
    """Airflow stops a task by SIGTERM to its whole process group, so the step's workers stop with it. CI saw the
    step's handler run inside distributed's garbage-collector callback, which swallows its exception, after the
    observation's last check for a signal, and the workers' loss fail the step first: "failed" with a
    CommClosedError instead of "interrupted". Here the same happens for real at that point: the signal arrives
    during a collection, then the workers leave (retired, so that their nannies do not start new ones)."""
    import gc
    import signal

    from daskweak.backends.base import live_workers
    from daskweak.signals import Terminated, interrupts_raise
    from tests.conftest import wait_until

    swallowed = []

    def callback(phase: str, info: dict) -> None:
        if phase == "start" and callback in gc.callbacks:
            gc.callbacks.remove(callback)
            signal.raise_signal(signal.SIGTERM)
            for _ in range(1000):  # the handler runs here, between bytecodes of the callback; gc drops its raise
                pass

    def signal_then_check(deployment, observation) -> None:
        client = deployment.client
        gc.callbacks.append(callback)
        gc.collect()
        swallowed.append(True)  # reached: the signal's exception did not get through
        client.retire_workers(list(live_workers(client)), close_workers=True)
        assert wait_until(lambda: not live_workers(client), timeout=120)
        real_check(deployment, observation)

    real_check = runner.require_workers
    monkeypatch.setattr(runner, "require_workers", signal_then_check)
    settings = small(max_n_cores=1, suites="tasks", obs_per_iter=1, warmup=0)
    [step] = make_plan(settings)
    with pytest.raises(Terminated), interrupts_raise():  # as the step's process runs it (daskweak.isolated)
        run_step(settings, step, "sigterm")
    assert swallowed == [True]
    with ResultStore(settings.database_url) as store:
        [status] = store.steps("sigterm")["status"]
    assert status == "interrupted"


def test_a_killed_step_process_keeps_what_it_measured(small):
    """SIGKILL (an OOM kill, a killed Airflow worker) leaves the step no time to write: its spool checkpoint
    reaches the table with the run's end, the step marked interrupted."""
    import signal
    import threading

    import psutil

    from daskweak import orchestration
    from daskweak.isolated import run_step_isolated
    from daskweak.store import KILLED_STEP
    from tests.airflow_harness import measured
    from tests.conftest import wait_until

    settings = small(max_n_cores=1, suites="tasks", obs_per_iter=500)
    overrides = {"max_n_cores": 1, "suites": "tasks", "obs_per_iter": 500, "res_dir": str(settings.res_dir),
                 "problem_size_tasks": settings.problem_size_tasks}
    [step] = orchestration.plan(None, overrides, "killed")
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            run_step_isolated({"env_file": None, "overrides": overrides, "step": step, "run_id": "killed"})
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert wait_until(lambda: measured(settings.res_dir, 1), timeout=300), "the step measured nothing"
    [child] = [proc for proc in psutil.Process().children() if "daskweak.isolated" in proc.cmdline()]
    child.send_signal(signal.SIGKILL)  # this test's own step process, nobody else's
    thread.join(120)
    assert "error" in outcome  # no summary: the process died
    with pytest.raises(orchestration.StepsFailed):
        orchestration.finish(None, overrides, "killed", {"failed": [1]})
    with ResultStore(settings.database_url) as store:
        [record] = store.steps("killed").itertuples()
        rows = store.observations("killed")
    assert (record.status, record.error) == ("interrupted", KILLED_STEP)
    assert (~rows["warmup"]).sum() > 0 and (rows["status"] == "ok").all()


def _heartbeat_in_flight(dask_worker, silent: str) -> None:
    """The worker's next heartbeat goes to an address that accepts connections and never answers, so it is
    still connecting when the worker closes: the race that printed a CommClosedError traceback in CI."""
    dask_worker.scheduler = dask_worker.rpc(silent)
    dask_worker.loop.add_callback(dask_worker.heartbeat)


def test_a_worker_closing_with_a_heartbeat_in_flight_prints_no_traceback(small, capfd):
    import logging
    import socket

    from distributed import LocalCluster

    from daskweak.backends.base import open_cluster

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        address = f"tcp://127.0.0.1:{silent.getsockname()[1]}"
        # The scenario is real: a bare LocalCluster's workers print the traceback (distributed's own logging)…
        with (LocalCluster(n_workers=1, processes=True, host="127.0.0.1", dashboard_address=":0",
                           silence_logs=logging.ERROR) as bare, Client(bare) as client):
            client.run(_heartbeat_in_flight, silent=address)
        assert "Failed to communicate with scheduler during heartbeat" in capfd.readouterr().err
        # …and the local backend's workers, closed the same way, print nothing
        settings = small(max_n_cores=2)
        with open_cluster(settings, make_plan(settings)[-1]) as deployment:
            deployment.client.run(_heartbeat_in_flight, silent=address)
        err = capfd.readouterr().err
    assert "Traceback" not in err and "heartbeat" not in err, err


def test_observed_to_a_precision_with_short_operations_looped(small):
    """OBS_PER_ITER empty: each suite is observed in interleaved rounds between MIN_OBS and MAX_OBS, an
    operation shorter than the step's minimum duration is looped, and the step records how it was measured."""
    settings = small(max_n_cores=1, suites="tasks,arrays", obs_per_iter=None, min_obs=7, max_obs=8, step_budget=0.1)
    [step] = make_plan(settings)
    store = ResultStore(settings.database_url)
    assert run_step(settings, step, "precise", store=store)["status"] == "ok"
    rows = store.observations("precise")
    measured = rows[~rows["warmup"]]
    # the budget is spent at once, so no round starts past the minimum
    assert set(measured.groupby(["suite", "operation"]).size()) == {7}
    # rounds alternate the suites: tasks, arrays, then arrays, tasks, …
    firsts = measured.groupby("observation")["started_at"].min()
    order = measured.sort_values("started_at").drop_duplicates(["suite", "observation"])["suite"].tolist()
    assert order[:4] == ["tasks", "arrays", "arrays", "tasks"] and len(firsts) == 7
    [details] = store.steps("precise")["details"]
    measuring = details["measuring"]
    assert measuring["observations"] == {"tasks": 7, "arrays": 7} and measuring["budget_spent"]
    assert 0 < measuring["minimum_seconds"] <= 0.5 and set(measuring["precision"]) == {
        f"{suite}.{op}" for suite in ("tasks", "arrays") for op in OPERATIONS[suite]}
    # a looped operation's first measured observation ran once and set its loops; the later ones ran that often
    assert measuring["loops"], "the tiny test sizes leave operations shorter than the minimum"
    for name, loops in measuring["loops"].items():
        suite, operation = name.split(".")
        counts = measured[(measured["suite"] == suite) & (measured["operation"] == operation)].sort_values(
            "observation")["loops"].tolist()
        assert counts == [1] + [loops] * 6 and loops > 1
    store.close()


def test_a_run_keeps_the_loop_counts_of_the_last_comparable_run(small):
    """Loops decided afresh from one noisy first observation each night would move the series by themselves:
    the second run of a fingerprint loops each operation as the first stored it (here a count set by hand
    in the first run's record, which no measurement would choose), from its first observation on."""
    import json
    import sqlite3

    settings = small(max_n_cores=1, suites="tasks", obs_per_iter=None, min_obs=3, max_obs=3, step_budget=0.1)
    first = run_sweep(settings).run_id
    path = settings.database_url.removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        [(details,)] = db.execute("select details from steps where run_id = ?", (first,)).fetchall()
        details = json.loads(details)
        details["measuring"]["loops"] = {"tasks.independent": 3}
        db.execute("update steps set details = ? where run_id = ?", (json.dumps(details), first))
    second = run_sweep(settings).run_id
    with ResultStore(settings.database_url) as store:
        rows = store.observations(second)
        [stored] = store.steps(second)["details"]
    measured = rows[~rows["warmup"].astype(bool)]
    loops = measured.groupby("operation")["loops"].agg(set).to_dict()
    assert loops["independent"] == {3} and all(n == {1} for op, n in loops.items() if op != "independent")
    assert stored["measuring"]["loops_from"] == first and stored["measuring"]["loops"] == {"tasks.independent": 3}


@pytest.mark.alone
def test_a_cpu_hog_beside_the_step_marks_it_busy(small, caplog):
    """Another process using a core while a step measures is recorded by name, and the step is marked busy
    and warned about; without it the step is not (run alone: other tests' work would count as busy too)."""
    import subprocess
    import sys

    settings = small(max_n_cores=1, suites="tasks", obs_per_iter=6)
    [step] = make_plan(settings)
    store = ResultStore(settings.database_url)
    run_step(settings, step, "quiet", store=store)
    [quiet] = store.steps("quiet")["host_load"]
    assert len(quiet) == 1 and not quiet[0]["busy"], quiet
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with caplog.at_level("WARNING"):
            run_step(settings, step, "busy", store=store)
    finally:
        hog.kill()
        hog.wait()
    [load] = store.steps("busy")["host_load"]
    [host] = load
    assert host["busy"] and host["foreign_cores"] >= 0.5, host
    assert hog.pid in [p["pid"] for p in host["busy_processes"]]
    assert {"load_before", "load_after", "steal_pct", "mhz_before", "mhz_after"} <= set(host)
    assert "the host was busy while it measured" in caplog.text and "python" in caplog.text
    store.close()


def test_an_error_while_a_worker_is_lost_is_reported_as_the_loss_and_any_other_error_as_itself(small):
    """CI once failed a multi-host step with a bare "CommClosedError: Address removed.": node2's link went down
    after an observation's check and before the `client.run` that frees memory. Here a worker really leaves the
    cluster, and a real error raised meanwhile (whatever it is: which one a lost worker causes depends on
    timing) is reported as the loss, with the error itself as its cause."""
    from daskweak.backends.base import live_workers, open_cluster
    from tests.conftest import wait_until

    settings = small(max_n_cores=2, step_by=2)  # processes: one worker per core
    step = make_plan(settings)[-1]
    with open_cluster(settings, step) as deployment:
        client = deployment.client
        assert deployment.workers == 2
        # nothing lost: the error is its own
        with pytest.raises(ZeroDivisionError), runner.naming_lost_workers(deployment):
            client.submit(lambda: 1 / 0).result()
        gone = sorted(live_workers(client))[0]
        client.retire_workers([gone], close_workers=True)
        assert wait_until(lambda: len(live_workers(client)) == 1, 60, 0.1)
        with pytest.raises(runner.WorkersLost) as lost, runner.naming_lost_workers(deployment):
            client.submit(lambda: 1 / 0).result()
        assert str(lost.value) == "the cluster lost workers: 1 of 2 left; ZeroDivisionError: division by zero"
        assert isinstance(lost.value.__cause__, ZeroDivisionError)
