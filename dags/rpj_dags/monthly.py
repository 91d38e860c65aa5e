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

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, CronDataIntervalTimetable, get_current_context, task

from rpj_dags.common import DEFAULT_ARGS, START_DATE
from rpj_tasks.core.config import SnapshotConfig, snapshots_released_between

RUN_ID_PREFIX = "rpv2_monthly__"
FINAL_STATES: Any = ["success", "failed"]  # DagRunState values (str enum)
# The snapshot DAG's tasks in the order they run: the first failed one is the cause.
TASK_ORDER = (
    "plan_units",
    "process.download",
    "process.hashes",
    "process.mine",
    "signal_artifacts",
    "process.annotate",
    "annotate",
    "report",
)


def monthly_run_id(month: str) -> str:
    return f"{RUN_ID_PREFIX}{month}"


class ProcessSnapshotOperator(TriggerDagRunOperator):
    """Trigger one month's run of a snapshot DAG once, then wait for it deferrably.

    Unlike the plain operator, a retry finds the run its first try created (same run id) and
    waits for it again instead of failing with "already exists" or clearing it.
    """

    def __init__(self, *, month: str, poll_interval: float = 30.0, **kwargs: Any) -> None:
        super().__init__(
            trigger_run_id=monthly_run_id(month),
            conf={"month": month},
            wait_for_completion=True,
            deferrable=True,
            poke_interval=int(poll_interval),
            allowed_states=["success"],
            failed_states=["failed"],
            fail_when_dag_is_paused=True,
            **kwargs,
        )

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.triggers.external_task import DagStateTrigger
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        run_id = str(self.trigger_run_id)
        if RuntimeTaskInstance.get_dr_count(dag_id=self.trigger_dag_id, run_ids=[run_id]):
            self.log.info("%s run %s exists already (an earlier try started it): waiting for it", self.trigger_dag_id, run_id)
            self.defer(
                trigger=DagStateTrigger(
                    dag_id=self.trigger_dag_id, states=FINAL_STATES, run_ids=[run_id], poll_interval=self.poke_interval
                ),
                method_name="execute_complete",
            )
        self.log.info("triggering %s run %s with conf %s", self.trigger_dag_id, run_id, self.conf)
        super().execute(context)

    def execute_complete(self, context: Any, event: tuple[str, dict[str, Any]]) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        _, data = event
        run_id = str(self.trigger_run_id or data["run_ids"][0])
        state = data.get(run_id)
        if state in self.failed_states:
            # Not retried: a retry would only wait for the same failed run.  Fix the cause, clear the
            # snapshot run's failed tasks, then clear this task: it waits for that run again.
            raise AirflowFailException(
                f"snapshot run {self.trigger_dag_id} / {run_id} ended {state}; "
                f"first failed task: {first_failed_task(self.trigger_dag_id, run_id)} (open that task's log)"
            )
        self.log.info("%s run %s finished: %s", self.trigger_dag_id, run_id, state)


def first_failed_task(dag_id: str, run_id: str) -> str:
    """The earliest failed task of a run, in :data:`TASK_ORDER` (with its map index if mapped)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    failed = [key for key, state in states.items() if state == "failed"]
    if not failed:
        return "none recorded"

    def rank(key: str) -> tuple[int, str]:
        task_id = key.rsplit("_", 1)[0] if key.rsplit("_", 1)[-1].isdigit() and key not in TASK_ORDER else key
        return (TASK_ORDER.index(task_id) if task_id in TASK_ORDER else len(TASK_ORDER), key)

    return min(failed, key=rank)


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
