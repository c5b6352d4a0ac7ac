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
- `measured` (with `--results URL`): per comparison, the within-run and run-to-run noise of the stored
  successful runs of one fingerprint (the one with most runs unless `--fingerprint`), e.g. a few real
  default local runs; the family is then the stored one.
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


def measured_noise(url: str, fingerprint: str | None) -> tuple[np.ndarray, np.ndarray, int, str, int]:
    """(run-to-run CV, per-observation CV, time comparisons, fingerprint, runs) from stored runs.

    Within-run noise: the pooled standard deviation of log observations inside a run. Run-to-run noise: what
    the spread of the runs' log medians leaves once the median's own share of the within-run noise is taken
    out (that share depends on the observation count, which the simulation varies).
    """
    from daskweak.analysis.regression import run_values
    from daskweak.analysis.stats import measured
    from daskweak.store import ResultStore

    with ResultStore(url) as store:
        runs = store.runs()
        runs = runs[runs["status"] == "ok"]
        fingerprint = fingerprint or runs["fingerprint"].value_counts().index[0]
        chosen = list(runs.loc[runs["fingerprint"] == fingerprint, "run_id"])
        rows = measured(store.observations_of(chosen))
    rows = rows.assign(log=np.log(rows["duration"]))
    within = rows.groupby(["run_id", "suite", "operation", "cores_requested"])["log"].var(ddof=1)
    obs_sd = within.groupby(["suite", "operation", "cores_requested"]).mean().pow(0.5)
    per_run = rows.groupby(["run_id", "suite", "operation", "cores_requested"]).size().median()
    medians = run_values(rows).query("metric == 'duration'").assign(log=lambda f: np.log(f["median"]))
    spread = medians.groupby(["suite", "operation", "cores_requested"])["log"].var(ddof=1)
    share = median_variance_factor(int(per_run))
    run_sd = (spread - share * obs_sd.reindex(spread.index) ** 2).clip(lower=0).pow(0.5)
    obs_sd = obs_sd.reindex(run_sd.index).fillna(0.0)
    to_cv = lambda sd: np.sqrt(np.expm1(np.asarray(sd, dtype=float) ** 2))  # noqa: E731
    return to_cv(run_sd.fillna(0.0)), to_cv(obs_sd), len(run_sd), fingerprint, len(chosen)


def median_variance_factor(n: int, draws: int = 200_000) -> float:
    """Var(median of n standard normals): 1 for n = 1, 0.449 for n = 3, → π/(2n)."""
    rng = np.random.default_rng(0)
    return float(np.median(rng.standard_normal((draws, n)), axis=1).var())


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
    parser.add_argument("--results", metavar="URL", help="take the noise from the stored runs of this database")
    parser.add_argument("--fingerprint", help="… of this fingerprint (default: the one with most runs)")
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
    models = noise_models(times, memory)
    if args.results:
        run_cv, obs_cv, times, fingerprint, count = measured_noise(args.results, args.fingerprint)
        memory = 0
        models = {"measured": (run_cv, obs_cv)}
        print(f"noise of {count} stored runs of fingerprint {fingerprint}: per observation CV "
              f"{np.percentile(obs_cv, 10):.1%}–{np.percentile(obs_cv, 90):.1%} (10th–90th percentile, median "
              f"{np.median(obs_cv):.1%}), run to run {np.percentile(run_cv, 10):.1%}–{np.percentile(run_cv, 90):.1%} "
              f"(median {np.median(run_cv):.1%})")
    print(f"rule: {rule}")
    print(f"family: {times} time + {memory} peak-memory comparisons, OBS_PER_ITER={args.observations}, "
          f"{args.nights} judged nights per figure, seed {args.seed}")
    started = time.perf_counter()
    for name, noise in models.items():
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
