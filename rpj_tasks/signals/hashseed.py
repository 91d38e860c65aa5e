"""The hash behind the DSIR importance features (``quality_signals.md`` §3.7, §5 item 3; defect D11).

The reference hashes RW unigrams and bigram tuples with CPython's builtin ``hash``, which only
gives the RPv2 values on CPython >= 3.11 started with ``PYTHONHASHSEED=42``.  Two hash modes exist
(the artifact builder :mod:`rpj_tasks.signal_artifacts` counts with these same functions and
records the mode in its ``MANIFEST.json``):

* ``"cpython-seed42"`` (default): builtin ``hash``; usable only where :func:`dsir_hash_selfcheck`
  passes.  :func:`seed42_pool` and :func:`call_with_seed42` start worker interpreters with the
  seed exported before start-up, which is the only way to set it;
* ``"stable"``: :func:`stable_hash` (64-bit BLAKE2b of the UTF-8 text), identical in every
  process, but its scores only compare with artifacts counted the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import multiprocessing
import multiprocessing.pool
import os
import platform
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from rpj_tasks.config import DSIR_HASH_MODES

#: The modes, defined once in :mod:`rpj_tasks.config` (imported by DAG parsing, which must not load
#: the signal code): ``cpython-seed42`` reproduces the reference, ``stable`` is seed-independent.
HASH_MODES = DSIR_HASH_MODES
SEED42, STABLE = HASH_MODES
# §5 item 3: hash(x) on CPython >= 3.11 with PYTHONHASHSEED=42.
SEED42_VECTORS: tuple[tuple[str | tuple[str, str], int], ...] = (
    ("the", 6599659648229272820),
    ("The", 28150671178049062),
    ("caf\u00e9", 6223193746424771551),
    (("the", "cat"), -1944465398313317419),
    ((".", "The"), 3900638045852841616),
)
_ENV_LOCK = threading.Lock()
_POLL_SECONDS = 1.0
STARTUP_SECONDS = 300.0
T = TypeVar("T")

__all__ = [
    "HASH_MODES", "SEED42", "STABLE", "HashSeedError", "WorkerDiedError", "await_result", "call_with_seed42",
    "dsir_hash_selfcheck", "feature_hash", "require_seed42", "seed42_pool", "stable_hash", "start_worker", "worker_pid",
]


class HashSeedError(RuntimeError):
    """DSIR features were requested in a mode this interpreter cannot reproduce."""


class WorkerDiedError(RuntimeError):
    """A seed-42 worker process exited (killed, out of memory, ``os._exit``) before answering."""


def stable_hash(obj: str | tuple[str, ...]) -> int:
    """Seed-independent stand-in for ``hash``: signed little-endian 64-bit BLAKE2b of the UTF-8 text
    (lone surrogates kept with ``surrogatepass``); a tuple hashes its items joined by U+0000."""
    text = obj if isinstance(obj, str) else "\x00".join(obj)
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "little", signed=True)


def dsir_hash_selfcheck() -> bool:
    """Whether builtin ``hash`` gives the §5 item 3 values (CPython >= 3.11, ``PYTHONHASHSEED=42``)."""
    return all(hash(obj) == expected for obj, expected in SEED42_VECTORS)


def require_seed42() -> None:
    """Raise :class:`HashSeedError` unless :func:`dsir_hash_selfcheck` passes."""
    if not dsir_hash_selfcheck():
        raise HashSeedError(
            "DSIR hash_mode 'cpython-seed42' needs CPython >= 3.11 started with PYTHONHASHSEED=42 "
            f"(this process: Python {platform.python_version()}, "
            f"PYTHONHASHSEED={os.environ.get('PYTHONHASHSEED')!r}); run the annotation in "
            "rpj_tasks.signals.seed42_pool() workers, or use artifacts built with hash_mode 'stable'"
        )


def feature_hash(hash_mode: str) -> Callable[[Any], int]:
    """The hash function of ``hash_mode``; checks the interpreter for ``cpython-seed42``."""
    if hash_mode == SEED42:
        require_seed42()
        return hash
    if hash_mode == STABLE:
        return stable_hash
    raise ValueError(f"unknown DSIR hash_mode {hash_mode!r}; expected one of {HASH_MODES}")


@contextlib.contextmanager
def seed42_pool(processes: int) -> Iterator[multiprocessing.pool.Pool]:
    """A ``spawn`` process pool whose workers run with ``PYTHONHASHSEED=42``.

    The variable is exported only while the pool starts its workers (all at once, under a lock);
    a worker the pool re-spawns later would miss it, so do not use ``maxtasksperchild``.  Workers
    that compute DSIR scores check the seed themselves and fail loudly if it is wrong.  A
    ``multiprocessing.Pool`` silently replaces a worker that dies and the task it held never
    finishes: wait with :func:`await_result` (as :func:`call_with_seed42` does), not a bare ``get()``.
    """
    ctx = multiprocessing.get_context("spawn")
    with _ENV_LOCK:
        previous = os.environ.get("PYTHONHASHSEED")
        os.environ["PYTHONHASHSEED"] = "42"
        try:
            pool = ctx.Pool(processes)
        finally:
            if previous is None:
                del os.environ["PYTHONHASHSEED"]
            else:
                os.environ["PYTHONHASHSEED"] = previous
    try:
        yield pool
    finally:
        pool.terminate()
        pool.join()


def worker_pid() -> int:
    """The pid of the process this runs in (ask a pool worker for its own)."""
    return os.getpid()


def await_result(result: multiprocessing.pool.AsyncResult, pid: int, what: str) -> Any:
    """``result.get()``, but raise :class:`WorkerDiedError` as soon as worker ``pid`` is gone."""
    while not result.ready():
        result.wait(_POLL_SECONDS)
        if not result.ready() and pid not in {p.pid for p in multiprocessing.active_children()}:
            raise WorkerDiedError(f"{what}: worker process {pid} exited without finishing")
    return result.get()


def start_worker(pool: multiprocessing.pool.Pool, ready: Callable[..., int], args: tuple[Any, ...], what: str) -> int:
    """Run ``ready(*args)`` (which returns its pid) as a one-worker pool's first call; its pid.

    Raises :class:`WorkerDiedError` (naming ``what``) if the worker does not answer within
    :data:`STARTUP_SECONDS`.
    """
    started = time.monotonic()
    try:
        return pool.apply_async(ready, args).get(STARTUP_SECONDS)
    except multiprocessing.TimeoutError:
        raise WorkerDiedError(
            f"{what}: the seed-42 worker did not start within {time.monotonic() - started:.0f}s"
        ) from None


def call_with_seed42(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the picklable ``fn(*args, **kwargs)`` in a fresh ``PYTHONHASHSEED=42`` interpreter.

    Raises :class:`WorkerDiedError` (naming ``fn``) if the worker dies or does not start within
    :data:`STARTUP_SECONDS`, instead of waiting forever.
    """
    what = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    with seed42_pool(1) as pool:
        pid = start_worker(pool, worker_pid, (), what)
        return await_result(pool.apply_async(fn, args, kwargs), pid, what)
