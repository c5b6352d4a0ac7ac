"""The few failures daskweak reports on purpose; the CLI maps them to exit codes, Airflow shows their text."""

from __future__ import annotations

from dataclasses import dataclass


class DaskweakError(Exception):
    """Base class: an expected failure with a message meant for the user."""


@dataclass(frozen=True)
class Problem:
    """One bad setting: which, what was given, and what would have been accepted."""

    setting: str
    given: object
    accepted: str
    where: str = ""  # file:line of a `.env` line, when the problem is one

    def __str__(self) -> str:
        text = f"{self.setting}={self.given!r}: expected {self.accepted}"
        return f"{self.where}: {text}" if self.where else text


class ConfigError(DaskweakError):
    """Every problem found in the settings, reported together before anything starts."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


class ScaleTimeout(DaskweakError):
    """The cluster did not reach the planned workers within TIMEOUT."""


class BackendUnavailable(DaskweakError):
    """The selected backend cannot be used on this machine (library or service missing)."""


class UnknownRun(DaskweakError):
    """A run id that the results table does not hold."""


class WorkersLost(DaskweakError):
    """Workers left the cluster during a step (a job cancelled, a node lost)."""


class VersionMismatch(DaskweakError):
    """Client, scheduler and workers run different versions of packages Dask needs to agree on."""


class ResultsUnavailable(DaskweakError):
    """The results database did not answer within the retries (down, restarting, unreachable, locked)."""


class ResultsNotWritten(DaskweakError):
    """Rows are still in the spool at the end of a run: the database did not come back in time."""
