"""Airflow 3 plugin: a "Weak scaling" page in the navigation, over daskweak's results tables: the runs, each
run's report, and the trends over nights — the same renderers as `daskweak report` and `daskweak publish`.

Access is deliberate: every route requires a valid Airflow token (the UI's session cookie or an
`Authorization: Bearer` header), checked by Airflow's own `get_user`; Airflow does not protect plugin
apps by default. Accepting a regression (the run page's button, a POST) changes what the nightly DAG
judges, so it also needs the right to edit the nightly DAG's runs, asked of Airflow's auth manager; the
session cookie is SameSite=Lax, so another site cannot make a browser post it.
"""

from __future__ import annotations

from typing import ClassVar
from urllib.parse import quote

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.core_api.security import GetUserDep, get_user, requires_access_dag
from airflow.plugins_manager import AirflowPlugin
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse, RedirectResponse

from daskweak import orchestration
from daskweak.analysis import pages
from daskweak.store import ResultStore

app = FastAPI(title="daskweak", dependencies=[Depends(get_user)])
NIGHTLY = "dask_weak_scaling_nightly"


def plugin_store() -> ResultStore:
    conn_id = orchestration.parse_time_settings().results_conn_id
    if not conn_id:
        return orchestration.results_store()
    from airflow.models.connection import Connection

    return orchestration.results_store(orchestration.connection_url(Connection.get_connection_from_secrets(conn_id)))


@app.get("/", response_class=HTMLResponse)
def runs() -> str:
    with plugin_store() as store:
        return pages.runs_page(store)


@app.get("/runs/{run_id}", response_class=HTMLResponse)
def run(run_id: str) -> str:
    with plugin_store() as store:
        page = pages.run_page(store, run_id, accept=True)
    if page is None:
        raise HTTPException(status_code=404, detail=f"no run {run_id!r}")
    return page


@app.post("/runs/{run_id}/accept", dependencies=[Depends(requires_access_dag("PUT", DagAccessEntity.RUN,
                                                                             param_dag_id=NIGHTLY))])
def accept(run_id: str, operation: str, user: GetUserDep) -> RedirectResponse:
    """What `daskweak accept RUN_ID --operation SUITE.OP` does, from the run page's button."""
    from daskweak.analysis.regression import accept as accept_run
    from daskweak.errors import UnknownRun

    with plugin_store() as store:
        try:
            accept_run(store, run_id, operation, f"accepted on the Airflow page by {user.get_name()}")
        except UnknownRun:
            raise HTTPException(status_code=404, detail=f"no run {run_id!r}") from None
    return RedirectResponse(f"../{quote(run_id, safe='')}", status_code=303)


@app.get("/runs/{run_id}/report", response_class=HTMLResponse)
def run_report(run_id: str) -> str:
    from daskweak.analysis.report import run_report as build
    from daskweak.errors import DaskweakError

    with plugin_store() as store:
        try:
            return build(store, run_id).html
        except DaskweakError as exc:
            raise HTTPException(status_code=404, detail=str(exc)) from None


@app.get("/trends", response_class=HTMLResponse)
def trends() -> str:
    """The trend of the latest run's configuration; links lead to the others' (`/trends/<fingerprint>`)."""
    from daskweak.analysis.trend import trend_page

    with plugin_store() as store:
        return trend_page(store, link=lambda fp: f"trends/{quote(fp, safe='')}", home="./")


@app.get("/trends/{fingerprint}", response_class=HTMLResponse)
def trends_of(fingerprint: str) -> str:
    from daskweak.analysis.trend import trend_page

    with plugin_store() as store:
        return trend_page(store, fingerprint, link=lambda fp: quote(fp, safe=""), home="../")


class DaskweakPlugin(AirflowPlugin):
    name = "daskweak"
    fastapi_apps: ClassVar[list[dict]] = [{"app": app, "url_prefix": "/daskweak", "name": "Weak scaling"}]
    external_views: ClassVar[list[dict]] = [{"name": "Weak scaling", "href": "/daskweak/", "destination": "nav",
                       "category": "browse", "url_route": "weak-scaling"}]
