"""Test harness for real deployments made by ``scripts/rpj-deploy`` (deploy/native.py).

* :func:`deployment` brings up a fresh deployment in a tmp dir: its own AIRFLOW_HOME and state dir,
  a unique new PostgreSQL database (dropped at the end), free ports, a Redis DB number of its own
  for Celery (flushed before and after), ``RPJ_STORAGE_ROOT``/``RPJ_SAMPLE_SOURCE``/``RPJ_CACHE_DIR``
  in the tmp dir.  Every process is stopped by PID in teardown (``rpj-deploy down``), whatever
  happened; if the body raised, the component logs' tails are printed first.
* :class:`AirflowClient`: a small REST API v2 client (JWT from ``POST /auth/token``, unpause,
  trigger with ``conf``, wait for a terminal state, task instances with ``hostname``, tries, logs).
  :meth:`Deployment.run_dag` raises with the failing tasks' logs and the component logs' tails.
* :func:`cli_reference`: one CLI run of the sample snapshot (``rpj ccnet`` then ``rpj annotate``),
  made once per test session and shared, and :func:`output_digests` to compare outputs by sha256.
"""

from __future__ import annotations

import contextlib
import json
import random
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from airflow_env import base_env
from trees import digests
from trees import temp_files as trees_temp_files

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SCRIPT = REPO / "scripts" / "rpj-deploy"
SNAPSHOT = "2000-01"
SAMPLE_DAG = "rpv2_sample"
OUTPUT_COMPONENTS = ("documents", "quality_signals", "minhash", "duplicates", "clusters", "tokens")
TERMINAL_RUN_STATES = {"success", "failed"}
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}
REDIS_URL = "redis://127.0.0.1:6379"

# Scheduler settings that keep a small test run responsive on 2 cores.
RESPONSIVE = {
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "300",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "300",
    "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------------
# Outputs


def output_digests(storage_root: Path) -> dict[str, str]:
    """``{relative path: sha256}`` of every file under the :data:`OUTPUT_COMPONENTS`."""
    return digests(storage_root, *OUTPUT_COMPONENTS)


def temp_files(storage_root: Path) -> list[str]:
    """Leftover temporary files in the outputs."""
    return trees_temp_files(storage_root, *OUTPUT_COMPONENTS)


_REFERENCE: dict[str, Path] = {}


def cli_reference(base: Path) -> Path:
    """Storage root of one CLI run of the sample (``rpj ccnet``, ``rpj annotate``, ``rpj tokens``,
    ``rpj dedup``, ``rpj clusters``), made once per session."""
    if "root" in _REFERENCE:
        return _REFERENCE["root"]
    tmp = base / "cli-reference"
    tmp.mkdir(parents=True, exist_ok=True)
    env = base_env(tmp)
    for args in (
        ("ccnet", "--snapshot", SNAPSHOT, "--shards", "0-3"),
        ("annotate", "--snapshot", SNAPSHOT, "--shards", "0-3"),
        ("tokens", "--snapshot", SNAPSHOT, "--shards", "0-3"),
        ("dedup", "--snapshot", SNAPSHOT),
        ("clusters", "--snapshot", SNAPSHOT),
    ):
        proc = subprocess.run([str(BIN / "rpj"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, f"rpj {' '.join(args)} failed:\n{(proc.stdout + proc.stderr)[-5000:]}"
    root = tmp / "data"
    assert output_digests(root), "the CLI reference run wrote no outputs"
    _REFERENCE["root"] = root
    return root


PUBLISHED_PARTS = (
    "documents",
    "quality_signals",
    "minhash",
    "duplicates",
    "clusters",
    "tokens",
    "stats",
    "staging/dedup",
    "artifacts",
)


def published_sample(base: Path) -> Path:
    """Storage root of the CLI reference run (:func:`cli_reference`) copied, validated and published,
    made once per session; tests copy it before changing anything in it."""
    if "published" in _REFERENCE:
        return _REFERENCE["published"]
    import shutil

    from rpj_tasks.core.config import load_registry
    from rpj_tasks.publish import stage

    reference = cli_reference(base)
    root = base / "published-sample" / "data"
    shutil.rmtree(root.parent, ignore_errors=True)
    for part in PUBLISHED_PARTS:
        shutil.copytree(reference / part, root / part)
    stage.validate_and_publish(load_registry()[SNAPSHOT].with_overrides(storage_root=root.as_uri()), list(range(4)))
    _REFERENCE["published"] = root
    return root


def assert_same_outputs(actual_root: Path, reference_root: Path) -> int:
    actual, expected = output_digests(actual_root), output_digests(reference_root)
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differ = sorted(k for k in set(actual) & set(expected) if actual[k] != expected[k])
    assert not (missing or extra or differ), (
        f"outputs differ from the CLI reference: missing {missing[:10]}, extra {extra[:10]}, different bytes {differ[:10]}"
    )
    assert not temp_files(actual_root), f"temporary files left in the outputs: {temp_files(actual_root)}"
    return len(actual)


# ------------------------------------------------------------------------------------------------
# REST API v2 client


class AirflowClient:
    """Airflow 3 REST API v2 with a JWT from the simple auth manager (``POST /auth/token``)."""

    def __init__(self, base_url: str, username: str | None = None, password: str | None = None, timeout: float = 30):
        self.base_url = base_url.rstrip("/")
        self.username, self.password, self.timeout = username, password, timeout
        self.session = requests.Session()
        self._token: str | None = None

    def token(self) -> str:
        if self.password is None:  # all-admins mode: a token without credentials
            r = self.session.get(f"{self.base_url}/auth/token", timeout=self.timeout)
        else:
            r = self.session.post(
                f"{self.base_url}/auth/token", json={"username": self.username, "password": self.password}, timeout=self.timeout
            )
        r.raise_for_status()
        self._token = r.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw) -> requests.Response:
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {self._token or self.token()}", **kw.pop("headers", {})}
            r = self.session.request(method, f"{self.base_url}{path}", headers=headers, timeout=self.timeout, **kw)
            if r.status_code == 401 and attempt == 1:
                self._token = None  # expired: log in again
                continue
            break
        if r.status_code not in ok:
            raise AssertionError(f"{method} {path} -> {r.status_code}: {r.text[:2000]}")
        return r

    @staticmethod
    def _run_path(dag_id: str, run_id: str) -> str:
        return f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}"

    def health(self) -> dict[str, Any]:
        return self.session.get(f"{self.base_url}/api/v2/monitor/health", timeout=self.timeout).json()

    def unpause(self, dag_id: str) -> dict[str, Any]:
        return self.request("PATCH", f"/api/v2/dags/{quote(dag_id, safe='')}", json={"is_paused": False}).json()

    def trigger(
        self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: str | None = None, run_id: str | None = None
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"logical_date": logical_date, "conf": conf or {}}
        if run_id:
            body["dag_run_id"] = run_id
        return self.request("POST", f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns", json=body).json()

    def dag_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return self.request("GET", self._run_path(dag_id, run_id)).json()

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, poll: float = 2.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.dag_run(dag_id, run_id)["state"]
            if state in TERMINAL_RUN_STATES or time.monotonic() > deadline:
                return state
            time.sleep(poll)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        while True:
            page = self.request(
                "GET", self._run_path(dag_id, run_id) + "/taskInstances", params={"limit": 100, "offset": len(out)}
            ).json()
            out.extend(page["task_instances"])
            if not page["task_instances"] or len(out) >= page["total_entries"]:
                return out

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> list[dict[str, Any]]:
        path = self._run_path(dag_id, run_id) + f"/taskInstances/{quote(task_id, safe='')}"
        path += f"/{map_index}/tries" if map_index >= 0 else "/tries"
        return self.request("GET", path).json()["task_instances"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        path = self._run_path(dag_id, run_id) + f"/taskInstances/{quote(task_id, safe='')}/xcomEntries/{quote(key, safe='')}"
        value = self.request("GET", path, params={"map_index": map_index, "deserialize": "true"}).json()["value"]
        return json.loads(value) if isinstance(value, str) else value

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        path = self._run_path(dag_id, run_id) + f"/taskInstances/{quote(task_id, safe='')}/logs/{try_number}"
        r = self.request(
            "GET",
            path,
            params={"map_index": map_index, "full_content": "true"},
            headers={"Accept": "application/json"},
            ok=(200, 404),
        )
        if r.status_code == 404:
            return f"(no log: {r.text[:300]})"
        lines = []
        for entry in r.json().get("content", []):
            if isinstance(entry, str):
                lines.append(entry)
                continue
            extra = {k: v for k, v in entry.items() if k in ("error_detail", "exception")}
            lines.append(
                " ".join(
                    str(x)
                    for x in (entry.get("timestamp", ""), entry.get("level", ""), entry.get("logger", ""), entry.get("event", ""))
                    if x
                )
                + (f" {json.dumps(extra)[:4000]}" if extra else "")
            )
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Deployments


@dataclass
class Deployment:
    tmp: Path
    env: dict[str, str]
    up_args: list[str]
    state_dir: Path
    api_url: str
    executor: str
    workers: int
    db_name: str
    redis_db: int | None
    client: AirflowClient
    started: float = field(default_factory=time.monotonic)

    @property
    def storage_root(self) -> Path:
        return self.tmp / "data"

    def rpj_deploy(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["bash", str(SCRIPT), *args], env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout
        )

    def pid(self, component: str) -> int | None:
        try:
            return json.loads((self.state_dir / f"{component}.pid").read_text())["pid"]
        except FileNotFoundError:
            return None

    def component_log(self, component: str, lines: int = 60) -> str:
        path = self.state_dir / "logs" / f"{component}.log"
        if not path.exists():
            return f"(no {path})"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def components(self) -> list[str]:
        return sorted(p.stem for p in (self.state_dir / "logs").glob("*.log"))

    def worker_for_hostname(self, hostname: str) -> str:
        """The Celery worker component whose tasks report ``hostname`` (127.0.0.<i+1>, see deploy/)."""
        for i in range(1, self.workers + 1):
            if hostname == f"127.0.0.{i + 1}":
                return f"worker-{i}"
        raise KeyError(f"no worker reports hostname {hostname!r}")

    def kill_tree(self, component: str, sig: int = signal.SIGKILL) -> list[int]:
        """Send ``sig`` to a component and every descendant (its task processes included): a lost machine."""
        import psutil

        proc = psutil.Process(self.pid(component))
        procs = [proc, *proc.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(sig)
        psutil.wait_procs(procs, timeout=10)
        return [p.pid for p in procs]

    def restart_missing(self) -> subprocess.CompletedProcess:
        """``rpj-deploy up`` again with the same settings: starts only the components that are not running."""
        return self.rpj_deploy("up", *self.up_args, "--skip-setup", "--no-wait")

    def diagnostics(self, dag_id: str | None = None, run_id: str | None = None, lines: int = 80) -> str:
        """Logs of the run's unsuccessful task instances (every try) and the tails of the component logs."""
        out = []
        if dag_id and run_id:
            try:
                tis = self.client.task_instances(dag_id, run_id)
                out.append(
                    "task instances: "
                    + ", ".join(f"{t['task_id']}[{t['map_index']}]={t['state']}@{t['hostname']}#{t['try_number']}" for t in tis)
                )
                for t in tis:
                    if t["state"] in ("success", "skipped") or not t["try_number"]:
                        continue
                    for n in range(1, t["try_number"] + 1):
                        log = self.client.task_log(dag_id, run_id, t["task_id"], n, t["map_index"])
                        tail = "\n".join(log.splitlines()[-lines:])
                        out.append(f"---- task {t['task_id']}[{t['map_index']}] try {n} ({t['state']}) ----\n{tail}")
            except Exception as exc:  # noqa: BLE001 - diagnostics must not hide the original failure
                out.append(f"(could not read task instances: {exc})")
        for component in self.components():
            out.append(f"---- {component}.log (last {lines // 2} lines) ----\n{self.component_log(component, lines // 2)}")
        return "\n".join(out)

    def run_dag(self, conf: dict[str, Any], dag_id: str = SAMPLE_DAG, timeout: float = 900) -> dict[str, Any]:
        """Unpause, trigger with ``conf``, wait; returns the run, or fails with the diagnostics."""
        self.client.unpause(dag_id)
        run = self.client.trigger(dag_id, conf=conf)
        return self.wait(dag_id, run["dag_run_id"], timeout)

    def wait(self, dag_id: str, run_id: str, timeout: float = 900) -> dict[str, Any]:
        state = self.client.wait_for_run(dag_id, run_id, timeout)
        if state != "success":
            raise AssertionError(
                f"DAG run {dag_id}/{run_id} ended {state!r} (timeout {timeout}s)\n" + self.diagnostics(dag_id, run_id)
            )
        return self.client.dag_run(dag_id, run_id)


def _pg_admin():
    import psycopg2

    conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    conn.autocommit = True
    return conn


def postgres_available() -> str | None:
    """None if the test PostgreSQL server answers, else why not."""
    try:
        _pg_admin().close()
    except Exception as exc:  # noqa: BLE001
        return f"PostgreSQL at {PG['host']}:{PG['port']} unreachable: {exc}"
    return None


def redis_available() -> str | None:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=3).ping()
    except Exception as exc:  # noqa: BLE001
        return f"Redis at {REDIS_URL} unreachable: {exc}"
    return None


def _pick_redis_db() -> int:
    """An empty Redis DB number (1..15), flushed; 0 is left to the default deployment."""
    import redis

    numbers = list(range(1, 16))
    random.shuffle(numbers)
    for n in numbers:
        r = redis.Redis.from_url(f"{REDIS_URL}/{n}")
        if r.dbsize() == 0:
            return n
    raise RuntimeError("no empty Redis database among 1..15 for the test broker")


def _flush_redis(n: int) -> None:
    import redis

    with contextlib.suppress(Exception):
        redis.Redis.from_url(f"{REDIS_URL}/{n}").flushdb()


@contextlib.contextmanager
def deployment(
    tmp: Path,
    *,
    executor: str = "local",
    workers: int = 2,
    worker_concurrency: int = 1,
    parallelism: int = 4,
    db: str = "postgres",
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> Iterator[Deployment]:
    """A fresh deployment of rpj in ``tmp`` (see the module doc); always stopped, its DB dropped."""
    tmp.mkdir(parents=True, exist_ok=True)
    home = tmp / "airflow_home"
    db_name = f"rpj_test_{uuid.uuid4().hex[:12]}"
    port = free_port()
    redis_db = _pick_redis_db() if executor == "celery" else None
    run_env = base_env(tmp, **RESPONSIVE, **(env or {}))
    run_env["RPJ_DEPLOY_SKIP_SYNC"] = "1"  # the test's venv is the project's; no uv sync in tests
    up_args = [
        "--airflow-home",
        str(home),
        "--state-dir",
        str(home / "run"),
        "--db",
        db,
        "--db-name",
        db_name,
        "--executor",
        executor,
        "--workers",
        str(workers),
        "--worker-concurrency",
        str(worker_concurrency),
        "--port",
        str(port),
        "--log-server-port",
        str(free_port()),
        "--trigger-log-server-port",
        str(free_port()),
        "--parallelism",
        str(parallelism),
        "--admin-password",
        f"pw-{uuid.uuid4().hex[:12]}",
    ]
    if redis_db is not None:
        up_args += ["--redis-url", REDIS_URL, "--redis-db", str(redis_db)]
    password = up_args[up_args.index("--admin-password") + 1]
    dep = Deployment(
        tmp=tmp,
        env=run_env,
        up_args=up_args,
        state_dir=home / "run",
        api_url=f"http://127.0.0.1:{port}",
        executor=executor,
        workers=workers if executor == "celery" else 0,
        db_name=db_name,
        redis_db=redis_db,
        client=AirflowClient(f"http://127.0.0.1:{port}", "admin", password),
    )
    try:
        t0 = time.monotonic()
        proc = dep.rpj_deploy("up", *up_args, "--timeout", str(timeout), timeout=timeout + 300)
        if proc.returncode != 0:
            raise AssertionError(f"rpj-deploy up failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
        print(f"deployment ({executor}) up in {time.monotonic() - t0:.0f}s at {dep.api_url}")
        yield dep
    except BaseException:
        print("==== deployment diagnostics ====\n" + dep.diagnostics(), file=sys.stderr)
        raise
    finally:
        proc = dep.rpj_deploy(
            "down", "--airflow-home", str(home), "--state-dir", str(home / "run"), "--drop-db", "--grace", "15", timeout=180
        )
        if proc.returncode != 0:
            print(f"rpj-deploy down failed:\n{proc.stdout}\n{proc.stderr}", file=sys.stderr)
            _force_drop(db_name)
        if redis_db is not None:
            _flush_redis(redis_db)


def _force_drop(db_name: str) -> None:
    with contextlib.suppress(Exception):
        conn = _pg_admin()
        with conn.cursor() as cur:
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (db_name,))
            cur.execute(f'DROP DATABASE IF EXISTS "{db_name}"')
        conn.close()
