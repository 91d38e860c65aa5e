# rpj image: the locked Python environment (uv.lock, Airflow 3 with the Celery and Amazon providers,
# PostgreSQL drivers) plus the repository (dags/, plugins/, config/, deploy/).  Used by every Airflow
# service of docker-compose.yaml; runs as the non-root user airflow (uid 50000, gid 0).
FROM python:3.11.7-slim-bookworm

# kenlm and rpj's C extension are compiled at install.
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
RUN pip install --no-cache-dir uv==0.13.9

WORKDIR /opt/rpj
ENV UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never
# Dependencies first (cached while only code changes), then the project itself.
COPY pyproject.toml uv.lock README.md ./
COPY rpj_tasks ./rpj_tasks
# Bytecode compiled now: task processes would otherwise recompile Airflow and rpj every time.
RUN uv sync --frozen --no-dev --compile-bytecode --python /usr/local/bin/python3.11
COPY . .
RUN /opt/rpj/.venv/bin/python -m compileall -q rpj_tasks dags plugins deploy

# Non-root runtime user; AIRFLOW_HOME and the data mount point are writable by it (a new named
# volume mounted there starts with this ownership).
RUN useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home --shell /bin/bash airflow \
    && mkdir -p /opt/airflow/config /opt/airflow/logs /opt/airflow/cache /data \
    && chown -R 50000:0 /opt/airflow /data && chmod -R g+rwX /opt/airflow /data
USER 50000

ENV PATH=/opt/rpj/.venv/bin:$PATH \
    RPJ_HOME=/opt/rpj \
    RPJ_CACHE_DIR=/opt/airflow/cache \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/rpj/dags \
    AIRFLOW__CORE__PLUGINS_FOLDER=/opt/rpj/plugins \
    AIRFLOW__CORE__LOAD_EXAMPLES=False
WORKDIR /opt/airflow
EXPOSE 8080
CMD ["airflow", "version"]
