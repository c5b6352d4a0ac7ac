"""What every backend shares: request the planned workers, wait for them, and always tear down."""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from distributed import Client

from daskweak.backends import get_backend
from daskweak.errors import ScaleTimeout, VersionMismatch
from daskweak.plan import Step
from daskweak.settings import Settings
from daskweak.signals import interrupts_raise

VERSION_CHECKED = ["pyarrow"]  # beyond distributed's own list (dask, distributed, msgpack, …, numpy, pandas)


@dataclass
class Deployment:
    """A ready cluster and what it actually holds (which may differ from the plan)."""

    client: Client
    time_to_ready: float
    workers: int
    cores: int
    threads_per_worker: int
    details: dict[str, Any] = field(default_factory=dict)


def connect(backend: ModuleType, cluster: Any, settings: Settings) -> Client:
    """A backend whose cluster is not a dask Cluster object (Kubernetes) brings its own `connect`."""
    if hasattr(backend, "connect"):
        return backend.connect(cluster, settings)
    return Client(cluster, **backend.client_options(settings))


def version_mismatches(versions: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(package, client, scheduler, workers) for every package whose versions differ.

    Python counts by major.minor: a patch release does not change what cloudpickle sends.
    """
    def packages(info: dict[str, Any] | None) -> dict[str, str]:
        found = dict((info or {}).get("packages") or {})
        found["python"] = ".".join(str(found.get("python", "?")).split(".")[:2])
        return {name: str(version) for name, version in found.items()}

    client, scheduler = packages(versions["client"]), packages(versions["scheduler"])
    workers = [packages(info) for info in versions["workers"].values()]
    rows = []
    for name in sorted(set(client) | set(scheduler) | {n for w in workers for n in w}):
        seen = {side.get(name, "MISSING") for side in (client, scheduler, *workers)}
        if len(seen) > 1:
            worker_seen = ", ".join(sorted({w.get(name, "MISSING") for w in workers}))
            rows.append((name, client.get(name, "MISSING"), scheduler.get(name, "MISSING"), worker_seen))
    return rows


def check_versions(client: Client) -> None:
    """Client, scheduler and workers must run the same packages (the origin's most common Kubernetes failure).

    Not `Client.get_versions(check=True)`: distributed 2026.8 only warns on a mismatch, and it compares Python
    by its patch release, which does not change what cloudpickle sends.
    """
    rows = version_mismatches(client.get_versions(packages=VERSION_CHECKED))
    if rows:
        table = "\n".join(f"  {name}: client {c}, scheduler {s}, workers {w}" for name, c, s, w in rows)
        raise VersionMismatch(
            f"client, scheduler and workers run different versions of {', '.join(r[0] for r in rows)}; build "
            f"the image (and the workers' environment) from requirements.lock:\n{table}"
        )


def wait_for_workers(client: Client, backend: ModuleType, cluster: Any, workers: int, settings: Settings,
                     requested: float) -> None:
    """Wait until `workers` have joined or TIMEOUT (counted from `requested`) has passed. A backend that can
    tell a hopeless wait (Slurm: a job held by a QOS limit, a job that ended) has `stalled(cluster)` asked every
    POLL_INTERVAL, and raises from it; the others just wait."""
    stalled = getattr(backend, "stalled", None)
    while True:
        remaining = settings.timeout - (time.perf_counter() - requested)
        chunk = remaining if stalled is None else min(remaining, settings.poll_interval)
        with suppress(TimeoutError):
            client.wait_for_workers(workers, timeout=max(chunk, 0.001))
            return
        if stalled is None or remaining <= chunk:
            return
        stalled(cluster)


def live_workers(client: Client) -> dict[str, dict[str, Any]]:
    """The scheduler's workers, asked afresh.

    Not `Client.scheduler_info()`: it returns the client's cached identity, which the client's periodic
    refresh (every distributed.client.scheduler-info-interval) overwrites with a copy that lists no workers;
    read just after that refresh, it reports a healthy cluster as having none.
    """
    return client.sync(client.scheduler.identity, n_workers=-1)["workers"]


@contextmanager
def open_cluster(settings: Settings, step: Step, run_id: str = "adhoc") -> Iterator[Deployment]:
    """Start the step's cluster, wait for all planned workers, and close it on success, error or SIGTERM."""
    backend = get_backend(settings.backend)
    # A Client that failed to connect earlier (a refused plaintext client, say) closes itself in __del__; if
    # the garbage collector runs that while distributed starts the new cluster's event loop, both wait on the
    # loop runner's lock and the process hangs. Collect such leftovers here, at a safe point.
    gc.collect()
    with ExitStack() as stack:
        stack.enter_context(interrupts_raise())
        requested = time.perf_counter()
        cluster = backend.start(settings, step, run_id)
        stack.callback(backend.stop, cluster)
        client = stack.enter_context(connect(backend, cluster, settings))
        wait_for_workers(client, backend, cluster, step.workers, settings, requested)
        ready = time.perf_counter() - requested
        workers = live_workers(client)
        present = len(workers)
        if present < step.workers or ready > settings.timeout:
            # TIMEOUT counts from the request, so slow cluster start-up counts against it too.
            why = f": {backend.not_ready(cluster)}" if hasattr(backend, "not_ready") else ""
            raise ScaleTimeout(
                f"{present} of {step.workers} workers for {step.cores} cores after {ready:.1f}s "
                f"(TIMEOUT={settings.timeout:g}s){why}"
            )
        check_versions(client)
        threads = [w["nthreads"] for w in workers.values()]
        yield Deployment(
            client=client,
            time_to_ready=ready,
            workers=len(threads),
            cores=sum(threads),
            threads_per_worker=max(threads),
            details=backend.describe(cluster),
        )
