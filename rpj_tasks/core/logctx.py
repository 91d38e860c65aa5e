"""Which shard and file a log line is about, in front of every engine log message.

Stages wrap per-shard and per-file work in :func:`log_context`; while it is active, every record
of an engine logger (``rpj``, ``rpj.*``, ``rpj_tasks.*``) created in this thread (or task) starts
with the context, e.g. ``[2000-01/0003 en_head] minhash: wrote 91 rows ...``::

    with log_context(shard=shard_label(cfg.id, shard)):
        with log_context(file="en_head"):
            log.warning("...")        # "[2000-01/0003 en_head] ..."

The context is a :mod:`contextvars` variable, so threads and asyncio tasks each have their own.
:mod:`rpj_tasks.core.workers` sends the caller's context (:func:`current`) with every call, and
the worker sets it for that call (:func:`restored`), so the lines a worker relays carry the shard
and file of the work they belong to, whatever order they arrive in.

The prefix is added where records are made (a wrapper around the logging record factory,
installed the first time a context is entered): a logger's own filter would not see the records
of its child loggers, and the handlers belong to whoever configured logging (Airflow, the CLI,
pytest).  The prefix is also kept as the record attribute ``rpj_context``.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: The fields of a context, in the order they are printed.
FIELDS = ("shard", "file")
_ROOTS = ("rpj", "rpj_tasks")  # the engine's logger hierarchies

_context: contextvars.ContextVar[tuple[tuple[str, str], ...]] = contextvars.ContextVar("rpj_log_context", default=())
_install_lock = threading.Lock()
_installed = False


def shard_label(snapshot: str, shard: int) -> str:
    """A shard as it appears in the context: ``2000-01/0003``."""
    return f"{snapshot}/{shard:04d}"


def current() -> dict[str, str]:
    """The active context, e.g. ``{"shard": "2000-01/0003", "file": "en_head"}`` (picklable)."""
    return dict(_context.get())


def prefix() -> str:
    """``[shard file] `` for the active context, or ``""``."""
    values = [value for _, value in _context.get()]
    return f"[{' '.join(values)}] " if values else ""


@contextlib.contextmanager
def log_context(*, shard: str | None = None, file: str | None = None) -> Iterator[None]:
    """Add ``shard`` and/or ``file`` to the context for the block (``None`` keeps the outer value)."""
    with restored({**current(), **{k: v for k, v in (("shard", shard), ("file", file)) if v is not None}}):
        yield


@contextlib.contextmanager
def restored(fields: dict[str, str]) -> Iterator[None]:
    """Make ``fields`` (a :func:`current` value, e.g. sent to a worker) the context for the block."""
    unknown = set(fields) - set(FIELDS)
    if unknown:
        raise ValueError(f"unknown log context fields {sorted(unknown)}; expected {FIELDS}")
    _install()
    token = _context.set(tuple((key, str(fields[key])) for key in FIELDS if fields.get(key)))
    try:
        yield
    finally:
        _context.reset(token)


def iterate(items: Iterable[T], *, shard: str | None = None, file: str | None = None) -> Iterator[T]:
    """``items``, each produced inside ``log_context(shard=..., file=...)``.

    For generators that read a file lazily: the context is active while the next item is made (so
    the reader's warnings carry it), never while the consumer holds one, and never across a
    ``yield`` (a context set inside a generator would leak into its consumer)."""
    it = iter(items)
    overrides = {k: v for k, v in (("shard", shard), ("file", file)) if v is not None}
    _install()
    outer: tuple[tuple[str, str], ...] | None = None
    fields: tuple[tuple[str, str], ...] = ()
    while True:
        # what log_context(shard=..., file=...) sets, computed again only when the outer context changed
        context = _context.get()
        if context is not outer:
            outer = context
            merged = {**dict(context), **overrides}
            fields = tuple((key, str(merged[key])) for key in FIELDS if merged.get(key))
        token = _context.set(fields)
        try:
            item = next(it)
        except StopIteration:
            return
        finally:
            _context.reset(token)
        yield item


def _install() -> None:
    """Wrap the logging record factory (once per process) so engine records get the prefix."""
    global _installed
    if _installed:
        return
    with _install_lock:
        if _installed:
            return
        make = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = make(*args, **kwargs)
            text = prefix()
            # logging.makeLogRecord (e.g. structlog's stdlib formatter copying a record) makes one with name None
            name = record.name if isinstance(record.name, str) else ""
            if text and name.split(".", 1)[0] in _ROOTS and not hasattr(record, "rpj_context"):
                record.rpj_context = text
                # record.msg is %-formatted with record.args when there are any
                record.msg = (text.replace("%", "%%") if record.args else text) + str(record.msg)
            return record

        logging.setLogRecordFactory(factory)
        _installed = True
