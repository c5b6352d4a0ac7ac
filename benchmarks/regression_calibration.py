"""How the regression rule behaves on the default sweep's whole family: false reds and time to detection.

    .venv/bin/python benchmarks/regression_calibration.py [--nights 2000] [--seed 0] [--set FIELD=VALUE …]
    .venv/bin/python benchmarks/regression_calibration.py --results URL --save benchmarks/data/noise.csv
    .venv/bin/python benchmarks/regression_calibration.py --noise benchmarks/data/noise.csv

Simulates seeded nightly histories of a family (every operation of the three suites, from
`daskweak.workloads.catalogue`, at 1 and 2 cores, plus peak memory per suite and core count; with measured
noise, the stored family) and judges them night by night with the shipped rule
(`daskweak.analysis.regression.simulate_nights`: the code `daskweak check` runs, with the derived
comparisons — each operation over its core counts, the night effect — and times judged net of each
night's shared effect; with `--remeasure N`, the nightly DAG's second look at suspects with N observations).
Prints, per noise model: the share of nights turned red on pure noise (target ≤ 1 %), and how often a 10 %
slowdown of one operation is confirmed within 3 nights (target ≥ 90 %) and a 5 % one within 5 (target
≥ 80 %), every time comparison in turn, red on itself or on its operation over both core counts; the
slowdown starts after a full baseline of noise-only nights.

Noise models (CV = coefficient of variation; a night's value is the median of OBSERVATIONS observations):
- `issue`: the spread the issue measured on a default local run, per-observation CV 5–35 % over the
  operations (log-spaced), 2 % run to run, peak memory 2 %/2 %.
- `5 %`, `3 %`, `2 %`: every operation with that per-observation CV and half of it run to run.
- measured (`--results URL`, or a table saved from one with `--save` and read with `--noise`): per
  comparison, the within-run and run-to-run noise of the stored successful runs of one fingerprint (the
  one with most runs unless `--fingerprint`), e.g. the runs of `daskweak calibrate`; run to run net of
  each run's shared effect, whose own spread is the noise every time comparison of a night shares.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import fields, replace
from pathlib import Path

import numpy as np
import pandas as pd

from daskweak.analysis.regression import MEMORY, VERDICTS, Thresholds, derived_keys, simulate_nights

CORES = (1, 2)
REGRESSION = VERDICTS.index("regression")
COLUMNS = ["suite", "operation", "cores_requested", "metric", "obs_cv", "run_cv"]


def default_keys() -> list[tuple]:
    """The default sweep's measured comparisons: time per operation and cores, then peak memory."""
    from daskweak.workloads import catalogue

    suites = catalogue()
    times = [(suite, op.name, cores, "duration") for cores in CORES for suite, ops in suites.items() for op in ops]
    return times + [(suite, MEMORY, cores, MEMORY) for cores in CORES for suite in suites]


def noise_models(keys: list[tuple]) -> dict[str, pd.DataFrame]:
    """name → noise table (COLUMNS) over `keys`."""
    timed = np.array([key[3] == "duration" for key in keys])
    table = pd.DataFrame(keys, columns=COLUMNS[:4])
    issue = np.full(len(keys), 0.02)
    issue[timed] = np.geomspace(0.05, 0.35, timed.sum())
    models = {"issue": table.assign(obs_cv=issue, run_cv=0.02)}
    for cv in (0.05, 0.03, 0.02):
        models[f"{cv:.0%}"] = table.assign(obs_cv=np.where(timed, cv, 0.02), run_cv=np.where(timed, cv / 2, 0.02))
    return models


def measured_noise(url: str, fingerprint: str | None) -> tuple[pd.DataFrame, dict[str, object]]:
    """The noise table of stored runs, and what it was measured on (fingerprint, runs, observations per run,
    the CV of the runs' shared effect).

    Within-run noise: the pooled standard deviation of log observations inside a run. Run-to-run noise: what
    the spread of the runs' log medians, net of each run's shared effect (as the verdict judges them), leaves
    once the median's own share of the within-run noise is taken out (that share depends on the observation
    count, which the simulation sets).
    """
    from daskweak.analysis.calibration import noise_table, shared_effects
    from daskweak.analysis.stats import measured
    from daskweak.store import ResultStore

    with ResultStore(url) as store:
        runs = store.runs()
        runs = runs[runs["status"] == "ok"]
        fingerprint = fingerprint or runs["fingerprint"].value_counts().index[0]
        chosen = list(runs.loc[runs["fingerprint"] == fingerprint, "run_id"])
        rows = measured(store.observations_of(chosen))
    effects = shared_effects(rows.assign(log=np.log(rows["duration"].astype(float))))
    noise = noise_table(rows)
    to_cv = lambda sd: np.sqrt(np.expm1(np.nan_to_num(np.asarray(sd, dtype=float)) ** 2))  # noqa: E731
    table = noise[["suite", "operation", "cores_requested"]].assign(
        metric="duration", obs_cv=to_cv(noise["within"]), run_cv=to_cv(noise["between"]))
    about = {"fingerprint": fingerprint, "runs": len(chosen), "observations": int(noise["obs"].median()),
             "night_cv": float(to_cv(effects.std(ddof=1))) if len(effects) > 1 else 0.0}
    return table, about


def save(table: pd.DataFrame, about: dict[str, object], path: Path) -> None:
    lines = [f"# {key}={value}" for key, value in about.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n" + table[COLUMNS].to_csv(index=False, float_format="%.5f"))


def load(path: Path) -> tuple[pd.DataFrame, dict[str, str]]:
    text = path.read_text().splitlines()
    about = dict(line[2:].split("=", 1) for line in text if line.startswith("# "))
    return pd.read_csv(path, comment="#"), about


def red_share(rng: np.random.Generator, nights: int, noise: pd.DataFrame, observations: int, rule: Thresholds,
              options: dict[str, object], length: int = 40) -> tuple[float, int]:
    """Share of judged nights with a red verdict on unchanged systems; `nights` judged in all."""
    verdicts = simulate_nights(rng, -(-nights // length), rule.min_baseline_runs + length, noise["run_cv"],
                               noise["obs_cv"], observations, rule, **options)
    judged = verdicts[:, rule.min_baseline_runs:]  # from the first night with a baseline, as a new history
    red = (judged == REGRESSION).any(axis=-1)
    return float(red.mean()), int(red.size)


def detection(rng: np.random.Generator, cases: int, noise: pd.DataFrame, observations: int, rule: Thresholds,
              options: dict[str, object], factor: float, within: int) -> np.ndarray:
    """Per time comparison, the share of `cases` histories in which a `factor` slowdown of it alone turns
    red (itself, or its operation over its core counts) within `within` nights."""
    timed = np.flatnonzero(noise["metric"].to_numpy() == "duration")
    pooled = {column: len(noise) + g for g, group in enumerate(options["groups"]) for column in group}
    start = rule.baseline_runs + 2
    per_op = max(1, -(-cases // len(timed)))
    found = np.empty(len(timed))
    for index, op in enumerate(timed):
        slowdown = np.ones(len(noise))
        slowdown[op] = factor
        verdicts = simulate_nights(rng, per_op, start + within, noise["run_cv"], noise["obs_cv"], observations,
                                   rule, slowdown, start, **options)
        red = verdicts[:, start:] == REGRESSION
        hit = red[..., op] | (red[..., pooled[op]] if op in pooled else False)
        found[index] = hit.any(axis=-1).mean()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nights", type=int, default=2000, help="judged nights per noise model and figure")
    parser.add_argument("--observations", type=int, help="observations per night (default: 3, or as measured)")
    parser.add_argument("--remeasure", type=int, default=0, help="observations of a same-night re-measure")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", metavar="URL", help="take the noise from the stored runs of this database")
    parser.add_argument("--fingerprint", help="… of this fingerprint (default: the one with most runs)")
    parser.add_argument("--save", type=Path, help="write the measured noise table here (and stop)")
    parser.add_argument("--noise", type=Path, help="read a noise table written by --save")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help=f"change the rule, e.g. --set p_value=0.1 (fields: "
                             f"{', '.join(f.name for f in fields(Thresholds))})")
    args = parser.parse_args()
    rule = Thresholds()
    for item in args.set:
        key, _, value = item.partition("=")
        current = getattr(rule, key)
        rule = replace(rule, **{key: type(current)(value)})
    models = noise_models(default_keys())
    night_cv, observations = 0.0, args.observations or 3
    if args.results or args.noise:
        table, about = measured_noise(args.results, args.fingerprint) if args.results else load(args.noise)
        if args.save:
            save(table, about, args.save)
            print(f"wrote {args.save}: {len(table)} comparisons, {about}")
            return
        night_cv, observations = float(about["night_cv"]), args.observations or int(about["observations"])
        models = {"measured": table}
        print(f"noise of {about['runs']} stored runs of fingerprint {about['fingerprint']}: per observation CV "
              f"{table['obs_cv'].quantile(0.1):.1%}–{table['obs_cv'].quantile(0.9):.1%} (10th–90th percentile, "
              f"median {table['obs_cv'].median():.1%}), run to run {table['run_cv'].quantile(0.1):.1%}–"
              f"{table['run_cv'].quantile(0.9):.1%} (median {table['run_cv'].median():.1%}), shared by every "
              f"time of a night {night_cv:.1%}")
    print(f"rule: {rule}")
    print(f"{observations} observations a night, re-measure {args.remeasure or 'off'}, {args.nights} judged nights "
          f"per figure, seed {args.seed}")
    started = time.perf_counter()
    for name, noise in models.items():
        keys = list(noise[COLUMNS[:4]].itertuples(index=False, name=None))
        _, shared, groups = derived_keys(keys)
        options = {"groups": groups, "shared": shared, "night_cv": night_cv, "remeasure": args.remeasure}
        rng = np.random.default_rng(args.seed)
        red, judged = red_share(rng, args.nights, noise, observations, rule, options)
        d10 = detection(rng, args.nights, noise, observations, rule, options, 1.10, 3)
        d5 = detection(rng, args.nights, noise, observations, rule, options, 1.05, 5)
        print(f"noise {name:>8}: {len(keys)} comparisons; red on noise {red:6.2%} of {judged} nights (target ≤ 1 %); "
              f"10 % slowdown confirmed within 3 nights {d10.mean():6.1%} (worst operation {d10.min():5.1%}; "
              f"target ≥ 90 %); 5 % within 5 nights {d5.mean():6.1%} (worst {d5.min():5.1%}; target ≥ 80 %)")
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
