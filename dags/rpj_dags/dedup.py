"""``rpv2_dedup``: exact dedup of the release (steps 2 and 3 of ``rpj_tasks.dedup.exact``).

    plan -> partition (mapped: one task per digest partition, or per range of partitions above
            MAX_MAPPED_UNITS, queue ``dedup_queue``)
         -> write (mapped: one task per snapshot of the set) -> republish
    plan -> members (the set, as the write tasks' arguments)

Every snapshot DAG indexes its snapshot (``dedup_index``), then triggers a run of this DAG for it
and waits (``exact_dedup``, deferred in the triggerer).  The set deduplicated together is the
release: every release-scope registry snapshot under the same storage root with an index (or the
snapshot alone, ``dedup_scope: snapshot``), so a new snapshot rewrites the older snapshots' files
whose duplicates change, in the run its snapshot waits for.  ``max_active_runs=1``: two runs would
rewrite the same state; runs triggered meanwhile queue, and each recomputes over the set as it is
then (finished partitions and files are skipped).  ``plan`` logs the memory every partition task
will need and fails, naming the setting to change, over ``dedup_memory_budget``.  ``republish``
validates and publishes again every published snapshot whose duplicates files the run rewrote.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from rpj_dags.common import DEFAULT_ARGS, MAX_MAPPED_UNITS, START_DATE, whole
from rpj_dags.runtime import configure_storage, engine_task
from rpj_tasks.core.config import ConfigError, SnapshotConfig

log = logging.getLogger("rpj.airflow")

DAG_ID = "rpv2_dedup"
DIALECT = "http://json-schema.org/draft-07/schema#"
TASK_ORDER = ("plan", "partition", "members", "write", "republish")


def dedup_run_id(snapshot: str, run_id: str) -> str:
    """The ``rpv2_dedup`` run a snapshot run triggers: one per snapshot run, reused by retries."""
    return f"{snapshot}__{run_id}"


def build_dedup_dag(registry: dict[str, SnapshotConfig]) -> DAG:
    release = [c for c in registry.values() if c.dedup_scope == "release"]
    queue = (release or list(registry.values()))[0].dedup_queue
    params = {
        "snapshot": Param(
            None,
            type=["null", "string"],
            pattern=whole("[0-9]{4}-[0-9]{2}"),
            description="The snapshot whose set is deduplicated (its storage root and scope); empty = the newest "
            "indexed release snapshot of the registry.",
        ),
        "force": Param(False, type="boolean", description="Redo every partition and file, even finished ones."),
    }
    for param in params.values():
        param.schema["$schema"] = DIALECT

    def run_config() -> tuple[dict[str, Any], SnapshotConfig]:
        from rpj_tasks.dedup import exact

        p = get_current_context()["params"]
        snapshot = p.get("snapshot")
        if snapshot is None:
            indexed = {c.storage_root: set(exact.indexed_snapshots(c.storage_root)) for c in release}
            found = sorted((c.id for c in release if c.id in indexed[c.storage_root]), reverse=True)
            if not found:
                raise ConfigError(
                    "rpv2_dedup: no release snapshot has an index yet; run a snapshot DAG (its dedup_index task) first"
                )
            snapshot = found[0]
        if snapshot not in registry:
            raise ConfigError(f"rpv2_dedup: snapshot {snapshot} is not in the registry")
        cfg = registry[snapshot]
        configure_storage(cfg.storage_root)
        return p, cfg

    @dag(
        dag_id=DAG_ID,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        default_args=DEFAULT_ARGS,
        params=params,
        tags=["rpv2", "dedup"],
        doc_md=__doc__,
        render_template_as_native_obj=True,
    )
    def dedup_dag() -> None:
        @task(execution_timeout=dt.timedelta(minutes=30))
        @engine_task
        def plan() -> list[dict[str, Any]]:
            """The set, its partitions and their memory (refused over the budget): one task's
            arguments per partition."""
            from rpj_tasks.dedup import stage

            _, cfg = run_config()
            out = stage.plan(cfg, registry)
            parts = out["partitions"]
            per_task = -(-len(parts) // MAX_MAPPED_UNITS)  # at most MAX_MAPPED_UNITS tasks (max_map_length)
            return [{"snapshots": out["snapshots"], "ps": parts[i : i + per_task]} for i in range(0, len(parts), per_task)]

        @task(queue=queue, execution_timeout=dt.timedelta(hours=2))
        @engine_task
        def partition(snapshots: list[str], ps: list[int]) -> list[dict[str, Any]]:
            """Step 2 for digest partitions ``ps`` (one each, unless there are more than
            MAX_MAPPED_UNITS partitions)."""
            from rpj_tasks.dedup import stage

            params, cfg = run_config()
            return [stage.partition(cfg, snapshots, p, force=params["force"]) for p in ps]

        @task(execution_timeout=dt.timedelta(minutes=10))
        def members(planned: Any) -> list[dict[str, Any]]:  # the plan's XComArg when the DAG is built
            """One write task's arguments per snapshot of the planned set."""
            snapshots = planned[0]["snapshots"]
            return [{"snapshots": snapshots, "snapshot": s} for s in snapshots]

        @task(execution_timeout=dt.timedelta(hours=2))
        @engine_task
        def write(snapshots: list[str], snapshot: str) -> dict[str, Any]:
            from rpj_tasks.dedup import stage

            params, cfg = run_config()
            return stage.write(cfg, snapshots, snapshot, force=params["force"])

        @task(execution_timeout=dt.timedelta(hours=4))
        @engine_task
        def republish(written: Any) -> None:
            """Every published snapshot of the set whose duplicates files this run rewrote (a newer
            snapshot moved first occurrences into itself) is validated and published again, so that
            its listings and manifest describe its current files.  The triggering snapshot is left to
            its own run, which validates and publishes after this one."""
            from rpj_tasks.publish.stage import republish_if_published

            params, _ = run_config()
            for r in list(written):
                state = "unchanged" if r["skipped"] else f"{r['written']} files written"
                log.info("%s: %d duplicates (%s)", r["snapshot"], r["duplicates"], state)
                cfg = registry.get(r["snapshot"])
                if r["skipped"] or not r["written"] or r["snapshot"] == params.get("snapshot") or cfg is None:
                    continue
                configure_storage(cfg.storage_root)
                republish_if_published(cfg)

        planned = plan()
        merged = partition.expand_kwargs(planned)
        files = write.expand_kwargs(members(planned))
        merged >> files
        republish(files)

    return dedup_dag()
