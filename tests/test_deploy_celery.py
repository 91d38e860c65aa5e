"""Native deployment (scripts/rpj-deploy) with the CeleryExecutor: Redis broker, PostgreSQL metadata DB
and result backend, two Celery worker processes.

(b) the sample snapshot triggered through REST runs on both workers and gives the CLI's bytes;
(c) a worker killed with SIGKILL (with its task processes: a lost machine) while it runs a
    ``mine`` or ``annotate`` task: the task is retried, the run succeeds, same bytes, no temp file.
"""

from __future__ import annotations

import time

import pytest

from deploy_harness import SAMPLE_DAG, assert_same_outputs, cli_reference, deployment

pytestmark = pytest.mark.deploy

KILL_TARGETS = ("process.mine", "annotate")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return cli_reference(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def celery(tmp_path_factory):
    # A task whose worker vanished stops heartbeating; detect that after 30s instead of 5 minutes.
    env = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30"}
    with deployment(tmp_path_factory.mktemp("deploy-celery"), executor="celery", workers=2, worker_concurrency=1,
                    env=env) as dep:
        yield dep


def test_sample_run_on_two_celery_workers(celery, reference):
    dep = celery
    conf = {"shards": [0, 1, 2, 3]}
    run = dep.run_dag(conf)
    tis = dep.client.task_instances(SAMPLE_DAG, run["dag_run_id"])
    assert {t["state"] for t in tis} == {"success"}, [(t["task_id"], t["map_index"], t["state"]) for t in tis]
    hosts = {t["hostname"] for t in tis}
    assert hosts == {"127.0.0.2", "127.0.0.3"}, f"tasks ran on {hosts}, not on both workers"
    assert {dep.worker_for_hostname(h) for h in hosts} == {"worker-1", "worker-2"}
    assert assert_same_outputs(dep.storage_root, reference) > 100


def find_running_target(dep, run_id, skip, deadline):
    """A mine/annotate task instance seen running on a known worker (polled every 0.2s)."""
    while time.monotonic() < deadline:
        for t in dep.client.task_instances(SAMPLE_DAG, run_id):
            key = (t["task_id"], t["map_index"])
            if t["task_id"] in KILL_TARGETS and t["state"] == "running" and t["hostname"] and key not in skip:
                return t
        state = dep.client.dag_run(SAMPLE_DAG, run_id)["state"]
        assert state not in ("success", "failed"), f"run ended {state} before a mine/annotate task could be caught running"
        time.sleep(0.2)
    raise AssertionError("no mine/annotate task seen running")


def test_killed_worker_task_is_retried(celery, reference):
    dep = celery
    dep.client.unpause(SAMPLE_DAG)
    # force: every shard is recomputed, so mine and annotate really run (and can be interrupted)
    run_id = dep.client.trigger(SAMPLE_DAG, conf={"shards": [0, 1, 2, 3], "force": True})["dag_run_id"]
    deadline = time.monotonic() + 600
    missed: set = set()
    while True:
        victim = find_running_target(dep, run_id, missed, deadline)
        worker = dep.worker_for_hostname(victim["hostname"])
        killed = dep.kill_tree(worker)
        # bring the worker back (`rpj-deploy up` restarts only what is not running)
        restart = dep.restart_missing()
        assert restart.returncode == 0 and f"started {worker}" in restart.stdout, restart.stdout + restart.stderr
        now = [t for t in dep.client.task_instances(SAMPLE_DAG, run_id)
               if (t["task_id"], t["map_index"]) == (victim["task_id"], victim["map_index"])][0]
        if now["try_number"] == victim["try_number"] and now["state"] == "success":
            missed.add((victim["task_id"], victim["map_index"]))  # it finished just before the kill: try another
            continue
        break
    print(f"killed {worker} ({len(killed)} processes) while it ran {victim['task_id']}[{victim['map_index']}] "
          f"try {victim['try_number']}")

    dep.wait(SAMPLE_DAG, run_id, timeout=900)
    tries = dep.client.tries(SAMPLE_DAG, run_id, victim["task_id"], victim["map_index"])
    states = {t["try_number"]: (t["state"], t["hostname"]) for t in tries}
    assert states[victim["try_number"]][0] != "success", f"the killed try is recorded as {states}"
    final = [t for t in dep.client.task_instances(SAMPLE_DAG, run_id)
             if (t["task_id"], t["map_index"]) == (victim["task_id"], victim["map_index"])][0]
    assert final["state"] == "success" and final["try_number"] > victim["try_number"], (final, states)
    print(f"tries of {victim['task_id']}[{victim['map_index']}]: {states}")
    assert_same_outputs(dep.storage_root, reference)
