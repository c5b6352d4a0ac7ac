"""Airflow as deployed: api-server + scheduler + dag-processor with the LocalExecutor, a REST-triggered
run (each task its own process), and the plugin page behind Airflow's authentication."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from daskweak.store import ResultStore
from tests.airflow_harness import Services, dask_processes, measured
from tests.conftest import ARTIFACTS, console_errors, wait_until

DAG = "dask_weak_scaling"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Services(tmp_path_factory.mktemp("airflow-server"), "LocalExecutor") as services:
        yield services


@pytest.fixture(scope="module")
def finished_run(server):
    """A run triggered through the REST API, as the README shows, and run by the real executor."""
    return server.trigger(DAG, {"max_cores": 2, "obs_per_iter": 2})


def test_rest_triggered_run_succeeds_under_the_local_executor(server, finished_run):
    home = server.home
    run_id, state = finished_run
    assert state == "success"
    steps = home.task_instances(run_id, "run_step")
    assert [(t[1], t[2]) for t in steps] == [("cores=1", "success"), ("cores=2", "success")]
    # max_active_tis_per_dag=1: the steps ran one after the other, not at once
    assert steps[0][5] <= steps[1][4] or steps[1][5] <= steps[0][4]
    store = ResultStore(f"sqlite:///{home.env_file.parent / 'results' / 'daskweak.sqlite'}")
    rows = store.observations(run_id)
    assert sorted(set(rows["cores_requested"])) == [1, 2] and (rows["status"] == "ok").all()
    assert len(rows) == 2 * (4 + 9) * 3
    store.close()
    assert home.xcoms(run_id, "collect")[-1]["ok"] == [1, 2]
    assert [p for p in dask_processes(home.home) if p.is_running()] == []


def test_plugin_page_requires_an_airflow_token(server, finished_run):
    url = server.url
    assert httpx.get(f"{url}/daskweak/", timeout=10).status_code == 401
    bad = httpx.get(f"{url}/daskweak/", headers={"Authorization": "Bearer not-a-token"}, timeout=10)
    assert bad.status_code in (401, 403)


def test_plugin_page_lists_runs_and_shows_one_run(server, finished_run):
    client = server.client
    run_id, _ = finished_run
    page = client.get("/daskweak/")
    assert page.status_code == 200 and run_id in page.text
    detail = client.get(f"/daskweak/runs/{run_id}")
    assert detail.status_code == 200
    assert "Steps" in detail.text and "<th>2 cores</th>" in detail.text and "sequential_chain" in detail.text
    assert "noisy" in detail.text  # 2 observations a step cannot bound a median: marked, not shown as a result
    assert client.get("/daskweak/runs/no-such-run").status_code == 404
    plugins = client.get("/api/v2/plugins").json()["plugins"]
    [ours] = [p for p in plugins if p["name"] == "daskweak"]
    assert ours["external_views"][0]["url_route"] == "weak-scaling"


def test_a_task_marked_failed_tears_its_cluster_down(server, finished_run):
    home, client = server.home, server.client
    created = client.post(f"/api/v2/dags/{DAG}/dagRuns",
                          json={"logical_date": None, "conf": {"max_cores": 1, "obs_per_iter": 500,
                                                               "suites": ["tasks"]}})
    created.raise_for_status()
    run_id = created.json()["dag_run_id"]
    # the step has measured an observation (its spool checkpoint holds one) before the task is marked failed
    assert wait_until(lambda: measured(home.env_file.parent / "results", 1), 180), "the step measured nothing"
    client.patch(f"/api/v2/dags/{DAG}/dagRuns/{run_id}/taskInstances/run_step/0",
                 json={"new_state": "failed"}).raise_for_status()
    deadline = time.monotonic() + 90
    while any(p.is_running() and p.status() != "zombie" for p in dask_processes(home.home)):
        assert time.monotonic() < deadline, [p.cmdline() for p in dask_processes(home.home)]
        time.sleep(0.5)
    store = ResultStore(f"sqlite:///{home.env_file.parent / 'results' / 'daskweak.sqlite'}")
    assert wait_until(lambda: list(store.steps(run_id)["status"]) == ["interrupted"], 30)
    assert len(store.observations(run_id)) > 0  # what was measured before the kill is kept
    store.close()


def shown_plots(driver) -> list[tuple[int, int]]:
    """Width and height of every plot as laid out (a plot that does not render has no size)."""
    from selenium.webdriver.common.by import By

    return [(e.size["width"], e.size["height"]) for e in driver.find_elements(By.CSS_SELECTOR, "figure.suite svg")]


def test_plugin_pages_and_the_report_render_in_a_real_browser(server, finished_run, browser):
    run_id, _ = finished_run
    token = server.client.headers["Authorization"].removeprefix("Bearer ")
    browser.get(f"{server.url}/daskweak/")  # 401 page first: the cookie needs the origin
    browser.add_cookie({"name": "_token", "value": token, "path": "/"})
    browser.get_log("browser")  # drop the 401's log line: it was expected
    browser.get(f"{server.url}/daskweak/")
    assert run_id in browser.page_source and console_errors(browser) == []
    browser.get(f"{server.url}/daskweak/runs/{run_id}")
    assert "Full report with plots" in browser.page_source and console_errors(browser) == []
    browser.get(f"{server.url}/daskweak/runs/{run_id}/report")
    sizes = shown_plots(browser)
    # tasks (one row of small plots) and arrays (three rows) suites
    assert len(sizes) == 2 and all(w > 300 and h > 200 for w, h in sizes), sizes
    assert console_errors(browser) == []
    browser.save_screenshot(str(ARTIFACTS / "plugin-report.png"))  # the first screen: header, heatmap, verdict
    browser.get(f"{server.url}/daskweak/trends")
    assert "tasks.sequential_chain" in browser.page_source and console_errors(browser) == []
    browser.save_screenshot(str(ARTIFACTS / "plugin-trends.png"))
    # the report file the DAG's report task wrote opens on its own, from disk
    written = server.home.env_file.parent / "results" / "reports" / run_id / "report.html"
    browser.get(written.as_uri())
    assert len(shown_plots(browser)) == 2 and console_errors(browser) == []
    browser.save_screenshot(str(ARTIFACTS / "report-file.png"))
    assert (ARTIFACTS / "plugin-report.png").stat().st_size > 10_000


def test_a_person_triggers_the_manual_dag_in_the_ui_and_reads_its_report(server, browser):
    """As a person does it: log in, open the DAG, press Trigger, change max_cores and suites in the form,
    submit; the run's mapped tasks are labelled cores=N, and when it ends its report opens from the Weak
    scaling page."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 90)
    client = server.client
    browser.get(f"{server.url}/api/v2/version")  # on the origin: its cookies (an earlier test's token) go
    browser.delete_all_cookies()
    browser.execute_script("window.localStorage.clear(); window.sessionStorage.clear()")
    browser.get(f"{server.url}/")
    wait.until(ready.element_to_be_clickable((By.NAME, "username"))).send_keys("admin")
    browser.find_element(By.NAME, "password").send_keys("admin-password")
    browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "[data-testid=nav-dags-link]")))
    browser.get_log("browser")  # the login page's 401s for the UI's config were expected
    before = {r["dag_run_id"] for r in client.get(f"/api/v2/dags/{DAG}/dagRuns").json()["dag_runs"]}

    browser.get(f"{server.url}/dags/{DAG}")
    wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid=trigger-dag-button]"))).click()
    # the form's fields: a number input named element_<param>, and a textarea of one suite per line
    for name, value in (("element_max_cores", "3"), ("element_suites", "tasks")):
        field = wait.until(ready.presence_of_element_located((By.NAME, name)))
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", field)
        field.click()
        field.send_keys(Keys.CONTROL, "a")
        field.send_keys(value)
        assert field.get_attribute("value") == value
    browser.save_screenshot(str(ARTIFACTS / "airflow-trigger-form.png"))
    submit = browser.find_element(By.CSS_SELECTOR, "[data-testid=trigger-dag-submit]")
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", submit)
    wait.until(ready.element_to_be_clickable(submit)).click()

    def new_run() -> dict | None:
        runs = client.get(f"/api/v2/dags/{DAG}/dagRuns").json()["dag_runs"]
        return next((r for r in runs if r["dag_run_id"] not in before), None)

    assert wait_until(lambda: new_run() is not None, 60), "the form's submit started no run"
    run = new_run()
    assert run["conf"]["max_cores"] == 3 and run["conf"]["suites"] == ["tasks"], run["conf"]
    run_id = run["dag_run_id"]
    assert wait_until(lambda: client.get(f"/api/v2/dags/{DAG}/dagRuns/{run_id}").json()["state"]
                      in ("success", "failed"), 400), "the run did not end"
    assert client.get(f"/api/v2/dags/{DAG}/dagRuns/{run_id}").json()["state"] == "success"

    browser.get(f"{server.url}/dags/{DAG}/runs/{run_id}/tasks/run_step/mapped")
    labels = ("cores=1", "cores=2", "cores=3")
    wait.until(lambda driver: all(label in driver.find_element(By.TAG_NAME, "body").text for label in labels))
    browser.save_screenshot(str(ARTIFACTS / "airflow-mapped-tasks.png"))

    browser.get(f"{server.url}/plugin/weak-scaling")
    frame = wait.until(ready.presence_of_element_located((By.TAG_NAME, "iframe")))
    browser.switch_to.frame(frame)
    wait.until(ready.presence_of_element_located((By.LINK_TEXT, run_id)))
    browser.find_element(By.XPATH, f"//tr[td/a[text()='{run_id}']]//a[text()='report']").click()
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "figure.heatmap svg")))
    assert run_id in browser.execute_script("return document.title")
    assert "tasks.sequential_chain" in browser.page_source and "1, 2, 3 cores in 3 step(s)" in browser.page_source
    browser.switch_to.default_content()
    browser.save_screenshot(str(ARTIFACTS / "airflow-weak-scaling-report.png"))
    assert console_errors(browser) == []


def test_a_regression_is_accepted_with_the_run_pages_button_by_an_editor_only(server, finished_run, browser):
    """The button of the run page posts `daskweak accept`'s record. The verdict is stored as the nightly check
    stores one (the nightly DAG's own red night is tested in test_airflow.py); under test here are the page,
    the button, and who may press it."""
    from datetime import UTC, datetime

    from selenium.webdriver.common.by import By

    run_id, _ = finished_run
    url = f"sqlite:///{server.home.env_file.parent / 'results' / 'daskweak.sqlite'}"
    with ResultStore(url) as store:
        store.save_verdict({"run_id": run_id, "created_at": datetime.now(UTC), "status": "regression",
                            "baseline": [], "markdown": "", "html": "<p>regression</p>",
                            "comparisons": [{"suite": "tasks", "operation": "sequential_chain", "cores_requested": 2,
                                             "verdict": "regression"}]})
    page = server.client.get(f"/daskweak/runs/{run_id}").text
    assert "Accept tasks.sequential_chain as the new normal" in page
    action = "/daskweak/runs/" + re.search(r"<form method='post' action='([^']+)'", page).group(1)
    assert httpx.post(f"{server.url}{action}", timeout=10).status_code == 401
    viewer = httpx.post(f"{server.url}/auth/token", json={"username": "viewer", "password": "viewer-password"},
                        timeout=10).json()["access_token"]
    refused = httpx.post(f"{server.url}{action}", headers={"Authorization": f"Bearer {viewer}"}, timeout=10)
    assert refused.status_code == 403
    with ResultStore(url) as store:
        assert store.acceptances().empty

    token = server.client.headers["Authorization"].removeprefix("Bearer ")
    browser.get(f"{server.url}/api/v2/version")
    browser.delete_all_cookies()
    browser.add_cookie({"name": "_token", "value": token, "path": "/"})
    browser.get(f"{server.url}/daskweak/runs/{run_id}")
    browser.find_element(By.CSS_SELECTOR, "button.accept").click()
    assert wait_until(lambda: "Accepted as the new normal" in browser.page_source, 30)
    assert "tasks.sequential_chain (accepted on the Airflow page by admin)" in browser.page_source
    assert console_errors(browser) == []
    with ResultStore(url) as store:
        [row] = store.acceptances().to_dict("records")
    assert (row["run_id"], row["suite"], row["operation"]) == (run_id, "tasks", "sequential_chain")
