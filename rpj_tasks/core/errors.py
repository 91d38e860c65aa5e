"""The engine's error hierarchy: what an orchestrator (or the CLI) should do with a failure.

* :class:`PermanentError`: retrying cannot help (bad Params or config, a missing input, model or
  artifact, HTTP 404 / another 4xx, a file that is not what it claims to be).  An Airflow task
  fails at once without retries; the CLI prints one line and exits 2.
* :class:`TransientError`: it may work later (5xx, 429/SlowDown, a dropped connection, a worker
  process killed by the OS).  Retried with backoff, each attempt logged, inside the engine and
  then by the orchestrator.

Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class RpjError(Exception):
    """An expected failure of the pipeline, with a message meant for the operator."""


class PermanentError(RpjError):
    """Retrying the same work with the same inputs cannot succeed."""


class TransientError(RpjError):
    """The same work may succeed when retried later."""


class ConfigError(PermanentError, ValueError):
    """A configuration value or a user-supplied parameter is invalid."""


class MissingInputError(PermanentError, RuntimeError):
    """An input a stage needs (a shard's hashes or CCNet record, a staged segment, a file the
    record lists) does not exist: run the stage that produces it first."""


class UnsafePathError(PermanentError, ValueError):
    """A path read from outside (a listing, a manifest) could lead outside its root: absolute, with
    a scheme, ``..``, an empty or ``.`` component, a backslash or a control character."""


class StorageFullError(TransientError, OSError):
    """The storage is full or over quota (``ENOSPC``, ``EDQUOT``): nothing was committed; the work
    can be done again once there is room."""


def storage_full(exc: BaseException) -> StorageFullError | None:
    """``exc`` as a :class:`StorageFullError` if it is a full disk or quota, else None."""
    import errno

    if isinstance(exc, StorageFullError):
        return exc
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" ({exc.filename})" if exc.filename else ""
        return StorageFullError(
            f"the storage is full: {exc.strerror or exc}{where}; free space and run again (nothing partial was kept)"
        )
    return None
