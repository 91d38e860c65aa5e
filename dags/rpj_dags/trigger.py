"""Trigger another DAG's run once and wait for it in the triggerer (used by ``rpv2_monthly`` for
snapshot runs and by every snapshot DAG for its ``rpv2_dedup`` run)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator

FINAL_STATES: Any = ["success", "failed"]  # DagRunState values (str enum)


class TriggerAndWaitOperator(TriggerDagRunOperator):
    """Trigger a run with a deterministic run id once, then wait for it deferrably.

    Unlike the plain operator, a retry finds the run its first try created (same run id) and
    waits for it again instead of failing with "already exists" or clearing it.  A failed run fails
    this task without retries (a retry would wait for the same failed run), naming the run and its
    first failed task in ``task_order``: fix the cause, clear that run's failed tasks, then this task.
    With ``enabled_param``, a run whose Param of that name is false skips the task.
    """

    def __init__(
        self,
        *,
        poll_interval: float = 30.0,
        task_order: Sequence[str] = (),
        what: str = "triggered run",
        enabled_param: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            wait_for_completion=True,
            deferrable=True,
            poke_interval=int(poll_interval),
            allowed_states=["success"],
            failed_states=["failed"],
            fail_when_dag_is_paused=True,
            **kwargs,
        )
        self.task_order = tuple(task_order)
        self.what = what
        self.enabled_param = enabled_param

    def execute(self, context: Any) -> None:
        from airflow.providers.standard.triggers.external_task import DagStateTrigger
        from airflow.sdk.exceptions import AirflowSkipException
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        if self.enabled_param and not context["params"].get(self.enabled_param):
            raise AirflowSkipException(f"{self.enabled_param}=false for this run: not triggering {self.trigger_dag_id}")
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
            raise AirflowFailException(
                f"{self.what} {self.trigger_dag_id} / {run_id} ended {state}; "
                f"first failed task: {first_failed_task(self.trigger_dag_id, run_id, self.task_order)} (open that task's log)"
            )
        self.log.info("%s run %s finished: %s", self.trigger_dag_id, run_id, state)


def first_failed_task(dag_id: str, run_id: str, task_order: Sequence[str]) -> str:
    """The earliest failed task of a run, in ``task_order`` (with its map index if mapped)."""
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states = RuntimeTaskInstance.get_task_states(dag_id=dag_id, run_ids=[run_id]).get(run_id, {})
    failed = [key for key, state in states.items() if state == "failed"]
    if not failed:
        return "none recorded"
    order = list(task_order)

    def rank(key: str) -> tuple[int, str]:
        task_id = key.rsplit("_", 1)[0] if key.rsplit("_", 1)[-1].isdigit() and key not in order else key
        return (order.index(task_id) if task_id in order else len(order), key)

    return min(failed, key=rank)
