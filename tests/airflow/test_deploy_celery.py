"""Native deployment (scripts/rpj-deploy) with the CeleryExecutor: Redis broker, PostgreSQL metadata DB
and result backend, two Celery worker processes.

(b) the sample snapshot triggered through REST runs on both workers and gives the CLI's bytes;
(c) a worker killed with SIGKILL (with its task processes: a lost machine) in the middle of a
    ``mine`` and, later in the same run, of an ``annotate`` task (while the task has an output
    file half written): each task is retried, the run succeeds, same bytes, no temp file left.
"""

from __future__ import annotations

import time

import pytest
from deploy_harness import SAMPLE_DAG, SNAPSHOT, assert_same_outputs, cli_reference, deployment, output_digests, temp_files

from rpj_tasks.core.plan import parse_shards

pytestmark = pytest.mark.deploy

# task id -> the output trees its writes go to
PHASES = {"process.mine": ("documents",), "annotate": ("quality_signals", "minhash")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return cli_reference(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="module")
def celery(tmp_path_factory):
    # A task whose worker vanished stops heartbeating (every 5s when alive); fail that try after 20s
    # instead of Airflow's 300s.
    env = {"AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20"}
    with deployment(tmp_path_factory.mktemp("deploy-celery"), executor="celery", workers=2, worker_concurrency=1, env=env) as dep:
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


def unit_shards(dep, run_id: str, map_index: int) -> list[str]:
    units = dep.client.xcom(SAMPLE_DAG, run_id, "plan_units")
    return [f"{s:04d}" for s in parse_shards(units[map_index]["mine"], 1 << 30)]


def half_written(dep, task_id: str, shards: list[str]) -> list[str]:
    """Temp files (an output being written) of ``task_id`` in the shards of its unit."""
    return [f for f in temp_files(dep.storage_root) if f.split("/")[0] in PHASES[task_id] and f.split("/")[2] in shards]


def kill_mid_write(dep, run_id: str, task_id: str, deadline: float) -> dict:
    """Wait for a ``task_id`` instance to have an output file half written, SIGKILL its worker (and
    the worker's task processes), start the worker again; returns the killed task instance."""
    while time.monotonic() < deadline:
        running = [
            t
            for t in dep.client.task_instances(SAMPLE_DAG, run_id)
            if t["task_id"] == task_id and t["state"] == "running" and t["hostname"]
        ]
        for ti in running:
            shards = unit_shards(dep, run_id, ti["map_index"])
            while time.monotonic() < deadline:
                if half_written(dep, task_id, shards):
                    worker = dep.worker_for_hostname(ti["hostname"])
                    killed = dep.kill_tree(worker)
                    print(
                        f"killed {worker} ({len(killed)} processes) while {task_id}[{ti['map_index']}] "
                        f"try {ti['try_number']} was writing {half_written(dep, task_id, shards)}"
                    )
                    restart = dep.restart_missing()
                    assert restart.returncode == 0 and f"started {worker}" in restart.stdout, restart.stdout + restart.stderr
                    return ti
                now = dep.client.task_instances(SAMPLE_DAG, run_id)
                if not any((t["task_id"], t["map_index"], t["state"]) == (task_id, ti["map_index"], "running") for t in now):
                    break  # it finished before writing was seen: look for another one
                time.sleep(0.01)
        state = dep.client.dag_run(SAMPLE_DAG, run_id)["state"]
        assert state not in ("success", "failed"), f"run ended {state} before a {task_id} task was caught writing"
        time.sleep(0.1)
    raise AssertionError(f"no {task_id} task caught while writing an output")


def test_killed_worker_tasks_are_retried(celery, reference):
    dep = celery
    dep.client.unpause(SAMPLE_DAG)
    # force: every shard is recomputed, so mine and annotate really run (and can be interrupted)
    run_id = dep.client.trigger(SAMPLE_DAG, conf={"shards": [0, 1, 2, 3], "force": True})["dag_run_id"]
    deadline = time.monotonic() + 600
    victims = [kill_mid_write(dep, run_id, task_id, deadline) for task_id in PHASES]

    dep.wait(SAMPLE_DAG, run_id, timeout=900)
    final = {(t["task_id"], t["map_index"]): t for t in dep.client.task_instances(SAMPLE_DAG, run_id)}
    for victim in victims:
        key = (victim["task_id"], victim["map_index"])
        tries = {t["try_number"]: (t["state"], t["hostname"]) for t in dep.client.tries(SAMPLE_DAG, run_id, *key)}
        print(f"tries of {key}: {tries}")
        assert tries[victim["try_number"]][0] != "success", f"the killed try of {key} is recorded as {tries}"
        assert final[key]["state"] == "success" and final[key]["try_number"] > victim["try_number"], (final[key], tries)

    # the retries removed the killed tries' temp files (their writers' processes are dead)
    assert not temp_files(dep.storage_root), f"temp files of the killed tries: {temp_files(dep.storage_root)}"
    assert_same_outputs_but_temp(dep, reference)


def assert_same_outputs_but_temp(dep, reference):
    """Every output byte-identical to the CLI run (temp files, dot-named, are not outputs)."""
    actual = {k: v for k, v in output_digests(dep.storage_root).items() if "/." not in k}
    assert actual == output_digests(reference)
    assert all(k.split("/")[1] == SNAPSHOT for k in actual)
