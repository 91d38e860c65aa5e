# Sourced by the other scripts: the project's Python environment and a local Airflow home.
# Override any AIRFLOW__* / RPJ_* variable in your shell before running them.
RPJ_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RPJ_HOME
UV_VERSION=0.13.9

ensure_env() {
  cd "$RPJ_HOME"
  if ! command -v uv >/dev/null 2>&1 || [ "$(uv --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    python3.11 -m pip install --quiet "uv==$UV_VERSION" 2>/dev/null || python3 -m pip install --quiet "uv==$UV_VERSION"
  fi
  # Exactly the locked versions (uv.lock); builds kenlm from source the first time (~1-2 min).
  # Bytecode is compiled at install: PYTHONDONTWRITEBYTECODE=1 machines would otherwise recompile
  # rpj and Airflow in every Airflow task process.
  uv sync --frozen --python 3.11 --compile-bytecode --quiet
  # rpj itself is an editable install (not in site-packages): compile its sources and the DAGs too.
  "$RPJ_HOME/.venv/bin/python" -m compileall -q rpj_tasks dags plugins >/dev/null
  export PATH="$RPJ_HOME/.venv/bin:$PATH"
}

export AIRFLOW_HOME="${AIRFLOW_HOME:-$RPJ_HOME/airflow_home}"
export AIRFLOW__CORE__DAGS_FOLDER="${AIRFLOW__CORE__DAGS_FOLDER:-$RPJ_HOME/dags}"
export AIRFLOW__CORE__PLUGINS_FOLDER="${AIRFLOW__CORE__PLUGINS_FOLDER:-$RPJ_HOME/plugins}"
export AIRFLOW__CORE__LOAD_EXAMPLES="${AIRFLOW__CORE__LOAD_EXAMPLES:-False}"
export AIRFLOW__CORE__PARALLELISM="${AIRFLOW__CORE__PARALLELISM:-4}"
export AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG="${AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG:-4}"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN:-sqlite:///$AIRFLOW_HOME/airflow.db}"
export AIRFLOW__LOGGING__LOGGING_LEVEL="${AIRFLOW__LOGGING__LOGGING_LEVEL:-INFO}"
export RPJ_STORAGE_ROOT="${RPJ_STORAGE_ROOT:-file://$RPJ_HOME/data}"
export RPJ_CACHE_DIR="${RPJ_CACHE_DIR:-$RPJ_HOME/data/.cache}"
