# Sourced by the other scripts: the project's Python environment and a local Airflow home.
# Override any AIRFLOW__* / RPJ_* variable in your shell before running them.
RPJ_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export RPJ_HOME
UV_VERSION=0.13.9

# uv, pinned: the one on PATH if it is this version, else a private copy in .tools/uv (a venv, so it
# also works where pip refuses to install into the system Python, PEP 668).
find_uv() {
  if command -v uv >/dev/null 2>&1 && [ "$(uv --version | cut -d' ' -f2)" = "$UV_VERSION" ]; then
    command -v uv; return
  fi
  local tools="$RPJ_HOME/.tools/uv"
  if [ ! -x "$tools/bin/uv" ] || [ "$("$tools/bin/uv" --version | cut -d' ' -f2)" != "$UV_VERSION" ]; then
    local py; py="$(command -v python3.11 || command -v python3)" || { echo "rpj: Python 3.11 is required" >&2; return 1; }
    "$py" -m venv "$tools" >&2 || { echo "rpj: cannot create a venv for uv with $py (Debian: apt-get install python3-venv), or install uv $UV_VERSION on PATH" >&2; return 1; }
    "$tools/bin/python" -m pip install --quiet "uv==$UV_VERSION" >&2 || { echo "rpj: could not install uv $UV_VERSION from the package registry" >&2; return 1; }
  fi
  echo "$tools/bin/uv"
}

ensure_env() {
  local uv
  uv="$(find_uv)" || return 1
  # Exactly the locked versions (uv.lock); builds kenlm from source the first time (~1-2 min).
  # Bytecode is compiled at install: PYTHONDONTWRITEBYTECODE=1 machines would otherwise recompile
  # rpj and Airflow in every Airflow task process.  A subshell: the caller's directory is kept.
  (cd "$RPJ_HOME" && "$uv" sync --frozen --python 3.11 --compile-bytecode --quiet \
    && .venv/bin/python -m compileall -q rpj_tasks dags plugins deploy >/dev/null) || return 1
  export PATH="$RPJ_HOME/.venv/bin:$PATH"
  # Callers write logs there before Airflow creates it (scripts/demo.sh on a fresh clone).
  mkdir -p "$AIRFLOW_HOME"
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
