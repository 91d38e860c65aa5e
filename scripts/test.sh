#!/usr/bin/env bash
# README command 2 (and .ci/run): install the locked environment, check the code (ruff lint and
# format, mypy: zero findings), then run the whole test suite (~20-25 minutes on 2 cores; it starts
# its own Airflow deployments on PostgreSQL 127.0.0.1:5432 and Redis 127.0.0.1:6379).
set -euo pipefail
source "$(dirname "$0")/env.sh"

# The report tests (tests/report) render pages in headless Chromium: Debian's chromium package.
ensure_chromium() {
    local chromium="${RPJ_CHROMIUM:-/usr/bin/chromium}"
    [ -x "$chromium" ] && return 0
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's chromium package (for the report tests)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get -qq update >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get -qq install -y --no-install-recommends chromium >/dev/null
        [ -x "$chromium" ] && return 0
    fi
    echo "test.sh: $chromium not found: install Debian's chromium package (apt-get install chromium, as root)," >&2
    echo "         or set RPJ_CHROMIUM to a Chromium binary; the report tests render pages with it" >&2
    exit 2
}

ensure_chromium
ensure_env
cd "$RPJ_HOME"
ruff check .
ruff format --check .
mypy
exec python -m pytest -q --durations=15 "$@"
