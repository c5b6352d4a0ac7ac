"""How precise a default run is, how long it takes, and whether two identical runs agree.

    .venv/bin/python benchmarks/precision.py [--runs 2] [--set KEY=VALUE ...] [--keep DIR]

Runs the default sweep (local backend, shipped settings; `--set` overrides) `--runs` times back to back, each
in the same results database, and prints:

- per run: its wall time, and per comparison (suite, operation, cores) the observations, the loops, the
  precision its median reached (half-width of the 95 % interval / median), its efficiency with its interval
  and whether it is noisy;
- for every pair of runs: how many efficiencies (n > 1 cores) of one fall outside the other's 95 % interval,
  out of how many (the issue's target: at most 5 %), and how many values each run marked noisy.

Run it on a quiet machine: what it measures is the machine's noise as much as daskweak's. `--keep DIR` keeps
the results database (DIR/results/daskweak.sqlite), e.g. for `daskweak calibrate --runs` or
`benchmarks/regression_calibration.py --results`.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import tempfile
import time
from pathlib import Path

import pandas as pd

from daskweak.analysis.stats import summary
from daskweak.runner import run_sweep
from daskweak.settings import load_settings
from daskweak.store import ResultStore


def measure(runs: int, overrides: dict[str, str], base: Path) -> list[tuple[str, float, pd.DataFrame]]:
    settings = load_settings(res_dir=str(base / "results"), **overrides)
    found = []
    for index in range(runs):
        clock = time.perf_counter()
        result = run_sweep(settings)
        wall = time.perf_counter() - clock
        with ResultStore.of(settings) as store:
            rows = store.observations(result.run_id)
            steps = store.steps(result.run_id)
        table = summary(rows, settings.scaling, settings.noise_limit_pct / 100)
        loops = rows[~rows["warmup"]].groupby(["suite", "operation", "cores_requested"])["loops"].max()
        table = table.merge(loops.rename("loops").reset_index(), on=["suite", "operation", "cores_requested"])
        found.append((result.run_id, wall, table))
        busy = [load for load in steps["host_load"] if any(host["busy"] for host in load or [])]
        print(f"run {index + 1}/{runs} {result.run_id}: {result.status}, {wall / 60:.1f} min"
              + (f"; BUSY HOST on {len(busy)} step(s)" if busy else ""))
    return found


def show(run_id: str, wall: float, table: pd.DataFrame) -> None:
    print(f"\n{run_id} ({wall / 60:.1f} min)")
    print(f"{'suite':<11}{'operation':<21}{'cores':>5}{'obs':>5}{'loops':>6}{'median s':>10}{'±95%':>7}"
          f"{'efficiency':>11}{'interval':>14}  noisy")
    for row in table.itertuples():
        interval = (f"{row.efficiency_low:.0%}–{row.efficiency_high:.0%}"
                    if pd.notna(row.efficiency_low) else "—")
        spread = f"{row.precision:.1%}" if row.precision < float("inf") else "—"
        print(f"{row.suite:<11}{row.operation:<21}{row.cores_requested:>5}{row.count:>5}{row.loops:>6}"
              f"{row.median:>10.4f}{spread:>7}{row.efficiency:>11.0%}{interval:>14}  {'noisy' if row.noisy else ''}")
    finite = table["precision"][table["precision"] < float("inf")]
    print(f"precision reached: median {finite.median():.1%}, worst {finite.max():.1%}; "
          f"{int(table['noisy'].sum())} of {len(table)} values noisy")


def agreement(first: pd.DataFrame, second: pd.DataFrame) -> tuple[int, int]:
    """Efficiencies (n > 1) of `first` outside `second`'s 95 % interval, and how many were compared."""
    keys = ["suite", "operation", "cores_requested"]
    both = first.merge(second, on=keys, suffixes=("", "_other"))
    both = both[(both["cores_requested"] > 1) & both["efficiency_low_other"].notna()]
    outside = (both["efficiency"] < both["efficiency_low_other"]) | (both["efficiency"] > both["efficiency_high_other"])
    return int(outside.sum()), len(both)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", type=Path, help="a directory to keep the results database in")
    args = parser.parse_args()
    overrides = {key.lower(): value for key, value in (item.split("=", 1) for item in args.set)}
    with contextlib.ExitStack() as stack:
        base = args.keep or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="daskweak-precision-")))
        found = measure(args.runs, overrides, base)
    for run_id, wall, table in found:
        show(run_id, wall, table)
    print()
    for (a, _, first), (b, _, second) in itertools.combinations(found, 2):
        for one, other, table, against in ((a, b, first, second), (b, a, second, first)):
            outside, compared = agreement(table, against)
            share = outside / compared if compared else float("nan")
            print(f"efficiencies of {one} outside {other}'s 95 % interval: {outside} of {compared} ({share:.0%})")


if __name__ == "__main__":
    main()
