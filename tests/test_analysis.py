"""Statistics against known values, and the regression detector on seeded synthetic histories."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from daskweak.analysis import regression
from daskweak.analysis.regression import Thresholds, baseline_run_ids, compare_to_baseline
from daskweak.analysis.stats import bootstrap_median_ci, summary


def rows(run_id: str, durations: list[float], cores: int = 1, operation: str = "op", warmup: int = 0,
         status: str = "ok") -> list[dict]:
    return [{"run_id": run_id, "suite": "arrays", "operation": operation, "cores_requested": cores,
             "duration": d, "rate": cores * 100.0 / d, "rate_unit": "MB/s", "warmup": i < warmup,
             "status": status} for i, d in enumerate(durations)]


def test_summary_matches_hand_computed_values():
    data = pd.DataFrame(
        rows("r", [9.0, 1.0, 2.0, 3.0, 4.0], warmup=1)           # the 9.0 warm-up is left out
        + rows("r", [100.0], status="failed")                     # so is a failure
        + rows("r", [0.5, 1.0, 1.5, 2.0], cores=2))
    table = summary(data, "weak").set_index("cores_requested")
    one, two = table.loc[1], table.loc[2]
    assert one["count"] == 4 and one["median"] == 2.5 and one["mean"] == 2.5
    assert one["iqr"] == pytest.approx(3.25 - 1.75)
    assert one["cv"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1) / 2.5)
    assert one["ci_low"] <= 2.5 <= one["ci_high"] and one["ci_low"] >= 1.0 and one["ci_high"] <= 4.0
    assert two["median"] == 1.25
    assert two["weak_efficiency"] == pytest.approx(2.5 / 1.25)
    assert two["strong_efficiency"] == pytest.approx(2.5 / (2 * 1.25))
    assert two["efficiency"] == two["weak_efficiency"]
    # rate per core: 100/d per core; median over 1/0.5..1/2 → 100·median(2, 1, 2/3, 1/2)
    assert two["rate_per_core"] == pytest.approx(100 * np.median([2, 1, 2 / 3, 0.5]))
    assert summary(data, "strong").set_index("cores_requested").loc[2, "efficiency"] == two["strong_efficiency"]


def test_bootstrap_interval_covers_the_true_median_about_95_percent_of_the_time():
    rng = np.random.default_rng(7)
    covered = 0
    for _ in range(400):
        sample = rng.normal(10.0, 1.0, 25)
        low, high = bootstrap_median_ci(sample, rng, samples=1000)
        covered += low <= 10.0 <= high
    assert 0.90 <= covered / 400 <= 0.99


def history(rng: np.random.Generator, runs: int = 10, obs: int = 5, slowdown: float = 1.0,
            fingerprint: str = "f") -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """`runs` baseline runs and one current run: each run shifts by a run-level factor (2% CV, the machine's
    mood that night), each observation by 5% noise; the current run is `slowdown` times slower."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    obs_rows, run_rows = [], []
    for index in range(runs + 1):
        run_id = f"run{index:03d}"
        level = (slowdown if index == runs else 1.0) * rng.normal(1.0, 0.02)
        obs_rows += rows(run_id, list(level * rng.lognormal(0.0, 0.05, obs)))
        run_rows.append({"run_id": run_id, "fingerprint": fingerprint, "status": "ok",
                         "started_at": start + timedelta(days=index)})
    data, runs_table = pd.DataFrame(obs_rows), pd.DataFrame(run_rows)
    current = f"run{runs:03d}"
    return data[data["run_id"] == current], data[data["run_id"] != current], runs_table


def test_a_true_20_percent_regression_is_found_in_at_least_95_percent_of_200_histories():
    found = 0
    for seed in range(200):
        current, baseline, _ = history(np.random.default_rng(seed), slowdown=1.2)
        found += regression.status(compare_to_baseline(current, baseline, Thresholds())) == "regression"
    assert found / 200 >= 0.95, found


def test_pure_noise_is_flagged_in_at_most_1_percent_of_200_histories():
    flagged = 0
    for seed in range(200):
        current, baseline, _ = history(np.random.default_rng(10_000 + seed))
        flagged += regression.status(compare_to_baseline(current, baseline, Thresholds())) == "regression"
    assert flagged / 200 <= 0.01, flagged


def test_an_improvement_is_reported_as_such():
    current, baseline, _ = history(np.random.default_rng(3), slowdown=0.7)
    table = compare_to_baseline(current, baseline, Thresholds())
    assert list(table["verdict"]) == ["improvement"] and regression.status(table) == "ok"
    assert "improvement" in regression.markdown("run010", table, ["x"] * 10)


def test_the_baseline_never_holds_runs_with_another_fingerprint_failed_or_later_runs():
    _, _, runs = history(np.random.default_rng(1), runs=12)
    runs.loc[runs["run_id"] == "run003", "fingerprint"] = "other settings"
    runs.loc[runs["run_id"] == "run005", "status"] = "failed"
    later = {"run_id": "run999", "fingerprint": "f", "status": "ok",
             "started_at": runs["started_at"].max() + timedelta(days=1)}
    runs = pd.concat([runs, pd.DataFrame([later])])
    picked = baseline_run_ids(runs, "run012", k=10)
    assert len(picked) == 10 and "run003" not in picked and "run005" not in picked and "run999" not in picked
    assert picked == sorted(picked)[-10:]
    assert baseline_run_ids(runs, "run003", k=10) == []  # the only run with its fingerprint


def test_thresholds_are_tunable():
    current, baseline, _ = history(np.random.default_rng(5), slowdown=1.2)
    assert regression.status(compare_to_baseline(current, baseline, Thresholds(threshold_pct=30))) == "ok"
    assert regression.status(compare_to_baseline(current, baseline, Thresholds(p_value=1e-12))) == "ok"
    few = baseline[baseline["run_id"].isin(["run000", "run001"])]
    assert regression.status(compare_to_baseline(current, few, Thresholds())) == "no baseline"
    assert regression.status(compare_to_baseline(current, few, Thresholds(min_baseline_runs=2))) != "no baseline"
