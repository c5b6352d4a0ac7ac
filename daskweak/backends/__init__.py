"""Backends: one small module (or package) per deployment, `start(settings, step, run_id) -> cluster`;
opening and waiting live in `base`."""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from daskweak.settings import Settings

from daskweak.errors import BackendUnavailable

# backend name → the module with start/stop/describe (Kubernetes keeps its helpers beside it in a package)
MODULES = {
    "local": "daskweak.backends.local",
    "slurm": "daskweak.backends.slurm",
    "kubernetes": "daskweak.backends.kubernetes.backend",
}
NAMES = tuple(MODULES)


def get_backend(name: str) -> ModuleType:
    """The backend module; a missing one is reported as unavailable, not as an ImportError trace."""
    if name not in NAMES:
        raise BackendUnavailable(f"BACKEND={name!r}: expected one of {', '.join(NAMES)}")
    try:
        return importlib.import_module(MODULES[name])
    except ModuleNotFoundError as exc:
        raise BackendUnavailable(f"BACKEND={name} cannot be used here: {exc}") from exc


def usable_backend(settings: Settings) -> ModuleType:
    """The settings' backend, after the checks only the driver's host can make (a backend's `preflight`, e.g.
    Slurm's NET_INTERFACE): a run or a validation fails here, before anything is recorded or submitted."""
    backend = get_backend(settings.backend)
    if hasattr(backend, "preflight"):
        backend.preflight(settings)
    return backend
