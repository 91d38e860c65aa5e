"""Airflow-side glue executed inside tasks: one preamble for every task (logging, storage
credentials, the run's Params and config) and the translation of the engine's errors into
Airflow's task outcomes.

Nothing here runs at parse time; engine modules are imported inside the tasks.
"""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

from rpj_tasks.core import redact, storage
from rpj_tasks.core.errors import PermanentError

log = logging.getLogger("rpj.airflow")

OBJECT_STORE_CONN_ID = "aws_default"
F = TypeVar("F", bound=Callable[..., Any])


def configure_storage(*urls: str, conn_id: str = OBJECT_STORE_CONN_ID) -> None:
    """Register fsspec options for the object stores among ``urls`` from an Airflow connection.

    The ObjectStoragePath is built here, inside the running task (never at parse time); its
    filesystem carries the options the Amazon provider derives from the connection (keys,
    ``endpoint_url`` from the extra, region ...), which the engine then reuses.
    """
    from airflow.sdk import ObjectStoragePath

    for proto in sorted({storage.protocol_of(u) for u in urls if u} - {"file", "http", "https"}):
        some_url = next(u for u in urls if u and storage.protocol_of(u) == proto)
        try:
            fs = ObjectStoragePath(some_url, conn_id=conn_id).fs
        except Exception as exc:  # noqa: BLE001 - a missing connection falls back to the default chain
            log.warning("connection %s not usable for %s (%s); using the default credential chain", conn_id, proto, exc)
            continue
        storage.register_options(proto, dict(getattr(fs, "storage_options", {}) or {}))
        log.info("storage %s:// configured from connection %s", proto, conn_id)


def engine_logging() -> None:
    """Route the engine's ``rpj.*`` loggers into the task log at INFO, credentials redacted."""
    logging.getLogger("rpj").setLevel(logging.INFO)
    redact.install()


def engine_task(fn: F) -> F:
    """Run a task body with the engine's logging, failing at once on a permanent error.

    A :class:`~rpj_tasks.core.errors.PermanentError` (bad Params or config, a missing input or
    artifact, HTTP 404) becomes ``AirflowFailException``: the task fails without spending its
    retries.  Transient errors and bugs propagate and are retried as configured; one whose
    traceback would show a credential is replaced by a RuntimeError holding the redacted traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        engine_logging()
        try:
            return fn(*args, **kwargs)
        except PermanentError as exc:
            message = redact.redact(str(exc))
            log.error("%s: %s (permanent: not retried)", type(exc).__name__, message)
            raise AirflowFailException(f"{type(exc).__name__}: {message}") from exc
        except Exception:
            text = traceback.format_exc()
            if (clean := redact.redact(text)) != text:  # a credential in the traceback: never into the log
                raise RuntimeError(f"(credentials redacted) {clean}") from None
            raise

    return wrapper  # type: ignore[return-value]
