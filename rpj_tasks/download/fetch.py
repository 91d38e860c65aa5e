"""Stage Common Crawl WET segments (spec ``docs/spec/rpv2_format.md`` §9.1).

``source_base`` is a URL: ``https://data.commoncrawl.org/`` (read with ``requests``, streaming),
``s3://commoncrawl/`` or any other fsspec URL, e.g. a ``file://`` mirror (read through
:mod:`rpj_tasks.core.storage`).  Transient failures are retried with exponential backoff and full
jitter: HTTP 5xx and 429 (S3's ``SlowDown``), connection errors, timeouts, truncated bodies.
A 404 or any other 4xx fails at once (:class:`PermanentDownloadError`); transient failures that
outlast the retries raise :class:`DownloadFailedError` (retried later by the orchestrator).  Every
failed attempt is logged with its reason and the delay before the next one.  Every staged file is written atomically, its size checked
against ``Content-Length`` (or the object size) and its start checked to be gzip.
"""

from __future__ import annotations

import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import requests
import urllib3

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.errors import PermanentError, RpjError, TransientError
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.download")

DEFAULT_SOURCE_BASE = "https://data.commoncrawl.org/"
CHUNK = 1 << 20
_GZIP_MAGIC = b"\x1f\x8b"


class DownloadError(RpjError):
    """A source object could not be fetched."""


class PermanentDownloadError(DownloadError, PermanentError):
    """The source refused or lacks the object (HTTP 404 or another 4xx, no such file): retrying cannot help."""


class DownloadFailedError(DownloadError, TransientError):
    """Transient failures (5xx, 429, connection, truncation) outlasted every attempt."""


class _Transient(Exception):
    """A failure worth retrying."""


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter: before retry ``k`` (1-based) sleep a uniform random
    time in ``[0, min(max_delay, base_delay * 2 ** (k - 1))]``."""

    max_attempts: int = 6
    base_delay: float = 1.0
    max_delay: float = 60.0
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, retry: int) -> float:
        return self.rng.uniform(0.0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))


def _is_http(url: str) -> bool:
    return storage.protocol_of(url) in ("http", "https")


# --------------------------------------------------------------------------- one attempt


@dataclass
class _Body:
    """An open source body: its chunks and the size it announces (None if unknown)."""

    chunks: Iterator[bytes]
    expected: int | None


def _http_body(session: requests.Session, url: str, policy: RetryPolicy) -> tuple[requests.Response, _Body]:
    try:
        resp = session.get(
            url, stream=True, timeout=(policy.connect_timeout, policy.read_timeout), headers={"Accept-Encoding": "identity"}
        )
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    if resp.status_code != 200:
        reason = f"HTTP {resp.status_code} {resp.reason}"
        resp.close()
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Transient(reason)
        raise PermanentDownloadError(f"{url}: {reason}")
    length = resp.headers.get("Content-Length")
    return resp, _Body(resp.raw.stream(CHUNK, decode_content=False), int(length) if length else None)


def _copy(body: _Body, dest: IO[bytes]) -> int:
    """Copy ``body`` to ``dest``; check the gzip start and the announced size."""
    n = 0
    for chunk in body.chunks:
        if n == 0 and chunk:
            _check_gzip_start(chunk)
        dest.write(chunk)
        n += len(chunk)
    if n == 0:
        raise _Transient("empty body")
    if body.expected is not None and n != body.expected:
        raise _Transient(f"got {n} bytes, expected {body.expected}")
    return n


def _check_gzip_start(chunk: bytes) -> None:
    if not chunk.startswith(_GZIP_MAGIC):
        raise _Transient(f"not gzip data (starts with {chunk[:8]!r})")
    try:
        zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(chunk[:CHUNK], 1 << 16)
    except zlib.error as exc:
        raise _Transient(f"unreadable gzip start: {exc}") from exc


def _fetch_once(
    url: str, dest_url: str, session: requests.Session, policy: RetryPolicy, digests: dict[str, Any] | None = None
) -> int:
    """One attempt at copying ``url`` to ``dest_url`` (atomically); the number of bytes."""
    try:
        if _is_http(url):
            resp, body = _http_body(session, url, policy)
            with resp, storage.atomic_write(dest_url, digests=digests) as dest:
                return _copy(body, dest)
        fs, path = storage.fs_and_path(url)
        with fs.open(path, "rb") as src, storage.atomic_write(dest_url, digests=digests) as dest:
            size = fs.size(path)
            return _copy(_Body(iter(lambda: src.read(CHUNK), b""), int(size) if size is not None else None), dest)
    except (FileNotFoundError, PermissionError) as exc:
        raise PermanentDownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, EOFError) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc


# --------------------------------------------------------------------------- with retries


def _fetch(
    url: str, dest_url: str, session: requests.Session, policy: RetryPolicy, stats: Stats, digests: dict[str, Any] | None = None
) -> tuple[int, int]:
    """Copy ``url`` to ``dest_url`` with retries; ``(bytes, attempts)``."""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            return _fetch_once(url, dest_url, session, policy, digests), attempt
        except _Transient as exc:
            if attempt == policy.max_attempts:
                raise DownloadFailedError(f"{url}: failed after {attempt} attempts, last error: {exc}") from exc
            delay = policy.delay(attempt)
            log.warning("%s: attempt %d/%d failed (%s); retrying in %.2fs", url, attempt, policy.max_attempts, exc, delay)
            stats.inc("download.retries")
            policy.sleep(delay)
    raise ValueError(f"{url}: max_attempts must be >= 1")


def read_small(url: str, policy: RetryPolicy) -> bytes:
    """The whole (small) object at ``url``, with the same retry policy."""
    for attempt in range(1, policy.max_attempts + 1):
        try:
            if not _is_http(url):
                return storage.read_bytes(url)
            resp = requests.get(url, timeout=(policy.connect_timeout, policy.read_timeout))
            if resp.status_code == 200:
                return resp.content
            reason = f"HTTP {resp.status_code} {resp.reason}"
            if resp.status_code < 500 and resp.status_code != 429:
                raise PermanentDownloadError(f"{url}: {reason}")
        except (FileNotFoundError, PermissionError) as exc:
            raise PermanentDownloadError(f"{url}: {type(exc).__name__}: {exc}") from exc
        except (requests.RequestException, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        if attempt == policy.max_attempts:
            raise DownloadFailedError(f"{url}: failed after {attempt} attempts, last error: {reason}")
        delay = policy.delay(attempt)
        log.warning("%s: attempt %d/%d failed (%s); retrying in %.2fs", url, attempt, policy.max_attempts, reason, delay)
        policy.sleep(delay)
    raise ValueError(f"{url}: max_attempts must be >= 1")


# --------------------------------------------------------------------------- public API


def download_shard(
    source_base: str,
    segments: list[str],
    staging_base: str,
    stats: Stats,
    *,
    force: bool = False,
    retry: RetryPolicy = RetryPolicy(),
    digests: dict[str, dict[str, Any]] | None = None,
    known: dict[str, dict[str, Any]] | None = None,
) -> list[str]:
    """Copy each segment to ``{staging_base}/{segment}``; return the staged URLs in segment order.

    Segments already staged are kept unless ``force``.  With ``digests``, each staged file's
    ``{"sha256", "bytes"}`` is stored there by URL: taken from ``known`` (an earlier record) when
    the size matches, else computed.  Raises :class:`DownloadError` naming the URL and the last
    error when a segment still fails after ``retry.max_attempts`` attempts.
    """
    staged = []
    with requests.Session() as session, stats.timer("download"):
        for segment in segments:
            src, dest = storage.join(source_base, segment), storage.join(staging_base, segment)
            staged.append(dest)
            if not force and storage.exists(dest):
                stats.inc("download.skipped_existing")
                log.info("%s: already staged, skipped", dest)
                if digests is not None:
                    digests[dest] = _staged_digest(dest, (known or {}).get(dest))
                continue
            start = time.perf_counter()
            nbytes, attempts = _fetch(src, dest, session, retry, stats, digests)
            stats.inc("download.segments")
            stats.inc("download.bytes", nbytes)
            log.info("%s: %d bytes in %.2fs, %d attempt(s)", src, nbytes, time.perf_counter() - start, attempts)
    return staged


def _staged_digest(url: str, known: dict[str, Any] | None) -> dict[str, Any]:
    if known is not None and known.get("bytes") == storage.size(url):
        return dict(known)
    return storage.digest(url)


def download_unit(
    cfg: SnapshotConfig, shard: int, segments: list[str], *, force: bool = False, retry: RetryPolicy = RetryPolicy()
) -> dict[str, Any]:
    """Stage one shard's segments under the commit protocol (:mod:`rpj_tasks.core.commit`).

    The record ``stats/download/{snapshot}/{shard}.json`` lists every staged file with its sha256
    and size; the CCNet steps fingerprint their inputs with it.  A shard whose record matches its
    segments and whose files are all there is skipped unless ``force``.
    """
    record_url = layout.download_record_url(cfg.storage_root, cfg.id, shard)
    inputs = {"segments": list(segments)}
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        log.info("shard %04d: segments staged earlier (%s), skipping", shard, record_url)
        return {**record, "skipped": True}
    earlier = commit.load_record(record_url) or {}
    known = {url: earlier["outputs"][rel] for rel, url in commit.listed_outputs(record_url, earlier).items()}
    root = layout.staging_wet_root(cfg.storage_root)
    dirs = sorted({storage.join(root, seg).rsplit("/", 1)[0] for seg in segments})
    stats = Stats()
    with commit.UnitCommit(record_url, inputs, dirs, owned=lambda name: False) as unit:
        digests: dict[str, dict[str, Any]] = {}
        download_shard(cfg.source_base, segments, root, stats, force=force, retry=retry, digests=digests, known=known)
        unit.add_outputs(digests)
        record = unit.commit({"snapshot": cfg.id, "shard": shard, **stats.to_dict()})
    log.info("shard %04d downloaded: %s", shard, stats.summary())
    return {**record, "skipped": False}
