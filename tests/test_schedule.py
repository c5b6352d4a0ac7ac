"""The observation schedule, fed synthetic observations and a simulated clock (it is pure)."""

from __future__ import annotations

import numpy as np
import pytest

from daskweak.schedule import MOST_LOOPS, Schedule, minimum_duration
from daskweak.settings import load_settings

OPERATIONS = {"arrays": {"a1": 0.30, "a2": 0.10, "a3": 0.50}, "dataframes": {"d1": 0.40, "d2": 0.20},
              "tasks": {"t1": 0.25, "t2": 0.60}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(schedule: Schedule, clock: Clock, rng: np.random.Generator, noise: dict[str, float] | None = None,
        drift: float = 0.0, span: float = 1.0) -> list[tuple[str, float]]:
    """Observe suites as the runner does; each operation's time grows by `drift` per `span` seconds of clock.
    Returns the (suite, clock) of every observation, in order."""
    order = []
    while suites := schedule.next_round():
        for suite in suites:
            rows = []
            for operation, seconds in OPERATIONS[suite].items():
                cv = (noise or {}).get(f"{suite}.{operation}", 0.01)
                taken = seconds * (1 + drift * clock.now / span) * rng.lognormal(0, cv)
                rows.append({"operation": operation, "duration": taken, "status": "ok"})
                clock.now += taken * schedule.loops_of(suite, operation)
            order.append((suite, clock.now))
            schedule.record(suite, rows)
    return order


def adaptive(clock: Clock, **overrides) -> Schedule:
    settings = load_settings(suites="arrays,dataframes,tasks", **overrides)
    return Schedule.of(settings, clock=clock)


def test_a_quiet_step_stops_at_the_minimum_and_a_noisy_operation_is_observed_up_to_the_maximum():
    clock = Clock()
    schedule = adaptive(clock, step_budget=1e6)
    run(schedule, clock, np.random.default_rng(1), noise={"tasks.t2": 0.5})
    least, most = schedule.least, schedule.most  # MIN_OBS and MAX_OBS as shipped
    assert schedule.counts == {"arrays": least, "dataframes": least, "tasks": most}
    summary = schedule.summary()
    assert summary["precision"]["arrays.a1"] <= 0.05 and summary["precision"]["tasks.t2"] > 0.05
    assert not summary["budget_spent"] and summary["target"] == 0.05


def test_past_the_budget_no_round_starts_once_the_minimum_is_in():
    clock = Clock()
    schedule = adaptive(clock, step_budget=5.0)
    run(schedule, clock, np.random.default_rng(2), noise={"tasks.t2": 0.5})
    least = schedule.least  # MIN_OBS rounds take longer than 5 s
    assert least > 1 and schedule.counts == {"arrays": least, "dataframes": least, "tasks": least}
    assert schedule.summary()["budget_spent"]


def test_a_fixed_obs_per_iter_is_the_origins_count_without_loops():
    clock = Clock()
    schedule = Schedule.of(load_settings(suites="arrays,tasks", obs_per_iter=3), shortest=1.0, clock=clock)
    run(schedule, clock, np.random.default_rng(3), noise={"tasks.t2": 0.5})
    assert schedule.counts == {"arrays": 3, "tasks": 3} and schedule.loops == {}


def test_an_operation_shorter_than_the_minimum_is_looped_to_last_long_enough():
    clock = Clock()
    schedule = Schedule.of(load_settings(suites="arrays"), shortest=minimum_duration(0.01), clock=clock)
    assert minimum_duration(0.01) == pytest.approx(0.2) and minimum_duration(1.0) == 0.5  # capped on a busy host
    run(schedule, clock, np.random.default_rng(4), noise={"arrays.a2": 0.0})
    assert schedule.loops == {("arrays", "a2"): 2}  # 0.10 s → twice; 0.30 and 0.50 s are long enough
    assert MOST_LOOPS > 1


def test_interleaved_rounds_spread_a_linear_drift_over_every_operation():
    """Times grow by 30 % over the step. Observed suite after suite, the last suite's medians carried most of
    it; in rotating rounds every operation's median is off by about the same share."""
    def biases(order_of: str) -> list[float]:
        clock = Clock()
        schedule = Schedule.of(load_settings(suites="arrays,dataframes,tasks", obs_per_iter=9), clock=clock)
        if order_of == "suites":  # the previous runner: all of one suite, then the next
            schedule.next_round = lambda: next((s for s in schedule.suites if schedule.counts.get(s, 0) < 9),
                                               None) and [next(s for s in schedule.suites
                                                               if schedule.counts.get(s, 0) < 9)]
        run(schedule, clock, np.random.default_rng(5), drift=0.3, span=9 * 2.35)  # the step
        return [np.median(values) / OPERATIONS[suite][operation] - 1
                for (suite, operation), values in schedule.durations.items()]

    interleaved, sequential = biases("rounds"), biases("suites")
    assert max(sequential) - min(sequential) > 0.12  # the defect: drift landed on the last suite
    assert max(interleaved) - min(interleaved) < 0.05  # bounded by the drift over one round


def test_loops_kept_from_an_earlier_run_hold_from_the_first_observation():
    """A pinned count wins over what this step's first observation would decide (either way), from the first
    observation on; an operation the earlier run did not know is decided afresh."""
    clock = Clock()
    settings = load_settings(suites="arrays", obs_per_iter=None, min_obs=3, max_obs=3)
    schedule = Schedule.of(settings, shortest=0.2, clock=clock, pinned={"arrays.a1": 4, "arrays.a2": 1})
    assert [schedule.loops_of("arrays", op) for op in ("a1", "a2", "a3")] == [4, 1, 1]
    run(schedule, clock, np.random.default_rng(1))
    # a1 (0.30 s) would not loop and a2 (0.10 s) would loop twice; a3 (0.50 s), unpinned, stays once
    assert schedule.loops == {("arrays", "a1"): 4} and schedule.loops_of("arrays", "a2") == 1
    assert schedule.summary()["loops_pinned"]
    fixed = Schedule.of(load_settings(suites="arrays", obs_per_iter=3), shortest=0.2, pinned={"arrays.a1": 4})
    assert fixed.loops_of("arrays", "a1") == 1  # a fixed count never loops
