"""One reader for line-oriented inputs (JSON Lines or plain text, gzip or not), with byte offsets
and bad-line accounting.

It reads the documents files the annotation stage annotates (``docs/spec/rpv2_format.md`` §2),
the CCNet samples and corpora the quality-signal artifacts are built from
(:func:`rpj_tasks.annotate.artifacts.build.iter_texts`) and the reference and calibration corpora
of the CCNet models (:func:`rpj_tasks.ccnet.models.read_corpus`)::

    bad = BadLines(stats, "corpus", logger=log)
    for offset, line in iter_lines(url, bad):
        value, reason = parse_json(line)
        if reason is not None:
            bad.line(url, offset, reason)
            continue
        ...
    bad.log_unlogged(url)

:func:`iter_lines` yields ``(offset, line)``: ``offset`` is the line's first byte in the
(decompressed) stream, ``line`` the bytes without the terminator.  Blank lines are yielded too:
whether they count is the caller's rule.  What a caller decides is bad goes to its
:class:`BadLines`, which counts it under the caller's prefix and keeps (and optionally logs) the
first :data:`MAX_LOGGED_BAD_LINES` descriptions with the URL and byte offset; a gzip stream that
ends early (truncated or corrupt) ends the file, counted as ``{prefix}.truncated``, and the lines
before it are kept (rules in ``docs/DEVELOPING.md``).
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import zlib
from collections.abc import Iterator
from typing import Any

from rpj_tasks.core import storage
from rpj_tasks.core.stats import Stats

MAX_LOGGED_BAD_LINES = 20
#: Why a line is not a JSON object (the suffix of its ``{prefix}.bad_line.{reason}`` counter).
INVALID_UTF8, INVALID_JSON, NOT_AN_OBJECT = "invalid_utf8", "invalid_json", "not_an_object"
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)
_UNIVERSAL = re.compile(rb"\r\n|\r|\n")


class BadLines:
    """The bad lines of one input: counted in ``stats``, the first ``limit`` described.

    Counters: ``{prefix}.bad_line`` per bad line, plus ``{prefix}.bad_line.{reason}`` when
    ``by_reason``; ``{prefix}.truncated`` when the gzip stream ends early.  Descriptions are
    ``"{url}: line {i} (byte {offset}): {reason}; {outcome}"`` (without ``line {i}`` when the caller
    does not number lines) and are kept in :attr:`messages`; with a ``logger`` each is also logged at
    WARNING as it happens, and :meth:`log_unlogged` logs how many more there were.  (A worker process
    passes no logger and ships :attr:`messages` to its parent, which logs them.)
    """

    def __init__(
        self,
        stats: Stats,
        prefix: str,
        *,
        limit: int = MAX_LOGGED_BAD_LINES,
        logger: logging.Logger | None = None,
        by_reason: bool = True,
    ) -> None:
        self.stats, self.prefix, self.limit, self.logger, self.by_reason = stats, prefix, limit, logger, by_reason
        self.messages: list[str] = []
        self.reported = 0

    def line(
        self, url: str, offset: int, reason: str, *, index: int | None = None, outcome: str = "skipped", detail: str | None = None
    ) -> None:
        """Count one bad line (``reason`` is a short identifier such as ``invalid_json``) and describe it."""
        self.stats.inc(f"{self.prefix}.bad_line")
        if self.by_reason:
            self.stats.inc(f"{self.prefix}.bad_line.{reason}")
        where = f"line {index} (byte {offset})" if index is not None else f"byte {offset}"
        what = reason.replace("_", " ") + (f" ({detail})" if detail else "")
        self._note(f"{url}: {where}: {what}; {outcome}")

    def truncated(self, url: str, offset: int, error: BaseException) -> None:
        """Count a gzip stream that ends early at decompressed byte ``offset``."""
        self.stats.inc(f"{self.prefix}.truncated")
        self._note(f"{url}: byte {offset}: gzip stream ends early ({error}); later lines are lost")

    def _note(self, message: str) -> None:
        self.reported += 1
        if len(self.messages) < self.limit:
            self.messages.append(message)
            if self.logger is not None:
                self.logger.warning("%s", message)

    @property
    def not_logged(self) -> int:
        """Bad lines and truncations reported beyond the first ``limit``."""
        return self.reported - len(self.messages)

    def log_unlogged(self, name: str) -> None:
        """With a logger: log how many reports were not described (if any)."""
        if self.logger is not None and self.not_logged:
            self.logger.warning("%s: %d more bad lines not logged", name, self.not_logged)


def iter_lines(
    url: str, bad: BadLines, *, compressed: bool | None = None, universal_newlines: bool = False
) -> Iterator[tuple[int, bytes]]:
    """``(offset, line)`` for every line of the file at ``url``, in order, streamed.

    ``offset`` is the line's first byte in the decompressed stream.  Lines end at ``b"\\n"``,
    which is not part of ``line`` (a ``b"\\r"`` before it is: JSON ignores it); the last line needs
    no terminator and a final ``b"\\n"`` starts no empty line.  With ``universal_newlines`` lines
    also end at ``b"\\r\\n"`` and a lone ``b"\\r"``, none kept, as Python's text mode splits them.
    The file is gzip when ``compressed``, or (``None``) when ``url`` ends in ``.gz``.  A corrupt or
    truncated gzip stream ends the file: :meth:`BadLines.truncated` with the offset where the lost
    data starts; a partly read line there is lost with it.  A line is held in memory whole, however
    long.
    """
    if compressed is None:
        compressed = url.endswith(".gz")
    offset = 0
    with storage.open_read(url) as raw:
        stream = gzip.GzipFile(fileobj=raw) if compressed else raw
        try:
            for chunk in stream:
                if not universal_newlines:
                    yield offset, chunk[:-1] if chunk.endswith(b"\n") else chunk
                elif b"\r" not in chunk:
                    yield offset, chunk[:-1] if chunk.endswith(b"\n") else chunk
                else:
                    start = 0
                    for end in _UNIVERSAL.finditer(chunk):
                        yield offset + start, chunk[start : end.start()]
                        start = end.end()
                    if start < len(chunk):
                        yield offset + start, chunk[start:]
                offset += len(chunk)
        except _GZIP_ERRORS as exc:
            if not compressed:
                raise
            bad.truncated(url, offset, exc)
        finally:
            if stream is not raw:
                stream.close()


def parse_json(line: bytes, *, encoding: str | None = "utf-8") -> tuple[Any, str | None]:
    """``(value, None)`` for a JSON line, else ``(None, reason)``: :data:`INVALID_UTF8` or :data:`INVALID_JSON`.

    ``encoding="utf-8"`` (the documents files, as the reference's reader): the bytes must be strict
    UTF-8.  ``encoding=None``: :func:`json.loads` on the bytes, which also takes UTF-16/32 and a
    UTF-8 BOM and passes encoded surrogates (corpora read as before).
    """
    try:
        return json.loads(line.decode(encoding) if encoding is not None else line), None
    except UnicodeDecodeError:
        return None, INVALID_UTF8
    except ValueError:
        return None, INVALID_JSON


def parse_object(line: bytes, *, encoding: str | None = "utf-8") -> tuple[dict[str, Any] | None, str | None]:
    """:func:`parse_json`, and :data:`NOT_AN_OBJECT` for JSON that is not an object."""
    value, reason = parse_json(line, encoding=encoding)
    if reason is None and not isinstance(value, dict):
        return None, NOT_AN_OBJECT
    return value, reason
