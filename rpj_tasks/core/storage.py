"""Storage by URL: every engine input and output is a URL (``file://``, ``s3://``, ``https://`` ...).

The engine never assumes a local path.  All writes go through :func:`atomic_write`, which makes
an output appear whole or not at all:

* local files: write ``.<name>.tmp-<host>.<pid>.<nonce>`` (:func:`temp_name`) in the same
  directory, fsync, then ``os.replace``;
* object stores: buffer to a local spool file, then upload it in one PUT (``fs.put_file``).
  A killed task leaves no object behind.

Per-protocol options (S3 endpoint, credentials) are registered once per process with
:func:`register_options`; the Airflow layer fills them from the ``aws_default`` connection.
:func:`portable_options` gives them as plain data for worker processes (:mod:`rpj_tasks.core.workers`).
Plain paths without a scheme are accepted and treated as ``file://`` URLs.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gzip
import hashlib
import inspect
import io
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    import fsspec

from rpj_tasks.core.errors import PermanentError
from rpj_tasks.core.redact import redact

log = logging.getLogger("rpj.storage")

_OPTIONS: dict[str, dict[str, Any]] = {}
_LOCK = threading.Lock()
_PLAIN = (str, bytes, bool, int, float, type(None))


def register_options(protocol: str, options: dict[str, Any]) -> None:
    """Set fsspec storage options for ``protocol`` (e.g. ``"s3"``) for this process."""
    import fsspec

    with _LOCK:
        _OPTIONS[protocol] = dict(options)
    fsspec.config.conf.pop(protocol, None)


def registered_options() -> dict[str, dict[str, Any]]:
    """A copy of every protocol's options set with :func:`register_options` (e.g. to hand to a worker)."""
    with _LOCK:
        return {protocol: dict(options) for protocol, options in _OPTIONS.items()}


def portable_options() -> dict[str, dict[str, Any]]:
    """The registered options as plain data (str, numbers, bools, None, and lists/dicts of them),
    which pickle and mean the same in another process: what a worker process registers.

    A ``session`` (the botocore / aiobotocore session the Amazon provider puts in the options of
    its ``S3FileSystem``; it holds an unpicklable environment) becomes its current credentials
    (``key``, ``secret``, ``token``) and region (``client_kwargs.region_name``); options given
    explicitly win.  Temporary credentials are handed over as they are now: a worker does not
    refresh them.  Any other value that is not plain data is left out, with a warning naming its
    key.  No value is ever logged.
    """
    portable: dict[str, dict[str, Any]] = {}
    for protocol, options in registered_options().items():
        session = options.pop("session", None)
        if session is not None:
            from_session = _session_options(protocol, session)
            client_kwargs = {**from_session.pop("client_kwargs", {}), **(options.get("client_kwargs") or {})}
            options = {**from_session, **options}
            if client_kwargs:
                options["client_kwargs"] = client_kwargs
        dropped: list[str] = []
        portable[protocol] = _plain(options, protocol, dropped)
        if dropped:
            log.warning("storage options not handed to worker processes (not plain data): %s", ", ".join(dropped))
    return portable


def _plain(options: dict[str, Any], where: str, dropped: list[str]) -> dict[str, Any]:
    """``options`` without the values that are not plain data (their key paths go to ``dropped``)."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        path = f"{where}.{key}"
        if isinstance(value, dict) and all(isinstance(k, str) for k in value):
            out[key] = _plain(value, path, dropped)
        elif _is_plain(value):
            out[key] = value
        else:
            dropped.append(f"{path} ({type(value).__name__})")
    return out


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_plain(v) for k, v in value.items())
    return type(value) in _PLAIN


def _session_options(protocol: str, session: Any) -> dict[str, Any]:
    """Credentials and region of a boto3, botocore or aiobotocore session, as fsspec/s3fs options."""
    out: dict[str, Any] = {}
    try:
        credentials = _resolved(session.get_credentials())
        frozen = _resolved(credentials.get_frozen_credentials()) if credentials is not None else None
    except Exception as exc:  # noqa: BLE001 - the worker then uses the default credential chain
        log.warning(
            "%s: the credentials of the storage session could not be read (%s); worker processes "
            "use the default credential chain",
            protocol,
            type(exc).__name__,
        )
        frozen = None
    if frozen is not None:
        out["key"], out["secret"] = frozen.access_key, frozen.secret_key
        if frozen.token:
            out["token"] = frozen.token
    region = getattr(session, "region_name", None)  # boto3
    if region is None and hasattr(session, "get_config_variable"):  # botocore, aiobotocore
        with contextlib.suppress(Exception):
            region = session.get_config_variable("region")
    if isinstance(region, str) and region:
        out["client_kwargs"] = {"region_name": region}
    return out


def _resolved(value: Any) -> Any:
    """``value``, or what it resolves to if it is awaitable (aiobotocore's session API is async)."""
    if not inspect.isawaitable(value):
        return value

    import asyncio

    async def wait() -> Any:
        return await value

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(wait())
    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # an event loop runs in this thread
        return pool.submit(asyncio.run, wait()).result()


def protocol_of(url: str) -> str:
    return url.split("://", 1)[0] if "://" in url else "file"


def fs_and_path(url: str) -> tuple[fsspec.AbstractFileSystem, str]:
    import fsspec  # on first use: importing it (and asyncio) costs ~40 ms that an import of a stage does not pay

    proto = protocol_of(url)
    fs, path = fsspec.core.url_to_fs(url, **_OPTIONS.get(proto, {}))
    return fs, path


def join(base: str, *parts: str) -> str:
    """Join URL path components with ``/`` (never ``os.path``)."""
    out = base.rstrip("/")
    for part in parts:
        part = str(part).strip("/")
        if part:
            out = f"{out}/{part}"
    return out


_UNSAFE_CHARS = re.compile(r"[\x00-\x1f\x7f\\]")


def join_below(base: str, rel: str, what: str = "path") -> str:
    """``join(base, rel)`` for a relative path that came from outside (a listing, a manifest).

    The result is proven to lie below ``base``: ``rel`` must be a plain relative path, with no
    scheme, no leading ``/``, no ``..``, ``.`` or empty component, no backslash and no control
    character, and on a local filesystem no symbolic link on the way may lead out of ``base``;
    otherwise :class:`~rpj_tasks.core.errors.UnsafePathError` names it and ``what``.
    """
    from rpj_tasks.core.errors import UnsafePathError

    reason = None
    if not isinstance(rel, str) or not rel:
        reason = "empty"
    elif "://" in rel or rel.startswith("/"):
        reason = "not a relative path"
    elif _UNSAFE_CHARS.search(rel):
        reason = "contains a backslash or a control character"
    elif any(part in ("", ".", "..") for part in rel.split("/")):
        reason = "has an empty, '.' or '..' component"
    if reason:
        raise UnsafePathError(f"unsafe {what} {redact(repr(rel))}: {reason}; refused (it must stay below {redact(base)})")
    out = join(base, rel)
    if not out.startswith(base.rstrip("/") + "/"):  # by construction; kept as the proof
        raise UnsafePathError(f"unsafe {what} {redact(repr(rel))}: resolves outside {redact(base)}")
    if protocol_of(base) == "file":  # a symlink below base must not lead elsewhere either
        root = os.path.realpath(fs_and_path(base)[1])
        target = os.path.realpath(fs_and_path(out)[1])
        if not target.startswith(root.rstrip(os.sep) + os.sep):
            raise UnsafePathError(
                f"unsafe {what} {redact(repr(rel))}: a symbolic link below {redact(base)} leads to {target}; refused"
            )
    return out


def _is_local_fs(fs: Any) -> bool:
    from fsspec.implementations.local import LocalFileSystem

    return isinstance(fs, LocalFileSystem)


def is_local(url: str) -> bool:
    return _is_local_fs(fs_and_path(url)[0])


def exists(url: str) -> bool:
    fs, path = fs_and_path(url)
    return fs.exists(path)


def size(url: str) -> int:
    fs, path = fs_and_path(url)
    return int(fs.size(path))


def listdir(url: str) -> list[str]:
    """Names (not URLs) of the entries directly below ``url``; empty if it does not exist."""
    fs, path = fs_and_path(url)
    try:
        entries = fs.ls(path, detail=False)
    except FileNotFoundError:
        return []
    return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)


def remove(url: str) -> None:
    fs, path = fs_and_path(url)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path)


def is_temp_name(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_write` (left behind by a killed writer)."""
    return name.startswith(".") and ".tmp-" in name


HOST = socket.gethostname().replace(".", "_")
SPOOL_PREFIX = "rpj-spool-"
_TAG, _TAG_PID = "", -1


def run_tag() -> str:
    """``{host}.{pid}.{nonce}``: names this process's temporary files (fresh after a fork), so that
    concurrent runs never touch each other's files and a dead run's files can be recognised."""
    global _TAG, _TAG_PID
    if _TAG_PID != os.getpid():
        _TAG, _TAG_PID = f"{HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}", os.getpid()
    return _TAG


def temp_name(name: str) -> str:
    return f".{name}.tmp-{run_tag()}"


class _HashingWriter(io.RawIOBase):
    """Passes bytes to ``raw``, keeping their sha256 and count."""

    def __init__(self, raw: IO[bytes], hashing: bool) -> None:
        self.raw, self.sha256, self.bytes = raw, hashlib.sha256() if hashing else None, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.raw.write(view)
        if self.sha256 is not None:
            self.sha256.update(view)
        self.bytes += len(view)
        return len(view)


def open_read(url: str, mode: str = "rb") -> IO:
    """Open for sequential reading (HTTP is streamed: servers need not support range requests)."""
    fs, path = fs_and_path(url)
    if protocol_of(url) in ("http", "https"):
        return fs.open(path, mode, block_size=0)
    return fs.open(path, mode)


def read_bytes(url: str) -> bytes:
    fs, path = fs_and_path(url)
    return fs.cat_file(path)


@contextlib.contextmanager
def atomic_write(url: str, mode: str = "wb", digests: dict[str, dict[str, Any]] | None = None) -> Iterator[IO]:
    """Open ``url`` for writing; the object becomes visible only when the block exits cleanly.

    Local files are written as ``.{name}.tmp-{run_tag()}`` and renamed; object stores get one PUT
    from a local spool file (``rpj-spool-{run_tag()}-*`` in the temp dir).  With ``digests``, the
    committed object's ``{"sha256", "bytes"}`` is stored there under ``url``.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write supports 'wb' and 'w', not {mode!r}")
    fs, path = fs_and_path(url)
    if _is_local_fs(fs):
        directory, name = os.path.split(path)
        os.makedirs(directory, exist_ok=True)
        tmp = os.path.join(directory, temp_name(name))
        try:
            with open(tmp, "wb") as raw:
                writer = _HashingWriter(raw, digests is not None)
                yield from _writer_for(writer, mode)
                os.fsync(raw.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
    else:
        with tempfile.NamedTemporaryFile(prefix=f"{SPOOL_PREFIX}{run_tag()}-", delete=True) as spool:
            writer = _HashingWriter(spool, digests is not None)
            yield from _writer_for(writer, mode)
            spool.flush()
            fs.put_file(spool.name, path)
    if digests is not None and writer.sha256 is not None:
        digests[url] = {"sha256": writer.sha256.hexdigest(), "bytes": writer.bytes}


def _writer_for(writer: _HashingWriter, mode: str) -> Iterator[IO]:
    """Yield ``writer`` (binary) or a UTF-8 text layer over it, flushed (and detached) afterwards."""
    if mode == "wb":
        yield writer  # type: ignore[misc]
        writer.flush()
        return
    text = io.TextIOWrapper(writer, encoding="utf-8", newline="")  # type: ignore[type-var]
    yield text
    text.flush()
    text.detach()


def digest(url: str) -> dict[str, Any]:
    """``{"sha256", "bytes"}`` of the object at ``url``, streamed (the form commit records use)."""
    sha, size = hashlib.sha256(), 0
    with open_read(url) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha.update(chunk)
            size += len(chunk)
    return {"sha256": sha.hexdigest(), "bytes": size}


def write_bytes(url: str, data: bytes, digests: dict[str, dict[str, Any]] | None = None) -> None:
    with atomic_write(url, digests=digests) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_gzip_write(url: str, compresslevel: int = 6, digests: dict[str, dict[str, Any]] | None = None) -> Iterator[IO[bytes]]:
    """Deterministic gzip (no file name, mtime 0) written atomically: same input, same bytes."""
    with atomic_write(url, digests=digests) as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=compresslevel) as gz:
            yield gz  # type: ignore[misc]


def cache_dir() -> str:
    return os.environ.get("RPJ_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "rpj")


#: A cache write removes the temporary files (``*.tmp-*``) older than this from its folder: the
#: leftovers of writers killed between the write and the rename.
CACHE_TMP_MAX_AGE = 3600.0


#: The temporary names of cache writes (``{name}.tmp-{32 hex}``; ``.npy`` after it in older versions).
_CACHE_TMP = re.compile(r"\.tmp-[0-9a-f]{32}(?:\.npy)?$")


def sweep_cache_temps(folder: str, max_age: float = CACHE_TMP_MAX_AGE) -> int:
    """Remove the cache writes' temporary files (``{name}.tmp-{32 hex}``) of ``folder`` not modified
    for ``max_age`` seconds (a live writer's file is younger); returns how many were removed.
    Errors are ignored (another process may sweep the same file)."""
    cutoff = time.time() - max_age
    removed = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0
    for entry in entries:
        if not _CACHE_TMP.search(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and entry.stat(follow_symlinks=False).st_mtime < cutoff:
                os.unlink(entry.path)
                removed += 1
        except OSError:
            pass
    return removed


def _write_cache_file(path: str, chunks: Iterator[bytes] | list[bytes]) -> None:
    """``chunks`` written to ``path`` through a temporary file of its folder, flushed to disk
    (``fsync``) before the rename, so a crash never leaves a renamed but unwritten file; the
    folder's stale temporary files are swept first.  Raises ``OSError`` (the temporary file removed)."""
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    sweep_cache_temps(folder)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    try:
        with open(tmp, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def write_cache(path: str, data: bytes, checksum: bool = True) -> bool:
    """Store ``data`` at ``path`` (under :func:`cache_dir`) atomically, followed by its SHA-256 when
    ``checksum`` (read back with :func:`read_cache`).  A failure is logged and only costs
    recomputing next time: returns whether the file was written."""
    try:
        _write_cache_file(path, [data, hashlib.sha256(data).digest()] if checksum else [data])
        return True
    except OSError as exc:
        log.warning("not cached at %s: %s", path, exc)
        return False


def read_cache(path: str, size: int | None = None) -> bytes | None:
    """The data :func:`write_cache` stored at ``path`` (``size`` bytes when given), or None when the
    file is missing, unreadable, of another size or its SHA-256 does not match (torn, damaged or
    written by something else): the caller recomputes it."""
    try:
        with open(path, "rb") as f:
            raw = f.read() if size is None else f.read(size + 33)
    except OSError:
        return None
    data, digest = raw[:-32], raw[-32:]
    if len(raw) < 32 or (size is not None and len(data) != size) or hashlib.sha256(data).digest() != digest:
        return None
    return data


def sha256_file(path: str) -> str:
    """Hex SHA-256 of the file at ``path`` (read in 1 MB blocks)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


class ChecksumError(PermanentError, ValueError):
    """A file's bytes are not the ones its manifest records."""


def local_copy(url: str, sha256: str | None = None) -> str:
    """A local filesystem path holding the bytes of ``url`` (for libraries that need a path).

    Local URLs are returned as paths directly.  Remote objects are copied once into
    :func:`cache_dir` (``objects/``), keyed by URL and size, atomically.  With ``sha256`` (the
    digest a manifest records for the file) the copy's content is checked on every call: a cached
    copy that differs (the object replaced by another of the same size, a damaged file) is
    downloaded again, and a download or local file that still differs raises :class:`ChecksumError`.
    Without it a same-size replacement of the remote object keeps being served from the old copy.
    """
    fs, path = fs_and_path(url)
    if _is_local_fs(fs):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{url}: no such file")
        if sha256 is not None and (actual := sha256_file(path)) != sha256:
            raise ChecksumError(f"{url}: sha256 {actual} differs from the expected {sha256}")
        return path
    nbytes = int(fs.size(path))
    key = hashlib.sha256(f"{url}\0{nbytes}".encode()).hexdigest()[:24]
    target = os.path.join(cache_dir(), "objects", key, os.path.basename(path))
    if os.path.exists(target) and os.path.getsize(target) == nbytes:
        if sha256 is None or sha256_file(target) == sha256:
            return target
        log.warning("cached copy %s of %s differs from the expected sha256: downloading it again", target, redact(url))

    def chunks() -> Iterator[bytes]:
        with fs.open(path, "rb") as src:
            while block := src.read(1 << 20):
                yield block

    _write_cache_file(target, chunks())
    if sha256 is not None and (actual := sha256_file(target)) != sha256:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(target)
        raise ChecksumError(f"{redact(url)}: sha256 {actual} differs from the expected {sha256}")
    return target
    os.makedirs(os.path.dirname(target), exist_ok=True)
    tmp = f"{target}.tmp-{uuid.uuid4().hex}"
    try:
        with fs.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    return target
