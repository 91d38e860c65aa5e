"""Worker processes that start the same way whatever process starts them.

Some engine work must run in another interpreter: DSIR features need CPython started with
``PYTHONHASHSEED=42`` (:mod:`rpj_tasks.annotate.hashseed`).  ``multiprocessing``'s ``spawn`` and
``forkserver`` children re-run the parent's ``__main__``, which is not always importable: in an
Airflow 3 task it is the ``airflow`` console script, whose import fails there (the task
supervisor replaces the metadata DB URL with a placeholder); a ``multiprocessing.Pool`` then
respawns the dying workers forever.  ``fork`` copies threads and locks of a process we do not
own.  So a worker here is a plain ``subprocess``::

    [sys.executable, "-m", "rpj_tasks.core.workers", REQUEST_FD, RESPONSE_FD, NAME, PARENT_PID]

with an explicit environment (this process's, plus e.g. ``PYTHONHASHSEED=42``).  It imports
only this module before the first request, never the parent's ``__main__``.

Protocol: length-prefixed pickle frames on two dedicated pipes.  The parent sends
``(fn, args, kwargs, log context)``; the worker answers ``("ok", value)`` or ``("error",
exception, traceback text)``, one call at a time.  In the worker, fd 1 is a copy of fd 2, so ``print`` or C
code writing to stdout cannot corrupt the protocol; stdin is ``/dev/null`` (in an Airflow task
the parent's fd 0 is its channel to the supervisor).

Logs: the worker's ``rpj.*`` records at INFO and above (others at WARNING and above) come back
over its stderr, tagged, and the parent re-logs them under the same logger names, prefixed with
``[worker NAME pid N]``, so the parent's logging configuration (the Airflow task log, the CLI's
``--verbose``) decides where they go.  Each call runs in the caller's log context
(:mod:`rpj_tasks.core.logctx`: the shard and file it is about), so its records say which work
they belong to: ``[worker annotate pid 812] [2000-01/0003 en_head] ...``.  Anything else the
worker writes to stderr or stdout is copied, with the same prefix, to the parent's
``sys.stderr``.  The last :data:`STDERR_TAIL_LINES` lines are kept for error messages.

Failures are reported, never retried:

* an exception in the call is raised again in the parent with the same type (the remote
  traceback as its ``__cause__``), or as a :class:`RuntimeError` carrying the remote traceback
  if the exception does not survive pickling;
* a worker that dies (SIGKILL, OOM killer, ``os._exit``, a crash while starting) closes its
  response pipe: the pending call raises :class:`WorkerDiedError` at once, naming the exit code
  or signal and quoting its last stderr lines; the pool is not refilled;
* start-up (bootstrap plus the pool's ``check``) must finish within ``startup_timeout``.

Workers die with their parent: on Linux they ask for ``SIGKILL`` when the parent dies
(``prctl(PR_SET_PDEATHSIG)``; the kernel sends it when the *thread* that started the worker
exits, so start and use a pool in one thread that outlives it), and every worker exits when its
request pipe reaches EOF, which happens when the parent closes it or exits.  The pool's context
manager closes the workers on exit and kills them on an exception, and reaps them either way.

Functions and arguments are pickled: they must be importable by module name in the worker.  It
gets the parent's ``sys.path`` and, by default, the parent's storage options in plain form
(:func:`rpj_tasks.core.storage.portable_options`).  Functions defined in the parent's ``__main__``
cannot be called (by design: the worker never imports it).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from rpj_tasks.core import logctx
from rpj_tasks.core.errors import TransientError

log = logging.getLogger("rpj.workers")

#: How long a new worker may take to import, bootstrap and pass its start-up check.
STARTUP_SECONDS = 300.0
#: How long :meth:`Worker.close` waits for a worker to exit before killing it.
STOP_SECONDS = 5.0
#: Lines of a worker's stderr quoted by :class:`WorkerDiedError`.
STDERR_TAIL_LINES = 20

_HEADER = struct.Struct("!Q")
_CHUNK = 1 << 20
_OK, _ERROR = "ok", "error"
#: A worker's stderr line carrying one log record as JSON (``\x1e``: ASCII record separator).
_LOG_TAG = "\x1erpj-worker-log "
_PR_SET_PDEATHSIG = 1

__all__ = [
    "STARTUP_SECONDS",
    "RemoteTraceback",
    "Worker",
    "WorkerDiedError",
    "WorkerPool",
]


class WorkerDiedError(TransientError, RuntimeError):
    """A worker process exited (killed, out of memory, ``os._exit``, crash at start) before
    answering, or did not answer its start-up calls in time (transient: the orchestrator retries)."""


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker; the ``__cause__`` of the re-raised one."""

    def __str__(self) -> str:
        return "\n" + str(self.args[0]).rstrip("\n")


# ---------------------------------------------------------------- frames


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:_CHUNK]) :]


def _read_exact(fd: int, size: int) -> bytes:
    """``size`` bytes from ``fd``; :class:`EOFError` if the writer closed it first."""
    buf = bytearray()
    while len(buf) < size:
        chunk = os.read(fd, min(size - len(buf), _CHUNK))
        if not chunk:
            raise EOFError
        buf += chunk
    return bytes(buf)


def _send_frame(fd: int, payload: bytes) -> None:
    _write_all(fd, _HEADER.pack(len(payload)))
    _write_all(fd, payload)


def _receive_frame(fd: int) -> bytes:
    (size,) = _HEADER.unpack(_read_exact(fd, _HEADER.size))
    return _read_exact(fd, size)


def _name_of(fn: Callable[..., Any]) -> str:
    fn = getattr(fn, "func", fn)  # functools.partial
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"


def _exit_cause(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (sent by a kill or by the kernel's out-of-memory killer)" if -returncode == signal.SIGKILL else ""
        return f"killed by {name}{hint}"
    return f"exit code {returncode}"


# ---------------------------------------------------------------- the parent side


class Worker:
    """One worker process; one call at a time (:meth:`send` then :meth:`receive`, or :meth:`call`).

    Prefer :class:`WorkerPool`, which also bootstraps the worker and checks it.
    """

    def __init__(self, name: str, env: Mapping[str, str | None] | None = None) -> None:
        self.name = name
        self._pending: str | None = None  # what the call in flight is, for error messages
        self._dead: str | None = None  # why this worker cannot be used any more
        self._tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
        request_r, self._request_w = os.pipe()
        self._response_r, response_w = os.pipe()
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "rpj_tasks.core.workers", str(request_r), str(response_w), name, str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                pass_fds=(request_r, response_w),
                env=_child_env(env),
            )
        except BaseException:
            for fd in (self._request_w, self._response_r):
                os.close(fd)
            raise
        finally:
            os.close(request_r)
            os.close(response_w)
        self.pid = self._proc.pid
        self._prefix = f"[worker {name} pid {self.pid}] "
        self._relay = threading.Thread(target=self._relay_stderr, name=f"rpj-worker-{name}-stderr", daemon=True)
        self._relay.start()

    def __repr__(self) -> str:
        return f"<Worker {self.name} pid {self.pid}{' dead' if self._dead else ''}>"

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    def stderr_tail(self) -> list[str]:
        """The last lines the worker wrote to stderr (log records as ``LEVEL logger: message``)."""
        return list(self._tail)

    def send(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        what: str | None = None,
    ) -> None:
        """Start ``fn(*args, **kwargs)`` in the worker (it must not have a call in flight)."""
        what = what or _name_of(fn)
        if self._dead:
            raise WorkerDiedError(f"{what}: {self._dead}")
        if self._pending is not None:
            raise RuntimeError(f"worker {self.name} is still busy with {self._pending}")
        try:
            payload = pickle.dumps((fn, tuple(args), dict(kwargs or {}), logctx.current()), protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            exc.add_note(f"(while handing {what} to worker {self.name}: the function and its arguments must pickle)")
            raise
        self._pending = what
        try:
            _send_frame(self._request_w, payload)
        except (BrokenPipeError, OSError):
            self._died()

    def receive(self, timeout: float | None = None) -> Any:
        """The result of the call in flight; its exception, re-raised; or :class:`WorkerDiedError`
        if the worker exits first or (with ``timeout``) does not answer within ``timeout`` seconds,
        in which case it is killed."""
        if self._pending is None:
            raise RuntimeError(f"worker {self.name} has no call in flight")
        if self._dead:
            what, self._pending = self._pending, None
            raise WorkerDiedError(f"{what}: {self._dead}")
        if timeout is not None and not select.select([self._response_r], [], [], max(0.0, timeout))[0]:
            self.kill()
            what, self._pending = self._pending, None
            self._dead = f"worker {self.name} (pid {self.pid}) did not answer within {timeout:.0f}s; killed"
            raise WorkerDiedError(f"{what}: {self._dead}")
        try:
            reply = _receive_frame(self._response_r)
        except (EOFError, OSError):
            self._died()
        what, self._pending = self._pending, None
        try:
            status, *value = pickle.loads(reply)
        except Exception as exc:
            exc.add_note(f"(while reading the answer of worker {self.name} to {what})")
            raise
        if status == _OK:
            return value[0]
        error, remote_tb = value
        error.__cause__ = RemoteTraceback(remote_tb)
        raise error

    def call(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        what: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """``fn(*args, **kwargs)`` in the worker; see :meth:`receive`."""
        self.send(fn, args, kwargs, what=what)
        return self.receive(timeout)

    def _died(self) -> Any:
        """The worker closed its pipe: wait for its exit status and raise :class:`WorkerDiedError`."""
        try:
            returncode = self._proc.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.kill()
            returncode = self._proc.returncode
        self._relay.join(STOP_SECONDS)  # its last lines
        self._dead = f"worker process {self.pid} ({self.name}) exited without finishing ({_exit_cause(returncode)})"
        tail = self.stderr_tail()
        if tail:
            self._dead += "; its last stderr lines:\n  " + "\n  ".join(tail)
        what, self._pending = self._pending, None
        raise WorkerDiedError(f"{what or 'call'}: {self._dead}")

    def close(self, timeout: float = STOP_SECONDS) -> None:
        """Let the worker exit (EOF on its request pipe); kill it after ``timeout`` seconds; reap it."""
        self._close_fd("_request_w")
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._finish()

    def kill(self) -> None:
        """SIGKILL the worker and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self._proc.kill()
        self._proc.wait()
        self._close_fd("_request_w")
        self._finish()

    def _finish(self) -> None:
        self._relay.join(STOP_SECONDS)
        self._close_fd("_response_r")
        if self._proc.stderr is not None:
            self._proc.stderr.close()
        self._dead = self._dead or f"worker process {self.pid} ({self.name}) was closed"

    def _close_fd(self, attr: str) -> None:
        fd = getattr(self, attr)
        if fd >= 0:
            setattr(self, attr, -1)
            os.close(fd)

    def _relay_stderr(self) -> None:
        """Thread: the worker's stderr, line by line, to the parent's logging or ``sys.stderr``."""
        assert self._proc.stderr is not None
        with contextlib.suppress(ValueError, OSError):  # closed by _finish while a grandchild holds it open
            for raw in iter(self._proc.stderr.readline, b""):
                self._relay_line(raw.decode("utf-8", "replace").rstrip("\r\n"))

    def _relay_line(self, line: str) -> None:
        record = _parse_record(line)
        if record is not None:
            name, level, message = record
            self._tail.append(f"{logging.getLevelName(level)} {name}: {message}")
            logging.getLogger(name).log(level, "%s%s", self._prefix, message)
            return
        self._tail.append(line)
        with contextlib.suppress(Exception):  # e.g. no sys.stderr (pythonw)
            sys.stderr.write(f"{self._prefix}{line}\n")
            sys.stderr.flush()


def _parse_record(line: str) -> tuple[str, int, str] | None:
    if not line.startswith(_LOG_TAG):
        return None
    try:
        data = json.loads(line[len(_LOG_TAG) :])
        return str(data["name"]), int(data["level"]), str(data["message"])
    except (ValueError, KeyError, TypeError):
        return None


def _child_env(overrides: Mapping[str, str | None] | None) -> dict[str, str]:
    """This process's environment plus ``overrides`` (``None`` removes a variable), with the
    directory holding ``rpj_tasks`` first on ``PYTHONPATH`` so that ``-m rpj_tasks.core.workers`` works."""
    env = dict(os.environ)
    for key, value in (overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env["PYTHONPATH"] = os.pathsep.join([root, *filter(None, [env.get("PYTHONPATH")])])
    return env


class WorkerPool:
    """``processes`` workers, started, bootstrapped and checked before the constructor returns.

    ``env``: variables to set (or, with ``None``, remove) in the workers' environment, e.g.
    ``{"PYTHONHASHSEED": "42"}``.  ``check``: a start-up check ``check(*check_args)`` each worker
    runs after its bootstrap; its exception is raised here (same type) and the pool is not
    started.  ``storage_options``: what the workers register with
    :func:`rpj_tasks.core.storage.register_options` (default: :func:`rpj_tasks.core.storage.portable_options`
    of this process).  Start-up must finish within ``startup_timeout`` seconds, else
    :class:`WorkerDiedError`.

    Use it as a context manager, from one thread: leaving the block closes the workers (kills them
    if the block raised) and reaps them.
    """

    def __init__(
        self,
        processes: int,
        *,
        name: str = "worker",
        env: Mapping[str, str | None] | None = None,
        check: Callable[..., Any] | None = None,
        check_args: Iterable[Any] = (),
        storage_options: Mapping[str, Mapping[str, Any]] | None = None,
        startup_timeout: float = STARTUP_SECONDS,
    ) -> None:
        if processes < 1:
            raise ValueError(f"a worker pool needs at least one process, not {processes}")
        from rpj_tasks.core import storage

        self.name = name
        self.workers: list[Worker] = []
        self._next = 0
        options = storage.portable_options() if storage_options is None else {p: dict(o) for p, o in storage_options.items()}
        deadline = time.monotonic() + startup_timeout
        try:
            for i in range(processes):
                self.workers.append(Worker(name if processes == 1 else f"{name}-{i}", env))
            steps: list[tuple[Callable[..., Any], tuple[Any, ...], str]] = [
                (_bootstrap, (list(sys.path), options), f"start-up of the {name} workers")
            ]
            if check is not None:
                steps.append((check, tuple(check_args), f"start-up check {_name_of(check)} of the {name} workers"))
            for fn, args, what in steps:
                for worker in self.workers:
                    worker.send(fn, args, what=what)
                for worker in self.workers:
                    try:
                        worker.receive(timeout=deadline - time.monotonic())
                    except WorkerDiedError:
                        raise
                    except Exception as exc:
                        exc.add_note(f"(raised by the {what}, in worker {worker.name} pid {worker.pid})")
                        raise
        except BaseException:
            self.terminate()
            raise
        log.debug("%d %s worker(s) started: pids %s", processes, name, [w.pid for w in self.workers])

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is None:
            self.close()
        else:
            self.terminate()

    @property
    def pids(self) -> list[int]:
        return [w.pid for w in self.workers]

    def apply(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
        *,
        what: str | None = None,
    ) -> Any:
        """``fn(*args, **kwargs)`` in one of the workers (in turn); ``what`` names it in errors."""
        worker = self.workers[self._next % len(self.workers)]
        self._next += 1
        return worker.call(fn, args, kwargs, what=what)

    def imap(self, fn: Callable[[Any], Any], iterable: Iterable[Any], *, what: str | None = None) -> Iterator[Any]:
        """``fn(item)`` for each item, computed in parallel (one item per worker at a time), yielded
        in input order.  Items are taken from ``iterable`` only as workers become free."""
        label = what or _name_of(fn)
        items = enumerate(iterable)
        in_flight: collections.deque[Worker] = collections.deque()

        def submit(worker: Worker) -> None:
            """Hand ``worker`` the next item, if there is one."""
            following = next(items, None)
            if following is not None:
                index, item = following
                worker.send(fn, (item,), what=f"{label} (item {index})")
                in_flight.append(worker)

        try:
            for worker in self.workers:
                submit(worker)
            while in_flight:
                worker = in_flight.popleft()
                result = worker.receive()
                submit(worker)
                yield result
        finally:
            for worker in in_flight:  # stopped early: collect what is in flight, so the workers stay in step
                with contextlib.suppress(Exception):
                    worker.receive()

    def map(self, fn: Callable[[Any], Any], iterable: Iterable[Any], *, what: str | None = None) -> list[Any]:
        """``list(self.imap(fn, iterable))``."""
        return list(self.imap(fn, iterable, what=what))

    def close(self) -> None:
        """Let every worker exit, kill those that do not within :data:`STOP_SECONDS`, reap them."""
        for worker in self.workers:
            worker._close_fd("_request_w")  # all at once, then wait
        for worker in self.workers:
            worker.close()

    def terminate(self) -> None:
        """Kill every worker and reap it."""
        for worker in self.workers:
            worker.kill()


# ---------------------------------------------------------------- the worker side


def _bootstrap(parent_path: list[str], options: dict[str, dict[str, Any]]) -> int:
    """First call in a worker: the parent's ``sys.path`` and storage options; returns the pid."""
    sys.path[:] = parent_path + [p for p in sys.path if p not in parent_path]
    from rpj_tasks.core import storage

    for protocol, values in options.items():
        storage.register_options(protocol, values)
    return os.getpid()


class _RecordRelay(logging.Handler):
    """Each log record as one tagged JSON line on stderr, for the parent to re-log."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            data = {"name": record.name, "level": record.levelno, "message": self.format(record)}
            sys.stderr.write(_LOG_TAG + json.dumps(data) + "\n")
            sys.stderr.flush()
        except Exception:  # noqa: BLE001 - logging must not break the call
            self.handleError(record)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux for SIGKILL when the parent dies; exit now if it already has."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() != parent_pid:
        os._exit(1)


def _reply(request: bytes) -> bytes:
    """Run one request in the caller's log context; the pickled reply."""
    try:
        fn, args, kwargs, context = pickle.loads(request)
        with logctx.restored(context):
            value = fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - sent to the parent; SystemExit ends the worker
        return _error_reply(exc)
    try:
        return pickle.dumps((_OK, value), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001
        return _error_reply(RuntimeError(f"the result of {_name_of(fn)} cannot be pickled: {exc!r}"))


def _error_reply(exc: BaseException) -> bytes:
    remote_tb = "".join(traceback.format_exception(exc))
    try:
        payload = pickle.dumps((_ERROR, exc, remote_tb), protocol=pickle.HIGHEST_PROTOCOL)
        pickle.loads(payload)  # e.g. an __init__ with other arguments than its args cannot be rebuilt
        return payload
    except Exception:  # noqa: BLE001
        plain = RuntimeError(
            f"{type(exc).__module__}.{type(exc).__qualname__}: {exc} "
            f"(the exception does not pickle; remote traceback:)\n{remote_tb}"
        )
        return pickle.dumps((_ERROR, plain, remote_tb), protocol=pickle.HIGHEST_PROTOCOL)


def _serve(argv: list[str]) -> int:
    """The worker: answer requests until EOF on the request pipe."""
    request_fd, response_fd, parent_pid = int(argv[0]), int(argv[1]), int(argv[3])  # argv[2]: its name, for ps
    for fd in (request_fd, response_fd):
        os.set_inheritable(fd, False)  # not for processes this worker starts
    os.dup2(2, 1)  # stdout (print, C libraries) goes to stderr, never to the protocol pipe
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    _die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    relay = _RecordRelay()
    root = logging.getLogger()
    root.handlers[:] = [relay]
    root.setLevel(logging.WARNING)
    logging.getLogger("rpj").setLevel(logging.INFO)
    while True:
        try:
            request = _receive_frame(request_fd)
        except EOFError:
            return 0
        reply = _reply(request)
        try:
            _send_frame(response_fd, reply)
        except BrokenPipeError:
            return 0


if __name__ == "__main__":
    # Run as the importable module, not as ``__main__``: pickles name rpj_tasks.core.workers.
    from rpj_tasks.core.workers import _serve as serve

    sys.exit(serve(sys.argv[1:]))
