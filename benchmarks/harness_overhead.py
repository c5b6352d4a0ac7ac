"""What the harness itself costs on the default local sweep, and how faithful its array timings are.

    .venv/bin/python benchmarks/harness_overhead.py [--set KEY=VALUE ...]

Prints: wall time; time inside measured observations, in warm-ups and waiting for workers; the overhead
1 − measured / wall (everything outside measured observations, warm-ups included: machine time is part of
the budget); the noise of the measured observations (coefficient of variation per operation and cores, and
the first measured observation against the later ones: a warm-up too light shows as a slow first one); the
peak memory of the whole process tree; the driver's memory after each
step; the fastest operation on one core and the largest share one operation takes of its suite; and the
fidelity of the array suite: Dask's median time on one core over plain NumPy's for the same operation on
the same amount of data.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil

if TYPE_CHECKING:
    from daskweak.plan import Step
    from daskweak.settings import Settings

# daskweak's modules are imported inside the functions: Dask's worker processes start by importing this
# script again (multiprocessing's spawn), and the analysis stack at the top would add seconds to every
# worker's start, which the CLI (whose entry point imports lazily) does not pay.

TARGETS = {"overhead": 0.15, "wall_s": 180.0, "peak_gib": 4.0, "fidelity": 1.5, "fastest_s": 0.1}


class TreeMemory:
    """Peak resident memory of this process and all its children (workers, nannies), sampled."""

    def __init__(self, interval: float = 0.1):
        self.interval, self.peak, self._stop = interval, 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    total += proc.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class DriverMemory:
    """A runner progress that records the driver's memory after each step."""

    def __init__(self) -> None:
        self.after_step: list[int] = []

    def step_started(self, step: Step, observations: int) -> None:
        pass

    def observation_done(self, step: Step, suite: str, observation: int) -> None:
        pass

    def step_finished(self, step: Step, summary: dict[str, Any]) -> None:
        self.after_step.append(psutil.Process().memory_info().rss)


def numpy_equivalents(side: int) -> dict[str, Callable[[np.ndarray], object]]:
    """The array suite's operations in plain NumPy on one side×side array (one core, no Dask)."""
    from daskweak.workloads.arrays import smooth

    rows = np.sort(np.random.default_rng(0).choice(side, size=3 * side // 4, replace=False))
    return {
        "blockwise": lambda x: np.cumsum(x, axis=1),
        "random_access": lambda x: x[rows],
        "std": np.std,
        "std_axis": lambda x: np.std(x, axis=0),
        "sin2_cos2": lambda x: np.sin(x) ** 2 + np.cos(x) ** 2,
        "transpose_add": lambda x: x + x.T,
        "rechunk": lambda x: np.ascontiguousarray(x.T),  # NumPy has one block: a layout change is a copy
        "map_overlap": smooth,
    }


def numpy_times(side: int, repeats: int = 3) -> dict[str, float]:
    start = time.perf_counter()
    x = np.random.default_rng(0).random((side, side))
    times = {"create": time.perf_counter() - start}
    for name, fn in numpy_equivalents(side).items():
        samples = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(x)
            samples.append(time.perf_counter() - start)
        times[name] = statistics.median(samples)
    return times


def driver_growth(res_dir: str) -> list[int]:
    """The driver's RSS after each of six small steps: what it keeps between steps, apart from the data."""
    from daskweak.runner import run_sweep
    from daskweak.settings import load_settings

    settings = load_settings(res_dir=res_dir, max_n_cores=6, problem_size_array=1000,
                             problem_size_dataframes=100_000, problem_size_tasks=20, obs_per_iter=2)
    driver = DriverMemory()
    run_sweep(settings, progress=driver)
    return driver.after_step


def print_noise(rows: Any) -> None:
    """The measured observations' noise: CV per (suite, operation, cores), and the first measured observation
    over the median of the later ones (a warm-up that warmed too little leaves the first one slow)."""
    ok = rows[(~rows["warmup"]) & (rows["status"] == "ok")]
    cvs, firsts = {}, []
    for (suite, operation, cores), group in ok.groupby(["suite", "operation", "cores_requested"]):
        durations = group.sort_values("observation")["duration"].to_numpy(dtype=float)
        if len(durations) > 1:
            cvs[f"{suite}.{operation}@{cores}"] = float(durations.std(ddof=1) / durations.mean())
            firsts.append(durations[0] / float(np.median(durations[1:])))
    if not cvs:
        return
    values = np.array(list(cvs.values()))
    print(f"noise of measured observations: CV median {np.median(values):.1%}, mean {values.mean():.1%}, "
          f"max {values.max():.1%} over {len(values)} comparisons")
    print(f"first measured / later median  {np.median(firsts):6.3f} (median over comparisons; 1 = no warm-up bias)")
    print("CV per operation and cores: " + ", ".join(f"{key} {cv:.1%}" for key, cv in sorted(cvs.items())))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    overrides = dict(item.split("=", 1) for item in args.set)
    from daskweak.settings import load_settings

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(**({"res_dir": tmp} | overrides))
        report(settings)
        after = driver_growth(tmp)
        print(f"driver RSS after 6 small steps  {', '.join(f'{m / 2**20:.0f}' for m in after)} MiB "
              f"(growth from step 2 to 6: {(after[-1] - after[1]) / 2**20:+.0f} MiB)")


def report(settings: Settings) -> None:
    from daskweak.analysis.stats import aggregate
    from daskweak.runner import run_sweep
    from daskweak.store import ResultStore

    driver = DriverMemory()
    start = time.perf_counter()
    with TreeMemory() as tree:
        result = run_sweep(settings, progress=driver)
    wall = time.perf_counter() - start
    store = ResultStore(settings.database_url)
    rows, steps = store.observations(result.run_id), store.steps(result.run_id)
    store.close()
    measured = rows.loc[~rows["warmup"], "duration"].sum()
    warmup = rows.loc[rows["warmup"], "duration"].sum()
    waiting = steps["time_to_ready"].sum()
    overhead = 1 - measured / wall

    table = aggregate(rows)
    one = table[table["cores_requested"] == 1]
    fastest = one.loc[one["median"].idxmin()]
    share = one.assign(share=one["median"] / one.groupby("suite")["median"].transform("sum"))
    largest = share.loc[share["share"].idxmax()]

    print(f"run {result.run_id}: {result.status}, steps {list(steps['cores_requested'])} cores")
    print(f"wall time                    {wall:8.1f} s   (target ≤ {TARGETS['wall_s']:.0f} s)")
    print(f"in measured observations     {measured:8.1f} s")
    print(f"in warm-ups                  {warmup:8.1f} s")
    print(f"waiting for workers          {waiting:8.1f} s")
    print(f"harness overhead             {overhead:8.1%}   (outside measured observations, warm-ups included; "
          f"target ≤ {TARGETS['overhead']:.0%})")
    print_noise(rows)
    print(f"peak memory, process tree    {tree.peak / 2**30:8.2f} GiB (target ≤ {TARGETS['peak_gib']:.0f} GiB)")
    growth = [f"{m / 2**20:.0f}" for m in driver.after_step]
    print(f"driver RSS after each step   {', '.join(growth)} MiB")
    print(f"fastest operation on 1 core  {fastest['median']:8.3f} s   ({fastest['suite']}.{fastest['operation']}; "
          f"target ≥ {TARGETS['fastest_s']} s)")
    print(f"largest share of a suite     {largest['share']:8.1%}   ({largest['suite']}.{largest['operation']})")

    if "arrays" in settings.suites:
        dask_one = one[one["suite"] == "arrays"].set_index("operation")["median"]
        plain = numpy_times(settings.problem_size_array)
        ratios = {op: dask_one[op] / plain[op] for op in plain if op in dask_one}
        print("fidelity, arrays on 1 core (Dask / NumPy):")
        for op, ratio in ratios.items():
            print(f"  {op:<16} {dask_one[op]:7.3f} s / {plain[op]:7.3f} s = {ratio:5.2f}")
        print(f"  median ratio     {statistics.median(ratios.values()):5.2f}   (target ≤ {TARGETS['fidelity']})")


if __name__ == "__main__":
    main()
