"""Reports, comparisons and the regression check over real small local runs."""

from __future__ import annotations

import pytest

from daskweak.analysis.report import compare, run_report
from daskweak.cli import main
from daskweak.runner import run_sweep
from daskweak.store import ResultStore


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two real local runs in one results table: processes vs threads (different settings)."""
    from daskweak.settings import load_settings
    from tests.conftest import SMALL

    base = tmp_path_factory.mktemp("reports")
    common = SMALL | {"res_dir": str(base / "results"), "suites": "arrays,tasks", "obs_per_iter": 3}
    first = run_sweep(load_settings(**common))
    second = run_sweep(load_settings(**common, worker_mode="threads"))
    assert first.status == second.status == "ok"
    return load_settings(**common), first.run_id, second.run_id


def test_a_run_report_has_a_heatmap_tables_and_a_plot_per_suite(two_runs, tmp_path):
    settings, run_id, _ = two_runs
    store = ResultStore(settings.database_url)
    report = run_report(store, run_id)
    store.close()
    paths = report.write(tmp_path / "report")
    names = [p.name for p in paths]
    assert names[:4] == ["report.html", "efficiency.svg", "arrays.svg", "tasks.svg"] and "ready.svg" in names
    html = paths[0].read_text()
    assert html.count("<svg") == len(names) - 1 and "Statistics per operation and core count" in html
    assert "95% CI" in html and "Efficiency (weak scaling)" in html and "dask " in html  # versions in the header
    svg = (tmp_path / "report" / "arrays.svg").read_text()
    assert "ideal (linear)" in svg and "arrays.create" in svg and "B/s" in svg


def test_cli_report_and_compare_write_files(two_runs, tmp_path):
    settings, first, second = two_runs
    env = ["--set", f"RES_DIR={settings.res_dir}"]
    assert main(["report", first, *env]) == 0
    assert (settings.res_dir / "reports" / first / "report.html").is_file()
    assert main(["compare", first, second, *env, "--out", str(tmp_path)]) == 0
    page = tmp_path / "compare.html"
    assert (tmp_path / "tasks.svg").is_file()
    text = page.read_text()
    assert first in text and second in text and text.count("<svg") == 2
    assert "worker_mode=threads" in text  # the legend says what differs between the runs
    assert main(["compare", first, *env]) == 1  # one run: nothing to compare with
    assert main(["report", "no-such-run", *env]) == 1


def test_compare_gives_a_ratio_and_significance_per_operation_and_core_count(two_runs):
    settings, first, second = two_runs
    store = ResultStore(settings.database_url)
    table = compare(store, [first, second])
    observations = store.observations(first)
    store.close()
    measured = observations[~observations["warmup"]]
    expected = set(zip(measured["suite"], measured["operation"], measured["cores_requested"], strict=True))
    assert set(zip(table["suite"], table["operation"], table["cores_requested"], strict=True)) == expected
    assert (table["ratio"] > 0).all() and table["p_value"].between(0, 1).all()
    # one run a side: its observations are the unit, and the ratio is the Hodges–Lehmann estimate the
    # interval is built around (3 against 3 observations: no interval, nothing significant)
    assert set(table["unit"]) == {"observations"} and not table["significant"].any()
    assert table["ratio_ci_low"].isna().all()


def test_the_regression_check_uses_only_earlier_runs_with_the_same_fingerprint(two_runs, tmp_path):
    from daskweak.settings import load_settings
    from tests.conftest import SMALL

    settings = load_settings(**SMALL | {"res_dir": str(tmp_path), "suites": "tasks", "max_n_cores": 1,
                                        "obs_per_iter": 2})
    check = ["--set", f"RES_DIR={tmp_path}", "--set", "SUITES=tasks", "--set", "REGRESSION_MIN_BASELINE_RUNS=3"]
    same, other = [], None
    for index in range(4):  # judged nights (a cron job's `run --nightly` + `check`): what a baseline holds
        same.append(run_sweep(settings, kind="nightly").run_id)
        if index == 1:
            other = run_sweep(load_settings(**settings.model_dump() | {"problem_size_tasks": 30}),
                              kind="nightly").run_id
            assert main(["check", other, *check]) == 0
        # three earlier runs: the least a t test can judge (the shipped minimum is 5)
        assert main(["check", same[-1], *check]) == 0
    store = ResultStore(settings.database_url)
    verdict = store.verdict(same[-1])
    store.close()
    assert verdict["baseline"] == same[:-1] and other not in verdict["baseline"]
    # the earlier nights had no baseline, so none was suspected: nothing can confirm a suspicion yet
    assert verdict["status"] != "regression" and f"run `{same[-1]}` against 3 baseline run(s)" in verdict["markdown"]
    assert {row["verdict"] for row in verdict["comparisons"]} <= {"unchanged", "suspected", "improvement"}
    assert {row["metric"] for row in verdict["comparisons"]} == {"duration", "peak_memory"}
