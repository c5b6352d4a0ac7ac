"""Calibration on the user's own deployment: how noisy it is, which slowdown the nightly check can see, and
which OBS_PER_ITER and problem sizes to use.

`calibrate` runs the sweep R times (separate runs, their fingerprint suffixed so no nightly baseline ever
holds them) and stores one `calibrations` row; everything else here is a pure function of the stored rows.

Noise is measured on the log scale, where a slowdown is a shift and the standard deviation is close to the
coefficient of variation (CV) for small noise:
- within-run: the spread of the observations of one (suite, operation, cores) in one run, pooled over runs;
- run-to-run: the spread of the runs' medians. It holds the within-run noise of a median (its exact variance
  for n normal observations, `median_variance`: 0.449·within² at n = 3, where the large-n π/(2n) said 0.524)
  plus what changes between runs (placement, the machine's state); the latter, `between`, is what more
  observations per run cannot remove.

The MDS is an estimate from R runs: its 95 % interval comes from the chi-square interval of the run-to-run
variance (R − 1 degrees of freedom; the MDS grows with the noise), and `stable_repeats` says how many runs
bring the interval's upper end within 1.5 times the estimate.

The minimal detectable slowdown (MDS) follows the verdict of `daskweak.analysis.regression` with the
configured REGRESSION_* settings, through its own simulation (`regression.simulate_nights`): the window
tests of the last 1, 2, 3 and 5 nights against the K before them, one slowed comparison among the night's
whole family (the measured comparisons, each operation pooled over its core counts, the night effect) at
Holm's first step, suspects kept out of the baseline, a regression on M of N nights. The MDS is the smallest
slowdown confirmed within N nights in POWER of the simulated histories; it leaves out the nightly DAG's
same-night re-measure of suspects, which only adds power (a conservative figure). Run-to-run noise is
measured net of each run's shared effect (what every operation of that run had in common), as the verdict
judges it.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import asdict, replace
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.stats import chi2

from daskweak.analysis.intervals import median_variance
from daskweak.analysis.regression import MIN_SHARED, Thresholds, night_effect, thresholds_of
from daskweak.analysis.stats import KEYS, measured
from daskweak.errors import ConfigError, Problem

if TYPE_CHECKING:
    from daskweak.runner import Progress
    from daskweak.settings import Settings
    from daskweak.store import ResultStore

PURPOSE = "calibration"  # suffix of a calibration run's fingerprint (and prefix of its run id)
CONFIDENCE = 0.95
STABLE = 1.5  # a stable MDS: the interval's upper end at most this many times the estimate
POWER = 0.9
SIMULATIONS = 4000
MOST_OBSERVATIONS = 10  # past this, more observations per run cost machine time for little
OBS_QUANTILE = 0.8  # OBS_PER_ITER suits this share of the comparisons
SHORTEST_SECONDS = 0.1  # every operation at 1 core lasts at least this
SIZE_MARGIN = 1.5  # durations grow less than linearly with size (fixed costs): aim this much above SHORTEST
LARGEST_SHARE = 1 / 3  # no operation above this share of its suite's time at 1 core
SIZE_SETTINGS = {"arrays": "problem_size_array", "dataframes": "problem_size_dataframes",
                 "tasks": "problem_size_tasks"}


def family_size(settings: Settings) -> int:
    """Comparisons of one night, as the verdict counts them: every operation of every suite at every core
    count (time), and every suite at every core count (peak memory), each of those over all its core
    counts, and the night's shared effect."""
    from daskweak.plan import make_plan
    from daskweak.workloads import catalogue

    operations = catalogue()
    measured = sum(len(operations[suite]) + 1 for suite in settings.suites)
    counts = len(make_plan(settings))
    pooled = measured if counts > 1 else 0  # each operation (and suite's memory) over its core counts
    night = 1 if sum(len(operations[suite]) for suite in settings.suites) * counts >= MIN_SHARED else 0
    return measured * counts + pooled + night


def noise_factors(runs: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """How far the true run-to-run noise may be from one measured on `runs` runs: (low, high) factors of the
    chi-square interval of a standard deviation with runs − 1 degrees of freedom."""
    df = runs - 1
    if df < 1:
        return math.nan, math.nan
    tail = (1 - confidence) / 2
    return math.sqrt(df / chi2.isf(tail, df)), math.sqrt(df / chi2.ppf(tail, df))


def stable_repeats(limit: float = STABLE, confidence: float = CONFIDENCE) -> int:
    """The fewest calibration runs whose MDS interval's upper end is within `limit` times the estimate."""
    runs = 2
    while noise_factors(runs, confidence)[1] > limit:
        runs += 1
    return runs


def noise_table(observations: pd.DataFrame) -> pd.DataFrame:
    """Per (suite, operation, cores) over R runs: runs, observations per run, median seconds (median of the
    run medians), within-run and run-to-run noise (sd of log durations), and `between`, the run-to-run
    noise left once the within-run noise of a median is taken out."""
    rows = measured(observations)
    rows = rows.assign(log=np.log(rows["duration"].astype(float)))
    rows = rows.assign(log=rows["log"] - rows["run_id"].map(shared_effects(rows)).fillna(0.0))
    records = []
    for key, group in rows.groupby(KEYS, sort=True):
        per_run = group.groupby("run_id")["log"]
        counts = per_run.count()
        variances = per_run.var(ddof=1).dropna()
        within = float(np.sqrt(variances.mean())) if len(variances) else float("nan")
        medians = per_run.median()
        run_to_run = float(medians.std(ddof=1)) if len(medians) > 1 else float("nan")
        obs = int(counts.median())
        excess = run_to_run**2 - within**2 * median_variance(obs)
        records.append({
            **dict(zip(KEYS, key, strict=True)), "runs": len(medians), "obs": obs,
            "median": float(np.exp(medians.median())), "within": within, "run_to_run": run_to_run,
            "between": float(np.sqrt(max(excess, 0.0))) if not np.isnan(excess) else float("nan"),
        })
    columns = [*KEYS, "runs", "obs", "median", "within", "run_to_run", "between"]
    return pd.DataFrame.from_records(records, columns=columns)


def shared_effects(rows: pd.DataFrame) -> pd.Series:
    """Each run's shared effect on the log scale (`regression.night_effect` over its run medians): what the
    verdict takes out of every time before it judges, so it is not run-to-run noise the verdict sees."""
    grid = rows.groupby(["run_id", *KEYS])["log"].median().unstack(KEYS)
    if grid.empty:
        return pd.Series(dtype=float)
    effect = night_effect(grid.to_numpy(dtype=float), np.ones(grid.shape[1], dtype=bool))
    return pd.Series(effect, index=grid.index)


def minimal_detectable_slowdown(within: float, between: float, obs: int, rule: Thresholds, family: int,
                                power: float = POWER, simulations: int = SIMULATIONS, seed: int = 0) -> float:
    """The smallest slowdown (0.1 = 10 % slower) the rule confirms within N nights with probability `power`.

    A run's value is a shift ~ N(0, between) plus the median of `obs` observations ~ N(0, within), on the
    log scale: close to normal with variance between² + within²·median_variance(obs). The rule (window tests,
    M of N, suspects kept out of the baseline) is scale-free on the log scale apart from THRESHOLD %, so its
    reach in units of that noise, `detectable_shift`, is simulated once per rule and family size with the
    verdict's own code, and the MDS is that many standard deviations, and never below THRESHOLD %.
    """
    k, m, n = rule.baseline_runs, rule.confirm_m, rule.confirm_n
    if k < 2 or not 1 <= m <= n:
        return float("inf")
    if not (math.isfinite(within) and math.isfinite(between)):
        return float("nan")
    sigma = math.sqrt(between**2 + within**2 * median_variance(obs))
    reach = detectable_shift(replace(rule, threshold_pct=0.0), family, power, simulations, seed)
    return float(max(np.expm1(reach * sigma), rule.threshold_pct / 100))


@functools.lru_cache(maxsize=32)
def detectable_shift(rule: Thresholds, family: int, power: float = POWER, simulations: int = SIMULATIONS,
                     seed: int = 0) -> float:
    """The shift of one comparison, in standard deviations of its nightly value, that `rule` confirms within
    N nights in `power` of seeded histories (`regression.simulate_nights`, the code the nightly check runs:
    a full baseline of K nights, then the slowed ones). One slowed comparison among `family` unchanged ones
    passes Holm's first step, α/family, which is what the simulation of one comparison is given."""
    from daskweak.analysis.regression import VERDICTS, simulate_nights

    alone = replace(rule, p_value=rule.p_value / family)
    start, unit = rule.baseline_runs, np.array([math.sqrt(math.expm1(1.0))])  # log-scale σ = 1

    def confirmed(shift: float) -> float:
        verdicts = simulate_nights(np.random.default_rng(seed), simulations, start + rule.confirm_n, unit,
                                   np.zeros(1), 1, alone, np.array([math.exp(shift)]), start)
        return float((verdicts[:, start:, 0] == VERDICTS.index("regression")).any(axis=1).mean())

    low, high = 0.0, 1.0
    while confirmed(high) < power:
        low, high = high, 2 * high
        if high > 64:  # nothing this rule can see
            return float("inf")
    for _ in range(14):
        middle = (low + high) / 2
        low, high = (low, middle) if confirmed(middle) >= power else (middle, high)
    return high


def recommend_obs_per_iter(noise: pd.DataFrame, most: int = MOST_OBSERVATIONS,
                           quantile: float = OBS_QUANTILE) -> int:
    """The smallest OBS_PER_ITER whose within-run noise of the median (exact: within²·median_variance(n)) is at
    most the run-to-run noise no observation count removes (`between`²), for `quantile` of the comparisons;
    capped at `most` (a deployment with no run-to-run noise gets `most`)."""
    noise = noise.dropna(subset=["within", "between"])
    if noise.empty:
        return 1

    def needed(within: float, between: float) -> int:
        return next((n for n in range(1, most + 1) if within**2 * median_variance(n) <= between**2), most)

    counts = [needed(w, b) for w, b in zip(noise["within"], noise["between"], strict=True)]
    return int(np.ceil(np.quantile(counts, quantile)))


def recommend_sizes(noise: pd.DataFrame, sizes: dict[str, int], shortest: float = SHORTEST_SECONDS,
                    margin: float = SIZE_MARGIN) -> list[dict[str, Any]]:
    """Per suite from its 1-core medians: the size making its fastest operation last ≥ shortest·margin (only
    raised: a smaller problem saves time but lets per-task overhead weigh more), and its largest operation's
    share of the suite, which no size changes (a share above a third calls for a workload change).

    Durations are taken as proportional to the work: the array's work grows with its side squared, the rows
    and the tasks linearly (plan.py's weak-scaling sizing)."""
    one = noise[noise["cores_requested"] == 1]
    advice = []
    for suite, group in one.groupby("suite", sort=True):
        fastest, largest = group.loc[group["median"].idxmin()], group.loc[group["median"].idxmax()]
        factor = max(1.0, shortest * margin / fastest["median"]) if fastest["median"] < shortest else 1.0
        current = sizes[suite]
        grown = current * math.sqrt(factor) if suite == "arrays" else current * factor
        share = float(largest["median"] / group["median"].sum())
        advice.append({
            "suite": suite, "setting": SIZE_SETTINGS[suite].upper(), "current": current,
            "recommended": math.ceil(grown), "fastest": fastest["operation"],
            "fastest_s": float(fastest["median"]), "largest": largest["operation"], "largest_share": share,
            "share_ok": share <= LARGEST_SHARE,
        })
    return advice


def analyse(observations: pd.DataFrame, settings: Settings, rule: Thresholds, family: int,
            seed: int = 0) -> dict[str, Any]:
    """Noise table with the MDS of every comparison (with its 95 % interval at the count the runs used, and at
    the recommended OBS_PER_ITER), and the recommendations; JSON-able."""
    noise = noise_table(observations)
    obs = recommend_obs_per_iter(noise)
    noise["mds"] = [_mds(row, row.obs, rule, family, seed) for row in noise.itertuples()]
    bounds = [[_mds(row, row.obs, rule, family, seed, scale) for scale in noise_factors(row.runs)]
              for row in noise.itertuples()]
    noise["mds_low"], noise["mds_high"] = ([b[i] for b in bounds] for i in (0, 1))
    noise["mds_recommended"] = [_mds(row, obs, rule, family, seed) for row in noise.itertuples()]
    sizes = {suite: getattr(settings, name) for suite, name in SIZE_SETTINGS.items()}

    def median_of(column: str) -> float | None:
        finite = noise[column].replace(np.inf, np.nan).dropna()
        return float(finite.median()) if len(finite) else None

    finite = noise["mds"].replace(np.inf, np.nan).dropna()
    runs = int(noise["runs"].max()) if len(noise) else 0
    return {
        "noise": noise.to_dict(orient="records"),
        "recommendations": {
            "obs_per_iter": obs, "sizes": recommend_sizes(noise, sizes),
            "mds_median": median_of("mds"), "mds_median_low": median_of("mds_low"),
            "mds_median_high": median_of("mds_high"),
            "mds_max": float(finite.max()) if len(finite) else None,
            "runs": runs, "stable_repeats": stable_repeats(),
        },
    }


def _mds(row: Any, obs: int, rule: Thresholds, family: int, seed: int, scale: float = 1.0) -> float:
    """The MDS of one comparison at `obs` observations, its noise scaled by `scale` (an interval's end); with
    one observation per run the within-run noise is unknown, but the run-to-run noise is then all the noise of
    a run's median (at that same count only)."""
    if np.isnan(row.run_to_run) or not math.isfinite(scale):
        return float("nan")
    if np.isnan(row.within):
        return minimal_detectable_slowdown(0.0, scale * row.run_to_run, 1, rule, family, seed=seed) \
            if obs == row.obs else float("nan")
    return minimal_detectable_slowdown(scale * row.within, scale * row.between, obs, rule, family, seed=seed)


def calibrate(settings: Settings, repeats: int = 5, *, progress: Progress | None = None,
              runs: list[str] | None = None) -> dict[str, Any]:
    """Run the sweep `repeats` times as calibration runs (or analyse `runs` already measured with these
    settings, such as past nights), analyse them, store and return the result."""
    from daskweak.runner import new_run_id, run_sweep
    from daskweak.store import ResultStore

    rule, family = thresholds_of(settings), family_size(settings)
    if runs:
        with ResultStore.of(settings) as store:
            check_measured(store.runs(), runs, settings.fingerprint())
        run_ids = list(runs)
    else:
        run_ids = []
        for _ in range(repeats):
            result = run_sweep(settings, run_id=f"{PURPOSE}-{new_run_id()}", progress=progress, purpose=PURPOSE)
            run_ids.append(result.run_id)
    with ResultStore.of(settings) as store:
        observations = store.observations_of(run_ids)
        # the fingerprint as the runs recorded it, so a report finds the calibration of its own runs
        recorded = store.runs().set_index("run_id").loc[run_ids[0], "fingerprint"]
        record = {
            "id": f"{PURPOSE}-{uuid.uuid4().hex[:12]}", "created_at": datetime.now(UTC),
            "fingerprint": str(recorded).removesuffix(f"-{PURPOSE}"), "repeats": len(run_ids), "runs": run_ids,
            "settings": {"obs_per_iter": settings.obs_per_iter, "target_precision": settings.target_precision,
                         "warmup": settings.warmup,
                         **{name: getattr(settings, name) for name in SIZE_SETTINGS.values()},
                         "rule": asdict(rule), "family": family, "power": POWER},
            **_json_safe(analyse(observations, settings, rule, family)),
        }
        store.save_calibration(record)
    return record


def check_measured(table: pd.DataFrame, run_ids: list[str], fingerprint: str) -> None:
    """Runs to calibrate from must exist, have finished, and have been measured with the settings given (the
    analysis reads its sizes and rule from them): else a clear error before anything is analysed."""
    problems = []
    known = table.set_index("run_id") if not table.empty else table
    if len(set(run_ids)) < 2:
        problems.append(Problem("--runs", ",".join(run_ids), "at least two different runs"))
    for run_id in run_ids:
        if run_id not in known.index:
            problems.append(Problem("--runs", run_id, "a run id from `daskweak results` (this one is not stored)"))
            continue
        run = known.loc[run_id]
        if run["status"] not in ("ok", "partial"):
            problems.append(Problem("--runs", run_id, f"a finished run (this one is {run['status']})"))
        if str(run["fingerprint"]).removesuffix(f"-{PURPOSE}") != fingerprint:
            problems.append(Problem("--runs", run_id, "a run measured with these settings (its fingerprint "
                                    f"{run['fingerprint']} is not theirs, {fingerprint}: pass its .env or --set)"))
    if problems:
        raise ConfigError(problems)


def latest_calibration(store: ResultStore, fingerprint: str) -> dict[str, Any] | None:
    """The newest calibration of a configuration (what a report of a run with that fingerprint shows)."""
    return store.latest_calibration(fingerprint)


def _json_safe(value: Any) -> Any:
    """NaN and infinity become None (JSON has neither); NumPy scalars become Python ones."""
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _pct(value: float | None) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.1%}"


def summary_lines(record: dict[str, Any]) -> list[str]:
    """The calibration's findings in sentences (the CLI prints them, the HTML fragment shows them)."""
    advice = record["recommendations"]
    settings, rule = record["settings"], record["settings"]["rule"]
    lines = [
        f"{record['repeats']} runs; rule: K={rule['baseline_runs']} baseline runs, {rule['correction']} at "
        f"{rule['p_value']:g} over {settings['family']} comparisons, change > {rule['threshold_pct']:g} %, "
        f"confirmed on {rule['confirm_m']} of {rule['confirm_n']} nights; power {settings['power']:.0%}",
        f"minimal detectable slowdown at {_count(settings['obs_per_iter'])}: median {_pct(advice['mds_median'])}"
        f"{_interval(advice)}, worst {_pct(advice['mds_max'])}",
        f"recommended OBS_PER_ITER={advice['obs_per_iter']}",
    ]
    for size in advice["sizes"]:
        change = (f"{size['current']} → {size['recommended']}" if size["recommended"] != size["current"]
                  else f"{size['current']} (keep)")
        share = "" if size["share_ok"] else " — above a third of the suite: a workload change, not a size, fixes it"
        lines.append(f"{size['setting']}: {change}; fastest at 1 core {size['suite']}.{size['fastest']} "
                     f"{size['fastest_s']:.3f} s; largest {size['largest']} {size['largest_share']:.0%} of the "
                     f"suite{share}")
    return lines


def _count(obs_per_iter: int | None) -> str:
    return f"OBS_PER_ITER={obs_per_iter}" if obs_per_iter else "the observation counts the runs reached"


def _interval(advice: dict[str, Any]) -> str:
    """`(95 % interval 15–41 % from 5 runs; 23 runs make it stable)`, for records that have one."""
    if advice.get("mds_median_low") is None:
        return ""
    stable = advice["stable_repeats"]
    enough = "stable" if advice["runs"] >= stable else f"{stable} runs keep its upper end within 1.5× of it"
    return (f" (95 % interval {_pct(advice['mds_median_low'])}–{_pct(advice['mds_median_high'])} from "
            f"{advice['runs']} runs; {enough})")


def html_fragment(record: dict[str, Any] | None) -> str:
    """A short HTML section for the report: the findings and the noise per comparison."""
    if record is None:
        return "<section class='calibration'><h2>Calibration</h2><p>No calibration of this configuration: " \
               "<code>daskweak calibrate</code> measures its noise and detectable slowdown.</p></section>"
    items = "".join(f"<li>{escape(line)}</li>" for line in summary_lines(record))
    header = ["suite", "operation", "cores", "median s", "within CV", "run-to-run CV", "MDS now",
              "MDS 95% interval", "MDS recommended"]
    rows = "".join(
        "<tr>" + "".join(f"<td>{escape(str(cell))}</td>" for cell in (
            row["suite"], row["operation"], row["cores_requested"], f"{row['median']:.3f}",
            _pct(row["within"]), _pct(row["run_to_run"]), _pct(row["mds"]),
            f"{_pct(row.get('mds_low'))}–{_pct(row.get('mds_high'))}", _pct(row["mds_recommended"])))
        + "</tr>" for row in record["noise"])
    created = pd.Timestamp(record["created_at"]).strftime("%Y-%m-%d %H:%M")
    return (f"<section class='calibration'><h2>Calibration {escape(created)}</h2><ul>{items}</ul><table><tr>"
            + "".join(f"<th>{h}</th>" for h in header) + f"</tr>{rows}</table></section>")
