"""``rpv2_monthly``: each month, process the crawls released in the month before.

The data interval is a calendar month (``CronDataIntervalTimetable``); a crawl ``CC-MAIN-YYYY-WW``
counts as released on the Monday of ISO week WW of YYYY.  For every registry snapshot released in
the interval one ``process_snapshot`` task triggers that snapshot's DAG and waits for the run in
the triggerer (deferred: no worker slot while waiting).

The triggered run is tied to the month: its run id is ``rpv2_monthly__YYYY-MM`` (deterministic,
so a retry or a rerun of the month waits for the run that exists instead of starting a second
one) and its conf records ``{"month": "YYYY-MM"}``.  A failed snapshot run fails the task with a
message naming the run and its first failed task, without retries (a retry would wait for the same
failed run): clear the snapshot run's failed tasks, then this task.  A paused snapshot DAG fails it
at once.

The DAG is paused at creation (its schedule starts real crawls): unpause it to enable the monthly
schedule and before ``airflow backfill create`` (a paused DAG's backfill runs stay queued).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task

from rpj_dags.common import DEFAULT_ARGS, START_DATE
from rpj_dags.trigger import TriggerAndWaitOperator
from rpj_tasks.core.config import SnapshotConfig, snapshots_released_between

RUN_ID_PREFIX = "rpv2_monthly__"
# The snapshot DAG's tasks in the order they run: the first failed one is the cause.
TASK_ORDER = (
    "plan_units",
    "process.download",
    "process.hashes",
    "process.mine",
    "signal_artifacts",
    "process.annotate",
    "annotate",
    "process.tokens",
    "dedup_index",
    "exact_dedup",
    "clusters_scatter",
    "clusters_group",
    "clusters_write",
    "validate",
    "validate_release",
    "publish",
    "report",
)


def monthly_run_id(month: str) -> str:
    return f"{RUN_ID_PREFIX}{month}"


class ProcessSnapshotOperator(TriggerAndWaitOperator):
    """Trigger one month's run of a snapshot DAG once (run id ``rpv2_monthly__YYYY-MM``), then
    wait for it deferrably (:class:`~rpj_dags.trigger.TriggerAndWaitOperator`)."""

    def __init__(self, *, month: str, poll_interval: float = 30.0, **kwargs: Any) -> None:
        super().__init__(
            trigger_run_id=monthly_run_id(month),
            conf={"month": month},
            poll_interval=poll_interval,
            task_order=TASK_ORDER,
            what="snapshot run",
            **kwargs,
        )


def build_monthly_dag(registry: dict[str, SnapshotConfig]) -> DAG:
    scheduled = {sid: cfg.dag_id for sid, cfg in registry.items() if not cfg.sample}

    with DAG(
        dag_id="rpv2_monthly",
        schedule=CronDataIntervalTimetable("0 0 1 * *", timezone="UTC"),
        start_date=START_DATE,
        catchup=False,
        # Paused until an operator unpauses it: its schedule (and any backfill) starts real crawls.
        is_paused_upon_creation=True,
        max_active_runs=2,
        default_args={**DEFAULT_ARGS, "execution_timeout": dt.timedelta(days=7)},
        tags=["rpv2", "schedule"],
        doc_md=__doc__,
    ) as monthly:

        @task(execution_timeout=dt.timedelta(minutes=5))
        def snapshots_in_interval() -> list[dict[str, str]]:
            ctx = get_current_context()
            start, end = ctx["data_interval_start"], ctx["data_interval_end"]
            assert start is not None and end is not None  # a scheduled (or backfilled) run of a data-interval timetable
            ids = snapshots_released_between(list(scheduled), start, end)
            print(f"data interval {start} - {end}: snapshots {ids or 'none'}")
            return [{"trigger_dag_id": scheduled[s], "month": start.strftime("%Y-%m")} for s in ids]

        ProcessSnapshotOperator.partial(task_id="process_snapshot").expand_kwargs(snapshots_in_interval())

    return monthly
