"""Logging for daskweak's entry points (CLI, step processes); libraries never configure logging."""

from __future__ import annotations

import logging


def configure_logging(verbose: bool) -> None:
    import distributed  # noqa: F401  (it configures its own loggers on import; adjust them afterwards)

    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # distributed logs every worker start and P2P shuffle at INFO/WARNING; keep progress output readable.
    logging.getLogger("distributed").setLevel(logging.INFO if verbose else logging.ERROR)
