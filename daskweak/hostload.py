"""What else used the machines while a step measured: a run on a busy host is marked, not silently judged.

`sample()` runs on every host of a step (the driver's, and through `client.run` each worker's) at the start
and at the end of its measuring; `compare` turns the two into the step's record, per host:

- `load_before`, `load_after`: the 1-minute load average;
- `steal_pct`: CPU time the hypervisor took away, in % of the host's CPU time during the step;
- `foreign_cores`: CPU used by processes that are not this run's (driver, scheduler, workers, nannies and
  their children), in cores, averaged over the step; `busy_processes`: the five that used most;
- `mhz_before`, `mhz_after`: the CPU frequency where the kernel shows it (a throttled CPU measures slower);
- `busy`: `foreign_cores` ≥ BUSY_CORES or `steal_pct` ≥ BUSY_STEAL_PCT.

A step is busy when one of its hosts was; a run is busy when one of its steps was.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from typing import Any

import psutil

BUSY_CORES = 0.5  # half a core of someone else's work shifts a 1-core step's times visibly
BUSY_STEAL_PCT = 5.0


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return times.user + times.system


def sample(ours: Iterable[int] = (), trees: Iterable[int] = ()) -> dict[str, Any]:
    """This host's counters now; `ours` are pids of this run, and so are `trees` with their descendants (the
    workers: a worker's children are its work). The process calling this is ours too, not its children."""
    mine = {pid for pid in [*ours, *trees] if pid > 1} | {os.getpid()}  # never init: everything descends from it
    for pid in {pid for pid in trees if pid > 1}:
        try:
            mine |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
        except psutil.Error:
            continue
    processes: dict[int, tuple[str, float]] = {}
    for process in psutil.process_iter(["name"]):
        try:
            processes[process.pid] = (process.info["name"] or "?", _cpu_seconds(process))
        except psutil.Error:
            continue
    times = psutil.cpu_times()
    frequency = psutil.cpu_freq() if hasattr(psutil, "cpu_freq") else None
    return {
        "host": os.uname().nodename, "at": time.time(), "load": os.getloadavg()[0], "cores": psutil.cpu_count(),
        "cpu_total": sum(times), "steal": getattr(times, "steal", 0.0), "mhz": frequency.current if frequency else None,
        "processes": processes, "ours": sorted(mine),
    }


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """One host's record of a step from two samples of it (see the module's fields)."""
    elapsed = max(after["at"] - before["at"], 1e-9)
    ours = set(before["ours"]) | set(after["ours"])
    used = []
    for pid, (name, seconds) in after["processes"].items():
        if pid in ours or pid not in before["processes"]:
            continue  # a process started during the step has no first reading; its share shows in the load
        used.append((seconds - before["processes"][pid][1], name, pid))
    used.sort(reverse=True)
    foreign = sum(seconds for seconds, _, _ in used if seconds > 0) / elapsed
    total = max(after["cpu_total"] - before["cpu_total"], 1e-9)
    steal = 100 * (after["steal"] - before["steal"]) / total
    return {
        "host": after["host"], "seconds": round(elapsed, 1), "load_before": round(before["load"], 2),
        "load_after": round(after["load"], 2), "steal_pct": round(steal, 2), "foreign_cores": round(foreign, 2),
        "busy_processes": [{"pid": pid, "name": name, "cores": round(seconds / elapsed, 2)}
                           for seconds, name, pid in used[:5] if seconds / elapsed >= 0.05],
        "mhz_before": before["mhz"], "mhz_after": after["mhz"],
        "busy": foreign >= BUSY_CORES or steal >= BUSY_STEAL_PCT,
    }


def whoami() -> tuple[str, int, int]:
    """(host, pid, parent pid) of a worker: the parent is its nanny (or, on the local backend, the driver)."""
    return os.uname().nodename, os.getpid(), os.getppid()


def busy_hosts(load: list[dict[str, Any]] | None) -> list[str]:
    """The hosts of a step's record that were busy."""
    return [host["host"] for host in load or [] if host.get("busy")]


def describe(load: list[dict[str, Any]] | None) -> str:
    """One line for a warning: which host was busy, with what."""
    parts = []
    for host in load or []:
        if host.get("busy"):
            top = ", ".join(f"{p['name']} ({p['cores']:.1f} cores)" for p in host["busy_processes"][:3])
            parts.append(f"{host['host']}: {host['foreign_cores']:.1f} cores used by other processes"
                         + (f" — {top}" if top else "") + (f", {host['steal_pct']:.0f} % stolen"
                                                           if host["steal_pct"] >= BUSY_STEAL_PCT else ""))
    return "; ".join(parts)
