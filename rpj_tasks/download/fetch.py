"""Stage Common Crawl WET segments (spec ``docs/spec/rpv2_format.md`` §9.1).

``source_base`` is a URL: ``https://data.commoncrawl.org/`` (read with ``requests``, streaming),
``s3://commoncrawl/`` or any other fsspec URL, e.g. a ``file://`` mirror (read through
:mod:`rpj_tasks.core.storage`).  Transient failures are retried with exponential backoff and full
jitter: HTTP 5xx and 429 (S3's ``SlowDown``), connection errors, timeouts, bodies shorter than
announced.  A 404 or any other 4xx, and an empty source file, fail at once
(:class:`PermanentDownloadError`); transient failures that outlast the retries raise
:class:`DownloadFailedError` (retried later by the orchestrator).  Every failed attempt is logged
with its reason and the delay before the next one.  Credentials in URLs never reach a log, an
error or a record (:func:`rpj_tasks.core.storage.redact`).

A file counts as staged only when it is whole: written atomically, its size equal to the
announced ``Content-Length`` (or object size) and its gzip stream inflated to the end while it is
copied (every member complete, CRCs checked, nothing after the last member: :class:`GzipCheck`).
A damaged gzip stream is fetched again; when two attempts give the same damaged bytes the damage
is the source's own: the file is staged with the damage in its integrity record and counted
(``download.damaged_source``), and the CCNet reader keeps the records before and after it
(``wet.skipped.*``).  A source with no readable member at all fails permanently.  A file staged
earlier is kept only if it matches its integrity record (sha256 and size; a file damaged at the
source keeps its recorded damage until ``force`` fetches it again), or, staged by a run that left
no record, if its gzip stream is whole; otherwise it is fetched again.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

import requests
import urllib3

from rpj_tasks.core import commit, layout, logctx, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.errors import PermanentError, RpjError, TransientError
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.download")

DEFAULT_SOURCE_BASE = "https://data.commoncrawl.org/"
CHUNK = 1 << 20


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


# --------------------------------------------------------------------------- integrity


class GzipCheck:
    """Inflates a gzip stream fed in chunks (the output is discarded) to prove it whole.

    :attr:`problem` ends as None (every member complete, each member's CRC and length checked by
    zlib, no bytes after the last one) or names the first damage and its byte offset.
    """

    def __init__(self) -> None:
        self.offset = 0  # bytes fed so far
        self.members = 0  # members complete so far
        self.problem: str | None = None
        self._inflater: Any = None
        self._member_start = 0

    def feed(self, chunk: bytes) -> None:
        pos = 0
        while pos < len(chunk) and self.problem is None:
            if self._inflater is None:
                self._inflater, self._member_start = zlib.decompressobj(31), self.offset + pos
            inflater = self._inflater
            try:
                inflater.decompress(chunk[pos:], 1 << 20)
                while inflater.unconsumed_tail and not inflater.eof:
                    inflater.decompress(inflater.unconsumed_tail, 1 << 20)
            except zlib.error as exc:
                what = "bytes that are not gzip" if self._member_start == 0 and not self.members else "corrupt gzip member"
                self.problem = f"{what} at byte offset {self._member_start} ({exc})"
                break
            if inflater.eof:
                pos = len(chunk) - len(inflater.unused_data)
                self._inflater = None
                self.members += 1
            else:
                pos = len(chunk)
        self.offset += len(chunk)

    def finish(self) -> str | None:
        """The damage found (None if the stream is whole); call once, after the last chunk."""
        if self.problem is None and self._inflater is not None:
            self.problem = f"truncated: the gzip member at byte offset {self._member_start} is cut off at byte {self.offset}"
        if self.problem is None and self.offset == 0:
            self.problem = "empty (0 bytes)"
        return self.problem


def check_staged(url: str) -> tuple[dict[str, Any], str | None]:
    """``({"sha256", "bytes"}, damage or None)`` of a staged file, read once."""
    sha, check = hashlib.sha256(), GzipCheck()
    with storage.open_read(url) as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            sha.update(chunk)
            check.feed(chunk)
    return {"sha256": sha.hexdigest(), "bytes": check.offset}, check.finish()


# --------------------------------------------------------------------------- one attempt


@dataclass
class _Body:
    """An open source body: its chunks and the size it announces (None if unknown)."""

    chunks: Iterator[bytes]
    expected: int | None


class _Damaged(Exception):
    """The whole body arrived but its gzip stream is damaged (``sha256`` names the bytes)."""

    def __init__(self, damage: str, sha256: str) -> None:
        super().__init__(damage)
        self.damage, self.sha256 = damage, sha256


def _http_body(session: requests.Session, url: str, policy: RetryPolicy) -> tuple[requests.Response, _Body]:
    shown = storage.redact(url)
    try:
        resp = session.get(
            url, stream=True, timeout=(policy.connect_timeout, policy.read_timeout), headers={"Accept-Encoding": "identity"}
        )
    except _BAD_URL as exc:
        raise PermanentDownloadError(f"{shown}: not a usable URL ({storage.redact(str(exc))})") from None
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise _Transient(storage.redact(f"{type(exc).__name__}: {exc}")) from None
    if resp.status_code != 200:
        reason = f"HTTP {resp.status_code} {resp.reason}"
        resp.close()
        if resp.status_code >= 500 or resp.status_code == 429:
            raise _Transient(reason)
        raise PermanentDownloadError(f"{shown}: {reason}")
    length = resp.headers.get("Content-Length")
    expected = int(length) if length and length.isascii() and length.isdigit() else None
    return resp, _Body(resp.raw.stream(CHUNK, decode_content=False), expected)


def _copy(url: str, body: _Body, dest: IO[bytes], accept: str | None) -> tuple[int, str | None]:
    """Copy ``body`` to ``dest`` while checking it: ``(bytes, damage)``.

    A body shorter or longer than announced is a transfer error (retried).  A damaged gzip stream
    raises :class:`_Damaged` (the write is dropped) unless its sha256 is ``accept``: the same
    damaged bytes as the attempt before, so the damage is the source's (kept if at least one
    gzip member is whole: the reader keeps its records).
    """
    if body.expected == 0:
        raise PermanentDownloadError(f"{storage.redact(url)}: the source file is empty (0 bytes)")
    sha, check = hashlib.sha256(), GzipCheck()
    for chunk in body.chunks:
        dest.write(chunk)
        sha.update(chunk)
        check.feed(chunk)
    n = check.offset
    if body.expected is not None and n != body.expected:
        raise _Transient(f"got {n} bytes, expected {body.expected}")
    damage = check.finish()
    if damage is not None and (sha.hexdigest() != accept or not check.members):
        raise _Damaged(damage, sha.hexdigest())
    return n, damage


def _fetch_once(
    url: str, dest_url: str, session: requests.Session, policy: RetryPolicy, accept: str | None, digests: dict[str, Any]
) -> tuple[int, str | None]:
    """One attempt at copying ``url`` to ``dest_url`` (atomically): ``(bytes, damage)``."""
    shown = storage.redact(url)
    try:
        if _is_http(url):
            resp, body = _http_body(session, url, policy)
            with resp, storage.atomic_write(dest_url, digests=digests) as dest:
                return _copy(url, body, dest, accept)
        fs, path = storage.fs_and_path(url)
        with fs.open(path, "rb") as src, storage.atomic_write(dest_url, digests=digests) as dest:
            size = fs.size(path)
            return _copy(url, _Body(iter(lambda: src.read(CHUNK), b""), int(size) if size is not None else None), dest, accept)
    except (FileNotFoundError, PermissionError) as exc:
        raise PermanentDownloadError(f"{shown}: {type(exc).__name__}: {storage.redact(str(exc))}") from None
    except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, EOFError) as exc:
        raise _Transient(storage.redact(f"{type(exc).__name__}: {exc}")) from None


# --------------------------------------------------------------------------- with retries


def _fetch(
    url: str, dest_url: str, session: requests.Session, policy: RetryPolicy, stats: Stats, digests: dict[str, Any]
) -> tuple[int, int, str | None]:
    """Copy ``url`` to ``dest_url`` with retries: ``(bytes, attempts, damage)``.

    ``damage`` is None for a whole file, else the damage the source itself has (the same damaged
    bytes in two attempts in a row; the file is staged).  A source without one readable gzip
    member (not gzip, or empty) fails permanently once that is confirmed.
    """
    shown = storage.redact(url)
    accept: str | None = None  # sha256 of the previous attempt's damaged bytes
    for attempt in range(1, policy.max_attempts + 1):
        try:
            nbytes, damage = _fetch_once(url, dest_url, session, policy, accept, digests)
            return nbytes, attempt, damage
        except _Damaged as exc:
            if exc.sha256 == accept:  # the source's own damage, and not one whole member (see _copy)
                raise PermanentDownloadError(
                    f"{shown}: {exc.damage} (the same in two downloads: the source is damaged)"
                ) from None
            reason = f"damaged gzip stream: {exc.damage}"
            accept = exc.sha256
        except _Transient as exc:
            reason = str(exc)
            accept = None
        if attempt == policy.max_attempts:
            raise DownloadFailedError(f"{shown}: failed after {attempt} attempts, last error: {reason}")
        delay = policy.delay(attempt)
        log.warning("%s: attempt %d/%d failed (%s); retrying in %.2fs", shown, attempt, policy.max_attempts, reason, delay)
        stats.inc("download.retries")
        policy.sleep(delay)
    raise ValueError(f"{shown}: max_attempts must be >= 1")


#: The most :func:`read_small` reads (a crawl's ``wet.paths.gz`` is about 1.5 MB).
MAX_SMALL_BYTES = 64 << 20
_BAD_URL = (requests.exceptions.InvalidURL, requests.exceptions.InvalidSchema, requests.exceptions.MissingSchema)


def read_small(url: str, policy: RetryPolicy, max_bytes: int = MAX_SMALL_BYTES) -> bytes:
    """The whole (small) object at ``url``, with the same retry policy; refused past ``max_bytes``."""
    shown = storage.redact(url)
    too_big = PermanentDownloadError(f"{shown}: larger than {max_bytes} bytes, refused (expected a small file)")
    for attempt in range(1, policy.max_attempts + 1):
        try:
            if not _is_http(url):
                if storage.size(url) > max_bytes:
                    raise too_big
                return storage.read_bytes(url)
            with requests.get(url, timeout=(policy.connect_timeout, policy.read_timeout), stream=True) as resp:
                if resp.status_code == 200:
                    data = b"".join(_limited(resp.iter_content(CHUNK), max_bytes, too_big))
                    return data
            reason = f"HTTP {resp.status_code} {resp.reason}"
            if resp.status_code < 500 and resp.status_code != 429:
                raise PermanentDownloadError(f"{shown}: {reason}")
        except (FileNotFoundError, PermissionError) as exc:
            raise PermanentDownloadError(f"{shown}: {type(exc).__name__}: {storage.redact(str(exc))}") from None
        except _BAD_URL as exc:
            raise PermanentDownloadError(f"{shown}: not a usable URL ({storage.redact(str(exc))})") from None
        except (requests.RequestException, OSError) as exc:
            reason = storage.redact(f"{type(exc).__name__}: {exc}")
        if attempt == policy.max_attempts:
            raise DownloadFailedError(f"{shown}: failed after {attempt} attempts, last error: {reason}")
        delay = policy.delay(attempt)
        log.warning("%s: attempt %d/%d failed (%s); retrying in %.2fs", shown, attempt, policy.max_attempts, reason, delay)
        policy.sleep(delay)
    raise ValueError(f"{shown}: max_attempts must be >= 1")


def _limited(chunks: Iterator[bytes], max_bytes: int, error: Exception) -> Iterator[bytes]:
    total = 0
    for chunk in chunks:
        total += len(chunk)
        if total > max_bytes:
            raise error
        yield chunk


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

    A segment staged earlier is kept (unless ``force``) when it matches its entry in ``known``
    (an earlier integrity record: sha256 and size), or, without an entry, when its gzip stream is
    whole; otherwise it is fetched again.  With ``digests``, each staged file's integrity record
    ``{"sha256", "bytes"}`` (plus ``"damage"`` for a file damaged at the source) is stored there
    by URL.  Raises :class:`DownloadError` naming the URL and the last error when a segment still
    fails after ``retry.max_attempts`` attempts, or at once when retrying cannot help.
    """
    staged = []
    digests = {} if digests is None else digests
    with requests.Session() as session, stats.timer("download"):
        for segment in segments:
            src = storage.join_below(source_base, segment, "segment path")
            dest = storage.join_below(staging_base, segment, "segment path")
            staged.append(dest)
            kept = None if force or not storage.exists(dest) else _kept(dest, (known or {}).get(dest))
            if kept is not None:
                stats.inc("download.skipped_existing")
                log.info("%s: already staged, skipped", dest)
                digests[dest] = kept
            else:
                if not force and storage.exists(dest):
                    stats.inc("download.refetched_staged")
                start = time.perf_counter()
                written: dict[str, dict[str, Any]] = {}
                nbytes, attempts, damage = _fetch(src, dest, session, retry, stats, written)
                digests[dest] = {**written[dest], **({"damage": damage} if damage else {})}
                stats.inc("download.segments")
                stats.inc("download.bytes", nbytes)
                took = time.perf_counter() - start
                log.info("%s: %d bytes in %.2fs, %d attempt(s)", storage.redact(src), nbytes, took, attempts)
            if damage := digests[dest].get("damage"):
                stats.inc("download.damaged_source")
                log.warning("%s: damaged at the source, staged as it is and counted: %s", storage.redact(src), damage)
    return staged


def _kept(url: str, known: dict[str, Any] | None) -> dict[str, Any] | None:
    """The integrity record of an already staged file worth keeping, else None (fetch it again)."""
    if known is not None:
        if storage.digest(url) == {"sha256": known.get("sha256"), "bytes": known.get("bytes")}:
            return dict(known)
        log.warning("%s: does not match its integrity record (sha256/size): fetched again", url)
        return None
    digest, damage = check_staged(url)
    if damage is None:
        return digest
    log.warning("%s: staged without a record and damaged (%s): fetched again", url, damage)
    return None


def download_unit(
    cfg: SnapshotConfig, shard: int, segments: list[str], *, force: bool = False, retry: RetryPolicy = RetryPolicy()
) -> dict[str, Any]:
    """Stage one shard's segments under the commit protocol (:mod:`rpj_tasks.core.commit`).

    The record ``stats/download/{snapshot}/{shard}.json`` lists every staged file with its
    integrity record (sha256, size, and the damage of a file damaged at the source); the CCNet
    steps fingerprint their inputs with it.  A shard whose record matches its segments and whose
    files all match their integrity records is skipped unless ``force``.
    """
    with logctx.log_context(shard=logctx.shard_label(cfg.id, shard)):
        return _download_unit(cfg, shard, segments, force, retry)


def _download_unit(cfg: SnapshotConfig, shard: int, segments: list[str], force: bool, retry: RetryPolicy) -> dict[str, Any]:
    record_url = layout.download_record_url(cfg.storage_root, cfg.id, shard)
    inputs = {"segments": list(segments)}
    earlier = commit.load_record(record_url) or {}
    known = {url: earlier["outputs"][rel] for rel, url in commit.listed_outputs(record_url, earlier).items()}
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        if all(_kept(url, meta) is not None for url, meta in known.items()):
            log.info("shard %04d: segments staged earlier (%s), skipping", shard, record_url)
            return {**record, "skipped": True}
    root = layout.staging_wet_root(cfg.storage_root)
    dirs = sorted({storage.join_below(root, seg, "segment path").rsplit("/", 1)[0] for seg in segments})
    stats = Stats()
    with commit.UnitCommit(record_url, inputs, dirs, owned=lambda name: False) as unit:
        digests: dict[str, dict[str, Any]] = {}
        download_shard(cfg.source_base, segments, root, stats, force=force, retry=retry, digests=digests, known=known)
        unit.add_outputs(digests)
        record = unit.commit({"snapshot": cfg.id, "shard": shard, **stats.to_dict()})
    log.info("shard %04d downloaded: %s", shard, stats.summary())
    return {**record, "skipped": False}
