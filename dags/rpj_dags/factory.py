"""Builds rpj's DAGs from the snapshot registry (``config/snapshots.yaml``).

Parse cost matters twice: the dag-processor parses this folder continuously, and every task
start parses it again to find its one DAG.  So nothing heavy is imported at parse time (the engine
is imported inside tasks), and when Airflow says which DAG it needs (a task start: the parsing
context's ``dag_id``) only that DAG is built.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from airflow.sdk import DAG, get_parsing_context

from rpj_tasks.core.config import ConfigError, load_registry

MONTHLY, ARTIFACTS, DEDUP = "rpv2_monthly", "rpv2_prep_artifacts", "rpv2_dedup"
FILTER = "rpv2_filter"


def build_all(registry_path: str | None = None, only: str | None = None) -> dict[str, DAG]:
    """Every rpj DAG by id; with ``only`` (default: the parsing context's ``dag_id``) just that one."""
    from rpj_dags.artifacts import build_artifacts_dag
    from rpj_dags.dedup import build_dedup_dag
    from rpj_dags.filter import build_filter_dag
    from rpj_dags.monthly import build_monthly_dag
    from rpj_dags.snapshot import build_snapshot_dag

    try:
        registry = load_registry(registry_path)
    except ConfigError as exc:
        raise ConfigError(f"snapshot registry: {exc}") from exc
    only = only or get_parsing_context().dag_id
    builders: dict[str, Callable[[], DAG]] = {cfg.dag_id: partial(build_snapshot_dag, cfg) for cfg in registry.values()}
    builders[MONTHLY] = partial(build_monthly_dag, registry)
    builders[ARTIFACTS] = partial(build_artifacts_dag, registry)
    builders[DEDUP] = partial(build_dedup_dag, registry)
    builders[FILTER] = partial(build_filter_dag, registry)
    if only in builders:
        return {only: builders[only]()}
    return {dag_id: build() for dag_id, build in builders.items()}
