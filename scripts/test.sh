#!/usr/bin/env bash
# README command 2 (and .ci/run): install the locked environment, check the code (ruff lint and
# format, mypy: zero findings), then run the whole test suite (~26 minutes on 2 cores; it starts
# its own Airflow deployments on PostgreSQL 127.0.0.1:5432 and Redis 127.0.0.1:6379).
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_env
cd "$RPJ_HOME"
ruff check .
ruff format --check .
mypy
exec python -m pytest -q --durations=15 "$@"
