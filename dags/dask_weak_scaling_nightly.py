"""Nightly weak-scaling benchmark (an Airflow DAG) on the `.env` configuration, on NIGHTLY_SCHEDULE (02:00).

Airflow's safe-mode discovery only parses files that mention both "airflow" and "dag", as this one does.
"""

from daskweak.dagfactory import build_dag

dag = build_dag("dask_weak_scaling_nightly", nightly=True)
