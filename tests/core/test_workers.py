"""rpj_tasks.core.workers: worker processes that start whatever the parent is, and fail loudly.

Every wait here is bounded: a regression (a hang, a respawn loop) fails the test instead of
stalling the suite.  No Airflow import; the S3 test runs a moto server on 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import select
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from rpj_tasks.annotate.signals import HashSeedError, require_seed42
from rpj_tasks.core import storage, workers
from rpj_tasks.core.errors import TransientError
from rpj_tasks.core.logctx import log_context
from rpj_tasks.core.workers import RemoteTraceback, WorkerDiedError, WorkerPool

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- helpers (also run in the workers)


def bounded(fn: Callable[[], Any], seconds: float) -> Any:
    """``fn()`` in a thread; fails the test if it does not return or raise within ``seconds``."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, fn()))
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            outcome.append((False, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still waiting after {seconds}s (a hang)"
    ok, value = outcome[0]
    if not ok:
        raise value
    return value


def wait_for(predicate: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def gone(pid: int) -> bool:
    """No such process, or a zombie (exited, not reaped by whoever adopted it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def mark_then_sleep(marker: str, seconds: float) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


def pid() -> int:
    return os.getpid()


def raise_value_error(message: str) -> None:
    raise ValueError(message)


def raise_hash_seed_error() -> None:
    raise HashSeedError("engine error from the worker")


class NeedsTwoArgs(Exception):
    def __init__(self, code: int, detail: str) -> None:
        super().__init__(f"{code}: {detail}")  # args != (code, detail): unpickling it fails


def raise_unpicklable() -> None:
    raise NeedsTwoArgs(7, "custom")


def noisy(size: int) -> bytes:
    """Writes to stdout every way there is, including frame-like bytes, then returns ``size`` bytes."""
    print("hello from print")
    sys.stdout.write("\x00\x00\x00\x00\x00\x00\x00\x10 not a frame\n")
    sys.stdout.flush()
    os.write(1, b"hello from fd 1\n")
    os.write(2, b"hello from fd 2\n")
    return bytes(range(256)) * (size // 256)


def log_lines() -> int:
    logging.getLogger("rpj.test_workers").info("counted %d documents", 3)
    logging.getLogger("some.library").info("library chatter (below WARNING: not relayed)")
    logging.getLogger("some.library").warning("library warning")
    return 3


# ---------------------------------------------------------------- start-up


PARENT_SCRIPT = """
import functools, json, multiprocessing, os, sys
if __name__ != "__main__":
    # What an Airflow 3 task's __main__ (the airflow console script) does when a spawn child
    # re-imports it: the supervisor put a placeholder in the metadata DB URL.
    raise RuntimeError("re-imported __main__: cannot connect to airflow-db-not-allowed:///")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = "airflow-db-not-allowed:///"

if sys.argv[1:] == ["--spawn"]:  # control: the multiprocessing pool rpj used before
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        try:
            pool.apply_async(hash, ("the",)).get(4)
            print("spawn worker answered")
        except multiprocessing.TimeoutError:
            print("spawn worker never answered")
    sys.exit(0)

from rpj_tasks.annotate.stage import run_jobs
from rpj_tasks.annotate.artifacts.build import _count_chunk
from rpj_tasks.annotate.signals import call_with_seed42, dsir_hash_selfcheck, seed42_pool

assert not dsir_hash_selfcheck()  # this process has another seed
out = {"run_jobs": list(run_jobs(hash, ["the", ("the", "cat")], "cpython-seed42")),
       "call": call_with_seed42(dsir_hash_selfcheck)}
with seed42_pool(2) as pool:
    counts = pool.map(functools.partial(_count_chunk, hash_mode="cpython-seed42"), [["the cat"], ["a b c"], ["x"]])
out["counts"] = [[int(c.sum()), docs, tokens] for c, docs, tokens in counts]
print(json.dumps(out))
"""


def run_parent_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    script = tmp_path / "task_main.py"
    script.write_text(PARENT_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONHASHSEED": "1"}
    return subprocess.run(
        [sys.executable, str(script), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )


def test_seed42_workers_start_under_a_main_that_cannot_be_reimported(tmp_path: Path) -> None:
    proc = run_parent_script(tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["run_jobs"] == [6599659648229272820, -1944465398313317419]  # docs/spec/quality_signals.md §5 item 3
    assert out["call"] is True
    assert out["counts"] == [[3, 1, 2], [5, 1, 3], [1, 1, 1]]  # uni+bigrams, docs, RW tokens
    assert "re-imported __main__" not in proc.stderr


def test_control_spawn_workers_die_in_that_main(tmp_path: Path) -> None:
    """The script above does model the Airflow failure: a spawn pool never answers there."""
    proc = run_parent_script(tmp_path, "--spawn")
    assert "spawn worker never answered" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert "re-imported __main__" in proc.stderr


class CountingWorker(workers.Worker):
    started = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).started += 1
        super().__init__(*args, **kwargs)


def test_failed_startup_check_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workers, "Worker", CountingWorker)
    CountingWorker.started = 0
    with pytest.raises(HashSeedError, match="PYTHONHASHSEED='7'") as info:
        bounded(lambda: WorkerPool(2, name="seed7", env={"PYTHONHASHSEED": "7"}, check=require_seed42), 120)
    assert any("start-up check" in note and "require_seed42" in note for note in info.value.__notes__)
    assert CountingWorker.started == 2  # one per slot: nothing was restarted
    import psutil

    assert wait_for(lambda: not psutil.Process().children(recursive=True), 10), "workers left behind"


def test_worker_crashing_at_start_is_a_worker_died_error() -> None:
    started = time.monotonic()
    with pytest.raises(WorkerDiedError, match=r"exited without finishing \(exit code 1\)") as info:
        bounded(lambda: WorkerPool(1, name="broken", env={"PYTHONHOME": "/nonexistent"}), 60)
    assert "Fatal Python error" in str(info.value)  # its last stderr lines
    assert time.monotonic() - started < 30


def test_startup_timeout_is_bounded() -> None:
    started = time.monotonic()
    with pytest.raises(WorkerDiedError, match=r"did not answer within \d+s; killed"):
        bounded(lambda: WorkerPool(1, name="slow", check=time.sleep, check_args=(120,), startup_timeout=3), 60)
    assert time.monotonic() - started < 30


# ---------------------------------------------------------------- death and errors


def test_sigkill_mid_call_raises_at_once_and_is_not_respawned(tmp_path: Path) -> None:
    marker = tmp_path / "started"
    with WorkerPool(1, name="victim") as pool:
        (victim,) = pool.pids
        killed_at: list[float] = []

        def killer() -> None:
            if wait_for(marker.exists, 60):
                killed_at.append(time.monotonic())
                os.kill(victim, signal.SIGKILL)

        threading.Thread(target=killer, daemon=True).start()
        with pytest.raises(WorkerDiedError) as info:
            bounded(lambda: pool.apply(mark_then_sleep, (str(marker), 120)), 60)
        assert killed_at and time.monotonic() - killed_at[0] < 5
        message = str(info.value)
        assert "test_workers.mark_then_sleep" in message and f"worker process {victim}" in message
        assert "killed by SIGKILL" in message
        assert isinstance(info.value, TransientError)  # the orchestrator retries the task
        assert pool.pids == [victim]
        with pytest.raises(WorkerDiedError, match="killed by SIGKILL"):  # at once, no new worker
            bounded(lambda: pool.apply(pid), 5)


def test_exceptions_come_back_with_their_type() -> None:
    with WorkerPool(1, name="raiser") as pool:
        with pytest.raises(ValueError, match="bad value") as info:
            pool.apply(raise_value_error, ("bad value",))
        assert isinstance(info.value.__cause__, RemoteTraceback)
        assert "raise_value_error" in str(info.value.__cause__)
        with pytest.raises(HashSeedError, match="engine error from the worker"):
            pool.apply(raise_hash_seed_error)
        with pytest.raises(RuntimeError, match=r"test_workers.NeedsTwoArgs: 7: custom \(the exception does not pickle"):
            pool.apply(raise_unpicklable)
        with pytest.raises(RuntimeError, match="line .* in raise_unpicklable"):
            pool.apply(raise_unpicklable)
        assert pool.apply(pid) == pool.pids[0]  # the worker survives its calls' exceptions


def test_stdout_noise_does_not_break_the_protocol(capfd: pytest.CaptureFixture[str]) -> None:
    size = 3 << 20  # larger than a pipe buffer, both ways
    with WorkerPool(1, name="noisy") as pool:
        assert pool.apply(noisy, (size,)) == bytes(range(256)) * (size // 256)
        assert pool.apply(len, (b"x" * size,)) == size
        (worker_pid,) = pool.pids
    lines = capfd.readouterr().err.splitlines()  # the relay has finished: close() joins it
    prefix = f"[worker noisy pid {worker_pid}] "
    for text in ("hello from print", "not a frame", "hello from fd 1", "hello from fd 2"):
        assert any(line.startswith(prefix) and text in line for line in lines), (text, lines)


def test_worker_log_records_are_relogged_in_the_parent(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    with WorkerPool(1, name="logger") as pool:
        assert pool.apply(log_lines) == 3
        (worker_pid,) = pool.pids
    records = [(r.name, r.levelno, r.getMessage()) for r in caplog.records]
    prefix = f"[worker logger pid {worker_pid}] "
    assert ("rpj.test_workers", logging.INFO, prefix + "counted 3 documents") in records
    assert ("some.library", logging.WARNING, prefix + "library warning") in records
    assert not any("library chatter" in message for _, _, message in records)


def test_worker_log_lines_carry_the_callers_shard_and_file(caplog: pytest.LogCaptureFixture) -> None:
    """Each call runs in the caller's log context: its relayed lines say which shard and file they are about."""
    caplog.set_level(logging.INFO)
    with WorkerPool(1, name="logger") as pool, log_context(shard="2000-01/0003"):
        with log_context(file="en_head"):
            pool.apply(log_lines)
        pool.apply(log_lines)
        worker_pid = pool.pids[0]
    records = [(r.name, r.getMessage()) for r in caplog.records if "counted" in r.getMessage() or "library" in r.getMessage()]
    prefix = f"[worker logger pid {worker_pid}] "
    assert records == [
        ("rpj.test_workers", prefix + "[2000-01/0003 en_head] counted 3 documents"),
        ("some.library", prefix + "library warning"),  # not an engine logger: no context
        ("rpj.test_workers", prefix + "[2000-01/0003] counted 3 documents"),
        ("some.library", prefix + "library warning"),
    ]


def test_imap_is_ordered_across_workers() -> None:
    with WorkerPool(3, name="mapper") as pool:
        items = [("x" * i, (7 - i) * 0.05) for i in range(7)]  # later items finish sooner
        assert pool.map(delayed_len, items) == list(range(7))
        assert len(set(pool.map(pid_after, [0.2] * 6))) == 3  # all three took work
        for _got in pool.imap(pid_after, [0.0] * 5):  # stopping early leaves the pool usable
            break
        assert pool.map(len, ["a", "bb"]) == [1, 2]


def delayed_len(item: tuple[str, float]) -> int:
    time.sleep(item[1])
    return len(item[0])


def pid_after(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


ORPHAN_SCRIPT = """
import sys, time
from rpj_tasks.core.workers import WorkerPool
pool = WorkerPool(2, name="orphan")
print(" ".join(map(str, pool.pids)), flush=True)
pool.apply(time.sleep, (300,))  # worker 0 busy, worker 1 idle
"""


def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    parent = subprocess.Popen(
        [sys.executable, str(script)], env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE, text=True
    )
    try:
        assert select.select([parent.stdout], [], [], 60)[0], "the parent did not start its workers"
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 2 and not any(gone(p) for p in pids)
        parent.kill()
        parent.wait(10)
        assert wait_for(lambda: all(gone(p) for p in pids), 10), [p for p in pids if not gone(p)]
    finally:
        parent.kill()
        parent.wait()


def test_pool_reaps_its_workers_on_exit_and_on_exceptions() -> None:
    with WorkerPool(2, name="tidy") as pool:
        pids = pool.pids
    assert all(gone(p) for p in pids)
    with pytest.raises(KeyError):
        with WorkerPool(2, name="tidy") as pool:
            pids = pool.pids
            raise KeyError("the block failed")
    assert all(gone(p) for p in pids)
    assert all(w.returncode is not None for w in pool.workers)


# ---------------------------------------------------------------- storage options on S3


KEY, SECRET = "worker-test-key", "worker-test-secret-value"


@pytest.fixture
def moto_s3():
    from moto_s3 import moto_s3

    with moto_s3(KEY, SECRET, "eu-west-3") as (endpoint, client):
        bucket = f"rpj-workers-{uuid.uuid4().hex[:8]}"  # moto's state is shared by the servers of a process
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        saved = dict(storage._OPTIONS)
        yield endpoint, client, bucket
        storage._OPTIONS.clear()
        storage._OPTIONS.update(saved)


def provider_like_options(kind: str, endpoint: str) -> dict[str, Any]:
    """The storage options of the Amazon provider's S3 filesystem: a session holding the credentials."""
    if kind == "aiobotocore":  # airflow.providers.amazon.aws.fs.s3.get_fs: S3Hook.get_session(deferrable=True)
        from aiobotocore.session import get_session
        from s3fs import S3FileSystem

        session = get_session()
        session.set_credentials(access_key=KEY, secret_key=SECRET)
        session.set_config_variable("region", "eu-west-3")
        fs = S3FileSystem(session=session, config_kwargs={}, endpoint_url=endpoint, anon=False)
        return dict(fs.storage_options)
    import boto3

    session = boto3.session.Session(aws_access_key_id=KEY, aws_secret_access_key=SECRET, region_name="eu-west-3")
    return {"session": session, "endpoint_url": endpoint, "config_kwargs": {}, "anon": False}


def s3_roundtrip(url: str) -> tuple[bytes, dict[str, Any]]:
    """In the worker: write ``url`` and read it back, and read the object the parent wrote."""
    storage.write_bytes(url, b"written by the worker")
    return storage.read_bytes(storage.join(url.rsplit("/", 1)[0], "from-parent.txt")), storage.registered_options()["s3"]


@pytest.mark.parametrize("kind", ["aiobotocore", "boto3"])
def test_storage_options_with_a_session_reach_a_worker(kind: str, moto_s3, caplog: pytest.LogCaptureFixture) -> None:
    endpoint, client, bucket = moto_s3
    options = provider_like_options(kind, endpoint)
    storage.register_options("s3", {**options, "config_kwargs": {"connect_timeout": 7, "lock": threading.Lock()}})
    with pytest.raises((AttributeError, TypeError, pickle.PicklingError)):  # the reported failure: the session does not pickle
        pickle.dumps(storage.registered_options())
    caplog.set_level(logging.DEBUG, logger="rpj")
    portable = storage.portable_options()
    pickle.loads(pickle.dumps(portable))
    assert "session" not in portable["s3"] and portable["s3"]["key"] == KEY and portable["s3"]["secret"] == SECRET
    assert portable["s3"]["client_kwargs"] == {"region_name": "eu-west-3"}
    assert portable["s3"]["config_kwargs"] == {"connect_timeout": 7}
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("rpj"))
    assert "s3.config_kwargs.lock" in logged and SECRET not in logged and KEY not in logged
    client.put_object(Bucket=bucket, Key="w/from-parent.txt", Body=b"written by the parent")
    with WorkerPool(1, name="s3") as pool:
        got, seen = pool.apply(s3_roundtrip, (f"s3://{bucket}/w/from-worker.txt",))
    assert got == b"written by the parent"
    assert client.get_object(Bucket=bucket, Key="w/from-worker.txt")["Body"].read() == b"written by the worker"
    assert seen == portable["s3"]
