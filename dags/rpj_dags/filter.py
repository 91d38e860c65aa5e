"""``rpv2_filter``: a filtering recipe over a published snapshot (``rpj_tasks.filter``; ``rpj filter``).

    plan (with ``dedup: both``: the snapshot-wide keep decision, once per release version)
         -> count (mapped: one task per group of shards; the first pass, only with a token budget or a dry run)
         -> allot (each shard's token allowance; a dry run logs what each rule would drop and stops here)
         -> filter (mapped: one task per group of shards, commit protocol) -> finalize (manifest.json)

A group is one shard unless the release has more than MAX_MAPPED_UNITS (1000) shards: then the
shards are split, in order, into at most that many groups (Airflow's max_map_length is 1024; an
RPv2 snapshot has 5000 shards).

Params: ``snapshot`` (must be in the registry and published under its storage root), ``recipe`` (a
named set of ``config/recipes/`` or a YAML file within that folder), ``dry_run``, ``format``,
``force``.  Outputs: ``filtered/{recipe}/{snapshot}/``, the same bytes as ``rpj filter``.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from rpj_dags.common import DEFAULT_ARGS, START_DATE, grouped, whole
from rpj_dags.runtime import configure_storage, engine_task
from rpj_tasks.core.config import ConfigError, SnapshotConfig

log = logging.getLogger("rpj.airflow")

DAG_ID = "rpv2_filter"
DIALECT = "http://json-schema.org/draft-07/schema#"


def build_filter_dag(registry: dict[str, SnapshotConfig]) -> DAG:
    params = {
        "snapshot": Param(
            None,
            type=["null", "string"],
            pattern=whole("[0-9]{4}-[0-9]{2}"),
            description="The published snapshot to filter (a registry snapshot, YYYY-WW).",
        ),
        "recipe": Param(
            "gopher",
            type="string",
            pattern=whole("[A-Za-z0-9][A-Za-z0-9._/-]{0,200}"),
            description="A named set (gopher, c4, refinedweb, classifier, perplexity) or a recipe YAML file within config/recipes/.",
        ),
        "dry_run": Param(False, type="boolean", description="Only count what each rule would drop; write nothing."),
        "format": Param("parquet", type="string", enum=["parquet", "jsonl", "both"], description="Output files."),
        "force": Param(False, type="boolean", description="Filter finished shards again."),
    }
    for param in params.values():
        param.schema["$schema"] = DIALECT

    def run_config() -> tuple[dict[str, Any], SnapshotConfig, Any]:
        from rpj_tasks.filter.recipe import RECIPES_DIR, load_recipe

        p = get_current_context()["params"]
        snapshot = p["snapshot"]
        if snapshot is None:
            raise ConfigError("rpv2_filter: the snapshot Param is required (a published registry snapshot, YYYY-WW)")
        if snapshot not in registry:
            raise ConfigError(f"rpv2_filter: snapshot {snapshot!r} is not in the registry")
        cfg = registry[snapshot]
        configure_storage(cfg.storage_root)
        return p, cfg, load_recipe(p["recipe"], base=RECIPES_DIR)

    def formats(p: dict[str, Any]) -> tuple[str, ...]:
        return ("parquet", "jsonl") if p["format"] == "both" else (p["format"],)

    @dag(
        dag_id=DAG_ID,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        is_paused_upon_creation=False,
        default_args=DEFAULT_ARGS,
        params=params,
        tags=["rpv2", "filter"],
        doc_md=__doc__,
        render_template_as_native_obj=True,
    )
    def filter_dag() -> None:
        @task(execution_timeout=dt.timedelta(hours=2))
        @engine_task
        def plan() -> list[dict[str, Any]]:
            """The published release's shards with selected files: one task's arguments each.  With
            ``dedup: both``, the keep decision is committed here once (reused when the release did
            not change; also for a dry run, as a staging file), so each mapped task reads only its shard's file."""
            from rpj_tasks.filter import decide_fuzzy_after_exact, open_release, shards_of

            p, cfg, recipe = run_config()
            release = open_release(cfg.storage_root, cfg.id, recipe)
            shards = shards_of(release)
            if recipe.dedup == "both":
                decide_fuzzy_after_exact(release)
            log.info("%s: recipe %s (%s): %d shards; %s", cfg.id, recipe.name, recipe.hash[:16], len(shards), recipe.to_dict())
            return [{"shards": group} for group in grouped(shards)]

        @task(execution_timeout=dt.timedelta(hours=2))
        @engine_task
        def count(shards: list[int]) -> list[dict[str, Any]]:
            """The first pass of a group of shards (kept tokens without a budget; the dry run's counts)."""
            from rpj_tasks.filter import count_shard, open_release

            p, cfg, recipe = run_config()
            if not p["dry_run"] and recipe.token_budget is None:
                return [{"shard": shard, "counts": None} for shard in shards]
            release = open_release(cfg.storage_root, cfg.id, recipe)
            return [count_shard(release, recipe, shard) for shard in shards]

        @task(execution_timeout=dt.timedelta(minutes=10))
        @engine_task
        def allot(counted: Any) -> list[dict[str, Any]]:
            """Each shard's token allowance; a dry run logs the table and maps no filter task."""
            from rpj_tasks.filter import allot as allot_shards
            from rpj_tasks.filter import empty_counts, format_counts, merge_counts

            p, cfg, recipe = run_config()
            counted = sorted((c for group in counted for c in group), key=lambda c: c["shard"])
            if p["dry_run"]:
                total = empty_counts(recipe)
                for c in counted:
                    merge_counts(total, c["counts"])
                log.info("%s: recipe %s, dry run (nothing written):\n%s", cfg.id, recipe.name, format_counts(total, recipe))
                return []
            if recipe.token_budget is None:
                units = [{"shard": c["shard"], "allowance": None} for c in counted]
            else:
                units = [{"shard": s, "allowance": a} for s, a in sorted(allot_shards(recipe, counted).items())]
            return [{"units": group} for group in grouped(units)]

        @task(execution_timeout=dt.timedelta(hours=2))
        @engine_task
        def filter_shard(units: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """Filter a group of shards (``units``: ``{"shard", "allowance"}`` each), one after the other."""
            from rpj_tasks.filter import filter_shard as run_shard
            from rpj_tasks.filter import open_release

            p, cfg, recipe = run_config()
            release = open_release(cfg.storage_root, cfg.id, recipe)
            out = []
            for unit in units:
                rec = run_shard(release, recipe, unit["shard"], allowance=unit["allowance"], formats=formats(p), force=p["force"])
                out.append({"shard": unit["shard"], "skipped": rec["skipped"], "kept": rec["counts"]["kept"]})
            return out

        @task(execution_timeout=dt.timedelta(minutes=30))
        @engine_task
        def finalize(allotted: Any, filtered: Any) -> dict[str, Any]:
            from rpj_tasks.filter import finalize as write_manifest
            from rpj_tasks.filter import format_counts, open_release

            p, cfg, recipe = run_config()
            list(filtered)  # every shard task finished
            allowances = {u["shard"]: u["allowance"] for group in allotted for u in group["units"]}
            done = write_manifest(
                open_release(cfg.storage_root, cfg.id, recipe),
                recipe,
                sorted(allowances),
                allowances,
                formats=formats(p),
                force=p["force"],
            )
            log.info(
                "%s: recipe %s:\n%s", cfg.id, recipe.name, format_counts(done["manifest"]["counts"], recipe, recipe.token_budget)
            )
            return {"manifest_skipped": done["skipped"], "files": len(done["manifest"]["files"])}

        planned = plan()
        counted = count.expand_kwargs(planned)
        allotted = allot(counted)
        filtered = filter_shard.expand_kwargs(allotted)
        finalize(allotted, filtered)

    return filter_dag()
