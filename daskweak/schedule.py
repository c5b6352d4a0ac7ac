"""Which suite to observe next within a step, how often to repeat a short operation, and when to stop.

- **Interleaved rounds.** A round observes every suite that still needs it once, in an order that rotates from
  round to round, so slow drift of the machine over a step falls on every suite and operation alike instead of
  on whichever ran last.
- **To a precision** (OBS_PER_ITER empty): a suite is observed again while one of its operations has fewer
  than MIN_OBS observations, or its median's 95 % interval is wider than ±TARGET_PRECISION and it has fewer
  than MAX_OBS; once STEP_BUDGET seconds of measuring are spent, no round starts unless an operation still
  lacks MIN_OBS. With OBS_PER_ITER set, every suite gets exactly that many (the origin's fixed count).
- **Loops.** An operation whose first observation took less than the step's minimum duration (a multiple of
  the deployment's measured round trip, `minimum_duration`) is repeated inside each later observation, as
  pyperf calibrates loops, so every observation lasts long enough to time well; sizes stay as configured.
  A run with an earlier comparable run keeps that run's loop counts (`pinned`): a looped operation's later
  runs find warm caches, so its time per run depends on the count, and a count decided afresh each night
  from one noisy first observation would move the nightly series by itself.

Pure: the runner feeds it observations and a clock, the tests feed it synthetic ones.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

LATENCY_MULTIPLE = 20  # an observation lasts at least this many no-op round trips of the deployment
MINIMUM_FLOOR = 0.02  # seconds: below this even a fast deployment's timer and wake-ups show
MINIMUM_CEILING = 0.5  # seconds: a loaded host's slow round trips must not turn every observation into many
MOST_LOOPS = 100


def minimum_duration(latency: float) -> float:
    """The shortest observation this deployment times well, from its median no-op round trip: the jitter of an
    observation's fixed costs is of the order of one round trip, so 20 of them keep it near 5 %."""
    return min(MINIMUM_CEILING, max(MINIMUM_FLOOR, LATENCY_MULTIPLE * latency))


@dataclass
class Schedule:
    suites: list[str]
    fixed: int | None  # OBS_PER_ITER
    target: float = 0.05  # TARGET_PRECISION as a fraction
    least: int = 9  # MIN_OBS
    most: int = 25  # MAX_OBS
    budget: float = 120.0  # STEP_BUDGET, seconds
    shortest: float = 0.0  # the step's minimum duration (0: never loop)
    clock: Callable[[], float] = time.monotonic
    durations: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    failed: set[tuple[str, str]] = field(default_factory=set)
    loops: dict[tuple[str, str], int] = field(default_factory=dict)
    pinned: dict[tuple[str, str], int] = field(default_factory=dict)  # loops kept from an earlier run
    counts: dict[str, int] = field(default_factory=dict)
    rounds: int = 0
    started: float | None = None

    @classmethod
    def of(cls, settings: Any, shortest: float = 0.0, clock: Callable[[], float] = time.monotonic,
           pinned: Mapping[str, int] | None = None) -> Schedule:
        looping = settings.obs_per_iter is None
        return cls(suites=list(settings.suites), fixed=settings.obs_per_iter, target=settings.target_precision / 100,
                   least=settings.min_obs, most=settings.max_obs, budget=settings.step_budget,
                   shortest=shortest if looping else 0.0, clock=clock,
                   pinned={tuple(key.split(".", 1)): n for key, n in (pinned or {}).items()} if looping else {})

    @property
    def planned(self) -> int:
        """Observations per suite a progress bar can count on at most."""
        return self.fixed if self.fixed is not None else self.most

    def precise(self, key: tuple[str, str]) -> bool:
        from daskweak.analysis.intervals import precision  # scipy, once the first round is in

        values = self.durations.get(key, [])
        return len(values) >= self.least and precision(values) <= self.target

    def needs(self, suite: str) -> bool:
        """Does `suite` need another observation?"""
        count = self.counts.get(suite, 0)
        if self.fixed is not None:
            return count < self.fixed
        if count >= self.most:
            return False
        mine = [key for key in self.durations if key[0] == suite and key not in self.failed]
        if count < self.least or not mine:
            return True
        return not all(self.precise(key) for key in mine)

    def spent(self) -> bool:
        return self.started is not None and self.clock() - self.started >= self.budget

    def next_round(self) -> list[str]:
        """The suites to observe next, in this round's order; empty when the step is done."""
        if self.started is None:
            self.started = self.clock()
        wanted = [suite for suite in self.suites if self.needs(suite)]
        if self.fixed is None and self.spent():
            wanted = [suite for suite in wanted if self.counts.get(suite, 0) < self.least]
        shift = self.rounds % len(self.suites) if self.suites else 0
        self.rounds += 1
        order = self.suites[shift:] + self.suites[:shift]
        return [suite for suite in order if suite in wanted]

    def loops_of(self, suite: str, operation: str) -> int:
        key = (suite, operation)
        return self.loops.get(key) or self.pinned.get(key, 1)

    def record(self, suite: str, rows: Iterable[Mapping[str, Any]]) -> None:
        """One measured observation of `suite`: its rows (operation, duration per loop, status)."""
        self.counts[suite] = self.counts.get(suite, 0) + 1
        for row in rows:
            key = (suite, row["operation"])
            if row["status"] != "ok":
                self.failed.add(key)
                continue
            first = key not in self.durations
            self.durations.setdefault(key, []).append(float(row["duration"]))
            if first and key in self.pinned:
                if self.pinned[key] > 1:
                    self.loops[key] = self.pinned[key]
            elif first and self.shortest and row["duration"] < self.shortest:  # decided once, by the first
                self.loops[key] = min(MOST_LOOPS, math.ceil(self.shortest / max(row["duration"], 1e-9)))

    def summary(self) -> dict[str, Any]:
        """What the step stores about how it was measured (steps.details)."""
        from daskweak.analysis.intervals import precision
        return {
            "observations": dict(self.counts),
            "minimum_seconds": self.shortest or None,
            "loops": {f"{suite}.{operation}": n for (suite, operation), n in sorted(self.loops.items())},
            "loops_pinned": bool(self.pinned),
            "precision": {f"{suite}.{operation}": _finite(precision(values))
                          for (suite, operation), values in sorted(self.durations.items())},
            "target": self.target if self.fixed is None else None,
            "budget_spent": self.fixed is None and self.spent(),
        }


def _finite(value: float) -> float | None:
    return round(value, 4) if math.isfinite(value) else None


def stored_loops(steps: Any, cores: int) -> dict[str, int]:
    """{"suite.operation": loops} of every operation a run's sweep measured at `cores` (1: not looped), from its
    steps' stored `details.measuring` (a re-measure step is not the sweep); empty when it measured to a
    fixed count or stored no record of it."""
    found: dict[str, int] = {}
    for details in steps.loc[steps["cores_requested"] == cores, "details"]:
        measuring = (details or {}).get("measuring") if isinstance(details, dict) else None
        if not measuring or "remeasure" in details or measuring.get("target") is None:
            continue
        looped = measuring.get("loops") or {}
        found |= {key: int(looped.get(key, 1)) for key in measuring.get("precision") or {}}
    return found
