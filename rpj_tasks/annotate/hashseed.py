"""The hash behind the DSIR importance features (``docs/spec/quality_signals.md`` §3.7, §5 item 3; defect D11).

The reference hashes RW unigrams and bigram tuples with CPython's builtin ``hash``, which only
gives the RPv2 values on CPython >= 3.11 started with ``PYTHONHASHSEED=42``.  Two hash modes exist
(the artifact builder :mod:`rpj_tasks.annotate.artifacts.build` counts with these same functions and
records the mode in its ``MANIFEST.json``):

* ``"cpython-seed42"`` (default): builtin ``hash``; usable only where :func:`dsir_hash_selfcheck`
  passes.  :func:`seed42_pool` and :func:`call_with_seed42` start worker interpreters
  (:mod:`rpj_tasks.core.workers`: plain subprocesses, whatever this process is) with the seed in
  their environment, which is the only way to set it, and refuse a worker that fails the check;
* ``"stable"``: :func:`stable_hash` (64-bit BLAKE2b of the UTF-8 text), identical in every
  process, but its scores only compare with artifacts counted the same way.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable
from typing import Any, TypeVar

from rpj_tasks.core.config import DSIR_HASH_MODES
from rpj_tasks.core.errors import PermanentError
from rpj_tasks.core.workers import STARTUP_SECONDS, WorkerDiedError, WorkerPool

#: The modes, defined once in :mod:`rpj_tasks.core.config` (imported by DAG parsing, which must not load
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
T = TypeVar("T")

__all__ = [
    "HASH_MODES",
    "SEED42",
    "STABLE",
    "STARTUP_SECONDS",
    "HashSeedError",
    "WorkerDiedError",
    "call_with_seed42",
    "dsir_hash_selfcheck",
    "feature_hash",
    "require_seed42",
    "seed42_pool",
    "stable_hash",
]


class HashSeedError(PermanentError, RuntimeError):
    """DSIR features were requested in a mode this interpreter cannot reproduce."""


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
            "rpj_tasks.annotate.signals.seed42_pool() workers, or use artifacts built with hash_mode 'stable'"
        )


def feature_hash(hash_mode: str) -> Callable[[Any], int]:
    """The hash function of ``hash_mode``; checks the interpreter for ``cpython-seed42``."""
    if hash_mode == SEED42:
        require_seed42()
        return hash
    if hash_mode == STABLE:
        return stable_hash
    raise ValueError(f"unknown DSIR hash_mode {hash_mode!r}; expected one of {HASH_MODES}")


def seed42_pool(processes: int, *, name: str = "seed42") -> WorkerPool:
    """A :class:`~rpj_tasks.core.workers.WorkerPool` of ``processes`` interpreters started with
    ``PYTHONHASHSEED=42``, each checked with :func:`require_seed42` before it is used.

    A worker that fails the check raises :class:`HashSeedError` here; one that dies raises
    :class:`WorkerDiedError` (never a silent respawn).  The workers get this process's storage
    options.  Use it as a context manager: ``with seed42_pool(2) as pool: pool.imap(fn, items)``.
    """
    return WorkerPool(processes, name=name, env={"PYTHONHASHSEED": "42"}, check=require_seed42)


def call_with_seed42(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run the picklable ``fn(*args, **kwargs)`` in a fresh, checked ``PYTHONHASHSEED=42`` interpreter.

    Raises :class:`WorkerDiedError` (naming ``fn``) if the worker dies or does not start within
    :data:`STARTUP_SECONDS`, and ``fn``'s own exception (same type) if it raises.
    """
    with seed42_pool(1) as pool:
        return pool.apply(fn, args, kwargs)
