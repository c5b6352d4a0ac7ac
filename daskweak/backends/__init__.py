"""Backends: one small module each, `start(settings, step, run_id) -> cluster`; opening and waiting live in base."""

from __future__ import annotations

import importlib
from types import ModuleType

from daskweak.errors import BackendUnavailable

NAMES = ("local", "slurm", "kubernetes")


def get_backend(name: str) -> ModuleType:
    """The backend module; a missing one is reported as unavailable, not as an ImportError trace."""
    if name not in NAMES:
        raise BackendUnavailable(f"BACKEND={name!r}: expected one of {', '.join(NAMES)}")
    try:
        return importlib.import_module(f"daskweak.backends.{name}")
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"BACKEND={name} cannot be used here: {exc}") from exc
