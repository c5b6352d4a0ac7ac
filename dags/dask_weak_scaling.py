"""Manual weak-scaling benchmark: trigger it from the UI form, the REST API or `airflow dags test`."""

from daskweak.dagfactory import build_dag

dag = build_dag("dask_weak_scaling", nightly=False)
