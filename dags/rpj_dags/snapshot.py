"""One DAG per Common Crawl snapshot.

    plan_units -> per unit [download -> hashes -> mine -> (annotate, tokens)]
               -> dedup_index -> exact_dedup (an rpv2_dedup run, waited for in the triggerer)
               -> clusters_scatter -> clusters_group per band partition -> clusters_write
               -> validate per unit -> validate_release -> publish -> report

``plan_units`` checks the Params, stages the crawl's listing under the storage root and returns
compact unit descriptors (shard ranges, no segment paths); every mapped task resolves its own
segments.  Each unit is annotated as soon as it is mined, with the quality-signal artifacts that
must already exist (checked by the plan).  The offline sample is the one exception: it builds its
artifacts from its own mined documents, so its annotation waits for every unit:

    plan_units -> per unit [download -> hashes -> mine -> tokens] -> signal_artifacts -> per unit annotate
               -> dedup, clusters, validation and publish as above -> report

Tasks are thin: the preamble (:func:`_run_config`), one engine call per shard, a log line.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from typing import Any

from airflow.sdk import DAG, Param, TriggerRule, dag, get_current_context, task, task_group

from rpj_dags.common import DEFAULT_ARGS, MAX_MAPPED_UNITS, START_DATE, whole
from rpj_dags.dedup import DAG_ID as DEDUP_DAG_ID
from rpj_dags.dedup import TASK_ORDER as DEDUP_TASK_ORDER
from rpj_dags.dedup import dedup_run_id
from rpj_dags.runtime import configure_storage, engine_task
from rpj_dags.trigger import TriggerAndWaitOperator
from rpj_tasks.core.config import DSIR_HASH_MODES, SnapshotConfig, validate_languages

log = logging.getLogger("rpj.airflow")

MAX_SHARD = 99_999  # num_shards is at most 100,000
DIALECT = "http://json-schema.org/draft-07/schema#"


def snapshot_params(cfg: SnapshotConfig) -> dict[str, Param]:
    """The trigger form.  Each schema names JSON Schema draft-07 (:data:`DIALECT`): Airflow validates
    every Param's schema against its dialect's meta-schema each time it serializes a task, and
    the default 2020-12 meta-schema costs 4x more (bench/bench_dag_parse.py)."""
    shard_item = {
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": MAX_SHARD},
            {"type": "string", "pattern": whole(r"[0-9]{1,5}(-[0-9]{1,5})?")},
        ]
    }
    params = {
        "languages": Param(
            cfg.languages,
            type="array",
            items={"type": "string", "pattern": whole("[a-z]{2,3}")},
            minItems=1,
            description="Languages to keep after LID (ISO codes); models must exist for each.",
        ),
        "num_shards": Param(
            cfg.num_shards,
            type="integer",
            minimum=1,
            maximum=MAX_SHARD + 1,
            description="Number of shards the crawl's WET segments are split into (RPv2: 5000).",
        ),
        "shards": Param(
            [],
            type="array",
            items=shard_item,
            description='Optional subset of shards, e.g. [0, 7, "100-199"]; empty = all shards. '
            "Shards >= num_shards fail the plan_units task.",
        ),
        "shard_limit": Param(
            None,
            type=["null", "integer"],
            minimum=1,
            description="Optional: process at most this many shards of the selection (the first ones).",
        ),
        "force": Param(False, type="boolean", description="Recompute shards that are already finished."),
        "annotate": Param(True, type="boolean", description="Compute quality signals and MinHash for the mined shards."),
        "annotate_tail": Param(
            False, type="boolean", description="Also annotate the tail bucket (the reference annotates head and middle only)."
        ),
        "dedup": Param(
            True,
            type="boolean",
            description="After annotation: exact dedup (index this snapshot, then an rpv2_dedup run over its set: "
            "duplicates/) and fuzzy clusters at clusters_threshold (clusters/; needs annotate=true).",
        ),
        "publish": Param(
            True,
            type="boolean",
            description="After dedup: count tokens, validate every shard and the snapshot with the Great Expectations "
            "suites, and (only if every gate passed) publish listings/ and the release manifest; false stops after "
            "validation (nothing published).",
        ),
        "dsir_hash_mode": Param(
            cfg.dsir_hash_mode,
            type="string",
            enum=list(DSIR_HASH_MODES),
            description="DSIR feature hash: cpython-seed42 (the reference's) or stable; must be the mode "
            "the signal artifacts were built with.",
        ),
        "month": Param(
            None,
            type=["null", "string"],
            pattern=whole("[0-9]{4}-[0-9]{2}"),
            description="Set by rpv2_monthly: the month (YYYY-MM) whose crawls this run processes.",
        ),
    }
    for param in params.values():
        param.schema["$schema"] = DIALECT
    return params


def resolve_config(base: SnapshotConfig, params: dict[str, Any]) -> SnapshotConfig:
    """The snapshot config with the run's params applied; raises ConfigError with a clear message."""
    return base.with_overrides(
        languages=validate_languages(params.get("languages") or base.languages),
        num_shards=params.get("num_shards") or base.num_shards,
        dsir_hash_mode=params.get("dsir_hash_mode") or base.dsir_hash_mode,
    )


def _run_config(base: SnapshotConfig) -> tuple[dict[str, Any], SnapshotConfig]:
    """Every task's preamble: the run's Params, its config, storage credentials."""
    params = get_current_context()["params"]
    cfg = resolve_config(base, params)
    configure_storage(cfg.storage_root, cfg.source_base)
    return params, cfg


def unit_timeouts(cfg: SnapshotConfig) -> dict[str, dt.timedelta]:
    """``execution_timeout`` per task, from the most shards one unit can hold: a hung task fails
    instead of holding its slot forever.  Per-shard budgets are several times a real shard's
    measured cost (docs/PIPELINE.md, Performance); the sample's shards are tiny."""
    groups = math.ceil(cfg.num_shards / cfg.hash_group_size)
    shards = math.ceil(groups / min(groups, MAX_MAPPED_UNITS)) * cfg.hash_group_size
    minutes = {"download": 30, "hashes": 20, "mine": 60, "annotate": 60}
    if cfg.sample:
        minutes = dict.fromkeys(minutes, 10)
    return {name: dt.timedelta(minutes=m * shards) for name, m in minutes.items()}


def build_snapshot_dag(base: SnapshotConfig) -> DAG:
    doc = (
        f"RPv2 processing of Common Crawl `{base.crawl}` (snapshot `{base.id}`): plan -> per unit of shards "
        "[download -> hashes -> mine -> annotate, tokens] -> exact dedup (an `rpv2_dedup` run) and fuzzy "
        "clusters -> Great Expectations validation per unit, then of the snapshot -> publish (listings) -> report.\n\n"
        f"Outputs under `{base.storage_root}`: `documents/`, `quality_signals/`, `minhash/`, `duplicates/`, "
        f"`clusters/`, `tokens/` for `{base.id}`, then `listings/`; per-shard stats in `stats/*/{base.id}/`, "
        f"GX Data Docs in `validation/{base.id}/`."
    )
    timeouts = unit_timeouts(base)

    @dag(
        dag_id=base.dag_id,
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        # No schedule of its own: unpaused from the start, so a trigger (UI, REST, rpv2_monthly) runs at once.
        is_paused_upon_creation=False,
        default_args=DEFAULT_ARGS,
        params=snapshot_params(base),
        tags=["rpv2", "ccnet", "sample" if base.sample else "snapshot"],
        doc_md=doc,
        render_template_as_native_obj=True,
    )
    def snapshot_dag() -> None:
        @task(execution_timeout=dt.timedelta(minutes=30))
        @engine_task
        def plan_units() -> list[dict[str, Any]]:
            """Check the Params, stage the listing (XCom ``listing``), return the compact units."""
            from rpj_tasks.core import plan
            from rpj_tasks.download.listing import stage_listing

            params, cfg = _run_config(base)
            plan.parse_shards(params.get("shards"), cfg.num_shards)  # reject bad shard ids before any I/O
            if params["annotate"] and not cfg.sample:
                _require_signal_artifacts(cfg)
            if cfg.sample:
                from rpj_tasks.sample.setup import ensure_sample

                ensure_sample(cfg)
            listing = stage_listing(cfg.source_base, cfg.crawl, cfg.storage_root)
            units = plan.plan_units(cfg, shards=params.get("shards"), limit=params.get("shard_limit"), max_units=MAX_MAPPED_UNITS)
            n_mine = sum(len(plan.unit_shards(u)) for u in units)
            log.info("%s: %d segments, %d shards to mine in %d units", cfg.crawl, listing["segments"], n_mine, len(units))
            get_current_context()["ti"].xcom_push(key="listing", value=listing)
            return units

        @task(pool=base.download_pool, retries=3, execution_timeout=timeouts["download"])
        @engine_task
        def download(unit: dict[str, Any]) -> None:
            from rpj_tasks.download.fetch import download_unit

            params, cfg = _run_config(base)
            for shard, segments in _unit_segments(cfg, unit, "hashes"):
                download_unit(cfg, shard, segments, force=params["force"])

        @task(execution_timeout=timeouts["hashes"])
        @engine_task
        def hashes(unit: dict[str, Any]) -> None:
            from rpj_tasks.ccnet import stage as ccnet

            params, cfg = _run_config(base)
            for shard, segments in _unit_segments(cfg, unit, "hashes"):
                ccnet.compute_hashes(cfg, shard, segments, force=params["force"])

        @task(execution_timeout=timeouts["mine"])
        @engine_task
        def mine(unit: dict[str, Any]) -> None:
            from rpj_tasks.ccnet import stage as ccnet

            params, cfg = _run_config(base)
            shards = _unit_segments(cfg, unit, "mine")
            for i, (shard, segments) in enumerate(shards, 1):
                ccnet.mine_shard(cfg, shard, segments, force=params["force"])
                log.info("unit %d: %d/%d shards mined", unit["unit"], i, len(shards))

        @task(execution_timeout=timeouts["annotate"])
        @engine_task
        def annotate(unit: dict[str, Any], artifacts_url: str | None = None) -> None:
            from rpj_tasks.annotate.stage import annotate_shard
            from rpj_tasks.core import layout, plan

            params, cfg = _run_config(base)
            if not params["annotate"]:
                log.info("annotation disabled for this run (annotate=false)")
                return
            url = artifacts_url or layout.signal_artifacts_url(cfg.storage_root, cfg.signals_version)
            shards = plan.unit_shards(unit)
            for i, shard in enumerate(shards, 1):
                annotate_shard(
                    cfg,
                    shard,
                    artifacts_url=url,
                    annotate_tail=params["annotate_tail"],
                    force=params["force"],
                    hash_mode=cfg.dsir_hash_mode,
                )
                log.info("unit %d: %d/%d shards annotated", unit["unit"], i, len(shards))

        @task(execution_timeout=timeouts["annotate"])
        @engine_task
        def tokens(unit: dict[str, Any]) -> None:
            """Token counts of every documents file of the unit's shards (Mistral-7B-v0.1 by default)."""
            from rpj_tasks.core import plan
            from rpj_tasks.tokens import count_shard

            params, cfg = _run_config(base)
            shards = plan.unit_shards(unit)
            for i, shard in enumerate(shards, 1):
                count_shard(cfg, shard, force=params["force"])
                log.info("unit %d: %d/%d shards counted", unit["unit"], i, len(shards))

        @task(execution_timeout=timeouts["annotate"])
        @engine_task
        def validate(unit: dict[str, Any]) -> None:
            """The Great Expectations gates of the unit's shards (every shard is validated; the task
            fails naming suite, expectation, file and observed value of the failures)."""
            from rpj_tasks.core import plan
            from rpj_tasks.validate.stage import ValidationFailedError, validate_shard

            params, cfg = _run_config(base)
            failed: list[str] = []
            for shard in plan.unit_shards(unit):
                try:
                    validate_shard(cfg, shard, force=params["force"])
                except ValidationFailedError as exc:
                    log.error("%s", exc)
                    failed.append(str(exc))
            if failed:
                raise ValidationFailedError(f"{len(failed)} shards failed validation; first: {failed[0]}", {})

        @task(execution_timeout=dt.timedelta(hours=2))
        @engine_task
        def validate_release() -> dict[str, Any]:
            """The snapshot-level gate over every mined shard (a run of a few shards publishes the
            whole snapshot, never only its own shards): shards of earlier runs are validated again only
            if their files changed.  Returns the compact result."""
            from rpj_tasks.core.inputs import mined_shards
            from rpj_tasks.validate.stage import validate_shard, validate_snapshot

            _, cfg = _run_config(base)
            shards = mined_shards(cfg)
            for shard in shards:
                validate_shard(cfg, shard)  # skipped when validated for the same files
            result = validate_snapshot(cfg, shards)
            return {
                "success": result["success"],
                "data_docs": result["data_docs"],
                "counts": result["counts"],
                "shard_ids": shards,
            }

        @task(execution_timeout=dt.timedelta(hours=1))
        @engine_task
        def publish(validation: Any) -> None:  # an XComArg when the DAG is built
            """listings/ and the release manifest, only after every gate passed (Param publish)."""
            from rpj_tasks.publish.stage import publish_snapshot

            params, cfg = _run_config(base)
            if not params["publish"]:
                raise _skip("publish=false for this run: validated, nothing published")
            shards = validation["shard_ids"]
            summary = f"{len(shards)} shards valid; Data Docs {validation.get('data_docs')}"
            publish_snapshot(cfg, shards, validation={**validation, "summary": summary}, force=params["force"])

        @task(execution_timeout=dt.timedelta(minutes=30), trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
        @engine_task
        def signal_artifacts() -> str | None:
            """The sample's quality-signal artifacts, built from its own mined documents if missing."""
            from rpj_tasks.sample.setup import ensure_signal_artifacts

            params, cfg = _run_config(base)
            return ensure_signal_artifacts(cfg) if params["annotate"] else None

        @task(execution_timeout=dt.timedelta(hours=2))
        @engine_task
        def dedup_index() -> None:
            """Step 1 of exact dedup: this snapshot's digest index (every mined shard)."""
            from rpj_tasks.dedup import stage

            params, cfg = _run_config(base)
            if not params["dedup"]:
                raise _skip("dedup=false for this run")
            stage.index(cfg, force=params["force"])

        exact_dedup = TriggerAndWaitOperator(
            task_id="exact_dedup",
            trigger_dag_id=DEDUP_DAG_ID,
            # one rpv2_dedup run per try: a cleared exact_dedup (e.g. after re-mining) deduplicates the
            # new index instead of finding the finished run of an earlier try
            trigger_run_id=dedup_run_id(base.id, "{{ run_id }}__try{{ ti.try_number }}"),
            # no force: every dedup step is redone by itself when its inputs changed (a forced run
            # would recompute the whole release); rpv2_dedup's own Param force is for a manual run
            conf={"snapshot": base.id},
            poll_interval=10 if base.sample else 30,
            task_order=DEDUP_TASK_ORDER,
            what="exact dedup run",
            enabled_param="dedup",
            execution_timeout=dt.timedelta(days=2),
            retries=0,
        )

        @task(execution_timeout=dt.timedelta(hours=1))
        @engine_task
        def clusters_scatter() -> list[int]:
            """Fuzzy clusters, step 1: the MinHash bands of every annotated file, into band partitions."""
            from rpj_tasks.dedup import lsh

            params, cfg = _run_config(base)
            if not (params["dedup"] and params["annotate"]):
                raise _skip("dedup=false or annotate=false for this run: no clusters")
            out = lsh.clusters_scatter(
                cfg.storage_root, [cfg.id], cfg.clusters_threshold, partitions=cfg.clusters_partitions, force=params["force"]
            )
            return list(out["partitions"])

        @task(execution_timeout=dt.timedelta(hours=1))
        @engine_task
        def clusters_group(partition: int) -> None:
            """Fuzzy clusters, step 2 (mapped): group one band partition, write its edges."""
            from rpj_tasks.dedup import lsh

            params, cfg = _run_config(base)
            lsh.clusters_group(
                cfg.storage_root,
                [cfg.id],
                cfg.clusters_threshold,
                partition,
                partitions=cfg.clusters_partitions,
                force=params["force"],
            )

        @task(execution_timeout=dt.timedelta(hours=1))
        @engine_task
        def clusters_write() -> None:
            """Fuzzy clusters, step 3: connected components, the clusters files and their record."""
            from rpj_tasks.dedup import lsh

            params, cfg = _run_config(base)
            lsh.clusters_write(
                cfg.storage_root, [cfg.id], cfg.clusters_threshold, partitions=cfg.clusters_partitions, force=params["force"]
            )

        def dedup_after(annotated: Any) -> list[Any]:
            """Exact dedup and fuzzy clusters once every unit is annotated; returns the last tasks."""
            index = dedup_index()
            annotated >> index >> exact_dedup
            scattered = clusters_scatter()
            written = clusters_write()
            annotated >> scattered
            clusters_group.expand(partition=scattered) >> written
            return [exact_dedup, written]

        def gate_and_publish(deduplicated: list[Any]) -> Any:
            """Validation per unit, then of the snapshot, then publish; returns the last task."""
            checked = validate.expand(unit=units)
            deduplicated >> checked
            result = validate_release()
            checked >> result
            return publish(result)

        # Runs when the plan succeeded, even if some units failed, to say which shards are missing;
        # after a failed plan it is upstream_failed (no work, no error of its own).
        @task(execution_timeout=dt.timedelta(minutes=30), trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
        @engine_task
        def report(units: Any) -> dict[str, Any]:  # the plan's units (an XComArg when the DAG is built)
            params, cfg = _run_config(base)
            return _report(cfg, units, annotated=params["annotate"], run=_run_states())

        units = plan_units()

        if base.sample:

            @task_group
            def process(unit: dict[str, Any]) -> None:
                download(unit) >> hashes(unit) >> mine(unit) >> tokens(unit)

            artifacts = signal_artifacts()
            processed = process.expand(unit=units)
            processed >> artifacts
            annotated = annotate.partial(artifacts_url=artifacts).expand(unit=units)
            gate_and_publish(dedup_after(annotated)) >> with_report_link(report(units))
        else:

            @task_group
            def process(unit: dict[str, Any]) -> None:
                mined = download(unit) >> hashes(unit) >> mine(unit)
                mined >> annotate(unit)
                mined >> tokens(unit)

            gate_and_publish(dedup_after(process.expand(unit=units))) >> with_report_link(report(units))

    return snapshot_dag()


def with_report_link(report: Any) -> Any:
    """The report task, with its **Snapshot report** extra link (rpj_dags/links.py)."""
    from rpj_dags.links import SnapshotReportLink

    report.operator.operator_extra_links = (SnapshotReportLink(),)
    return report


def _skip(reason: str) -> Exception:
    from airflow.sdk.exceptions import AirflowSkipException

    return AirflowSkipException(reason)


def _unit_segments(cfg: SnapshotConfig, unit: dict[str, Any], key: str) -> list[tuple[int, list[str]]]:
    """``(shard, segment paths)`` for the unit's ``key`` shards, from the listing the plan staged."""
    from rpj_tasks.core import plan
    from rpj_tasks.download.listing import read_listing, shard_segments

    listing = get_current_context()["ti"].xcom_pull(task_ids="plan_units", key="listing")
    segments = read_listing(listing)
    return [(shard, shard_segments(segments, shard, cfg.num_shards)) for shard in plan.unit_shards(unit, key)]


def _require_signal_artifacts(cfg: SnapshotConfig) -> None:
    from rpj_tasks.annotate.artifacts.load import ArtifactsError
    from rpj_tasks.core import commit, layout, storage

    url = layout.signal_artifacts_url(cfg.storage_root, cfg.signals_version)
    if commit.finished(storage.join(url, "MANIFEST.json"), None) is None:
        raise ArtifactsError(
            f"no complete quality-signal artifacts at {url}: build them with the rpv2_prep_artifacts DAG "
            f"(signals_source=build or install, signals_version={cfg.signals_version}), or trigger with annotate=false"
        )


def _run_states() -> dict[str, Any] | None:
    """This run's task instance states (``{task_id or task_id_mapindex: state}``), through the Task
    SDK, for the report; None where the SDK cannot tell (e.g. ``airflow dags test``).  The SDK gives
    states, not try numbers: retries by Airflow are not visible to a task."""
    ctx = get_current_context()
    dag_id, run_id = ctx["dag"].dag_id, ctx["run_id"]
    try:
        states = ctx["ti"].get_task_states(dag_id=dag_id, run_ids=[run_id])
    except Exception as exc:  # noqa: BLE001 - the report is written without them
        log.warning("task states of run %s not available (%s); the report shows the records only", run_id, exc)
        return None
    return {"dag_id": dag_id, "run_id": run_id, "task_states": dict(sorted((states.get(run_id) or {}).items()))}


def _report(
    cfg: SnapshotConfig, units: list[dict[str, Any]], *, annotated: bool, run: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The snapshot's summary in the log (as ``rpj summary`` prints it) and its report page
    (``reports/{snapshot}/index.html``, written first, so a partial run has one too); fails naming
    every shard that did not finish."""
    from rpj_tasks.core import plan
    from rpj_tasks.core.summary import format_summary, snapshot_summary
    from rpj_tasks.report import write_report

    shards = [s for u in units for s in plan.unit_shards(u)]
    summary = snapshot_summary(cfg, shards)
    log.info("%s", format_summary(summary))
    report_error = None
    try:
        written = write_report(cfg, shards, run=run, summary=summary)
        log.info("report: %s (numbers: %s); index of published snapshots: %s", written["html"], written["json"], written["index"])
    except Exception as exc:  # noqa: BLE001 - the unfinished shards below still come first
        log.exception("the report could not be written")
        report_error = exc
    missing = {"ccnet": summary["not_mined"]}
    if annotated:
        missing["annotate"] = summary["not_annotated"]
    if summary["release"]["validation_failed"]:
        missing["validation"] = summary["release"]["validation_failed"]
    failed = {stage: ids for stage, ids in missing.items() if ids}
    if failed:
        raise RuntimeError(
            "shards that did not finish, by stage: "
            + "; ".join(f"{stage}: {len(ids)} {plan.format_shards(ids)}" for stage, ids in failed.items())
            + ". See the failed task logs, then clear those tasks or rerun the DAG (finished shards are skipped)."
        ) from report_error
    if report_error is not None:
        raise report_error
    return summary
