# Airflow with daskweak, its DAGs and plugin, FROM the official image of the locked Airflow version.
# Every added package comes at its requirements.lock version: the lock is the constraint, as Airflow's own
# constraint files are for a plain install. Wheels only.
#
#   docker build -f docker/airflow.Dockerfile -t REGISTRY/daskweak-airflow:0.1.0 .   (from the project root)
FROM python:3.11-slim-bookworm AS wheel
RUN pip install --no-cache-dir uv==0.13.9
COPY pyproject.toml README.md /src/
COPY daskweak /src/daskweak
RUN uv build --wheel -o /wheels /src

FROM apache/airflow:3.3.2-python3.11
COPY --from=wheel /wheels /tmp/wheels
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --only-binary :all: --constraint /tmp/requirements.lock \
        "$(ls /tmp/wheels/daskweak-*.whl)[airflow,slurm]"
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
