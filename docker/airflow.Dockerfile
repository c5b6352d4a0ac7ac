# Airflow with daskweak, its DAGs and plugin, FROM the official image of the locked Airflow version.
# Every added package comes at its requirements.lock version: the lock is the constraint, as Airflow's own
# constraint files are for a plain install, and it pins every package distributed compares between client,
# scheduler and workers (lz4, msgpack, cloudpickle, …): the ones the Airflow image already has are replaced
# by the lock's where they differ. Wheels only.
#
#   docker build -f docker/airflow.Dockerfile -t REGISTRY/daskweak-airflow:0.1.0 .   (from the project root)
#
# WHEEL_BASE_IMAGE: any image with the client's Python minor version (see docker/Dockerfile's BASE_IMAGE),
# used only to build daskweak's wheel.
ARG WHEEL_BASE_IMAGE=python:3.11-slim-bookworm
FROM ${WHEEL_BASE_IMAGE} AS wheel
COPY pyproject.toml README.md /src/
COPY daskweak /src/daskweak
RUN python3 -m venv /opt/uv && /opt/uv/bin/pip install --no-cache-dir -q uv==0.13.9 \
 && /opt/uv/bin/uv build --wheel -o /wheels /src

FROM apache/airflow:3.3.2-python3.11
COPY --from=wheel /wheels /tmp/wheels
COPY requirements.lock /tmp/requirements.lock
RUN pip install --no-cache-dir --only-binary :all: --constraint /tmp/requirements.lock \
        "$(ls /tmp/wheels/daskweak-*.whl)[airflow,slurm]"
COPY --chown=airflow:0 dags /opt/airflow/dags
COPY --chown=airflow:0 plugins /opt/airflow/plugins
