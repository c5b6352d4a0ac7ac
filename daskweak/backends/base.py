"""What every backend shares: request the planned workers, wait for them, and always tear down."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from distributed import Client

from daskweak.backends import get_backend
from daskweak.errors import ScaleTimeout
from daskweak.plan import Step
from daskweak.settings import Settings
from daskweak.signals import interrupts_raise


@dataclass
class Deployment:
    """A ready cluster and what it actually holds (which may differ from the plan)."""

    client: Client
    time_to_ready: float
    workers: int
    cores: int
    threads_per_worker: int
    details: dict[str, Any] = field(default_factory=dict)


@contextmanager
def open_cluster(settings: Settings, step: Step) -> Iterator[Deployment]:
    """Start the step's cluster, wait for all planned workers, and close it on success, error or SIGTERM."""
    backend = get_backend(settings.backend)
    with ExitStack() as stack:
        stack.enter_context(interrupts_raise())
        requested = time.perf_counter()
        cluster = backend.start(settings, step)
        stack.callback(backend.stop, cluster)
        client = stack.enter_context(Client(cluster, **backend.client_options(settings)))
        remaining = settings.timeout - (time.perf_counter() - requested)
        with suppress(TimeoutError):
            client.wait_for_workers(step.workers, timeout=max(remaining, 0.001))
        ready = time.perf_counter() - requested
        present = len(client.scheduler_info()["workers"])
        if present < step.workers or ready > settings.timeout:
            # TIMEOUT counts from the request, so slow cluster start-up counts against it too.
            raise ScaleTimeout(
                f"{present} of {step.workers} workers for {step.cores} cores after {ready:.1f}s "
                f"(TIMEOUT={settings.timeout:g}s)"
            )
        threads = [w["nthreads"] for w in client.scheduler_info()["workers"].values()]
        yield Deployment(
            client=client,
            time_to_ready=ready,
            workers=len(threads),
            cores=sum(threads),
            threads_per_worker=max(threads),
            details=backend.describe(cluster),
        )
