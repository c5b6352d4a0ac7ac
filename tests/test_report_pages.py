"""The report, the trend and the published site, rendered from a real SQLite results table of synthetic nights
(no cluster), and checked in a real headless browser."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from benchmarks.analysis import nightly_history
from daskweak.analysis import plots, units
from daskweak.analysis.comparison import needed_observations, smallest_p, too_few
from daskweak.analysis.report import compare, latest_run_id, run_report
from daskweak.analysis.trend import marks, medians, trend_page
from daskweak.cli import main
from daskweak.store import ResultStore
from tests.conftest import ARTIFACTS, console_errors

NIGHTS, SLOWER_FROM = 14, 11


@pytest.fixture(scope="module")
def history(tmp_path_factory) -> tuple[Path, list[str]]:
    """RES_DIR with a results table of 14 nightly runs (1–8 cores); tasks.independent 30% slower from night 11."""
    res_dir = tmp_path_factory.mktemp("history") / "results"
    with ResultStore(f"sqlite:///{res_dir / 'daskweak.sqlite'}") as store:
        run_ids = nightly_history(store, NIGHTS, np.random.default_rng(3), cores=(1, 2, 4, 8), obs=6,
                                  slowdown_from=SLOWER_FROM)
    return res_dir, run_ids


@pytest.fixture(scope="module")
def site(history, tmp_path_factory) -> Path:
    """`daskweak publish DIR` over the history."""
    site = tmp_path_factory.mktemp("site")
    assert main(["publish", str(site), "--set", f"RES_DIR={history[0]}"]) == 0
    return site


@pytest.fixture
def store(history):
    with ResultStore(f"sqlite:///{history[0] / 'daskweak.sqlite'}") as opened:
        yield opened


def test_rates_read_in_human_units():
    assert units.rate(1.871e9, "bytes/s") == "1.87 GB/s"
    assert units.rate(3.2e6, "rows/s") == "3.2 Mrows/s"
    assert units.rate(840.0, "tasks/s") == "840 tasks/s"
    assert units.rate(12_500.0, "tasks/s") == "12.5 ktasks/s"
    assert units.axis_unit([2.0e9, 5.0e8], "bytes/s") == (1e9, "GB/s")
    assert units.seconds(0.1234) == "0.123 s" and units.seconds(245) == "4 min 05 s"


def test_the_core_axis_is_log2_from_eight_cores():
    fig, (small, large) = plots.plt.subplots(1, 2)
    plots.core_axis(small, [1, 2, 4])
    plots.core_axis(large, [1, 2, 4, 8, 16])
    assert small.get_xscale() == "linear" and large.get_xscale() == "log"
    assert [t.get_text() for t in large.get_xticklabels()] == ["1", "2", "4", "8", "16"]
    plots.plt.close(fig)


def test_the_report_header_says_when_on_what_with_what_and_the_verdict(store, history):
    run_id = history[1][-1]
    html = run_report(store, run_id).html
    header = html[html.index("<table class='header'>"):html.index("</table>")]
    for text in ("verdict", "regression</b></span>: 4 regression, 96 unchanged", "2026-01-14 02:00 UTC",
                 "took 4 min 00 s", "1, 2, 4, 8 cores in 4 step(s)", "weak scaling", "host bench",
                 "python 3.11, dask 2026.1.0", "git revision", "max_n_cores 8, obs_per_iter 6",
                 "fingerprint <code>nightly</code>"):
        assert text in header, text
    # rates in human units, never 1.871e+09
    assert re.search(r"\d GB/s", html) and re.search(r"\d Mrows/s", html) and re.search(r"ktasks/s", html)
    assert not re.search(r"\de\+\d\d", html.split("<svg")[0])


def test_the_first_screen_is_the_heatmap_then_the_verdict_regressions_first(store, history):
    html = run_report(store, history[1][-1]).html
    first = html.index("<div class='first'>")
    heatmap, verdict = html.index("Efficiency (weak scaling)"), html.index("Regression check")
    assert first < heatmap < verdict < html.index("Rate against cores")
    rows = [row for row in re.findall(r"<tr class='([\w-]+)'>", html) if row != "noisy"]
    assert rows[:4] == ["regression"] * 4 and set(rows[4:]) == {"unchanged"}
    assert "96 unchanged comparison(s)</summary>" in html  # folded away under the notable rows
    # each change with the 95% interval of the run's median against the baseline median (+30% built in)
    [interval] = re.findall(r"<th>change 95% CI</th>.*?<td>([+-]\d+)…([+-]\d+) %</td>", html)[:1]
    assert int(interval[0]) < 30 < int(interval[1]) + 5
    assert "100%" in html.split("Regression check")[0]  # the heatmap's cells carry their values
    for section in ("Peak memory per operation", "Time to ready per step", "Statistics per operation"):
        assert section in html


def test_the_verdict_table_shows_whatever_keys_the_verdict_stores(store, history):
    run_id = history[1][-2]
    record = store.verdict(run_id)
    comparisons = [dict(c, verdict="suspected", change_ci_low=12.0, change_ci_high=41.0, q_value=0.004)
                   if c["operation"] == "independent" else c for c in record["comparisons"]]
    store.save_verdict(record | {"status": "suspected", "comparisons": comparisons})
    html = run_report(store, run_id).html
    assert "<th>change ci low</th>" in html and "<th>q value</th>" in html
    assert "<b>suspected</b></span>: 4 suspected, 96 unchanged" in html
    assert re.findall(r"<tr class='([\w-]+)'>", html)[:4] == ["suspected"] * 4
    store.save_verdict(record)


def test_the_trend_has_one_median_per_run_and_the_band_of_its_verdict(store, history):
    run_ids = history[1]
    runs = store.runs()
    table = medians(store, runs)
    assert len(table) == NIGHTS * 25 * 4  # every run × operation × core count
    one = table[(table["operation"] == "independent") & (table["cores_requested"] == 2)].reset_index()
    observed = store.observations(run_ids[10])
    chosen = observed[(observed["operation"] == "independent") & (observed["cores_requested"] == 2)]
    assert one.loc[10, "median"] == pytest.approx(chosen["duration"].median())
    stored = next(c for c in store.verdict(run_ids[10])["comparisons"]
                  if (c["operation"], c["cores_requested"]) == ("independent", 2))
    assert (one.loc[10, "band_low"], one.loc[10, "band_high"]) == pytest.approx(
        (stored["baseline_low"], stored["baseline_high"]))
    # the slowdown leaves the band and is marked where the verdict said so
    assert (one.loc[SLOWER_FROM:, "median"] > one.loc[SLOWER_FROM:, "band_high"]).any()
    found = marks(store, runs)
    assert set(found["kind"]) == {"regression"} and len(found) == (NIGHTS - SLOWER_FROM) * 4


def test_accepted_changes_are_marked_on_the_trend(store, history):
    store.accept(history[1][-1], suite="tasks", operation="independent")
    accepted = marks(store, store.runs())
    assert list(accepted.loc[accepted["kind"] == "accepted", "operation"]) == ["independent"]
    assert "dotted: accepted" in trend_page(store)


def test_verdicts_on_an_operation_over_all_cores_and_on_the_night_effect_are_marked_on_the_trend():
    """A pooled comparison (cores 0, "all") has no line of its own: its flag rings each core count's point of
    that night; the night effect's flag is a vertical line on every operation's panel."""
    import pandas as pd

    nights = pd.date_range("2026-01-01", periods=6, freq="D")
    trend = pd.DataFrame([("arrays", op, cores, night, 0.5, 0.4, 0.6) for op in ("sum", "rechunk")
                          for cores in (1, 2) for night in nights],
                         columns=["suite", "operation", "cores_requested", "started_at", "median", "band_low",
                                  "band_high"])
    flagged = pd.DataFrame([("arrays", "rechunk", 0, nights[4], "regression"),
                            ("all", "night effect", 0, nights[2], "suspected")],
                           columns=["suite", "operation", "cores_requested", "started_at", "kind"])
    fig = plots.trend_figure(trend, "arrays", flagged)
    panels = {ax.get_title(): ax for ax in fig.axes}
    rings = [c for c in panels["arrays.rechunk"].collections if c.get_label() == "regression (all cores)"]
    assert len(rings) == 1 and len(rings[0].get_offsets()) == 2  # both core counts' points of night 5
    assert not [c for c in panels["arrays.sum"].collections if "regression" in str(c.get_label())]
    for ax in panels.values():  # the night effect: every panel, at night 3
        [line] = [line for line in ax.lines if line.get_linestyle() == "-."]
        assert pd.Timestamp(line.get_xdata()[0]) == nights[2]
    plots.plt.close(fig)


def test_compare_gives_a_ratio_ci_and_says_when_observations_are_too_few(store, history):
    first, last = history[1][0], history[1][-1]
    table = compare(store, [first, last])
    assert len(table) == 100 and set(table["unit"]) == {"observations"}
    # 6 against 6 observations, 100 comparisons under Holm: nothing can be significant (2/C(12, 6) · 100 > 0.01),
    # and no interval is shown (one printed beside "no" would contradict it)
    assert np.allclose(table["smallest_p"], 2 / 924) and not table["significant"].any()
    assert table["ratio_ci_low"].isna().all() and table["ratio_ci_high"].isna().all()
    assert smallest_p(3, 3) == pytest.approx(0.1) and needed_observations() == 5  # 2/C(10,5) = 0.008
    assert needed_observations(0.01 / 100) == 9  # 2/C(18,9) = 4.1e-5
    assert "give each run ≥ 9 observations" in too_few(table)
    # several runs a side: the run is the unit, and every interval agrees with its row's significance
    runs = compare(store, [history[1][:8], history[1][SLOWER_FROM:]])
    assert set(runs["unit"]) == {"runs"} and len(runs) == 100
    excludes_one = (runs["ratio_ci_low"] > 1) | (runs["ratio_ci_high"] < 1)
    assert (excludes_one == runs["significant"]).all()
    slowed = runs[runs["operation"] == "independent"]
    assert (slowed["ratio"] > 1.2).all() and (runs.loc[runs["operation"] != "independent", "ratio"] < 1.1).all()


def test_the_cli_reports_the_latest_run_publishes_and_compares(store, history, site, tmp_path, capsys):
    res_dir, run_ids = history
    env = ["--set", f"RES_DIR={res_dir}"]
    assert latest_run_id(store) == run_ids[-1]
    assert main(["report", *env]) == 0
    assert (res_dir / "reports" / run_ids[-1] / "report.html").is_file()
    assert main(["compare", run_ids[0], run_ids[-1], *env, "--out", str(tmp_path / "compare")]) == 0
    assert "too few observations" in capsys.readouterr().out
    assert "give each run ≥ 9 observations" in (tmp_path / "compare" / "compare.html").read_text()
    assert sorted(p.name for p in site.glob("*.html")) == ["index.html", "trends.html"]
    assert len(list((site / "runs").glob("*.html"))) == NIGHTS
    for page in [site / "index.html", site / "trends.html", *(site / "runs").glob("*.html")]:
        for href in links(page):
            assert (page.parent / href).resolve().is_file(), f"{page.name}: broken link {href}"
    # publishing again renders only what changed: nothing but the index and the trends
    before = {p: p.stat().st_mtime_ns for p in (site / "runs").glob("*.html")}
    assert main(["publish", str(site), *env]) == 0
    assert {p: p.stat().st_mtime_ns for p in (site / "runs").glob("*.html")} == before


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.hrefs += [value for name, value in attrs if tag == "a" and name == "href" and value]


def links(page: Path) -> list[str]:
    parser = _Links()
    parser.feed(page.read_text())
    return parser.hrefs


def test_report_trend_and_index_render_in_a_real_browser(history, site, browser):
    from selenium.webdriver.common.by import By

    pages = {"site-report.png": site / "runs" / f"{history[1][-1]}.html", "site-trends.png": site / "trends.html",
             "site-index.png": site / "index.html"}
    for screenshot, page in pages.items():
        browser.get(page.as_uri())
        sizes = [(e.size["width"], e.size["height"]) for e in browser.find_elements(By.CSS_SELECTOR, "figure svg")]
        assert all(w > 200 and h > 100 for w, h in sizes), (page.name, sizes)
        assert console_errors(browser) == [], page.name
        browser.save_screenshot(str(ARTIFACTS / screenshot))
    browser.get(pages["site-report.png"].as_uri())
    first_screen = browser.find_element(By.CSS_SELECTOR, "div.first")
    assert first_screen.location["y"] < 1000  # the heatmap and the verdict start on the first screen
    assert browser.find_element(By.CSS_SELECTOR, "figure.heatmap svg").size["height"] > 300
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.suite svg")) == 3
    browser.find_element(By.LINK_TEXT, "Trends").click()
    assert browser.title.startswith("Trends of nightly") and console_errors(browser) == []
