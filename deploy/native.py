#!/usr/bin/env python3
"""Native single-machine Airflow deployment of rpj: ``scripts/rpj-deploy up|down|status|logs|env``.

``up`` prepares the metadata DB (a PostgreSQL database on 127.0.0.1:5432, created if missing, or
SQLite with ``--db sqlite``), runs ``airflow db migrate``, creates the registry's pools (and the
``aws_default`` connection when ``RPJ_AWS_CONN`` is set), then starts the Airflow components as
background processes, each in its own session, with a PID file and a log file in the state dir
(default ``$AIRFLOW_HOME/run/``): ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer``
and, with ``--executor celery``, N ``airflow celery worker`` processes (Redis broker, PostgreSQL
result backend).  It waits until ``/api/v2/monitor/health`` reports a healthy scheduler and DAG
processor and the registry's DAGs are parsed, then prints the UI URL and how to log in.

``down`` stops every process of the deployment (SIGTERM to each component, which stops its own
children; SIGKILL for whatever is left of the process trees after a grace period), optionally
dropping the database.  Every setting is a flag with an
``RPJ_DEPLOY_*`` environment default; ``up`` is idempotent (a running deployment with the same
settings is left alone, dead components are restarted).

The script needs the project venv (psutil, psycopg2, redis, requests come with it) but never
imports Airflow: every Airflow step is a subprocess with the deployment's environment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import shlex
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

REPO = Path(__file__).resolve().parents[1]
DEPLOY_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(DEPLOY_DIR))
BIN = Path(sys.executable).parent
STATE_FILE = "deploy.json"
DB_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
HOSTNAME_CALLABLE = "rpj_deploy_hostname.worker_hostname"
CORE_COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
START_MARK = "rpj-deploy starts:"  # opens each component start in its (appended) log


class DeployError(RuntimeError):
    """A condition the operator must fix; printed without a traceback."""


def env_default(name: str, default: Any) -> Any:
    value = os.environ.get(f"RPJ_DEPLOY_{name}")
    if value is None or value == "":
        return default
    if isinstance(default, bool):
        return value.strip().lower() in ("1", "true", "yes", "on")
    if isinstance(default, int):
        return int(value)
    if isinstance(default, float):
        return float(value)
    return value


def default_airflow_home() -> str:
    return os.environ.get("AIRFLOW_HOME") or str(REPO / "airflow_home")


def state_dir_of(args: argparse.Namespace) -> Path:
    """``--state-dir``, else ``<airflow home>/run``: where a deployment keeps its PIDs and logs."""
    return Path(args.state_dir or os.path.join(args.airflow_home or default_airflow_home(), "run")).resolve()


# --------------------------------------------------------------------------------------------
# Settings


@dataclass
class Settings:
    airflow_home: str
    state_dir: str
    db: str = "postgres"  # postgres | sqlite
    db_name: str = "rpj_airflow"
    pg_host: str = "127.0.0.1"
    pg_port: int = 5432
    pg_user: str = "postgres"
    pg_password: str = ""
    sqlite_path: str = ""
    executor: str = "local"  # local | celery
    workers: int = 2
    worker_concurrency: int = 2
    redis_url: str = "redis://127.0.0.1:6379"
    redis_db: int = 0
    host: str = "127.0.0.1"
    port: int = 8080
    api_workers: int = 1
    log_server_port: int = 8793
    trigger_log_server_port: int = 8794
    parallelism: int = 4
    auth: str = "password"  # password | all-admins
    admin_user: str = "admin"
    components: list[str] = field(default_factory=list)

    # ---- derived

    @property
    def run_dir(self) -> Path:
        return Path(self.state_dir)

    @property
    def log_dir(self) -> Path:
        return self.run_dir / "logs"

    @property
    def api_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{host}:{self.port}"

    def sql_alchemy_conn(self) -> str:
        if self.db == "sqlite":
            return f"sqlite:///{self.sqlite_path}"
        auth = quote(self.pg_user, safe="") + (f":{quote(self.pg_password, safe='')}" if self.pg_password else "")
        return f"postgresql+psycopg2://{auth}@{self.pg_host}:{self.pg_port}/{self.db_name}"

    def broker_url(self) -> str:
        return f"{self.redis_url.rstrip('/')}/{self.redis_db}"

    def public(self) -> dict[str, Any]:
        """The settings as saved in the state file (no password)."""
        out = asdict(self)
        out["pg_password"] = "***" if self.pg_password else ""
        return out


def resolve_settings(args: argparse.Namespace) -> Settings:
    home = str(Path(args.airflow_home or default_airflow_home()).resolve())
    state_dir = str(Path(args.state_dir or os.path.join(home, "run")).resolve())
    s = Settings(
        airflow_home=home,
        state_dir=state_dir,
        db=args.db,
        db_name=args.db_name,
        pg_host=args.pg_host,
        pg_port=args.pg_port,
        pg_user=args.pg_user,
        pg_password=args.pg_password,
        sqlite_path=str(Path(args.sqlite_path or os.path.join(home, "airflow.db")).resolve()),
        executor=args.executor,
        workers=args.workers,
        worker_concurrency=args.worker_concurrency,
        redis_url=args.redis_url,
        redis_db=args.redis_db,
        host=args.host,
        port=args.port,
        api_workers=args.api_workers,
        log_server_port=args.log_server_port,
        trigger_log_server_port=args.trigger_log_server_port,
        parallelism=args.parallelism,
        auth=args.auth,
        admin_user=args.admin_user,
    )
    if s.db == "sqlite" and s.executor == "celery":
        raise DeployError(
            "--executor celery needs --db postgres (the Celery result backend and concurrent "
            "workers need a server database); use --executor local with --db sqlite"
        )
    if s.db == "postgres" and not DB_NAME_RE.match(s.db_name):
        raise DeployError(f"invalid database name {s.db_name!r}: letters, digits and _ only, max 63 characters")
    if s.executor == "celery" and not 1 <= s.workers <= 64:
        raise DeployError(f"--workers must be in 1..64, got {s.workers}")
    if s.worker_concurrency < 1 or s.parallelism < 1 or s.api_workers < 1:
        raise DeployError("--worker-concurrency, --parallelism and --api-workers must be >= 1")
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", s.admin_user):
        raise DeployError(f"invalid --admin-user {s.admin_user!r}")
    s.components = list(CORE_COMPONENTS) + ([f"worker-{i}" for i in range(1, s.workers + 1)] if s.executor == "celery" else [])
    return s


def load_state(state_dir: Path) -> dict[str, Any] | None:
    path = state_dir / STATE_FILE
    if not path.exists():
        return None
    return json.loads(path.read_text())


def settings_from_state(state: dict[str, Any], pg_password: str = "") -> Settings:
    data = dict(state["settings"])
    data["pg_password"] = pg_password if data.get("pg_password") else ""
    return Settings(**data)


# --------------------------------------------------------------------------------------------
# Environment of the Airflow processes


def passwords_file(s: Settings, env: dict[str, str]) -> Path:
    return Path(
        env.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
        or os.path.join(s.airflow_home, "simple_auth_manager_passwords.json.generated")
    )


def airflow_env(s: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every component gets: the caller's, plus the deployment's settings.

    Settings that define the deployment (DB, executor, ports, auth) are forced; tuning values are
    defaults that an ``AIRFLOW__*`` variable in the caller's environment overrides.
    """
    env = dict(os.environ if base is None else base)
    env.pop("RPJ_AWS_CONN", None)  # read once by the setup; components use the connection
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env.setdefault("RPJ_HOME", str(REPO))
    forced = {
        "AIRFLOW_HOME": s.airflow_home,
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": s.sql_alchemy_conn(),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor" if s.executor == "celery" else "LocalExecutor",
        # Task processes reach the metadata DB only through the execution API of our api-server.
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{s.api_url}/execution/",
        "AIRFLOW__API__HOST": s.host,
        "AIRFLOW__API__PORT": str(s.port),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(s.log_server_port),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(s.trigger_log_server_port),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True" if s.auth == "all-admins" else "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{s.admin_user}:admin",
    }
    env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_ASYNC", None)  # derived from the sync URL by Airflow
    if s.executor == "celery":
        forced.update(
            {
                "AIRFLOW__CELERY__BROKER_URL": s.broker_url(),
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + s.sql_alchemy_conn(),
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(s.worker_concurrency),
            }
        )
    env.update(forced)
    defaults = {
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__PARALLELISM": str(s.parallelism),
        "AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG": str(s.parallelism),
        # One DAG file (dags/rpv2.py builds every DAG): one parsing process is enough.
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "60",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "60",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        # Airflow's own default, set explicitly: a task running longer is redelivered by Redis.
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": "86400",
    }
    for key, value in defaults.items():
        env.setdefault(key, value)
    # env.sh exports a SQLite URL by default; the forced value above wins, as it should.
    return env


def component_env(s: Settings, name: str, env: dict[str, str]) -> dict[str, str]:
    env = dict(env)
    if name.startswith("worker-"):
        index = int(name.split("-", 1)[1])
        # Distinct, resolvable task-instance hostnames per worker (see rpj_deploy_hostname.py).
        env["RPJ_WORKER_HOSTNAME"] = f"127.0.0.{index + 1}"
        env["AIRFLOW__CORE__HOSTNAME_CALLABLE"] = HOSTNAME_CALLABLE
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(DEPLOY_DIR), env.get("PYTHONPATH", "")) if p)
    return env


def component_cmd(s: Settings, name: str) -> list[str]:
    airflow = str(BIN / "airflow")
    if name == "api-server":
        return [airflow, "api-server", "--host", s.host, "--port", str(s.port), "--workers", str(s.api_workers)]
    if name in ("scheduler", "dag-processor", "triggerer"):
        return [airflow, name]
    if name.startswith("worker-"):
        index = int(name.split("-", 1)[1])
        cmd = [airflow, "celery", "worker", "--celery-hostname", f"rpj-{name}@%h", "--concurrency", str(s.worker_concurrency)]
        cmd += ["--queues", ",".join(worker_queues())]
        if index > 1:
            # One log server per machine is enough (logs are local files here) and the port is shared.
            cmd.append("--skip-serve-logs")
        return cmd
    raise DeployError(f"unknown component {name!r}")


# --------------------------------------------------------------------------------------------
# Processes


def _psutil():
    import psutil

    return psutil


def pid_file(s: Settings, name: str) -> Path:
    return s.run_dir / f"{name}.pid"


def log_file(s: Settings, name: str) -> Path:
    return s.log_dir / f"{name}.log"


def read_pid(s: Settings, name: str) -> dict[str, Any] | None:
    path = pid_file(s, name)
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def process_of(record: dict[str, Any] | None):
    """The live psutil.Process of a PID record, or None (dead, zombie, or the PID was reused)."""
    if not record:
        return None
    psutil = _psutil()
    try:
        proc = psutil.Process(record["pid"])
        if abs(proc.create_time() - record["create_time"]) > 1.0:
            return None  # another process got this PID
        if proc.status() == psutil.STATUS_ZOMBIE:
            with contextlib.suppress(ChildProcessError, OSError):
                os.waitpid(proc.pid, os.WNOHANG)
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def start_component(s: Settings, name: str, env: dict[str, str]) -> dict[str, Any]:
    s.log_dir.mkdir(parents=True, exist_ok=True)
    cmd = component_cmd(s, name)
    log = open(log_file(s, name), "ab")
    log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} {START_MARK} {shlex.join(cmd)}\n".encode())
    log.flush()
    proc = subprocess.Popen(
        cmd,
        env=component_env(s, name, env),
        cwd=str(REPO),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        close_fds=True,
    )
    log.close()
    record = {
        "name": name,
        "pid": proc.pid,
        "create_time": _psutil().Process(proc.pid).create_time(),
        "cmd": cmd,
        "log": str(log_file(s, name)),
    }
    tmp = pid_file(s, name).with_suffix(".pid.tmp")
    tmp.write_text(json.dumps(record))
    os.replace(tmp, pid_file(s, name))
    return record


def process_tree(proc) -> list:
    """``proc`` and all its descendants (the task processes run in process groups of their own)."""
    psutil = _psutil()
    try:
        return [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def alive(proc) -> bool:
    psutil = _psutil()
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def kill_all(procs: list) -> None:
    psutil = _psutil()
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            p.kill()


def stop_processes(records: list[dict[str, Any]], grace: float, log=print) -> None:
    """Stop every live component of ``records`` and everything it started.

    SIGTERM goes to each component's main process, which shuts its own children down (the
    scheduler's executor workers, log servers, a Celery worker's running tasks: warm shutdown).
    Whatever is still alive in the process trees when the mains are gone (orphaned task processes
    run in process groups of their own), or when ``grace`` seconds have passed, gets SIGKILL.
    """
    psutil = _psutil()
    mains, tree = [], {}
    for record in records:
        proc = process_of(record)
        if proc is None:
            continue
        procs = process_tree(proc)
        log(f"stopping {record['name']} (pid {record['pid']}, {len(procs) - 1} descendants)")
        mains.append(proc)
        tree.update({p.pid: p for p in procs})
    if not mains:
        return
    for proc in mains:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.terminate()
    deadline = time.monotonic() + grace
    _gone, alive_mains = psutil.wait_procs(mains, timeout=grace)
    # Descendants started meanwhile (a task launched during shutdown) belong to the trees too.
    for proc in alive_mains:
        with contextlib.suppress(psutil.NoSuchProcess):
            tree.update({c.pid: c for c in proc.children(recursive=True)})
    # Children get a moment to follow their parent out.
    rest = [p for p in tree.values() if alive(p)]
    if rest and not alive_mains:
        _gone, rest = psutil.wait_procs(rest, timeout=max(0.0, min(5.0, deadline - time.monotonic())))
    if rest:
        log(
            f"{len(rest)} process(es) still alive after SIGTERM ({grace:.0f}s grace): SIGKILL "
            + ", ".join(f"{p.pid}" for p in rest)
        )
        kill_all(rest)
        psutil.wait_procs(rest, timeout=10)
    for p in tree.values():  # reap our own children (when called in-process)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(p.pid, os.WNOHANG)


# --------------------------------------------------------------------------------------------
# Preflight checks and setup


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0" if host in ("", "::") else host, port))
        except OSError:
            return False
    return True


def port_owner(port: int) -> str:
    psutil = _psutil()
    with contextlib.suppress(Exception):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN and conn.pid:
                proc = psutil.Process(conn.pid)
                return f" (pid {conn.pid}: {' '.join(proc.cmdline()[:4])})"
    return ""


def check_ports(s: Settings, components: list[str]) -> None:
    wanted = []
    if "api-server" in components:
        wanted.append(("api-server port (--port)", s.host, s.port))
    if "triggerer" in components:
        wanted.append(("triggerer log server port (--trigger-log-server-port)", "0.0.0.0", s.trigger_log_server_port))
    if ("scheduler" in components and s.executor == "local") or "worker-1" in components:
        wanted.append(("worker log server port (--log-server-port)", "0.0.0.0", s.log_server_port))
    for what, host, port in wanted:
        if not port_free(host, port):
            raise DeployError(f"{what} {port} is already in use{port_owner(port)}: stop that process or choose another port")


def pg_connect(s: Settings, dbname: str = "postgres"):
    import psycopg2

    try:
        conn = psycopg2.connect(
            host=s.pg_host, port=s.pg_port, user=s.pg_user, password=s.pg_password or None, dbname=dbname, connect_timeout=5
        )
    except psycopg2.OperationalError as exc:
        raise DeployError(
            f"PostgreSQL at {s.pg_host}:{s.pg_port} (user {s.pg_user}) is unreachable: {str(exc).strip()}\n"
            "Start PostgreSQL, fix --pg-host/--pg-port/--pg-user (RPJ_DEPLOY_PG_*), or use --db sqlite."
        ) from exc
    conn.autocommit = True
    return conn


def ensure_database(s: Settings, log=print) -> bool:
    """Create the PostgreSQL database if missing; True if it was created."""
    from psycopg2 import sql

    conn = pg_connect(s)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (s.db_name,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.db_name)))
            log(f"created PostgreSQL database {s.db_name} on {s.pg_host}:{s.pg_port}")
            return True
    finally:
        conn.close()


def drop_database(s: Settings, log=print) -> None:
    if s.db == "sqlite":
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(s.sqlite_path + suffix)
        log(f"removed SQLite database {s.sqlite_path}")
        return
    from psycopg2 import sql

    conn = pg_connect(s)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                (s.db_name,),
            )
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(s.db_name)))
        log(f"dropped PostgreSQL database {s.db_name}")
    finally:
        conn.close()


def check_redis(s: Settings) -> None:
    import redis

    try:
        redis.Redis.from_url(s.broker_url(), socket_connect_timeout=5).ping()
    except Exception as exc:  # noqa: BLE001 - any failure is reported the same way
        raise DeployError(
            f"Redis broker {s.broker_url()} is unreachable: {exc}\n"
            "Start Redis or set --redis-url / --redis-db (RPJ_DEPLOY_REDIS_URL / RPJ_DEPLOY_REDIS_DB)."
        ) from exc


#: Flags whose value may hold a credential (RPJ_AWS_CONN): never written to a log or an error message.
SECRET_FLAGS = ("--conn-json", "--conn-uri", "--conn-password")


def shown_args(args: tuple[str, ...] | list[str]) -> str:
    """``args`` quoted for a log line, with the value of every :data:`SECRET_FLAGS` flag redacted."""
    return shlex.join("<redacted>" if i and args[i - 1] in SECRET_FLAGS else a for i, a in enumerate(args))


def run_airflow(s: Settings, env: dict[str, str], *args: str, log_name: str, timeout: float = 600) -> str:
    s.log_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([str(BIN / "airflow"), *args], env=env, cwd=str(REPO), capture_output=True, text=True, timeout=timeout)
    with open(log_file(s, log_name), "a") as f:
        f.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} airflow {shown_args(args)} -> {proc.returncode}\n")
        f.write(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise DeployError(f"`airflow {shown_args(args)}` failed (exit {proc.returncode}); see {log_file(s, log_name)}:\n{tail}")
    return proc.stdout


def worker_queues() -> list[str]:
    """The Celery queues every worker consumes: Airflow's ``default`` and the registry's
    ``dedup_queue`` values (the exact-dedup partition tasks)."""
    sys.path.insert(0, str(REPO))
    from rpj_tasks.core.config import load_registry

    return ["default", *sorted({c.dedup_queue for c in load_registry().values()} - {"default"})]


def expected_dag_count() -> int:
    sys.path.insert(0, str(REPO))
    from rpj_tasks.core.config import load_registry

    return len(load_registry()) + 3  # + rpv2_monthly, rpv2_prep_artifacts, rpv2_dedup


def setup_metadata(s: Settings, env: dict[str, str], log=print) -> None:
    if s.db == "postgres":
        ensure_database(s, log)
    else:
        Path(s.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
    log("airflow db migrate ...")
    run_airflow(s, env, "db", "migrate", log_name="setup")
    from registry_pools import pools_json

    path = s.run_dir / "pools.json"
    path.write_text(pools_json())
    run_airflow(s, env, "pools", "import", str(path), log_name="setup")
    log("pools: " + ", ".join(f"{name}={p['slots']}" for name, p in json.loads(path.read_text()).items()))
    conn = os.environ.get("RPJ_AWS_CONN", "").strip()
    if conn:
        # Through an owner-only file, not the command line (where `ps` would show the secret); the
        # file is gone before the components start, and no component gets RPJ_AWS_CONN.
        path = s.run_dir / ("aws_default.json" if conn.startswith("{") else "aws_default.env")
        write_private(path, json.dumps({"aws_default": json.loads(conn)}) if conn.startswith("{") else f"aws_default={conn}\n")
        try:
            run_airflow(s, env, "connections", "import", "--overwrite", str(path), log_name="setup")
        finally:
            path.unlink(missing_ok=True)
        log("connection aws_default created from RPJ_AWS_CONN")


def ensure_password(s: Settings, env: dict[str, str], password: str | None, log=print) -> str | None:
    """The admin password (SimpleAuthManager's passwords file), written if given or missing."""
    if s.auth == "all-admins":
        return None
    path = passwords_file(s, env)
    current: dict[str, str] = {}
    with contextlib.suppress(FileNotFoundError, ValueError):
        current = json.loads(path.read_text() or "{}")
    if password:
        if current.get(s.admin_user) != password:
            current[s.admin_user] = password
        else:
            return password
    elif s.admin_user in current:
        return current[s.admin_user]
    else:
        current[s.admin_user] = secrets.token_urlsafe(12)
        log(f"generated a password for {s.admin_user} in {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, json.dumps(current))
    return current[s.admin_user]


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600) from the start."""
    tmp = path.with_name(path.name + ".tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# --------------------------------------------------------------------------------------------
# REST checks


def get_token(s: Settings, password: str | None, timeout: float = 10) -> str:
    import requests

    if s.auth == "all-admins":
        r = requests.get(f"{s.api_url}/auth/token", timeout=timeout)
    else:
        r = requests.post(f"{s.api_url}/auth/token", json={"username": s.admin_user, "password": password}, timeout=timeout)
    r.raise_for_status()
    return r.json()["access_token"]


def health(s: Settings, timeout: float = 5) -> dict[str, Any] | None:
    import requests

    try:
        r = requests.get(f"{s.api_url}/api/v2/monitor/health", timeout=timeout)
        return r.json() if r.status_code == 200 else None
    except (requests.RequestException, ValueError):
        return None


def healthy(h: dict[str, Any] | None, want_triggerer: bool = True) -> bool:
    if not h:
        return False
    keys = ["metadatabase", "scheduler", "dag_processor"] + (["triggerer"] if want_triggerer else [])
    return all((h.get(k) or {}).get("status") == "healthy" for k in keys)


def tail(path: Path, lines: int = 40) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 200_000))
            data = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return f"(no log at {path})"
    return "\n".join(data.splitlines()[-lines:])


def current_run_log(s: Settings, name: str) -> str:
    """The part of a component's log written since its latest start (logs are appended to)."""
    return tail(log_file(s, name), 2000).rsplit(START_MARK, 1)[-1]


def wait_ready(s: Settings, password: str | None, timeout: float, log=print) -> dict[str, Any]:
    """Wait for healthy components, parsed DAGs and (Celery) ready workers; fail early if one died."""
    import requests

    deadline = time.monotonic() + timeout
    expected = expected_dag_count()
    stage, last = "health", None
    token = None
    while time.monotonic() < deadline:
        for name in s.components:
            if process_of(read_pid(s, name)) is None:
                raise DeployError(f"{name} exited during startup; last lines of {log_file(s, name)}:\n{tail(log_file(s, name))}")
        if stage == "health":
            last = health(s)
            if healthy(last):
                stage = "dags"
                log("components healthy; waiting for the DAGs to be parsed ...")
        if stage == "dags":
            try:
                token = token or get_token(s, password)
                headers = {"Authorization": f"Bearer {token}"}
                errors = requests.get(f"{s.api_url}/api/v2/importErrors", headers=headers, timeout=10).json()
                if errors.get("total_entries"):
                    msgs = "\n".join(f"{e.get('filename')}: {e.get('stack_trace', '')[-1500:]}" for e in errors["import_errors"])
                    raise DeployError(f"DAG import errors:\n{msgs}")
                dags = requests.get(f"{s.api_url}/api/v2/dags", params={"limit": 1}, headers=headers, timeout=10).json()
                last = {"dags": dags.get("total_entries"), "expected": expected}
                if (dags.get("total_entries") or 0) >= expected:
                    stage = "workers"
            except requests.RequestException as exc:
                last = {"error": str(exc)}
        if stage == "workers":
            missing = [n for n in s.components if n.startswith("worker-") and " ready." not in current_run_log(s, n)]
            if not missing:
                return health(s) or {}
            last = {"celery workers not ready": missing}
        time.sleep(1)
    raise DeployError(
        f"deployment not ready after {timeout:.0f}s (waiting for {stage}: {last}); "
        f"see the logs in {s.log_dir} (`rpj-deploy logs`)"
    )


# --------------------------------------------------------------------------------------------
# Commands


ENV_FILE = "env.json"
SAVED_ENV_PREFIXES = ("AIRFLOW", "RPJ_", "AWS_", "PYTHONPATH", "PATH")


def save_state(s: Settings, env: dict[str, str]) -> None:
    """deploy.json (settings) and env.json (0600: the components' AIRFLOW*/RPJ_*/AWS_* environment,
    reused when `up` restarts a component of a running deployment, and printed by `env`)."""
    s.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = s.run_dir / (STATE_FILE + ".tmp")
    tmp.write_text(json.dumps({"settings": s.public(), "repo": str(REPO), "python": sys.executable}, indent=1))
    os.replace(tmp, s.run_dir / STATE_FILE)
    saved = {k: v for k, v in env.items() if k.startswith(SAVED_ENV_PREFIXES)}
    write_private(s.run_dir / ENV_FILE, json.dumps(saved, indent=1, sort_keys=True))


def saved_env(s: Settings) -> dict[str, str] | None:
    try:
        return json.loads((s.run_dir / ENV_FILE).read_text())
    except (FileNotFoundError, ValueError):
        return None


def running(s: Settings) -> dict[str, Any]:
    """``{component: psutil.Process}`` of the live components listed in the settings."""
    return {name: proc for name in s.components if (proc := process_of(read_pid(s, name)))}


def comparable(settings: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k not in ("pg_password",)}


def cmd_up(args: argparse.Namespace) -> int:
    s = resolve_settings(args)
    state = load_state(s.run_dir)
    if state:
        old = settings_from_state(state, s.pg_password)
        alive = running(old)
        if alive and comparable(old.public()) != comparable(s.public()):
            diff = {k: (old.public()[k], v) for k, v in s.public().items() if old.public().get(k) != v}
            raise DeployError(
                f"a deployment with other settings is running from {s.run_dir} "
                f"({', '.join(sorted(alive))}); differences (running, asked): {diff}. "
                "Run `rpj-deploy down` first, or use another --state-dir."
            )
    else:
        alive = {}
    env = airflow_env(s)
    previous = saved_env(s)
    if alive and previous is not None:
        # Components restarted next to running ones get the environment those started with.
        env = airflow_env(s, base={**{k: v for k, v in os.environ.items() if not k.startswith(SAVED_ENV_PREFIXES)}, **previous})
    missing = [name for name in s.components if name not in alive]
    if not missing:
        print(f"rpj-deploy: already running ({', '.join(s.components)}); nothing to do")
    else:
        check_ports(s, missing)
        if s.db == "postgres":
            pg_connect(s).close()
        if s.executor == "celery":
            check_redis(s)
        Path(s.airflow_home).mkdir(parents=True, exist_ok=True)
        save_state(s, env)
        if not args.skip_setup:
            setup_metadata(s, env)
    # Written before the api-server starts: it reads the passwords file at startup.
    password = ensure_password(s, env, args.admin_password)
    for name in missing:
        record = start_component(s, name, env)
        print(f"started {name}: pid {record['pid']}, log {record['log']}")
    if not args.no_wait:
        try:
            wait_ready(s, password, args.timeout)
        except DeployError:
            if args.down_on_failure:
                stop_processes([r for n in s.components if (r := read_pid(s, n))], grace=args.grace)
            raise
    print_access(s, env, password)
    return 0


def print_access(s: Settings, env: dict[str, str], password: str | None) -> None:
    print()
    print(
        f"Airflow UI and REST API: {s.api_url}/   (executor: {env['AIRFLOW__CORE__EXECUTOR']}, "
        f"metadata DB: {s.db} {s.db_name if s.db == 'postgres' else s.sqlite_path})"
    )
    if s.auth == "all-admins":
        print("Login: none needed (simple auth manager, all users are admins: local demo only).")
        print(f"REST token: curl -s {s.api_url}/auth/token")
    else:
        print(f"Login: user {s.admin_user!r}, password {password!r} (stored in {passwords_file(s, env)})")
        print(
            f"REST token: curl -s -X POST {s.api_url}/auth/token -H 'Content-Type: application/json' "
            f'-d \'{{"username": "{s.admin_user}", "password": "..."}}\''
        )
    print(f"Processes, PID files and logs: {s.run_dir}   (rpj-deploy status | logs | down)")


def cmd_down(args: argparse.Namespace) -> int:
    state_dir = state_dir_of(args)
    state = load_state(state_dir)
    if state is None:
        print(f"rpj-deploy: no deployment state in {state_dir}; nothing to stop")
        return 0
    s = settings_from_state(state, args.pg_password)
    names = [p.name[:-4] for p in sorted(s.run_dir.glob("*.pid"))]
    order = sorted(names, key=lambda n: (not n.startswith("worker-"), n == "api-server"))  # workers first, api last
    records = [r for n in order if (r := read_pid(s, n))]
    stop_processes(records, grace=args.grace)
    for n in names:
        with contextlib.suppress(FileNotFoundError):
            pid_file(s, n).unlink()
    if args.drop_db:
        drop_database(s)
    print("rpj-deploy: stopped" + (" and dropped the database" if args.drop_db else ""))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    state_dir = state_dir_of(args)
    state = load_state(state_dir)
    if state is None:
        print(f"no deployment in {state_dir}")
        return 3
    s = settings_from_state(state)
    alive = running(s)
    rows = []
    for name in s.components:
        rec = read_pid(s, name)
        proc = alive.get(name)
        up = f"up {time.time() - proc.create_time():.0f}s" if proc else "not running"
        rows.append({"component": name, "pid": rec["pid"] if rec else None, "state": up, "log": str(log_file(s, name))})
    h = health(s)
    if args.json:
        print(json.dumps({"settings": s.public(), "components": rows, "health": h}, indent=1))
    else:
        for r in rows:
            print(f"{r['component']:<14} {str(r['pid'] or '-'):>8}  {r['state']:<14} {r['log']}")
        print(
            f"api: {s.api_url}  health: "
            + (json.dumps({k: (v or {}).get("status") for k, v in h.items()}) if h else "unreachable")
        )
    if len(alive) == len(s.components):
        return 0
    return 3 if not alive else 1


def cmd_logs(args: argparse.Namespace) -> int:
    state_dir = state_dir_of(args)
    state = load_state(state_dir)
    if state is None:
        raise DeployError(f"no deployment in {state_dir}")
    s = settings_from_state(state)
    names = args.component or [*s.components, "setup"]
    unknown = [n for n in names if not log_file(s, n).exists()]
    if unknown and args.component:
        raise DeployError(f"no log for {', '.join(unknown)}; logs: {', '.join(p.stem for p in sorted(s.log_dir.glob('*.log')))}")
    names = [n for n in names if log_file(s, n).exists()]
    for n in names:
        print(f"==> {log_file(s, n)} <==")
        print(tail(log_file(s, n), args.lines))
    if args.follow:
        files = {n: open(log_file(s, n), "rb") for n in names}
        for f in files.values():
            f.seek(0, os.SEEK_END)
        try:
            while True:
                quiet = True
                for n, f in files.items():
                    chunk = f.read()
                    if chunk:
                        quiet = False
                        for line in chunk.decode("utf-8", "replace").splitlines():
                            print(f"{n}| {line}", flush=True)
                if quiet:
                    time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


def cmd_env(args: argparse.Namespace) -> int:
    """Print ``export`` lines that point the airflow CLI at the deployment."""
    state_dir = state_dir_of(args)
    state = load_state(state_dir)
    if state is None:
        raise DeployError(f"no deployment in {state_dir}")
    s = settings_from_state(state, args.pg_password)
    env = airflow_env(s, base=saved_env(s) or {})
    for key in sorted(env):
        if key.startswith(("AIRFLOW", "RPJ_", "AWS_")):
            print(f"export {key}={shlex.quote(env[key])}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rpj-deploy", description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--airflow-home", default=None, help="AIRFLOW_HOME (default: $AIRFLOW_HOME or <repo>/airflow_home)")
        sp.add_argument(
            "--state-dir",
            default=env_default("STATE_DIR", None),
            help="PID files, logs, deploy.json (env RPJ_DEPLOY_STATE_DIR; default: $AIRFLOW_HOME/run)",
        )
        sp.add_argument(
            "--pg-password",
            default=env_default("PG_PASSWORD", os.environ.get("PGPASSWORD", "")),
            help="PostgreSQL password (env RPJ_DEPLOY_PG_PASSWORD or PGPASSWORD)",
        )

    up = sub.add_parser("up", help="set up and start the deployment", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    common(up)
    up.add_argument(
        "--db", choices=("postgres", "sqlite"), default=env_default("DB", "postgres"), help="metadata DB (env RPJ_DEPLOY_DB)"
    )
    up.add_argument("--db-name", default=env_default("DB_NAME", "rpj_airflow"), help="PostgreSQL database, created if missing")
    up.add_argument("--pg-host", default=env_default("PG_HOST", "127.0.0.1"))
    up.add_argument("--pg-port", type=int, default=env_default("PG_PORT", 5432))
    up.add_argument("--pg-user", default=env_default("PG_USER", "postgres"))
    up.add_argument(
        "--sqlite-path", default=env_default("SQLITE_PATH", None), help="with --db sqlite (default: $AIRFLOW_HOME/airflow.db)"
    )
    up.add_argument("--executor", choices=("local", "celery"), default=env_default("EXECUTOR", "local"))
    up.add_argument("--workers", type=int, default=env_default("WORKERS", 2), help="Celery worker processes")
    up.add_argument(
        "--worker-concurrency", type=int, default=env_default("WORKER_CONCURRENCY", 2), help="task slots per Celery worker"
    )
    up.add_argument(
        "--redis-url", default=env_default("REDIS_URL", "redis://127.0.0.1:6379"), help="Celery broker (without db number)"
    )
    up.add_argument("--redis-db", type=int, default=env_default("REDIS_DB", 0), help="Redis database number of the broker")
    up.add_argument("--host", default=env_default("HOST", "127.0.0.1"), help="api-server bind address")
    up.add_argument("--port", type=int, default=env_default("PORT", 8080), help="api-server port (UI, REST API, execution API)")
    up.add_argument("--api-workers", type=int, default=env_default("API_WORKERS", 1), help="api-server worker processes")
    up.add_argument("--log-server-port", type=int, default=env_default("LOG_SERVER_PORT", 8793), help="worker log server port")
    up.add_argument("--trigger-log-server-port", type=int, default=env_default("TRIGGER_LOG_SERVER_PORT", 8794))
    up.add_argument("--parallelism", type=int, default=env_default("PARALLELISM", 4), help="[core] parallelism")
    up.add_argument(
        "--auth",
        choices=("password", "all-admins"),
        default=env_default("AUTH", "password"),
        help="SimpleAuthManager: admin user with a password, or no login (everyone admin; local demo)",
    )
    up.add_argument("--admin-user", default=env_default("ADMIN_USER", "admin"))
    up.add_argument(
        "--admin-password",
        default=env_default("ADMIN_PASSWORD", None),
        help="(env RPJ_DEPLOY_ADMIN_PASSWORD) default: keep the stored one, or generate one",
    )
    up.add_argument("--timeout", type=float, default=env_default("TIMEOUT", 300.0), help="seconds to wait for readiness")
    up.add_argument("--no-wait", action="store_true", help="start and return without waiting for readiness")
    up.add_argument("--skip-setup", action="store_true", help="do not run db migrate / pools / connections")
    up.add_argument("--down-on-failure", action="store_true", help="stop what was started if readiness fails")
    up.add_argument("--grace", type=float, default=env_default("GRACE", 30.0), help="with --down-on-failure")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser(
        "down", help="stop every process of the deployment", formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    common(down)
    down.add_argument("--grace", type=float, default=env_default("GRACE", 30.0), help="seconds between SIGTERM and SIGKILL")
    down.add_argument("--drop-db", action="store_true", help="also drop the PostgreSQL database (or delete the SQLite file)")
    down.set_defaults(func=cmd_down)

    st = sub.add_parser("status", help="components, PIDs and health (exit 0: all up, 1: some, 3: none)")
    common(st)
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)

    lg = sub.add_parser("logs", help="tail component logs")
    common(lg)
    lg.add_argument(
        "component", nargs="*", help="api-server, scheduler, dag-processor, triggerer, worker-N, setup (default: all)"
    )
    lg.add_argument("-n", "--lines", type=int, default=50)
    lg.add_argument("-f", "--follow", action="store_true")
    lg.set_defaults(func=cmd_logs)

    ev = sub.add_parser("env", help="print export lines pointing the airflow CLI at this deployment")
    common(ev)
    ev.set_defaults(func=cmd_env)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except DeployError as exc:
        print(f"rpj-deploy: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
