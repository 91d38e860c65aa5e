"""The one commit protocol: how every stage, artifacts build and models build publishes its work.

A *unit* (one shard of a stage, one artifacts or models version) has outputs under some
directories and a *record*: a JSON file written last that lists the unit's inputs (a fingerprint:
sha256 of each input file, the settings that change the output; never timings) and every output
with its sha256 and size.  The rules:

1. A unit is finished only if its record exists, its ``inputs`` equal the fingerprint of this run
   and every output it lists exists with its size (:func:`finished`).  Otherwise it is redone.
2. Starting a redo removes the record first (:class:`UnitCommit` on enter): a redo that dies at any
   later point leaves a unit that the next run redoes, never one it skips.
3. Outputs are written under per-run temporary names (``.{name}.tmp-{host}.{pid}.{nonce}``) and
   renamed into place (local), or uploaded in one PUT from a local spool file (object stores).
   Concurrent runs of a unit therefore never touch each other's temporary files, and only temp
   files whose run is dead (its process is gone on this host, or it is older than
   :data:`STALE_TEMP_SECONDS` elsewhere) are removed.
4. On success, outputs in the unit's directories that this run did not write are removed (stale
   files of an earlier run), then the record is written.  Readers use only files listed in it
   (:func:`listed_outputs`).

``RPJ_FAULT`` injects failures at the commit points, for the tests: ``output:3:kill`` kills the
process right after the 3rd output is committed, ``record:1:enospc`` raises "No space left on
device" before the record is written (points: ``output``, ``stale``, ``record``; ``*`` is any).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import posixpath
import signal
import tempfile
import time
from collections.abc import Iterator
from typing import IO, Any

from rpj_tasks.core import storage
from rpj_tasks.core.redact import redact_values

log = logging.getLogger("rpj.commit")

STALE_TEMP_SECONDS = 24 * 3600
_FAULT_COUNTS: dict[str, int] = {}
HOST, SPOOL_PREFIX, run_tag, temp_name = storage.HOST, storage.SPOOL_PREFIX, storage.run_tag, storage.temp_name


def _tag_of(name: str) -> str | None:
    if not storage.is_temp_name(name):
        return None
    return name.rsplit(".tmp-", 1)[1]


def tag_is_dead(tag: str, age_seconds: float | None = None) -> bool:
    """Whether the run that named a temp file with ``tag`` has ended (so its file can go)."""
    parts = tag.split(".")
    if len(parts) == 3 and parts[0] == HOST and parts[1].isdigit():
        pid = int(parts[1])
        if pid == os.getpid():
            return tag != run_tag()
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    # another host, or a name from an older rpj: only when it is old enough
    return age_seconds is not None and age_seconds > STALE_TEMP_SECONDS


def fault(point: str) -> None:
    """Fail here if ``RPJ_FAULT`` asks for it (tests only; see the module doc)."""
    spec = os.environ.get("RPJ_FAULT")
    if not spec:
        return
    where, nth, action = spec.split(":")
    if where not in (point, "*"):
        return
    _FAULT_COUNTS[where] = _FAULT_COUNTS.get(where, 0) + 1
    if _FAULT_COUNTS[where] != int(nth):
        return
    log.warning("RPJ_FAULT: %s at commit point %s #%s", action, point, nth)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if action == "enospc":
        raise OSError(errno.ENOSPC, "No space left on device (injected by RPJ_FAULT)")
    raise ValueError(f"RPJ_FAULT: unknown action {action!r}")


def remove_dead_spools() -> int:
    """Remove spool files (object-store uploads) left in the temp dir by runs that died."""
    removed = 0
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{SPOOL_PREFIX}*")):
        tag = os.path.basename(path)[len(SPOOL_PREFIX) :].rsplit("-", 1)[0]
        with contextlib.suppress(OSError):
            if tag_is_dead(tag, time.time() - os.path.getmtime(path)):
                os.unlink(path)
                removed += 1
    return removed


def load_record(record_url: str) -> dict[str, Any] | None:
    try:
        return json.loads(storage.read_bytes(record_url))
    except FileNotFoundError:
        return None


def finished(record_url: str, inputs: dict[str, Any] | None) -> dict[str, Any] | None:
    """The unit's record if it is finished for ``inputs`` (rule 1), else None (with the reason logged).

    ``inputs=None`` accepts any inputs (a unit the caller identifies by name alone, e.g. an artifacts
    version) but still requires every listed output."""
    record = load_record(record_url)
    if record is None:
        return None
    if inputs is not None and record.get("inputs") != redact_values(inputs):  # as commit() wrote them
        log.info("%s: inputs changed since it was written: redo", record_url)
        return None
    for rel, url in listed_outputs(record_url, record).items():
        meta = record["outputs"][rel]
        try:
            size = storage.size(url)
        except FileNotFoundError:
            log.info("%s: output %s is missing: redo", record_url, url)
            return None
        if size != meta["bytes"]:
            log.info("%s: output %s has %d bytes, the record says %d: redo", record_url, url, size, meta["bytes"])
            return None
    return record


def resolve(base: str, rel: str) -> str:
    """The URL of ``rel`` (may hold ``..``) below ``base``."""
    scheme, sep, path = storage.join(base, rel).partition("://")
    if not sep:
        scheme, path = "", scheme
    leading = "/" if path.startswith("/") else ""
    path = leading + posixpath.normpath(path).lstrip("/")
    return f"{scheme}://{path}" if sep else path


def listed_outputs(record_url: str, record: dict[str, Any]) -> dict[str, str]:
    """``{relative name: URL}`` of the outputs a record lists: the only files readers use."""
    base = record_url.rsplit("/", 1)[0]
    return {rel: resolve(base, rel) for rel in sorted(record.get("outputs", {}))}


def relative(base: str, url: str) -> str:
    """``url`` relative to ``base`` (both URLs; ``..`` steps allowed) for the record's output names."""
    b, u = base.rstrip("/").split("/"), url.split("/")
    common = 0
    while common < min(len(b), len(u)) and b[common] == u[common]:
        common += 1
    return "/".join([".."] * (len(b) - common) + u[common:])


class UnitCommit:
    """Redo one unit (rules 2-4)::

        with UnitCommit(record_url, inputs, [out_dir], owned=lambda n: n.endswith(".json.gz")) as unit:
            with unit.gzip_writer(storage.join(out_dir, "en_head.json.gz")) as f:
                f.write(...)
            unit.commit({"counts": ...})

    ``owned(name)`` says which names in the output directories belong to the unit (others, e.g. a
    subdirectory, are never removed as stale).  Leaving the block without :meth:`commit` (an
    exception) leaves no record: the unit stays unfinished.
    """

    def __init__(
        self, record_url: str, inputs: dict[str, Any], output_dirs: list[str], *, owned: Any = None, recursive: bool = False
    ) -> None:
        self.record_url, self.inputs, self.output_dirs = record_url, inputs, output_dirs
        self.owned = owned or (lambda name: True)
        self.recursive = recursive
        self.base = record_url.rsplit("/", 1)[0]
        self.outputs: dict[str, dict[str, Any]] = {}
        self._written: set[str] = set()
        self._stale_done = False
        self.removed = 0
        self.committed: dict[str, Any] | None = None

    def __enter__(self) -> UnitCommit:
        storage.remove(self.record_url)
        self.removed += self.remove_dead_temps()
        remove_dead_spools()
        return self

    def __exit__(self, *exc: Any) -> None:
        return None

    def _entries(self, directory: str) -> list[str]:
        """Names below ``directory``: direct entries, or every file's relative path if recursive."""
        if not self.recursive:
            return storage.listdir(directory)
        fs, path = storage.fs_and_path(directory)
        try:
            found = fs.find(path)
        except FileNotFoundError:
            return []
        root = path.rstrip("/") + "/"
        return sorted(f[len(root) :] for f in found if f.startswith(root))

    def remove_dead_temps(self) -> int:
        removed = 0
        for directory in self.output_dirs:
            fs, path = storage.fs_and_path(directory)
            for name in self._entries(directory):
                tag = _tag_of(name.rsplit("/", 1)[-1])
                if tag is None:
                    continue
                age = None
                if storage._is_local_fs(fs):
                    with contextlib.suppress(OSError):
                        age = time.time() - os.path.getmtime(os.path.join(path, name))
                if tag_is_dead(tag, age):
                    storage.remove(storage.join(directory, name))
                    removed += 1
        return removed

    @contextlib.contextmanager
    def writer(self, url: str) -> Iterator[IO[bytes]]:
        """Write one output; it is committed (visible, listed) when the block exits cleanly."""
        digests: dict[str, dict[str, Any]] = {}
        with storage.atomic_write(url, digests=digests) as f:
            yield f
        self.add_outputs(digests)

    @contextlib.contextmanager
    def gzip_writer(self, url: str, compresslevel: int = 6) -> Iterator[IO[bytes]]:
        """Deterministic gzip (no name, mtime 0): same input, same bytes."""
        digests: dict[str, dict[str, Any]] = {}
        with storage.atomic_gzip_write(url, compresslevel, digests=digests) as f:
            yield f
        self.add_outputs(digests)

    def write_bytes(self, url: str, data: bytes) -> None:
        with self.writer(url) as f:
            f.write(data)

    def add_outputs(self, digests: dict[str, dict[str, Any]]) -> None:
        """Count outputs committed by ``storage.atomic_write(..., digests=)``, e.g. in a worker process."""
        for url, meta in digests.items():
            self.outputs[relative(self.base, url)] = dict(meta)
            self._written.add(url)
            fault("output")

    def remove_stale(self) -> int:
        """Remove the unit's files that this run did not write (an earlier run's); how many went.

        :attr:`removed` counts them, with the dead runs' temp files removed on enter."""
        if not self._stale_done:
            for directory in self.output_dirs:
                for name in self._entries(directory):
                    url = storage.join(directory, name)
                    if _tag_of(name.rsplit("/", 1)[-1]) is None and self.owned(name) and url not in self._written:
                        storage.remove(url)
                        self.removed += 1
                        log.info("removed stale output %s", url)
            self._stale_done = True
            fault("stale")
        return self.removed

    def commit(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Remove stale outputs (unless done already), then write the record (last); returns it."""
        self.remove_stale()
        record = {**(extra or {}), "inputs": self.inputs, "outputs": dict(sorted(self.outputs.items()))}
        record = redact_values(record)  # no credential of a source URL is ever written into a record
        fault("record")
        storage.write_bytes(self.record_url, json.dumps(record, indent=1, sort_keys=True).encode())
        self.committed = record
        return record
