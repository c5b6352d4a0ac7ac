"""The embedded default: a `distributed.LocalCluster` laid out on this machine as the plan says."""

from __future__ import annotations

import logging
from typing import Any

from distributed import LocalCluster
from distributed.security import Security

from daskweak.backends.quiet_close import QuietClose
from daskweak.plan import Step
from daskweak.settings import Settings
from daskweak.tls import security


def worker_specs(template: dict[str, Any], step: Step, processes: bool) -> dict[str, dict[str, Any]]:
    """One spec per worker, named by node, so an uneven node layout is reproduced exactly."""
    specs = {}
    for node, cores in enumerate(step.node_cores):
        workers = [(f"node{node}-{w}", 1) for w in range(cores)] if processes else [(f"node{node}", cores)]
        for name, threads in workers:
            options = dict(template["options"], nthreads=threads, name=name, plugins=(QuietClose(),))
            if step.memory_per_node is not None:
                options["memory_limit"] = step.memory_per_node // len(workers)
            specs[name] = {"cls": template["cls"], "options": options}
    return specs


def start(settings: Settings, step: Step, run_id: str) -> LocalCluster:
    """Every worker is its own OS process, like a node's; WORKER_MODE only decides its threads.

    In-process (threaded) workers would share the GIL with the scheduler and the client and measure them.
    """
    tls = _security(settings)
    cluster = LocalCluster(
        n_workers=0,
        threads_per_worker=1,
        processes=True,
        host=None if settings.net_interface else "127.0.0.1",
        interface=settings.net_interface,
        dashboard_address=":0",
        silence_logs=logging.INFO if settings.verbose else logging.ERROR,
        security=tls,
        protocol="tls://" if tls else None,
    )
    specs = worker_specs(cluster.new_spec, step, processes=settings.worker_mode == "processes")
    cluster.worker_spec.update(specs)
    cluster.scale(len(specs))
    return cluster


def client_options(settings: Settings) -> dict[str, Any]:
    return {"security": _security(settings)} if settings.use_ssl else {}


def _security(settings: Settings) -> Security | None:
    return security(settings.cert_dir) if settings.use_ssl and settings.cert_dir else None


def describe(cluster: LocalCluster) -> dict[str, Any]:
    return {"scheduler": cluster.scheduler_address, "workers": sorted(cluster.worker_spec)}


def stop(cluster: LocalCluster) -> None:
    cluster.close()
