"""Native deployment (scripts/rpj-deploy) with the LocalExecutor on a fresh PostgreSQL database:
the sample snapshot triggered through the REST API gives the CLI's bytes.  Also the script's
refusals (port in use, PostgreSQL unreachable) and a SQLite + LocalExecutor bring-up."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
from urllib.parse import quote, urljoin

import pytest
import requests
from deploy_harness import (
    BIN,
    REPO,
    SAMPLE_DAG,
    SCRIPT,
    assert_same_outputs,
    base_env,
    cli_reference,
    deployment,
    free_port,
    output_digests,
)
from trees import digests

pytestmark = pytest.mark.deploy


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return cli_reference(tmp_path_factory.getbasetemp())


def rpj_deploy(env, *args, timeout=120):
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        env={**env, "RPJ_DEPLOY_SKIP_SYNC": "1"},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sample_run_through_rest_on_local_executor(tmp_path_factory, reference):
    t0 = time.monotonic()
    with deployment(tmp_path_factory.mktemp("deploy-local"), executor="local") as dep:
        health = dep.client.health()
        assert {k: v["status"] for k, v in health.items() if v} == {
            "metadatabase": "healthy",
            "scheduler": "healthy",
            "triggerer": "healthy",
            "dag_processor": "healthy",
        }

        conf = {"shards": [0, 1, 2, 3]}
        run = dep.run_dag(conf)
        assert run["state"] == "success" and run["conf"] == conf
        tis = dep.client.task_instances(SAMPLE_DAG, run["dag_run_id"])
        assert {t["state"] for t in tis} == {"success"}, [(t["task_id"], t["map_index"], t["state"]) for t in tis]
        ran = {t["task_id"] for t in tis}
        assert {"plan_units", "process.download", "process.hashes", "process.mine", "annotate", "report"} <= ran
        assert {
            "process.tokens",
            "dedup_index",
            "exact_dedup",
            "clusters_write",
            "validate",
            "validate_release",
            "publish",
        } <= ran
        # published: the listings and the manifest, after the gates
        listing = dep.storage_root / "listings" / "en-2000-01-head_middle.txt"
        assert listing.read_text().splitlines()[:2] == ["2000-01/0000/en_head", "2000-01/0000/en_middle"]
        assert (dep.storage_root / "listings" / "2000-01.manifest.json").is_file()
        assert (dep.storage_root / "validation" / "2000-01" / "snapshot" / "data_docs" / "index.html").is_file()

        n = assert_same_outputs(dep.storage_root, reference)
        assert n > 100
        assert_filter_dag_matches_the_cli(dep)

        check_report_in_the_ui(dep, run["dag_run_id"])

        # task logs come through the API (the engine's loggers reach the task log)
        mine = next(t for t in tis if t["task_id"] == "process.mine")
        log = dep.client.task_log(SAMPLE_DAG, run["dag_run_id"], "process.mine", mine["try_number"], mine["map_index"])
        assert "shards mined" in log, log[-3000:]

        status = dep.rpj_deploy("status", "--state-dir", str(dep.state_dir), "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        assert {c["component"] for c in json.loads(status.stdout)["components"]} == {
            "api-server",
            "scheduler",
            "dag-processor",
            "triggerer",
        }

        # `up` again with the same settings: a no-op on a running deployment
        again = dep.rpj_deploy("up", *dep.up_args, "--skip-setup", "--timeout", "60")
        assert again.returncode == 0 and "already running" in again.stdout, again.stdout + again.stderr
        pids = {c: dep.pid(c) for c in ("api-server", "scheduler")}
    # down: every process is gone
    import psutil

    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids.values())
    print(f"local deployment test: {time.monotonic() - t0:.0f}s")


def assert_filter_dag_matches_the_cli(dep):
    """rpv2_filter over the published sample: a dry run writes nothing; a real run gives the bytes of
    `rpj filter` on the same release (recipe c4: line removal and token recounts, both formats)."""
    filtered = dep.storage_root / "filtered"
    dry = dep.run_dag({"snapshot": "2000-01", "recipe": "c4", "dry_run": True}, dag_id="rpv2_filter")
    tis = dep.client.task_instances("rpv2_filter", dry["dag_run_id"])
    assert {t["task_id"] for t in tis if t["state"] == "success"} == {"plan", "count", "allot"}, tis
    assert not filtered.exists()
    run = dep.run_dag({"snapshot": "2000-01", "recipe": "c4", "format": "both"}, dag_id="rpv2_filter")
    tis = dep.client.task_instances("rpv2_filter", run["dag_run_id"])
    assert {t["state"] for t in tis} == {"success"}, [(t["task_id"], t["map_index"], t["state"]) for t in tis]
    assert len([t for t in tis if t["task_id"] == "filter_shard"]) == 4
    by_dag = digests(dep.storage_root, "filtered")
    assert "filtered/c4/2000-01/manifest.json" in by_dag and len(by_dag) > 10
    shutil.rmtree(filtered)
    shutil.rmtree(dep.storage_root / "stats" / "filter")
    cli = subprocess.run(
        [str(BIN / "rpj"), "filter", "--snapshot", "2000-01", "--recipe", "c4", "--format", "both"]
        + ["--storage-root", dep.storage_root.as_uri()],
        env=base_env(dep.storage_root.parent),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert digests(dep.storage_root, "filtered") == by_dag


def check_report_in_the_ui(dep, run_id):
    """The report task wrote the snapshot's report; the rpj_reports plugin serves it through the
    api-server (bearer token or the UI's session cookie), confined to reports/, and the plugins
    endpoint lists its DAG-run view."""
    reports = dep.storage_root / "reports"
    page = (reports / "2000-01" / "index.html").read_bytes()
    report = json.loads((reports / "2000-01" / "report.json").read_text())
    assert report["failures"]["unfinished"] == {} and report["validation"]["published"] is True
    airflow_view = report["failures"]["airflow"]
    assert airflow_view["run_id"] == run_id and airflow_view["not_successful"] == [], airflow_view
    assert airflow_view["by_state"].get("success", 0) > 10 and airflow_view["by_state"].get("running") == 1  # the report task
    r = dep.client.request("GET", f"/rpj/reports/run/{SAMPLE_DAG}/{quote(run_id, safe='')}")
    assert r.content == page and r.headers["content-type"].startswith("text/html")
    # redirected below files/, where every link of the page (and of the index it leads to) resolves
    assert [h.status_code for h in r.history] == [307] and r.url == f"{dep.client.base_url}/rpj/reports/files/2000-01/index.html"
    assert (
        r.headers["content-security-policy"]
        == "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox allow-same-origin"
    )
    seen, todo = set(), [r.url]
    while todo:
        url = todo.pop()
        if url not in seen:
            seen.add(url)
            got = dep.client.request("GET", url[len(dep.client.base_url) :])
            if got.headers["content-type"].startswith("text/html"):
                todo += [urljoin(url, href) for href in re.findall(r'href="([^"]+)"', got.text)]
    files = f"{dep.client.base_url}/rpj/reports/files/"
    assert seen == {files + p for p in ("2000-01/index.html", "2000-01/report.json", "index.html", "index.json")}, seen
    dep.client.request("GET", "/rpj/reports/files/2000-01/notes.txt", ok=(404,))  # only .html and .json
    assert dep.client.request("GET", "/rpj/reports/files/index.html").content == (reports / "index.html").read_bytes()
    assert b'href="2000-01/index.html"' in (reports / "index.html").read_bytes()
    assert dep.client.request("GET", "/rpj/reports/files/2000-01/report.json").json() == report
    base = dep.client.base_url
    cookie = requests.get(f"{base}/rpj/reports/files/2000-01/index.html", cookies={"_token": dep.client.token()}, timeout=30)
    assert cookie.status_code == 200 and cookie.content == page
    assert requests.get(f"{base}/rpj/reports/files/index.html", timeout=30).status_code == 401
    hostile = dep.client.request("GET", "/rpj/reports/files/%2e%2e/listings/2000-01.manifest.json", ok=(400,))
    assert "refused" in hostile.json()["detail"]
    # the report task's extra link (stored by the worker when the task ended) opens the same page
    links = dep.client.request(
        "GET", f"/api/v2/dags/{SAMPLE_DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/report/links"
    ).json()
    link = links["extra_links"]["Snapshot report"]
    assert link.endswith(f"/rpj/reports/run/{SAMPLE_DAG}/{quote(run_id, safe='')}"), links
    assert dep.client.request("GET", link[link.index("/rpj/") :]).content == page
    plugins = dep.client.request("GET", "/api/v2/plugins").json()["plugins"]
    ours = next(p for p in plugins if p["name"] == "rpj_reports")
    views = {v["destination"]: v["href"] for v in ours["external_views"]}
    assert views == {"dag_run": "rpj/reports/run/{DAG_ID}/{RUN_ID}", "nav": "rpj/reports/files/index.html"}
    assert [a["url_prefix"] for a in ours["fastapi_apps"]] == ["/rpj/reports"]


def test_up_refuses_a_port_in_use(tmp_path):
    env = base_env(tmp_path)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = rpj_deploy(env, "up", "--airflow-home", str(tmp_path / "home"), "--db", "sqlite", "--port", str(port))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert f"api-server port (--port) {port} is already in use" in proc.stderr


def test_up_says_when_postgres_is_unreachable(tmp_path):
    env = base_env(tmp_path)
    proc = rpj_deploy(
        env, "up", "--airflow-home", str(tmp_path / "home"), "--pg-port", str(free_port()), "--port", str(free_port())
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "PostgreSQL at 127.0.0.1:" in proc.stderr and "is unreachable" in proc.stderr and "--db sqlite" in proc.stderr


def test_celery_needs_postgres(tmp_path):
    proc = rpj_deploy(
        base_env(tmp_path), "up", "--airflow-home", str(tmp_path / "home"), "--db", "sqlite", "--executor", "celery"
    )
    assert proc.returncode == 2 and "--executor celery needs --db postgres" in proc.stderr, proc.stderr


def test_sqlite_local_executor_comes_up_and_runs_a_ccnet_run(tmp_path_factory, reference):
    """A machine without PostgreSQL: SQLite metadata DB + LocalExecutor, CCNet part only (no annotation)."""
    with deployment(tmp_path_factory.mktemp("deploy-sqlite"), executor="local", db="sqlite", parallelism=2) as dep:
        run = dep.run_dag({"shards": [0, 1, 2, 3], "annotate": False})
        assert run["state"] == "success"
        docs = {k: v for k, v in output_digests(dep.storage_root).items() if k.startswith("documents/")}
        ref = {k: v for k, v in output_digests(reference).items() if k.startswith("documents/")}
        assert docs and docs == ref
