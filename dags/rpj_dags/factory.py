"""DAG factory: one DAG per registry snapshot, the monthly DAG, and the artifacts DAG.

Tasks are thin: they validate parameters, call one engine function from ``rpj_tasks`` and
return small JSON-able results.  Everything heavy is in the engine, which has no Airflow import.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, Param, TriggerRule, dag, get_current_context, task, task_group

from rpj_dags.runtime import configure_storage, engine_logging
from rpj_tasks import ccnet, layout, plan, storage
from rpj_tasks.config import DSIR_HASH_MODES, ConfigError, SnapshotConfig, load_registry, snapshots_released_between, validate_languages

log = logging.getLogger("rpj.airflow")

START_DATE = dt.datetime(2014, 1, 1, tzinfo=dt.timezone.utc)
DEFAULT_ARGS = {"owner": "rpj", "retries": 2, "retry_delay": dt.timedelta(seconds=30), "retry_exponential_backoff": True}
MAX_MAPPED_UNITS = 1000  # stays below Airflow's default [core] max_map_length of 1024


def snapshot_params(cfg: SnapshotConfig) -> dict[str, Param]:
    return {
        "languages": Param(
            cfg.languages, type="array", items={"type": "string", "pattern": "^[a-z]{2,3}$"}, minItems=1,
            description="Languages to keep after LID (ISO codes); models must exist for each.",
        ),
        "num_shards": Param(
            cfg.num_shards, type="integer", minimum=1, maximum=100000,
            description="Number of shards the crawl's WET segments are split into (RPv2: 5000).",
        ),
        "shards": Param(
            [], type="array", items={"type": ["integer", "string"], "pattern": r"^\d{1,5}(-\d{1,5})?$"},
            description="Optional subset of shards, e.g. [0, 7, \"100-199\"]; empty = all shards.",
        ),
        "shard_limit": Param(
            None, type=["null", "integer"], minimum=1,
            description="Optional: process at most this many shards of the selection (the first ones).",
        ),
        "force": Param(False, type="boolean", description="Recompute shards that are already finished."),
        "annotate": Param(True, type="boolean", description="Compute quality signals and MinHash for the mined shards."),
        "annotate_tail": Param(
            False, type="boolean", description="Also annotate the tail bucket (the reference annotates head and middle only)."
        ),
        "dsir_hash_mode": Param(
            cfg.dsir_hash_mode, type="string", enum=list(DSIR_HASH_MODES),
            description="DSIR feature hash: cpython-seed42 (the reference's) or stable; must be the mode "
            "the signal artifacts were built with.",
        ),
    }


def resolve_config(base: SnapshotConfig, params: dict[str, Any]) -> SnapshotConfig:
    """The snapshot config with the run's params applied; raises ConfigError with a clear message."""
    return base.with_overrides(
        languages=validate_languages(params.get("languages") or base.languages),
        num_shards=params.get("num_shards") or base.num_shards,
        dsir_hash_mode=params.get("dsir_hash_mode") or base.dsir_hash_mode,
    )


def build_snapshot_dag(base: SnapshotConfig) -> DAG:
    doc = (
        f"RPv2 processing of Common Crawl `{base.crawl}` (snapshot `{base.id}`): "
        "plan -> per unit of shards [download -> hashes -> mine] -> signal artifacts -> per unit annotate -> report.\n\n"
        f"Outputs under `{base.storage_root}`: `documents/`, `quality_signals/`, `minhash/` for `{base.id}`; "
        f"per-shard stats in `stats/ccnet/{base.id}/` and `stats/annotate/{base.id}/`."
    )

    @dag(
        dag_id=base.dag_id,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        default_args=DEFAULT_ARGS,
        params=snapshot_params(base),
        tags=["rpv2", "ccnet", "sample" if base.sample else "snapshot"],
        doc_md=doc,
        render_template_as_native_obj=True,
    )
    def snapshot_dag() -> None:
        @task
        def plan_units() -> list[dict[str, Any]]:
            engine_logging()
            params = get_current_context()["params"]
            cfg = resolve_config(base, params)
            plan.parse_shards(params.get("shards"), cfg.num_shards)  # reject bad shard ids before any I/O
            configure_storage(cfg.storage_root, cfg.source_base)
            if cfg.sample:
                from rpj_tasks.sample_setup import ensure_sample

                ensure_sample(cfg)
            from rpj_tasks.download import list_segments

            segments = list_segments(cfg.source_base, cfg.crawl)
            units = plan.plan_units(
                cfg, segments, shards=params.get("shards"), limit=params.get("shard_limit"), max_units=MAX_MAPPED_UNITS
            )
            n_mine = sum(len(u["mine"]) for u in units)
            log.info("%s: %d segments, %d shards to mine in %d units", cfg.crawl, len(segments), n_mine, len(units))
            return units

        @task_group
        def process(unit: dict[str, Any]) -> None:
            @task(pool=base.download_pool, retries=3)
            def download(unit: dict[str, Any]) -> dict[str, Any]:
                from rpj_tasks.download import download_shard
                from rpj_tasks.stats import Stats

                engine_logging()
                cfg = resolve_config(base, get_current_context()["params"])
                configure_storage(cfg.storage_root, cfg.source_base)
                for shard in unit["hashes"]:
                    stats = Stats()
                    download_shard(cfg.source_base, unit["segments"][str(shard)], layout.staging_wet_root(cfg.storage_root), stats)
                    log.info("shard %04d downloaded: %s", shard, stats.summary())
                return unit

            @task
            def hashes(unit: dict[str, Any]) -> dict[str, Any]:
                engine_logging()
                params = get_current_context()["params"]
                cfg = resolve_config(base, params)
                configure_storage(cfg.storage_root)
                for shard in unit["hashes"]:
                    ccnet.compute_hashes(cfg, shard, unit["segments"][str(shard)], force=params["force"])
                return unit

            @task
            def mine(unit: dict[str, Any]) -> None:
                engine_logging()
                params = get_current_context()["params"]
                cfg = resolve_config(base, params)
                configure_storage(cfg.storage_root)
                for i, shard in enumerate(unit["mine"], 1):
                    ccnet.mine_shard(cfg, shard, unit["segments"][str(shard)], force=params["force"])
                    log.info("unit %d: %d/%d shards mined", unit["unit"], i, len(unit["mine"]))

            mine(hashes(download(unit)))

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def signal_artifacts() -> str | None:
            """The quality-signal artifacts for annotation (built here for the offline sample)."""
            engine_logging()
            params = get_current_context()["params"]
            if not params["annotate"]:
                return None
            cfg = resolve_config(base, params)
            configure_storage(cfg.storage_root)
            if cfg.sample:
                from rpj_tasks.sample_setup import ensure_signal_artifacts

                return ensure_signal_artifacts(cfg)
            url = layout.signal_artifacts_url(cfg.storage_root, cfg.signals_version)
            if not storage.exists(storage.join(url, "MANIFEST.json")):
                raise ConfigError(
                    f"no quality-signal artifacts at {url}: build them with the rpv2_prep_artifacts DAG "
                    f"(signals_source=build, signals_version={cfg.signals_version})"
                )
            return url

        @task
        def annotate(unit: dict[str, Any], artifacts_url: str | None) -> None:
            if artifacts_url is None:
                log.info("annotation disabled for this run")
                return
            from rpj_tasks.annotate import annotate_shard

            engine_logging()
            params = get_current_context()["params"]
            cfg = resolve_config(base, params)
            configure_storage(cfg.storage_root)
            for i, shard in enumerate(unit["mine"], 1):
                annotate_shard(cfg, shard, artifacts_url=artifacts_url, annotate_tail=params["annotate_tail"],
                               force=params["force"], hash_mode=cfg.dsir_hash_mode)
                log.info("unit %d: %d/%d shards annotated", unit["unit"], i, len(unit["mine"]))

        @task(trigger_rule=TriggerRule.ALL_DONE)
        def report(units: list[dict[str, Any]]) -> dict[str, Any]:
            engine_logging()
            params = get_current_context()["params"]
            cfg = resolve_config(base, params)
            configure_storage(cfg.storage_root)
            shards = [s for u in units for s in u["mine"]]
            summary = ccnet.summarize(cfg, shards)
            log.info("snapshot %s CCNet summary:\n%s", cfg.id, json.dumps(summary, indent=1, sort_keys=True))
            missing = {"ccnet": summary["missing_shards"]}
            if params["annotate"]:
                from rpj_tasks.layout import annotate_stats_url

                missing["annotate"] = [s for s in shards if not storage.exists(annotate_stats_url(cfg.storage_root, cfg.id, s))]
            failed = {stage: ids for stage, ids in missing.items() if ids}
            if failed:
                raise RuntimeError(
                    "shards that did not finish, by stage: "
                    + "; ".join(f"{stage}: {len(ids)} {ids[:50]}" for stage, ids in failed.items())
                    + ". See the failed task logs, then clear those tasks or rerun the DAG (finished shards are skipped)."
                )
            return summary

        units = plan_units()
        processed = process.expand(unit=units)
        artifacts = signal_artifacts()
        processed >> artifacts
        annotate.partial(artifacts_url=artifacts).expand(unit=units) >> report(units)

    return snapshot_dag()


def build_monthly_dag(registry: dict[str, SnapshotConfig]) -> DAG:
    """Monthly: process the crawls released in the data interval, by triggering their snapshot DAGs."""
    from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

    scheduled = {sid: cfg.dag_id for sid, cfg in registry.items() if not cfg.sample}

    with DAG(
        dag_id="rpv2_monthly",
        schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=2,
        default_args=DEFAULT_ARGS,
        tags=["rpv2", "schedule"],
        doc_md=(
            "Runs at the start of each month for the month before (data interval = that month). "
            "A crawl `CC-MAIN-YYYY-WW` counts as released on the Monday of ISO week WW of YYYY; the registry's "
            "snapshots released in the interval are processed by triggering their `rpv2_YYYY_WW` DAGs. "
            "Backfill history with `airflow backfill create --dag-id rpv2_monthly --from-date ... --to-date ...`."
        ),
    ) as monthly:

        @task
        def snapshots_in_interval() -> list[str]:
            ctx = get_current_context()
            ids = snapshots_released_between(list(scheduled), ctx["data_interval_start"], ctx["data_interval_end"])
            log.info("data interval %s - %s: snapshots %s", ctx["data_interval_start"], ctx["data_interval_end"], ids or "none")
            return [scheduled[s] for s in ids]

        TriggerDagRunOperator.partial(
            task_id="process_snapshot", wait_for_completion=True, poke_interval=60, failed_states=["failed"]
        ).expand(trigger_dag_id=snapshots_in_interval())

    return monthly


def build_all(registry_path: str | None = None) -> dict[str, DAG]:
    try:
        registry = load_registry(registry_path)
    except ConfigError as exc:
        raise ConfigError(f"snapshot registry: {exc}") from exc
    dags = {cfg.dag_id: build_snapshot_dag(cfg) for cfg in registry.values()}
    dags["rpv2_monthly"] = build_monthly_dag(registry)
    from rpj_dags.artifacts import build_artifacts_dag

    dags["rpv2_prep_artifacts"] = build_artifacts_dag(registry)
    return dags

