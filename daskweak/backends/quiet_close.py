"""Keeps Dask's shutdown noise out of a run's output.

A worker that closes while one of its heartbeats is in flight closes its own connection pool under it, and
distributed logs that as an ERROR with a traceback ("Failed to communicate with scheduler during heartbeat",
CommClosedError "ConnectionPool closing"), though nothing failed. LocalCluster workers write to the run's
own stderr, so the local backend gives its workers this plugin: it drops exactly that record, and only once
the worker is closing; a heartbeat that fails while the worker runs is still logged.
"""

from __future__ import annotations

import logging
import weakref
from typing import Any

from distributed import WorkerPlugin
from distributed.core import Status

HEARTBEAT_FAILED = "Failed to communicate with scheduler during heartbeat."
CLOSING = (Status.closing, Status.closed, Status.closing_gracefully, Status.failed)


class _HeartbeatWhileClosing(logging.Filter):
    def __init__(self, worker: Any) -> None:
        super().__init__()
        self.worker = weakref.ref(worker)

    def filter(self, record: logging.LogRecord) -> bool:
        worker = self.worker()
        closing = worker is None or worker.status in CLOSING
        return not (closing and record.msg == HEARTBEAT_FAILED)


class QuietClose(WorkerPlugin):
    """Given to a worker at its start (Worker(plugins=…)), so no client round trip is needed."""

    name = "daskweak-quiet-close"

    def setup(self, worker: Any) -> None:
        logger = logging.getLogger("distributed.worker")
        if not any(isinstance(f, _HeartbeatWhileClosing) and f.worker() is worker for f in logger.filters):
            # Not removed in teardown: distributed tears plugins down before it closes the connection pool.
            logger.addFilter(_HeartbeatWhileClosing(worker))
