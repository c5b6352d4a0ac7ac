"""How the regression rule behaves on the default sweep's whole family: false reds and time to detection.

    .venv/bin/python benchmarks/regression_calibration.py [--nights 2000] [--seed 0] [--set KEY=VALUE …]

Simulates seeded nightly histories of the default sweep (every operation of the three suites, from
`daskweak.workloads.catalogue`, at 1 and 2 cores, plus peak memory per suite and core count: 56 comparisons)
and judges them night by night with the shipped rule (`daskweak.analysis.regression.judge`, the code
`daskweak check` runs), suspected runs kept out of the baseline as in the results table. Prints, per noise
model: the share of nights turned red on pure noise, and how often a 10 % slowdown of one operation is
confirmed within 3 nights and a 20 % one within 2 (every operation in turn; the slowdown starts after a
full baseline of noise-only nights).

Noise models (CV = coefficient of variation; a run's value is the median of OBS_PER_ITER observations):
- `issue`: the spread the issue measured on a default local run, per-observation CV 5–35 % over the
  operations (log-spaced), 2 % run-to-run, peak memory 2 %/2 %.
- `5 %`, `3 %`, `2 %`: every operation with that per-observation CV and half of it run to run.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace

import numpy as np

from daskweak.analysis.regression import VERDICTS, Thresholds, simulate_nights

CORES = (1, 2)
REGRESSION = VERDICTS.index("regression")


def family() -> tuple[int, int]:
    """(time comparisons, memory comparisons) of the default sweep."""
    from daskweak.workloads import catalogue

    suites = catalogue()
    return sum(len(ops) for ops in suites.values()) * len(CORES), len(suites) * len(CORES)


def noise_models(times: int, memory: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name → (run-to-run CV, per-observation CV) per comparison, time comparisons first."""
    mem = np.full(memory, 0.02)
    models = {"issue": (np.full(times + memory, 0.02), np.concatenate([np.geomspace(0.05, 0.35, times), mem]))}
    for cv in (0.05, 0.03, 0.02):
        models[f"{cv:.0%}"] = (np.concatenate([np.full(times, cv / 2), mem]),
                               np.concatenate([np.full(times, cv), mem]))
    return models


def false_red_share(rng: np.random.Generator, nights: int, noise: tuple[np.ndarray, np.ndarray],
                    observations: int, rule: Thresholds, length: int = 40) -> tuple[float, int]:
    """Share of judged nights with a red verdict on unchanged systems; `nights` judged in all."""
    histories = -(-nights // length)
    verdicts = simulate_nights(rng, histories, rule.min_baseline_runs + length, *noise, observations, rule)
    judged = verdicts[:, rule.min_baseline_runs:]  # from the first night with a baseline, as a new history
    red = (judged == REGRESSION).any(axis=-1)
    return float(red.mean()), int(red.size)


def detection(rng: np.random.Generator, cases: int, noise: tuple[np.ndarray, np.ndarray], observations: int,
              rule: Thresholds, factor: float, within: int, times: int) -> np.ndarray:
    """Per time comparison, the share of `cases` histories in which a `factor` slowdown of it alone turns
    red within `within` nights."""
    start = rule.baseline_runs + 2
    found = np.empty(times)
    per_op = max(1, -(-cases // times))
    for op in range(times):
        slowdown = np.ones(len(noise[0]))
        slowdown[op] = factor
        verdicts = simulate_nights(rng, per_op, start + within, *noise, observations, rule, slowdown, start)
        found[op] = (verdicts[:, start:, op] == REGRESSION).any(axis=-1).mean()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=2000, help="judged nights per noise model and figure")
    parser.add_argument("--observations", type=int, default=3, help="OBS_PER_ITER")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help=f"change the rule, e.g. --set p_value=0.1 (fields: "
                             f"{', '.join(f.name for f in fields(Thresholds))})")
    args = parser.parse_args()
    rule = Thresholds()
    for item in args.set:
        key, _, value = item.partition("=")
        current = getattr(rule, key)
        rule = replace(rule, **{key: type(current)(value)})
    times, memory = family()
    print(f"rule: {rule}")
    print(f"family: {times} time + {memory} peak-memory comparisons, OBS_PER_ITER={args.observations}, "
          f"{args.nights} judged nights per figure, seed {args.seed}")
    started = time.perf_counter()
    for name, noise in noise_models(times, memory).items():
        rng = np.random.default_rng(args.seed)
        red, judged = false_red_share(rng, args.nights, noise, args.observations, rule)
        d10 = detection(rng, args.nights, noise, args.observations, rule, 1.10, 3, times)
        d20 = detection(rng, args.nights, noise, args.observations, rule, 1.20, 2, times)
        print(f"noise {name:>5}: red on noise {red:6.2%} of {judged} nights (target ≤ 1 %); "
              f"10 % slowdown confirmed within 3 nights {d10.mean():6.1%} (worst operation {d10.min():5.1%}; "
              f"target ≥ 90 %); 20 % within 2 nights {d20.mean():6.1%} (worst {d20.min():5.1%}; target ≥ 95 %)")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
