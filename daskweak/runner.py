"""Run a sweep, or one step of it: open the cluster, observe every suite, store the rows, summarise.

`run_step` is the unit Airflow maps over; `run_sweep` is the same line for the CLI.
"""

from __future__ import annotations

import gc
import logging
import math
import statistics
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from distributed import Client, Future
from distributed.diagnostics import MemorySampler

from daskweak import hostload, runinfo
from daskweak.backends import usable_backend
from daskweak.backends.base import Deployment, live_workers, open_cluster
from daskweak.errors import DaskweakError, WorkersLost
from daskweak.memory_warmup import footprint, warm_memory
from daskweak.plan import Step, make_plan, warmup_step
from daskweak.schedule import Schedule, minimum_duration
from daskweak.settings import Settings
from daskweak.signals import check_interrupted, pending_interrupt
from daskweak.spool import Spool, spool_for
from daskweak.store import HEARTBEAT_SECONDS, ResultStore, this_driver
from daskweak.workloads import Operation, get_suite

log = logging.getLogger(__name__)

PROBLEM_SIZE = {
    "arrays": lambda step: (step.array_side, step.array_bytes),
    "dataframes": lambda step: (step.dataframe_rows, step.dataframe_bytes),
    "tasks": lambda step: (step.tasks, 0),
}


class Progress(Protocol):
    def step_started(self, step: Step, observations: int) -> None: ...
    def observation_done(self, step: Step, suite: str, observation: int) -> None: ...
    def step_finished(self, step: Step, summary: dict[str, Any]) -> None: ...


class QuietProgress:
    def step_started(self, step: Step, observations: int) -> None:
        pass

    def observation_done(self, step: Step, suite: str, observation: int) -> None:
        pass

    def step_finished(self, step: Step, summary: dict[str, Any]) -> None:
        pass


@dataclass
class SweepResult:
    run_id: str
    status: str
    summaries: list[dict[str, Any]] = field(default_factory=list)
    unwritten: str | None = None  # what is still in the spool at the end, said for the user


def new_run_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def now() -> datetime:
    return datetime.now(UTC)


def start_run(settings: Settings, spool: Spool, run_id: str, *, driver: dict[str, Any] | None = None,
              purpose: str | None = None, kind: str = "cli") -> bool:
    """Record the run before its first step: configuration (no secrets), fingerprint, versions, host, what
    started it (`kind`, one of store.RUN_KINDS) and for a command-line run its driver process. Returns whether
    the table has it (else the spool keeps it).

    Only judged "nightly" runs form a baseline. A run with a `purpose` (a calibration) also gets it appended to
    its fingerprint, so no baseline of runs of one fingerprint ever includes it. The hardware class keeps other
    hardware out too."""
    hardware = runinfo.hardware(settings)
    return spool.start_run({
        "run_id": run_id,
        "started_at": now(),
        "status": "running",
        "backend": settings.backend,
        "scaling": settings.scaling,
        "use_ssl": settings.use_ssl,
        "fingerprint": settings.fingerprint() + (f"-{purpose}" if purpose else ""),
        "config": settings.public(),
        "versions": runinfo.versions(),
        "host": runinfo.host(),
        "git_revision": runinfo.git_revision(),
        "hardware": hardware,
        "hardware_class": runinfo.hardware_class(hardware),
        "driver": driver,
        "heartbeat_at": now() if driver else None,
        "kind": purpose or kind,
    })


def run_sweep(settings: Settings, *, run_id: str | None = None, progress: Progress | None = None,
              purpose: str | None = None, kind: str = "cli") -> SweepResult:
    """Every step of the plan in order; a failed step is recorded and the sweep goes on, and so does a sweep
    whose database does not answer: its rows wait in the spool (`daskweak.spool`)."""
    usable_backend(settings)  # an unusable backend or setting fails the run before anything is recorded
    run_id = run_id or new_run_id()
    result = SweepResult(run_id=run_id, status="running")
    with ResultStore.of(settings) as store:
        spool = spool_for(settings.res_dir, store)
        cancel_leftovers(settings, store)
        earlier = spool.sync()  # what earlier runs could not write
        if earlier.loaded:
            log.warning("loaded spooled results of earlier runs: %s", earlier.loaded)
        start_run(settings, spool, run_id, driver=this_driver(), purpose=purpose, kind=kind)
        try:
            with heartbeat(store, run_id):
                for step in make_plan(settings):
                    result.summaries.append(run_step(settings, step, run_id, store=store, progress=progress))
            result.status = "ok" if all(s["status"] == "ok" for s in result.summaries) else "failed"
        except BaseException:
            result.status = "interrupted"
            raise
        finally:
            try:  # an interrupted run stops now: one attempt, the spool keeps the rest
                with store.patient(0.0 if result.status == "interrupted" else settings.results_final_wait_seconds):
                    written = spool.finish_run(run_id, result.status, now())
            except BaseException:  # interrupted while waiting: the spool keeps the run, say where
                log.warning("%s", spool.message(spool.pending(run_id), "interrupted while waiting for the database"))
                raise
            if not written:
                result.unwritten = spool.message(spool.pending(run_id), spool.last_error)
                if result.status == "interrupted":  # the caller sees the exception, not the result
                    log.warning("%s", result.unwritten)
    return result


def cancel_leftovers(settings: Settings, store: ResultStore) -> None:
    """On Slurm, cancel the jobs of earlier runs whose driver was killed (see `slurm.jobs.cancel_ended_runs`):
    nobody else would, and pending ones would stay queued forever. A failure here only costs a warning."""
    if settings.backend != "slurm":
        return
    from daskweak.backends.slurm import cancel_ended_runs

    try:
        cancelled = cancel_ended_runs(store)
    except (OSError, subprocess.SubprocessError, DaskweakError) as exc:
        log.warning("could not look for Slurm jobs left by earlier runs: %s", exc)
        return
    for old_run, job_ids in cancelled.items():
        log.warning("cancelled Slurm job(s) %s left behind by run %s (its driver is gone)", ", ".join(job_ids),
                    old_run)


@contextmanager
def heartbeat(store: ResultStore, run_id: str, every: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """While the block runs, tell readers every HEARTBEAT_SECONDS that the driver lives (`store.driver_gone`
    reads it from other hosts)."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(every):
            store.heartbeat(run_id, now())

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def run_step(
    settings: Settings,
    step: Step,
    run_id: str,
    *,
    store: ResultStore | None = None,
    progress: Progress | None = None,
    only: dict[str, list[str]] | None = None,
    loops: dict[str, int] | None = None,
) -> dict[str, Any]:
    """Measure one step and replace its rows in the store (through the spool, so an unreachable database
    costs nothing); returns a compact JSON-able summary.

    `only` ({suite: [operation, …]}) re-measures just those operations, REMEASURE_OBS observations each
    (their rows marked `remeasured`), each looped as the sweep looped it (`loops`: {"suite.operation": n}):
    the nightly DAG's second look at a suspected comparison, measured as its baseline was."""
    if only:
        settings = settings.model_copy(update={"suites": list(only), "obs_per_iter": settings.remeasure_obs})
    progress = progress or QuietProgress()
    owned = store is None
    store = store or ResultStore.of(settings)
    spool = spool_for(settings.res_dir, store)
    record: dict[str, Any] = {
        "run_id": run_id, "step": step.index, "started_at": now(), "cores_requested": step.cores,
        "workers_requested": step.workers, "nodes": step.nodes, "layout": list(step.node_cores),
        "status": "running", "error": None,
    }
    rows: list[dict[str, Any]] = []
    planned = settings.obs_per_iter if settings.obs_per_iter is not None else settings.max_obs
    progress.step_started(step, (settings.warmup + planned) * len(settings.suites))
    log.log(_verbosity(settings), "step %d: starting %d cores on %s (%d workers, %d node(s))",
            step.index, step.cores, settings.backend, step.workers, step.nodes)
    try:
        with open_cluster(settings, step, run_id) as deployment:
            log.log(_verbosity(settings), "step %d: %d workers with %d cores ready after %.1fs",
                    step.index, deployment.workers, deployment.cores, deployment.time_to_ready)
            record |= {
                "cores_actual": deployment.cores, "workers_actual": deployment.workers,
                "threads_per_worker": deployment.threads_per_worker,
                "time_to_ready": deployment.time_to_ready, "details": deployment.details,
            }
            if deployment.cores != step.cores:
                log.warning("step %d: planned %d cores, cluster has %d", step.index, step.cores, deployment.cores)

            def observed(suite: str, observation: int, sized: Step,
                         loops: Callable[[str, str], int] | None = None) -> list[dict[str, Any]]:
                measured = observe(deployment, settings, sized, suite, observation, run_id, loops=loops,
                                   only=set(only[suite]) if only else None)
                rows.extend(measured)
                require_workers(deployment, measured)
                release(deployment.client, restart=settings.restart_between_obs)
                spool.checkpoint(record | {"finished_at": now()}, rows)
                progress.observation_done(step, suite, observation)
                return measured

            with naming_lost_workers(deployment):
                for suite in settings.suites:
                    # a warm-up warms the same code paths and graph shapes on a fraction of the data
                    for observation in range(settings.warmup):
                        observed(suite, observation, warmup_step(step))
                # loops only when measuring to a precision: a fixed OBS_PER_ITER runs each operation once (the origin's)
                shortest = minimum_duration(round_trip(deployment.client)) if settings.obs_per_iter is None else 0.0
                pinned_from, pinned = earlier_loops(store, run_id, step.cores) if shortest and not only else (None, {})
                schedule = Schedule.of(settings, shortest, pinned=pinned)
                # a re-measure loops each operation as its sweep did; a sweep as its schedule decides
                loops_of = schedule.loops_of if not only else lambda name, op: (loops or {}).get(f"{name}.{op}", 1)
                before = host_samples(deployment.client, step)
                while suites := schedule.next_round():
                    for suite in suites:  # interleaved: drift over the step falls on every suite alike
                        observation = settings.warmup + schedule.counts.get(suite, 0)
                        if settings.warmup:  # first touches of memory unused for a while cost seconds per GiB
                            warm_memory(deployment.client, footprint(step, suite))
                        schedule.record(suite, observed(suite, observation, step, loops_of))
                load = [hostload.compare(before[host], after)
                        for host, after in host_samples(deployment.client, step).items() if host in before]
                record["details"] = (record["details"] or {}) | {
                    "measuring": schedule.summary() | {"loops_from": pinned_from}} | (
                    {"remeasure": only} if only else {})
                record["host_load"] = load
                if busy := hostload.describe(load):
                    log.warning("step %d: the host was busy while it measured (%s): its times may be slower",
                                step.index, busy)
        record["status"] = "ok" if all(r["status"] == "ok" for r in rows) else "partial"
    except Exception as exc:
        if (interrupt := pending_interrupt()) is not None:
            # a signal whose exception was swallowed (see `signals`) stopped the workers too, and their loss
            # surfaced first: the step was interrupted, not failed
            record |= {"status": "interrupted", "error": f"{type(interrupt).__name__}: {interrupt}"}
            raise interrupt from exc
        if isinstance(exc, DaskweakError):
            record |= {"status": "failed", "error": str(exc)}
        else:
            log.exception("step %d failed", step.index)
            record |= {"status": "failed", "error": f"{type(exc).__name__}: {exc}"}
    except BaseException as exc:  # Ctrl-C, SIGTERM: keep what was measured, then stop
        record |= {"status": "interrupted", "error": f"{type(exc).__name__}: {exc}"}
        raise
    finally:
        record["finished_at"] = now()
        # an interrupted step must stop now: one attempt at the database, else the spool keeps its rows
        with store.patient(0.0) if record["status"] == "interrupted" else nullcontext():
            stored = spool.write_step(record, rows)
        if not stored:
            log.warning("step %d: the results database did not answer; its rows wait in %s",
                        step.index, spool.path(run_id))
        if owned:
            store.close()
    summary = summarize(record, rows) | {"stored": stored}
    log.log(_verbosity(settings), "step %d (%d cores): %s%s", step.index, step.cores, record["status"],
            f": {record['error']}" if record["error"] else "")
    progress.step_finished(step, summary)
    return summary


def observe(
    deployment: Deployment, settings: Settings, step: Step, suite: str, observation: int, run_id: str,
    loops: Callable[[str, str], int] | None = None, only: set[str] | None = None,
) -> list[dict[str, Any]]:
    """Time each operation of one suite observation alone, `loops(suite, operation)` times in a row (a short
    operation; its duration is then per run); a failing operation is recorded, not raised. With `only`, the
    other operations still run in their place, looped as in the sweep, and only their rows are dropped:
    measured alone, an operation met a fresher worker and ran up to a third faster than in its sweep."""
    client = deployment.client
    sampler = MemorySampler()
    label = f"{suite}-{observation}"
    problem_size, nbytes = PROBLEM_SIZE[suite](step)
    base = {
        "run_id": run_id, "step": step.index, "backend": settings.backend, "scaling": settings.scaling,
        "use_ssl": settings.use_ssl, "suite": suite, "cores_requested": step.cores,
        "cores_actual": deployment.cores, "workers": deployment.workers,
        "threads_per_worker": deployment.threads_per_worker, "nodes": step.nodes,
        "problem_size": problem_size, "bytes": nbytes, "observation": observation,
        "warmup": observation < settings.warmup, "remeasured": True if only is not None else None,
    }
    rows = []
    with sampler.sample(label, client=client, measure="process", interval=0.1):
        for operation in get_suite(suite)(client, step, seed=observation):
            # every operation runs as in the sweep (what ran before one shapes its time); `only` keeps some rows
            row = base | timed(operation, client, settings.operation_timeout,
                               loops(suite, operation.name) if loops else 1)
            if only is None or operation.name in only:
                rows.append(row)
            log.log(_verbosity(settings), "cores=%d suite=%s observation=%d%s operation=%s seconds=%.4f status=%s",
                    step.cores, suite, observation, " (warm-up)" if base["warmup"] else "",
                    row["operation"], row["duration"], row["status"])
            check_interrupted()
    peak = max(value for _, value in sampler.samples[label])
    for row in rows:
        row["peak_memory"] = peak
    return rows


def _verbosity(settings: Settings) -> int:
    """VERBOSE=True logs each step and observation at INFO; otherwise at DEBUG, so that a host that shows INFO
    (an Airflow task log) does not get them unasked."""
    return logging.INFO if settings.verbose else logging.DEBUG


def timed(operation: Operation, client: Client, limit: float, loops: int = 1) -> dict[str, Any]:
    """Time one operation, run `loops` times in a row (the duration is per run); past `limit` seconds its futures
    are cancelled so a dead cluster cannot hang us.

    Python's automatic garbage collection is off while it runs, in this process, which also hosts the scheduler on
    the local and Slurm backends: a collection would add its pause to the timing, and one that falls inside the
    scheduler's unpickling of a graph can hit dask's check-then-get on its expression cache (a KeyError
    "Error during deserialization of the task graph"). `release` collects between observations."""
    started, clock = now(), time.perf_counter()
    status, error = "ok", None
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        client.cancel([Future(key, client) for key in list(client.futures)], force=True, reason="OPERATION_TIMEOUT")

    watchdog = threading.Timer(limit, expire)
    watchdog.daemon = True  # an interrupted run must not wait for it at exit
    collecting = gc.isenabled()
    gc.disable()
    try:
        watchdog.start()
        for _ in range(loops):
            operation.run()
    except Exception as exc:
        status, error = "failed", f"{type(exc).__name__}: {exc}"[:2000]
        if expired.is_set():
            error = f"cancelled after OPERATION_TIMEOUT={limit:g}s; {error}"
    finally:
        watchdog.cancel()
        if collecting:
            gc.enable()
    duration = (time.perf_counter() - clock) / loops
    return {
        "operation": operation.name, "started_at": started, "finished_at": now(), "duration": duration, "loops": loops,
        "size": operation.size, "unit": operation.unit,
        "rate": operation.size / duration if status == "ok" and duration > 0 else None,
        "rate_unit": f"{operation.unit}/s", "status": status, "error": error,
    }


def round_trip(client: Client, count: int = 20) -> float:
    """The deployment's median no-op round trip, client → scheduler → worker → client, in seconds: what the
    shortest well-timed observation is a multiple of (`schedule.minimum_duration`)."""
    times = []
    for _ in range(count):
        clock = time.perf_counter()
        client.submit(int, pure=False).result()  # a builtin: nothing to import on the worker
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def host_samples(client: Client, step: Step) -> dict[str, dict[str, Any]]:
    """`hostload.sample` of the driver's host and of each other host with a worker, each knowing which of its
    processes are this run's (workers, nannies, the driver and their children). Workers that cannot run it (an
    image with an older daskweak) cost the record of their hosts, never the step."""
    try:
        return _host_samples(client)
    except Exception as exc:  # a missing record must not fail a measured step
        log.warning("step %d: could not sample the hosts' load (%s: %s)", step.index, type(exc).__name__, exc)
        return {}


def _host_samples(client: Client) -> dict[str, dict[str, Any]]:
    who = client.run(hostload.whoami)
    parents: dict[str, set[int]] = {}
    workers: dict[str, set[int]] = {}
    for host, pid, parent in who.values():
        parents.setdefault(host, set()).add(parent)
        workers.setdefault(host, set()).add(pid)
    here = hostload.whoami()[0]
    samples = {here: hostload.sample(parents.get(here, set()), workers.get(here, set()))}
    for address, (host, _, _) in who.items():
        if host not in samples:
            samples[host] = client.run(hostload.sample, sorted(parents[host]), sorted(workers[host]),
                                       workers=[address])[address]
    return samples


def earlier_loops(store: ResultStore, run_id: str, cores: int) -> tuple[str | None, dict[str, int]]:
    """The loop counts of the latest earlier successful run comparable with `run_id` (its fingerprint and
    hardware class, as a regression baseline) at `cores`, and that run's id: a fingerprint's loops are decided
    once, by its first run on a hardware class, and kept. (None, {}) when there is none or the results
    database cannot say (the step then decides its own)."""
    from daskweak.analysis.regression import comparable_runs
    from daskweak.schedule import stored_loops

    try:
        with store.patient(0.0):  # one attempt: an outage must not hold the step
            earlier, _ = comparable_runs(store.runs(), run_id)
            for candidate in reversed(list(earlier["run_id"])):
                if loops := stored_loops(store.steps(candidate), cores):
                    return candidate, loops
    except Exception as exc:  # the database is away (the spool keeps the run): measure without the pin
        log.warning("could not read earlier runs' loop counts (%s: %s); deciding them afresh",
                    type(exc).__name__, exc)
    return None, {}


def lost_workers(deployment: Deployment) -> str | None:
    """What the cluster lost, naming each lost worker's job and node where the backend recorded them (Slurm);
    None while every worker is there."""
    workers = live_workers(deployment.client).values()
    present = len(workers)
    if present >= deployment.workers:
        return None
    names = {str(worker.get("name")) for worker in workers}
    gone = [job for job in deployment.details.get("jobs", []) if job.get("worker") and not any(
        name == job["worker"] or name.startswith(f"{job['worker']}-") for name in names)]
    where = ", ".join(f"job {job['job_id']} on {job['node']}" for job in gone)
    return f"the cluster lost workers: {present} of {deployment.workers} left" + (f" ({where})" if where else "")


def require_workers(deployment: Deployment, observation: list[dict[str, Any]]) -> None:
    """A cluster that lost workers (a job cancelled, a pod evicted) no longer measures the plan: the
    observation it happened in is marked failed (its timings mix two layouts) and the step stops."""
    if message := lost_workers(deployment):
        for row in observation:
            row |= {"status": "failed", "error": row["error"] or message, "rate": None}
        raise WorkersLost(message)


@contextmanager
def naming_lost_workers(deployment: Deployment) -> Iterator[None]:
    """An error raised while a worker is being lost (a `client.run` to its removed address between two
    observations, before `require_workers` saw it go) is reported as the loss, naming job and node."""
    try:
        yield
    except WorkersLost:
        raise
    except Exception as exc:
        try:
            message = lost_workers(deployment)
        except Exception:  # the scheduler itself is gone: the original error says more
            message = None
        if message is None:
            raise
        raise WorkersLost(f"{message}; {type(exc).__name__}: {exc}") from exc


def release(client: Client, *, restart: bool) -> None:
    """Free cluster memory between observations.

    Dropping the observation's futures lets the workers release its data; a full `client.restart()` also
    resets worker state but costs seconds per observation (new worker processes, cold imports) and would
    dominate short runs, so it is opt-in (RESTART_BETWEEN_OBS).
    """
    gc.collect()
    if restart:
        client.restart()
    else:
        client.run(gc.collect)


def summarize(record: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """What Airflow's XCom carries: medians per operation, never raw data."""
    from daskweak.analysis.intervals import precision  # scipy: imported when a step ends, not at start

    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(f"{row['suite']}.{row['operation']}", []).append(row)
    operations: dict[str, dict[str, Any]] = {}
    for key, group in groups.items():
        ok = [r for r in group if r["status"] == "ok" and not r["warmup"]]
        spread = precision([r["duration"] for r in ok]) if ok else math.inf
        operations[key] = {
            "median_s": statistics.median(r["duration"] for r in ok) if ok else None,
            # the 95 % interval's half-width / median (None: too few observations for one)
            "precision": round(spread, 4) if math.isfinite(spread) else None,
            "rate": statistics.median(r["rate"] for r in ok) if ok else None,
            "rate_unit": group[0]["rate_unit"],
            "failed": sum(r["status"] != "ok" for r in group),
        }
    return {
        "run_id": record["run_id"], "step": record["step"], "cores_requested": record["cores_requested"],
        "cores_actual": record.get("cores_actual"), "workers": record.get("workers_actual"),
        "time_to_ready": record.get("time_to_ready"), "status": record["status"], "error": record["error"],
        "operations": operations,
    }

