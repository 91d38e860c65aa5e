"""Under a running scheduler (LocalExecutor, PostgreSQL): an invalid run fails once, fast, in
``plan_units`` with nothing misleading downstream; ``airflow backfill create`` over three months of
``rpv2_monthly`` triggers each month's snapshot run exactly once, and a retry reuses that run.

The registry holds three offline, sample-like snapshots (2023-06, 2023-10, 2023-14: released in
February, March and April 2023) whose listings point at the sample mirror's WET files, plus the
sample itself; models and signal artifacts come from the session's CLI reference run.
"""

from __future__ import annotations

import gzip
import shutil
import subprocess
from pathlib import Path

import pytest
from deploy_harness import BIN, REPO, cli_reference, deployment, postgres_available

pytestmark = pytest.mark.deploy

MONTHLY = {"2023-06": "2023-02", "2023-10": "2023-03", "2023-14": "2023-04"}
BROKEN = ("2023-18", "2023-05")  # released in May; its listing is missing, so its run fails in plan_units


def write_registry(tmp: Path, mirror: Path, data: Path) -> Path:
    snapshots = "".join(f'  - {{id: "{sid}"}}\n' for sid in [*MONTHLY, BROKEN[0]])
    path = tmp / "registry.yaml"
    path.write_text(
        "defaults:\n"
        f"  storage_root: {data.as_uri()}\n"
        f"  source_base: {mirror.as_uri()}/\n"
        "  models_version: sample-v1\n"
        "  signals_version: sample-v1\n"
        "  num_shards: 1\n"
        "  dedup_partitions: 4\n"
        "  clusters_partitions: 2\n"
        "snapshots:\n"
        + snapshots
        + '  - {id: "2000-01", dag_id: rpv2_sample, sample: true, generate_source: true, num_shards: 4, hash_group_size: 2, '
        "dedup_scope: snapshot}\n"
    )
    return path


@pytest.fixture(scope="module")
def monthly_deployment(tmp_path_factory):
    reason = postgres_available()
    if reason:
        pytest.fail(reason)  # the machine is meant to have it: a missing service is a failure, not a skip
    reference = cli_reference(tmp_path_factory.getbasetemp())
    tmp = tmp_path_factory.mktemp("monthly")
    data, mirror = tmp / "data", tmp / "mirror"
    shutil.copytree(reference / "artifacts", data / "artifacts")
    shutil.copytree(reference.parent / "mirror", mirror)
    segments = gzip.decompress((mirror / "crawl-data" / "CC-MAIN-2000-01" / "wet.paths.gz").read_bytes()).decode().split()
    for i, sid in enumerate(MONTHLY):
        # each crawl lists one of the sample's segments under its own crawl's path (listings may
        # only name their own crawl's segments)
        own = segments[i].replace("CC-MAIN-2000-01", f"CC-MAIN-{sid}", 1)
        (mirror / own).parent.mkdir(parents=True)
        shutil.copyfile(mirror / segments[i], mirror / own)
        listing = mirror / "crawl-data" / f"CC-MAIN-{sid}" / "wet.paths.gz"
        listing.write_bytes(gzip.compress(f"{own}\n".encode(), mtime=0))
    registry = write_registry(tmp, mirror, data)
    with deployment(tmp, env={"RPJ_REGISTRY": str(registry), "RPJ_STORAGE_ROOT": data.as_uri()}) as dep:
        yield dep


def test_invalid_run_fails_once_fast_in_plan_units(monthly_deployment):
    dep = monthly_deployment
    client = dep.client
    # what a Param can express is refused at trigger time, before any run exists
    r = client.request(
        "POST", "/api/v2/dags/rpv2_sample/dagRuns", ok=(400,), json={"logical_date": None, "conf": {"shards": ["7x"]}}
    )
    assert "7x" in r.text
    # out of range for this snapshot's 4 shards: the plan refuses it
    run = client.trigger("rpv2_sample", conf={"shards": [9]})
    state = client.wait_for_run("rpv2_sample", run["dag_run_id"], timeout=300)
    assert state == "failed", dep.diagnostics("rpv2_sample", run["dag_run_id"])
    tis = {(t["task_id"], t["map_index"]): t for t in client.task_instances("rpv2_sample", run["dag_run_id"])}
    plan = tis.pop(("plan_units", -1))
    assert plan["state"] == "failed" and plan["try_number"] == 1  # permanent: no retries
    assert {t["state"] for t in tis.values()} == {"upstream_failed"}, tis  # nothing misleading downstream
    log = client.task_log("rpv2_sample", run["dag_run_id"], "plan_units", 1)
    assert "ConfigError: shard 9 out of range: this snapshot has 4 shards (0..3)" in log
    assert not list((dep.storage_root / "documents").glob("2000-01/*"))


def airflow_cli(dep, *args: str) -> subprocess.CompletedProcess:
    exports = dep.rpj_deploy("env", "--airflow-home", str(dep.tmp / "airflow_home"), "--state-dir", str(dep.state_dir))
    assert exports.returncode == 0, exports.stderr
    env = dict(dep.env)
    for line in exports.stdout.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value.strip("'\"")
    return subprocess.run([str(BIN / "airflow"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300)


def snapshot_runs(client, dag_id: str) -> list[dict]:
    return client.request("GET", f"/api/v2/dags/{dag_id}/dagRuns", params={"limit": 100}).json()["dag_runs"]


def wait_monthly_runs(dep, count: int, timeout: float = 1500) -> list[dict]:
    import time

    deadline = time.monotonic() + timeout
    while True:
        # unpausing also runs the latest interval at once (catchup=False): only the backfill's runs count
        runs = [r for r in snapshot_runs(dep.client, "rpv2_monthly") if r["run_type"] == "backfill"]
        if len(runs) >= count and all(r["state"] in ("success", "failed") for r in runs):
            return runs
        if time.monotonic() > deadline:
            raise AssertionError(
                f"monthly runs not finished in {timeout}s: {[(r['dag_run_id'], r['state']) for r in runs]}\n" + dep.diagnostics()
            )
        time.sleep(3)


def assert_release_dedup(dep, client) -> None:
    """Each snapshot run triggered one rpv2_dedup run (queued one after the other) and the release's
    duplicates files, built incrementally as the snapshots arrived (two months at a time), equal a
    from-scratch exact dedup of the three snapshots."""
    from rpj_tasks.dedup import exact

    runs = snapshot_runs(client, "rpv2_dedup")
    assert sorted((r["dag_run_id"], r["state"]) for r in runs) == sorted(
        (f"{sid}__rpv2_monthly__{month}__try1", "success") for sid, month in MONTHLY.items()
    ), [(r["dag_run_id"], r["state"]) for r in runs]
    last = max(runs, key=lambda r: r["end_date"])
    planned = [t for t in client.task_instances("rpv2_dedup", last["dag_run_id"]) if t["task_id"] == "partition"]
    assert len(planned) == 4  # one mapped task per digest partition
    log = client.task_log("rpv2_dedup", last["dag_run_id"], "plan", 1)
    assert "4 partition tasks, memory per task" in log and "2023-14, 2023-10, 2023-06" in log, log[-3000:]

    root = dep.storage_root
    fresh = root.parent / "from-scratch"
    for part in ("documents", "stats/ccnet"):
        for sid in MONTHLY:
            shutil.copytree(root / part / sid, fresh / part / sid)
    config = exact.ExactDedupConfig(partitions=4)
    for sid in MONTHLY:
        exact.index_snapshot(fresh.as_uri(), sid, [0], config)
    exact.run_exact_dedup(fresh.as_uri(), list(MONTHLY), config)
    expected = {p.relative_to(fresh): p.read_bytes() for p in sorted((fresh / "duplicates").rglob("*.parquet"))}
    actual = {p.relative_to(root): p.read_bytes() for p in sorted((root / "duplicates").rglob("*.parquet"))}
    assert expected and actual == expected
    # every snapshot is published, and its manifest describes its files as they are now (an older
    # snapshot whose duplicates a newer one rewrote was validated and published again)
    import hashlib
    import json

    for sid in MONTHLY:
        manifest = json.loads((root / "listings" / f"{sid}.manifest.json").read_text())
        dups = {rel: meta for rel, meta in manifest["files"].items() if rel.startswith("duplicates/")}
        assert dups
        for rel, meta in dups.items():
            assert hashlib.sha256((root / rel).read_bytes()).hexdigest() == meta["sha256"], rel


def test_backfill_triggers_each_month_once_and_a_retry_reuses_the_run(monthly_deployment):
    dep = monthly_deployment
    client = dep.client
    client.unpause("rpv2_monthly")  # paused at creation: its backfill runs would stay queued
    proc = airflow_cli(
        dep, "backfill", "create", "--dag-id", "rpv2_monthly", "--from-date", "2023-02-01", "--to-date", "2023-05-31"
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    runs = wait_monthly_runs(dep, 4)
    states = {r["logical_date"][:7]: r["state"] for r in runs}
    if states != {"2023-02": "success", "2023-03": "success", "2023-04": "success", "2023-05": "failed"}:
        pytest.fail(f"monthly runs: {states}\n{dep.diagnostics('rpv2_2023_06', 'rpv2_monthly__2023-02')}")
    for sid, month in MONTHLY.items():
        dag_id = "rpv2_" + sid.replace("-", "_")
        triggered = snapshot_runs(client, dag_id)
        assert [(r["dag_run_id"], r["state"], r["conf"]) for r in triggered] == [
            (f"rpv2_monthly__{month}", "success", {"month": month})
        ]
        assert (dep.storage_root / "stats" / "annotate" / sid / "0000.json").is_file()
        assert (dep.storage_root / "stats" / "clusters" / sid / "sim0.8.json").is_file()
    assert_release_dedup(dep, client)

    # a failed snapshot run fails its month, naming the run and its first failed task
    may = next(r for r in runs if r["logical_date"].startswith("2023-05-01"))
    tries = client.tries("rpv2_monthly", may["dag_run_id"], "process_snapshot", map_index=0)
    log = client.task_log("rpv2_monthly", may["dag_run_id"], "process_snapshot", tries[0]["try_number"], 0)
    assert "snapshot run rpv2_2023_18 / rpv2_monthly__2023-05 ended failed; first failed task: plan_units" in log
    assert [r["dag_run_id"] for r in snapshot_runs(client, "rpv2_2023_18")] == ["rpv2_monthly__2023-05"]

    # a retry of process_snapshot (here: the task cleared and run again) waits for the same run
    feb = next(r for r in runs if r["logical_date"].startswith("2023-02-01"))
    client.request(
        "POST",
        "/api/v2/dags/rpv2_monthly/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": feb["dag_run_id"],
            "task_ids": ["process_snapshot"],
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )
    state = client.wait_for_run("rpv2_monthly", feb["dag_run_id"], timeout=600)
    assert state == "success", dep.diagnostics("rpv2_monthly", feb["dag_run_id"])
    triggered = snapshot_runs(client, "rpv2_2023_06")
    assert [r["dag_run_id"] for r in triggered] == ["rpv2_monthly__2023-02"]
    tries = client.tries("rpv2_monthly", feb["dag_run_id"], "process_snapshot", map_index=0)
    log = client.task_log("rpv2_monthly", feb["dag_run_id"], "process_snapshot", max(t["try_number"] for t in tries), 0)
    assert "exists already" in log
