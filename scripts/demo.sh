#!/usr/bin/env bash
# README command 1: set everything up and run the offline sample snapshot through a real Airflow.
#   - installs the locked Python environment (.venv, via uv, bytecode compiled),
#   - starts a one-machine Airflow deployment with embedded defaults (scripts/rpj-deploy up:
#     SQLite metadata DB in airflow_home/, LocalExecutor, api-server on 127.0.0.1:${RPJ_DEPLOY_PORT:-8080},
#     scheduler, dag-processor, triggerer; the download pool is created from the registry),
#   - triggers rpv2_sample through the REST API and waits for it: the DAG generates the offline
#     sample Common Crawl mirror and models, then download -> hashes -> mine (documents/), builds
#     the sample's quality-signal artifacts and annotates every shard (quality_signals/, minhash/),
#     then exact dedup (duplicates/, via an rpv2_dedup run) and fuzzy clusters (clusters/),
#     then token counts, the Great Expectations gates, publishing (listings/) and the snapshot report,
#   - prints what was read, kept and annotated, where the outputs are, and how to open the web UI
#     and the snapshot report.
# The deployment keeps running so that the run can be seen in the UI: `scripts/rpj-deploy down` stops it.
set -euo pipefail
source "$(dirname "$0")/env.sh"
ensure_env
export RPJ_DEPLOY_DB="${RPJ_DEPLOY_DB:-sqlite}" RPJ_DEPLOY_AUTH="${RPJ_DEPLOY_AUTH:-all-admins}"
export RPJ_DEPLOY_PORT="${RPJ_DEPLOY_PORT:-8080}"
mkdir -p "$AIRFLOW_HOME"
"$RPJ_HOME/scripts/rpj-deploy" up >"$AIRFLOW_HOME/demo-up.log" 2>&1 || { cat "$AIRFLOW_HOME/demo-up.log"; exit 1; }
echo "Airflow is up (scheduler, dag-processor, triggerer, api-server; LocalExecutor, SQLite): running rpv2_sample ..."
python "$RPJ_HOME/deploy/trigger.py" --url "http://127.0.0.1:$RPJ_DEPLOY_PORT" rpv2_sample "$@"
echo
rpj summary --snapshot 2000-01
cat <<MSG

Web UI: http://127.0.0.1:$RPJ_DEPLOY_PORT/dags/rpv2_sample (no login needed in this local demo): the run,
its tasks and their logs; the run's "Snapshot report" tab, or directly
http://127.0.0.1:$RPJ_DEPLOY_PORT/rpj/reports/files/2000-01/index.html (the file: ${RPJ_STORAGE_ROOT#file://}/reports/2000-01/index.html).
Training data from the published sample: rpj filter --snapshot 2000-01 --recipe gopher (or the rpv2_filter DAG).
Stop everything with: scripts/rpj-deploy down
MSG
