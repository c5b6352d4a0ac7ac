"""Calibration: noise estimates, the minimal detectable slowdown checked against a direct simulation of the
run-level verdict, the recommendations on known inputs, and the stored result."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from daskweak.analysis import regression
from daskweak.analysis.calibration import (
    POWER,
    SHORTEST_SECONDS,
    analyse,
    html_fragment,
    latest_calibration,
    median_variance,
    minimal_detectable_slowdown,
    noise_factors,
    noise_table,
    recommend_obs_per_iter,
    recommend_sizes,
    stable_repeats,
    summary_lines,
)
from daskweak.settings import load_settings
from daskweak.store import ResultStore

RULE = regression.Thresholds()  # the shipped defaults: K = 20, Holm at 0.02, > 3 %, 2 of 3 nights, windows
FAMILY = 50


def synthetic(rng: np.random.Generator, runs: int, obs: int, within: float, between: float,
              medians: dict[tuple[str, str, int], float]) -> pd.DataFrame:
    """Observations of `runs` runs: log duration = log median + run shift ~ N(0, between) + N(0, within)."""
    rows = []
    for r in range(runs):
        for (suite, operation, cores), median in medians.items():
            shift = rng.normal(0, between)
            for o in range(obs):
                rows.append({"run_id": f"r{r}", "suite": suite, "operation": operation, "cores_requested": cores,
                             "observation": o, "warmup": False, "status": "ok",
                             "duration": median * math.exp(shift + rng.normal(0, within))})
    return pd.DataFrame(rows)


def detection_rate(slowdown: float, within: float, between: float, obs: int, rule: regression.Thresholds,
                   histories: int, seed: int) -> tuple[float, float]:
    """The rule applied to one comparison's simulated nights, a run's value the median of `obs` lognormal
    observations times a lognormal run factor (not the normal approximation the MDS uses), at Holm's first
    step for a family of FAMILY: (share of histories confirmed within N nights after a full baseline, share
    of the baseline's own judged nights suspected)."""
    start = rule.baseline_runs
    alone = dataclasses.replace(rule, p_value=rule.p_value / FAMILY)
    verdicts = regression.simulate_nights(
        np.random.default_rng(seed), histories, start + rule.confirm_n, np.array([math.sqrt(math.expm1(between**2))]),
        np.array([math.sqrt(math.expm1(within**2))]), obs, alone, np.array([1 + slowdown]), start)
    confirmed = (verdicts[:, start:, 0] == regression.VERDICTS.index("regression")).any(axis=1).mean()
    judged = verdicts[:, rule.min_baseline_runs:start, 0]
    flagged = np.isin(judged, [regression.VERDICTS.index(v) for v in regression.FLAGGED]).mean()
    return float(confirmed), float(flagged)


def test_the_minimal_detectable_slowdown_is_confirmed_in_ninety_percent_of_direct_simulations():
    within, between, obs = 0.05, 0.03, 3
    mds = minimal_detectable_slowdown(within, between, obs, RULE, FAMILY, seed=0)
    assert 0.02 < mds < 1.0
    rate, _ = detection_rate(mds, within, between, obs, RULE, histories=3000, seed=1)
    assert rate == pytest.approx(POWER, abs=0.025)
    half, _ = detection_rate(mds / 2, within, between, obs, RULE, histories=1000, seed=2)
    assert half < 0.6
    _, false_alarms = detection_rate(0.0, within, between, obs, RULE, histories=3000, seed=3)
    assert false_alarms < 3 * RULE.p_value / FAMILY  # 0.0004 at most expected: a handful of 45000 nights


def test_the_nightly_verdicts_own_simulation_confirms_the_detectable_slowdown_in_ninety_percent_of_histories():
    """The MDS against `regression.simulate_nights`, the code the nightly check runs (baseline growing night
    by night, Holm over a whole family of unchanged comparisons, suspected runs kept out, M of N nights)."""
    within, between, obs, family, histories = 0.08, 0.04, 3, 20, 1500
    mds = minimal_detectable_slowdown(within, between, obs, RULE, family, seed=0)
    start = RULE.baseline_runs
    cv = dict(obs_cv=np.full(family, math.sqrt(math.expm1(within**2))),
              run_cv=np.full(family, math.sqrt(math.expm1(between**2))))

    def confirmed(slowdown: float, seed: int) -> float:
        factors = np.ones(family)
        factors[0] = 1 + slowdown
        verdicts = regression.simulate_nights(np.random.default_rng(seed), histories, start + RULE.confirm_n,
                                              cv["run_cv"], cv["obs_cv"], obs, RULE, factors, start)
        red = verdicts[:, start:, 0] == regression.VERDICTS.index("regression")
        return float(red.any(axis=1).mean())

    assert confirmed(mds, seed=4) == pytest.approx(POWER, abs=0.04)
    assert confirmed(mds / 2, seed=5) < 0.6

def test_the_detectable_slowdown_grows_with_noise_and_shrinks_with_baseline_runs_and_observations():
    base = minimal_detectable_slowdown(0.05, 0.03, 3, RULE, FAMILY)
    assert minimal_detectable_slowdown(0.10, 0.03, 3, RULE, FAMILY) > base
    assert minimal_detectable_slowdown(0.05, 0.06, 3, RULE, FAMILY) > base
    assert minimal_detectable_slowdown(0.05, 0.03, 9, RULE, FAMILY) < base
    assert minimal_detectable_slowdown(0.05, 0.03, 3, RULE, 5 * FAMILY) > base
    fewer = regression.Thresholds(baseline_runs=5)
    assert minimal_detectable_slowdown(0.05, 0.03, 3, fewer, FAMILY) > base
    one_night = regression.Thresholds(confirm_m=1, confirm_n=1)
    assert minimal_detectable_slowdown(0.05, 0.03, 3, one_night, FAMILY) != base
    assert minimal_detectable_slowdown(0.0, 0.0, 3, RULE, FAMILY) == pytest.approx(0.03)  # the threshold
    assert minimal_detectable_slowdown(0.05, 0.03, 3, regression.Thresholds(baseline_runs=1), FAMILY) == math.inf


def test_noise_table_recovers_the_within_and_between_run_noise_of_synthetic_runs():
    rng = np.random.default_rng(0)
    medians = {("arrays", "std", 1): 0.5, ("tasks", "independent", 2): 0.2}
    rows = synthetic(rng, runs=60, obs=5, within=0.10, between=0.05, medians=medians)
    rows = pd.concat([rows, rows.head(3).assign(warmup=True, duration=100.0)])  # warm-ups are left out
    table = noise_table(rows).set_index(["suite", "operation", "cores_requested"])
    for key, median in medians.items():
        row = table.loc[key]
        assert row["runs"] == 60 and row["obs"] == 5
        assert row["median"] == pytest.approx(median, rel=0.05)
        assert row["within"] == pytest.approx(0.10, rel=0.1)
        expected = math.sqrt(0.05**2 + 0.10**2 * median_variance(5))
        assert row["run_to_run"] == pytest.approx(expected, rel=0.25)
        assert row["between"] == pytest.approx(0.05, abs=0.025)


def test_the_variance_of_a_median_is_exact_where_pi_over_2n_was_not():
    """π/(2n) is the large-n limit: 0.524 at n = 3 where the median of 3 normals has variance 0.449."""
    rng = np.random.default_rng(3)
    for n in (1, 2, 3, 4, 5, 8):
        simulated = np.var(np.median(rng.standard_normal((200_000, n)), axis=1))
        assert median_variance(n) == pytest.approx(simulated, rel=0.02), n
    assert median_variance(3) == pytest.approx(0.4487, abs=1e-4) and abs(median_variance(3) - math.pi / 6) > 0.07


def test_the_detectable_slowdowns_interval_covers_the_true_one_in_95_percent_of_calibrations():
    """Five calibration runs give an MDS whose interval (chi-square on the run-to-run noise) holds the MDS of
    the true noise in about 95 % of simulated calibrations; `stable_repeats` runs keep it within 1.5×."""
    rule, within, between, obs = regression.Thresholds(), 0.08, 0.03, 5
    truth = minimal_detectable_slowdown(within, between, obs, rule, FAMILY, simulations=1000)
    covered = 0
    for seed in range(150):
        rows = synthetic(np.random.default_rng(seed), runs=5, obs=obs, within=within, between=between,
                         medians={("tasks", "chain", 1): 0.3})
        [row] = noise_table(rows).itertuples()
        low, high = noise_factors(row.runs)
        ends = [minimal_detectable_slowdown(f * row.within, f * row.between, obs, rule, FAMILY, simulations=1000)
                for f in (low, high)]
        covered += ends[0] <= truth * 1.02 and truth <= ends[1] * 1.02  # 1.02: the simulations' own noise
    assert 0.90 <= covered / 150 <= 0.995
    assert noise_factors(stable_repeats())[1] <= 1.5 < noise_factors(stable_repeats() - 1)[1]


@pytest.mark.parametrize(("within", "between", "expected"), [
    (0.10, 0.05, 6),  # 0.10²·v(n) ≤ 0.05² first at n = 6 (v(6) = 0.2227; π/(2n) said 7)
    (0.01, 0.10, 1),
    (0.10, 0.00, 10),  # no run-to-run noise: only the cap stops it
    (0.05, 0.05, 1),  # v(1) = 1
])
def test_obs_per_iter_is_the_smallest_whose_median_noise_is_below_the_run_to_run_noise(within, between, expected):
    noise = pd.DataFrame({"within": [within] * 4, "between": [between] * 4})
    assert recommend_obs_per_iter(noise) == expected


def test_sizes_grow_until_the_fastest_operation_lasts_long_enough_and_large_shares_are_flagged():
    noise = pd.DataFrame([
        {"suite": "arrays", "operation": "std", "cores_requested": 1, "median": 0.05},
        {"suite": "arrays", "operation": "sin2_cos2", "cores_requested": 1, "median": 0.40},
        {"suite": "arrays", "operation": "sin2_cos2", "cores_requested": 2, "median": 0.01},  # not 1 core
        {"suite": "tasks", "operation": "independent", "cores_requested": 1, "median": 0.30},
        {"suite": "tasks", "operation": "tree_reduction", "cores_requested": 1, "median": 0.25},
        {"suite": "tasks", "operation": "sequential_chain", "cores_requested": 1, "median": 0.28},
        {"suite": "tasks", "operation": "nearest_neighbour", "cores_requested": 1, "median": 0.27},
    ])
    advice = {a["suite"]: a for a in recommend_sizes(noise, {"arrays": 1000, "dataframes": 10, "tasks": 200})}
    arrays, tasks = advice["arrays"], advice["tasks"]
    # 0.05 s → 0.15 s needs three times the work: the side grows by √3
    assert arrays["recommended"] == math.ceil(1000 * math.sqrt(3)) and arrays["fastest"] == "std"
    assert arrays["largest"] == "sin2_cos2" and arrays["largest_share"] == pytest.approx(0.4 / 0.45)
    assert not arrays["share_ok"]
    assert tasks["recommended"] == 200 and tasks["share_ok"]
    assert "dataframes" not in advice


def test_a_calibration_is_stored_and_rendered(tmp_path):
    rng = np.random.default_rng(1)
    settings = load_settings(res_dir=str(tmp_path))
    rows = synthetic(rng, runs=3, obs=3, within=0.05, between=0.02,
                     medians={("arrays", "std", 1): 0.05, ("arrays", "create", 1): 0.3})
    result = analyse(rows, settings, RULE, FAMILY)
    assert result["recommendations"]["sizes"][0]["recommended"] > settings.problem_size_array
    record = {"id": "c1", "created_at": pd.Timestamp("2026-11-30T10:00Z"), "fingerprint": "f", "repeats": 3,
              "runs": ["r0", "r1", "r2"],
              "settings": {"obs_per_iter": 3, "rule": vars(RULE), "family": FAMILY, "power": POWER}, **result}
    with ResultStore(settings.database_url) as store:
        assert latest_calibration(store, "f") is None
        store.save_calibration(record)
        store.save_calibration(record | {"id": "c0", "created_at": pd.Timestamp("2026-11-29T10:00Z")})
        stored = latest_calibration(store, "f")
    assert stored["id"] == "c1" and stored["noise"][0]["operation"] == "create"
    assert any("OBS_PER_ITER" in line for line in summary_lines(stored))
    page = html_fragment(stored)
    assert "PROBLEM_SIZE_ARRAY" in page and "<table>" in page
    assert "daskweak calibrate" in html_fragment(None)


def test_calibrate_runs_the_sweep_apart_from_nightly_baselines_and_stores_its_findings(tmp_path, capsys):
    from daskweak.cli import main
    from tests.conftest import SMALL

    overrides = SMALL | {"res_dir": str(tmp_path / "results"), "max_n_cores": 2, "suites": "arrays,tasks"}
    options = [item for key, value in overrides.items() for item in ("--set", f"{key.upper()}={value}")]
    assert main(["calibrate", "--repeats", "1", *options]) == 2  # one run has no run-to-run noise
    assert main(["calibrate", "--repeats", "2", *options]) == 0
    printed = capsys.readouterr().out
    assert "minimal detectable slowdown" in printed and "recommended OBS_PER_ITER" in printed

    settings = load_settings(**overrides)
    with ResultStore(settings.database_url) as store:
        record = latest_calibration(store, settings.fingerprint())
        runs = store.runs().set_index("run_id")
    assert record is not None and record["repeats"] == 2 and len(record["runs"]) == 2
    # calibration runs never share a nightly run's fingerprint, so no baseline holds them
    assert set(runs.loc[record["runs"], "fingerprint"]) == {f"{settings.fingerprint()}-calibration"}
    assert set(runs.loc[record["runs"], "status"]) == {"ok"}
    noise = pd.DataFrame(record["noise"])
    assert len(noise) == (9 + 4) * 2 and (noise["runs"] == 2).all() and (noise["obs"] == 2).all()
    assert (noise["within"] > 0).all() and (noise["run_to_run"] > 0).all()
    advice = record["recommendations"]
    assert 1 <= advice["obs_per_iter"] <= 10
    for size in advice["sizes"]:  # a suite grows exactly when its fastest operation is too short
        assert (size["recommended"] > size["current"]) == (size["fastest_s"] < SHORTEST_SECONDS)
    # time and peak memory at 1 and 2 cores, each over both core counts, and the night effect
    assert record["settings"]["family"] == (9 + 1 + 4 + 1) * 3 + 1


def test_calibrate_analyses_runs_already_measured_and_refuses_runs_of_other_settings(tmp_path, capsys):
    """Past nights are calibration data a user already has: `--runs` analyses them without a new sweep, and
    only runs of the settings given (their sizes and rule are what the analysis uses)."""
    from daskweak.cli import main
    from tests.conftest import SMALL

    overrides = SMALL | {"res_dir": str(tmp_path / "results"), "max_n_cores": 1, "suites": "tasks"}
    options = [item for key, value in overrides.items() for item in ("--set", f"{key.upper()}={value}")]
    for _ in range(2):
        assert main(["run", *options]) == 0
    settings = load_settings(**overrides)
    with ResultStore(settings.database_url) as store:
        measured_runs = list(store.runs()["run_id"])
    assert len(measured_runs) == 2
    capsys.readouterr()

    assert main(["calibrate", "--runs", f"{measured_runs[0]},nosuchrun", *options]) == 2
    assert "--runs='nosuchrun'" in "".join(capsys.readouterr())
    other = [*options, "--set", "PROBLEM_SIZE_TASKS=21"]
    assert main(["calibrate", "--runs", ",".join(measured_runs), *other]) == 2
    assert "fingerprint" in "".join(capsys.readouterr())

    assert main(["calibrate", "--runs", ",".join(measured_runs), *options]) == 0
    with ResultStore(settings.database_url) as store:
        record = latest_calibration(store, settings.fingerprint())
        assert list(store.runs()["run_id"]) == measured_runs  # nothing measured again
    assert record is not None and record["runs"] == measured_runs and record["repeats"] == 2
    noise = pd.DataFrame(record["noise"])
    assert len(noise) == 4 and (noise["runs"] == 2).all() and (noise["run_to_run"] > 0).all()


def test_with_one_observation_per_run_the_run_to_run_noise_is_all_the_noise():
    rows = synthetic(np.random.default_rng(2), runs=5, obs=1, within=0.05, between=0.05,
                     medians={("tasks", "independent", 1): 0.3})
    settings = load_settings(obs_per_iter=1)
    [row] = analyse(rows, settings, RULE, FAMILY)["noise"]
    assert np.isnan(row["within"]) and row["mds"] == pytest.approx(
        minimal_detectable_slowdown(0.0, row["run_to_run"], 1, RULE, FAMILY))
