"""Exact dedup: the release's ``duplicates/`` component (``docs/spec/rpv2_format.md`` §6), exact (fixes
D8: a sort on the full 20-byte digest, no Bloom filter) and deterministic (fixes D7).

Semantics.  The key is a document's CCNet ``digest`` (``sha1:`` + base32 of 20 bytes, §2).  Every
head and middle documents file of every snapshot of the set is read (tail never); the occurrences
of a digest are ordered by snapshot **newest first**, then shard, language (string order of the
code), bucket (head before middle) and line.  The first occurrence is kept; every later one is
listed in its file's ``duplicates/{snapshot}/{shard:04d}/{lang}_{bucket}.duplicates.parquet``
(columns :data:`rpj_tasks.core.schema.DUPLICATES_SCHEMA`, rows in line order; a file with no
duplicate has zero rows).  With ``scope="snapshot"`` each snapshot is deduplicated alone.

A line that is not a JSON object, or whose ``digest`` is not ``sha1:`` + 32 base32 characters, has
no key: it is counted (``dedup.bad_line.*``, ``dedup.bad_digest``), never listed, and still uses up
its line number (ids are physical line numbers, §3).

Incremental and arrival-order independent: the result is a function of the *set* of indexed
snapshots only (the order is recomputed from the snapshot ids at every merge), so snapshots can be
indexed in any order, and a rerun of a snapshot replaces its index (it can never duplicate itself).
Three steps, each a unit of the commit protocol (:mod:`rpj_tasks.core.commit`)::

    staging/dedup/exact/index/{snapshot}/{p}.npy      step 1 index_snapshot: the snapshot's rows of
    staging/dedup/exact/index/{snapshot}.json           partition p, sorted by (digest, position); record
    staging/dedup/exact/{group}/dups/{p}/{snapshot}.npy   step 2 dedup_partition(p): the duplicate rows
    staging/dedup/exact/{group}/partitions/{p}.json         of each snapshot in partition p; record
    duplicates/{snapshot}/{shard}/{lang}_{bucket}.duplicates.parquet
    staging/dedup/exact/duplicates/{snapshot}.json    step 3 write_duplicates(snapshot); record

``{p}`` is the partition number, zero-padded to at least 3 digits; ``{group}`` is ``release`` or
``snapshot/{id}`` (:func:`group_name`).  A row (:data:`ROW`, 28 bytes) is
the digest as three integers (its bytes big-endian: sorting the integers sorts the bytes) and the
*position* (:func:`position`): shard, language, bucket and line packed in a uint64 whose order is the
order above.  Partition ``p`` holds the digests whose first two bytes ``b`` give ``b * P >> 16 == p``
(``P`` partitions, 1-65536), so a digest is in one partition and the outputs do not depend on ``P``.

Steps 2 and 3 write a file only when its bytes change (an unchanged file is listed in the new record
as it is), so adding a snapshot rewrites only the older snapshots' files whose duplicates change, and a
rerun with the same inputs is skipped by the records.  Every file is replaced atomically; a killed
step leaves the earlier files and an unfinished unit, which the next run redoes.

Memory: a partition task holds :data:`MERGE_BYTES_PER_ROW` bytes per row of the partition (all
snapshots); an index task at most ``memory_budget / 4`` for a chunk of rows while reading, then
:data:`SORT_BYTES_PER_ROW` per row of the snapshot's largest partition (it spools partitions to local
files, :class:`IndexSpool`).
:func:`memory_plan` computes it from the index records before anything runs and
:func:`check_memory` refuses a task over ``memory_budget``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import glob
import hashlib
import io
import logging
import os
import shutil
import tempfile
import time
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.errors import ConfigError, MissingInputError, PermanentError
from rpj_tasks.core.lines import BadLines, iter_lines, parse_object
from rpj_tasks.core.logctx import log_context, shard_label
from rpj_tasks.core.schema import DIGEST_PREFIX, DUPLICATES_SCHEMA
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.dedup.exact")

#: Bumped when the index or result format changes (part of every unit's inputs).
FORMAT_VERSION = 1
SCOPES: tuple[str, ...] = ("release", "snapshot")
DEFAULT_PARTITIONS = 256
DEFAULT_MEMORY_BUDGET = 2 * 1024**3
#: One row of an index or result file: the 20 digest bytes as big-endian integers, and the position.
ROW = np.dtype([("d0", "<u8"), ("d1", "<u8"), ("d2", "<u4"), ("pos", "<u8")])
#: Peak bytes per row of a partition merge (:func:`find_duplicates`): the rows loaded (28), their
#: concatenation (28) and sorted copy (28), the sort order (8), snapshot ranks (2 + 2), flags and
#: comparison temporaries; measured with tracemalloc in tests/dedup/test_exact.py, rounded up.
MERGE_BYTES_PER_ROW = 112
#: Bytes per row of a chunk of an index build (:class:`IndexSpool`) while documents are read: the
#: digest and position buffers (28), the rows (28), their partition numbers, order and sorted copy
#: (8 + 8 + 28 + 8).  A chunk is at most ``memory_budget / 4`` bytes and :data:`MAX_CHUNK_ROWS` rows.
CHUNK_BYTES_PER_ROW = 112
MAX_CHUNK_ROWS = 4_000_000
#: Bytes per row of the largest partition of a snapshot when its index is sorted: the rows (28),
#: the sort order and its temporaries (8 + 8), the sorted copy (28) and its file bytes (28).
SORT_BYTES_PER_ROW = 112
SPOOL_PREFIX = "rpj-dedup-spool-"
#: Bytes per duplicate row of a snapshot when its duplicates files are written: the rows loaded (28),
#: the order by position (8), the sorted copy (28) and their file numbers (8).
DUPLICATES_BYTES_PER_ROW = 72

# Position: shard (16 bits) | language (15) | bucket (2) | line (31).
LINE_BITS, BUCKET_BITS, LANG_BITS, SHARD_BITS = 31, 2, 15, 16
FILE_SHIFT = LINE_BITS
LINE_MASK = (1 << LINE_BITS) - 1
BUCKET_CODES: dict[str, int] = {"head": 0, "middle": 1, "tail": 2}
_BUCKET_NAMES = {v: k for k, v in BUCKET_CODES.items()}

_HALF_DIGEST = np.dtype([("d0", ">u8"), ("d1", ">u8"), ("d2", ">u4")])


@dataclass(frozen=True)
class ExactDedupConfig:
    """Settings of exact dedup: ``partitions`` (digest-prefix partitions, 1-65536; changing it
    re-indexes every snapshot), ``scope`` (``release``: RPv2, across every snapshot of the set;
    ``snapshot``: each snapshot alone), ``memory_budget`` (bytes one index or partition task may use)."""

    partitions: int = DEFAULT_PARTITIONS
    scope: str = "release"
    memory_budget: int = DEFAULT_MEMORY_BUDGET

    def __post_init__(self) -> None:
        if not isinstance(self.partitions, int) or not 1 <= self.partitions <= 65536:
            raise ConfigError(f"exact dedup: partitions must be an integer in 1-65536, not {self.partitions!r}")
        if self.scope not in SCOPES:
            raise ConfigError(f"exact dedup: scope must be one of {', '.join(SCOPES)}, not {self.scope!r}")
        if not isinstance(self.memory_budget, int) or self.memory_budget <= 0:
            raise ConfigError(f"exact dedup: memory_budget must be a positive number of bytes, not {self.memory_budget!r}")


# ---------------------------------------------------------------- positions and digests


def lang_code(lang: str) -> int:
    """A 2-3 letter language code as a number in its string order (``en`` < ``enx`` < ``eo``)."""
    if not (2 <= len(lang) <= 3 and lang.isascii() and lang.isalpha() and lang.islower()):
        raise ConfigError(f"exact dedup: language {lang!r} is not 2-3 lowercase ASCII letters")
    value = 0
    for i in range(3):
        value = value * 27 + (ord(lang[i]) - 96 if i < len(lang) else 0)
    return value


def lang_name(code: int) -> str:
    letters = []
    for _ in range(3):
        code, rest = divmod(code, 27)
        letters.append(chr(rest + 96) if rest else "")
    return "".join(reversed(letters))


def position(shard: int, lang: str, bucket: str, line: int = 0) -> int:
    """The order key of line ``line`` of ``{shard}/{lang}_{bucket}`` within a snapshot."""
    if not 0 <= shard < 1 << SHARD_BITS:
        raise ConfigError(f"exact dedup: shard {shard} out of range")
    if not 0 <= line <= LINE_MASK:
        raise PermanentError(f"exact dedup: line {line} of shard {shard:04d} {lang}_{bucket} is beyond {LINE_MASK}")
    return (((shard << LANG_BITS | lang_code(lang)) << BUCKET_BITS | BUCKET_CODES[bucket]) << LINE_BITS) | line


def unpack(pos: int) -> tuple[int, str, str, int]:
    """``(shard, lang, bucket, line)`` of a position."""
    line = pos & LINE_MASK
    rest = pos >> LINE_BITS
    bucket = rest & ((1 << BUCKET_BITS) - 1)
    rest >>= BUCKET_BITS
    lang = rest & ((1 << LANG_BITS) - 1)
    return rest >> LANG_BITS, lang_name(lang), _BUCKET_NAMES[bucket], line


def digest_bytes(value: object) -> bytes | None:
    """The 20 bytes of a ``sha1:`` + base32 digest, or None when ``value`` is not one."""
    if not isinstance(value, str) or not value.startswith(DIGEST_PREFIX) or len(value) != len(DIGEST_PREFIX) + 32:
        return None
    try:
        return base64.b32decode(value[len(DIGEST_PREFIX) :])
    except (binascii.Error, ValueError):
        return None


def make_rows(digests: bytes | bytearray, positions: Sequence[int] | np.ndarray) -> np.ndarray:
    """Rows (:data:`ROW`) from concatenated 20-byte digests and their positions."""
    half = np.frombuffer(bytes(digests), dtype=_HALF_DIGEST)
    rows = np.empty(len(half), dtype=ROW)
    for name in ("d0", "d1", "d2"):
        rows[name] = half[name]
    rows["pos"] = np.asarray(positions, dtype=np.uint64)
    return rows


def raw_digests(rows: np.ndarray) -> list[bytes]:
    """The 20-byte digests of ``rows``."""
    half = np.empty(len(rows), dtype=_HALF_DIGEST)
    for name in ("d0", "d1", "d2"):
        half[name] = rows[name]
    data = half.tobytes()
    return [data[i : i + 20] for i in range(0, len(data), 20)]


def partition_of(rows: np.ndarray, partitions: int) -> np.ndarray:
    """The partition of each row: ``first two digest bytes * partitions >> 16`` (monotone in the digest)."""
    return ((rows["d0"] >> np.uint64(48)) * np.uint64(partitions)) >> np.uint64(16)


def _npy(rows: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(rows, dtype=ROW), allow_pickle=False)
    return buf.getvalue()


def _load(url: str) -> np.ndarray:
    rows = np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False)
    if rows.dtype != ROW:
        raise PermanentError(f"{url}: not an exact-dedup row file (dtype {rows.dtype})")
    return rows


# ---------------------------------------------------------------- paths


def part_name(partition: int, partitions: int) -> str:
    return f"{partition:0{max(3, len(str(partitions - 1)))}d}"


def index_dir(root: str, snapshot: str) -> str:
    return layout.exact_dedup_url(root, "index", layout.validate_snapshot(snapshot))


def index_url(root: str, snapshot: str, partition: int, partitions: int) -> str:
    return storage.join(index_dir(root, snapshot), part_name(partition, partitions) + ".npy")


def index_record_url(root: str, snapshot: str) -> str:
    return layout.exact_dedup_url(root, "index", layout.validate_snapshot(snapshot) + ".json")


def group_name(snapshots: Iterable[str], scope: str) -> str:
    """The state directory of steps 2 and 3 for a set of snapshots: ``release`` for the release
    (its set grows as snapshots arrive; the state is updated in place), ``snapshot/{ids}`` for
    per-snapshot dedup (``ids``: the snapshots joined by ``+``), so that a snapshot deduplicated
    alone never disturbs the release's state."""
    return "release" if scope == "release" else "snapshot/" + layout.lsh_scope(list(snapshots))


def dups_dir(root: str, group: str, partition: int, partitions: int) -> str:
    return layout.exact_dedup_url(root, *group.split("/"), "dups", part_name(partition, partitions))


def dups_url(root: str, group: str, snapshot: str, partition: int, partitions: int) -> str:
    return storage.join(dups_dir(root, group, partition, partitions), layout.validate_snapshot(snapshot) + ".npy")


def partition_record_url(root: str, group: str, partition: int, partitions: int) -> str:
    return layout.exact_dedup_url(root, *group.split("/"), "partitions", part_name(partition, partitions) + ".json")


duplicates_record_url = layout.duplicates_record_url


def indexed_snapshots(root: str) -> list[str]:
    """The snapshots with an index record, newest first."""
    names = storage.listdir(layout.exact_dedup_url(root, "index"))
    found = [n[: -len(".json")] for n in names if n.endswith(".json") and layout.SNAPSHOT_RE.fullmatch(n[: -len(".json")])]
    return sorted(found, reverse=True)


# ---------------------------------------------------------------- memory


def check_memory(rows: int, bytes_per_row: int, budget: int, what: str) -> int:
    """The bytes ``what`` needs (``rows * bytes_per_row``); raises :class:`ConfigError` over ``budget``."""
    need = rows * bytes_per_row
    if need > budget:
        raise ConfigError(
            f"exact dedup: {what} needs {need / 2**20:.1f} MiB ({rows} rows x {bytes_per_row} bytes) but the memory "
            f"budget is {budget / 2**20:.1f} MiB: raise the setting memory_budget, or (for a partition) raise "
            "partitions (more, smaller partitions; every snapshot is indexed again)"
        )
    return need


def memory_plan(
    root: str, snapshots: Iterable[str], config: ExactDedupConfig, *, cache: dict[str, Any] | None = None
) -> list[int]:
    """Bytes each partition task needs (:data:`MERGE_BYTES_PER_ROW` x its rows over ``snapshots``), from
    the index records, logged; raises :class:`ConfigError` if one is over ``config.memory_budget``."""
    rows = np.zeros(config.partitions, dtype=np.int64)
    for snap in sorted(set(snapshots)):
        rows += np.asarray(_index_record(root, snap, config.partitions, cache)["rows"], dtype=np.int64)
    need = [int(r) * MERGE_BYTES_PER_ROW for r in rows]
    worst = int(np.argmax(rows)) if len(rows) else 0
    log.info(
        "exact dedup: %d partitions, the largest (%s) needs %.1f MiB (%d rows x %d bytes), budget %.1f MiB",
        config.partitions,
        part_name(worst, config.partitions),
        need[worst] / 2**20,
        int(rows[worst]),
        MERGE_BYTES_PER_ROW,
        config.memory_budget / 2**20,
    )
    check_memory(int(rows[worst]), MERGE_BYTES_PER_ROW, config.memory_budget, f"partition {part_name(worst, config.partitions)}")
    return need


# ---------------------------------------------------------------- step 1: index a snapshot


def _documents_files(root: str, snapshot: str, shard: int) -> list[tuple[str, str, str, str]]:
    """``(lang, bucket, url, sha256)`` of the head/middle documents files the shard's CCNet record lists."""
    record_url = layout.ccnet_stats_url(root, snapshot, shard)
    record = commit.load_record(record_url)
    if record is None:
        raise MissingInputError(
            f"shard {shard:04d} of {snapshot} has no CCNet stats record ({record_url}): its documents are not "
            "finished; run the CCNet mine task for this shard first"
        )
    out = []
    for rel, url in commit.listed_outputs(record_url, record).items():
        match = layout.DOCUMENTS_FILE.match(url.rsplit("/", 1)[1])
        if match is None or match.group(2) not in layout.ANNOTATED_BUCKETS:
            continue
        out.append((match.group(1), match.group(2), url, record["outputs"][rel]["sha256"]))
    return sorted(out, key=lambda f: (f[0], BUCKET_CODES[f[1]]))


def index_snapshot(
    root: str,
    snapshot: str,
    shards: Iterable[int],
    config: ExactDedupConfig | None = None,
    *,
    force: bool = False,
) -> dict[str, Any]:
    """Step 1: read the digests of the head/middle documents of ``shards`` and commit the snapshot's
    partitioned index; returns the record (``skipped`` when it was finished for the same inputs)."""
    config = config or ExactDedupConfig()
    snapshot = layout.validate_snapshot(snapshot)
    files = [(shard, *f) for shard in sorted(set(shards)) for f in _documents_files(root, snapshot, shard)]
    inputs = {
        "format": FORMAT_VERSION,
        "partitions": config.partitions,
        "files": {layout.shard_key(snapshot, s, lang, bucket): sha for s, lang, bucket, _, sha in files},
    }
    record_url = index_record_url(root, snapshot)
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        log.info("exact dedup index of %s: finished earlier (%s), skipping", snapshot, record_url)
        return {**record, "skipped": True}
    started = time.perf_counter()
    stats = Stats()
    bad = BadLines(stats, "dedup", logger=log)
    with IndexSpool(snapshot, config) as spool:
        digests, positions = bytearray(), array("Q")
        for shard, lang, bucket, url, _ in files:
            base = position(shard, lang, bucket)
            with log_context(shard=shard_label(snapshot, shard), file=layout.file_name(lang, bucket)):
                idx = -1
                for idx, (offset, line) in enumerate(iter_lines(url, bad, compressed=True)):
                    doc, reason = parse_object(line)
                    if doc is None:
                        bad.line(url, offset, reason or "invalid_json", index=idx, outcome="not deduplicated")
                        continue
                    raw = digest_bytes(doc.get("digest"))
                    if raw is None:
                        stats.inc("dedup.bad_digest")
                        detail = repr(doc.get("digest"))[:60]
                        bad.line(url, offset, "bad_digest", index=idx, outcome="not deduplicated", detail=detail)
                        continue
                    digests += raw
                    positions.append(base + idx)
                    if len(positions) >= spool.chunk_rows:
                        spool.add(make_rows(digests, positions))
                        digests, positions = bytearray(), array("Q")
                if idx > LINE_MASK:
                    raise PermanentError(f"{url}: {idx + 1} lines, more than exact dedup's {LINE_MASK + 1}")
                stats.inc("dedup.files")
            bad.log_unlogged(url)
        spool.add(make_rows(digests, positions))
        del digests, positions
        stats.inc("dedup.documents", spool.rows)
        return spool.commit(
            root,
            [(s, lang, bucket) for s, lang, bucket, _, _ in files],
            inputs,
            extra={"wall_seconds": round(time.perf_counter() - started, 3), **stats.to_dict()},
        )


def remove_dead_spool_dirs() -> int:
    """Remove the spool directories that killed index builds left in the temp dir; how many went."""
    removed = 0
    for path in glob.glob(os.path.join(tempfile.gettempdir(), f"{SPOOL_PREFIX}*")):
        tag = os.path.basename(path)[len(SPOOL_PREFIX) :].rsplit("-", 1)[0]
        with contextlib.suppress(OSError):
            if commit.tag_is_dead(tag, time.time() - os.path.getmtime(path)):
                shutil.rmtree(path)
                removed += 1
    return removed


class IndexSpool:
    """Builds a snapshot's index out of core: rows arrive in chunks (:meth:`add`), each is split by
    partition and appended to a local spool file per partition; :meth:`commit` sorts one partition
    at a time and commits the index.  Memory: a chunk (:data:`CHUNK_BYTES_PER_ROW` per row, at most
    ``memory_budget / 4`` bytes) while reading, then :data:`SORT_BYTES_PER_ROW` per row of the
    largest partition of the snapshot."""

    def __init__(self, snapshot: str, config: ExactDedupConfig) -> None:
        self.snapshot, self.config = layout.validate_snapshot(snapshot), config
        self.chunk_rows = max(1, min(MAX_CHUNK_ROWS, config.memory_budget // (4 * CHUNK_BYTES_PER_ROW)))
        self.counts = np.zeros(config.partitions, dtype=np.int64)
        self.rows = 0
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    def __enter__(self) -> IndexSpool:
        remove_dead_spool_dirs()
        self._dir = tempfile.TemporaryDirectory(prefix=f"{SPOOL_PREFIX}{storage.run_tag()}-")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._dir is not None:
            self._dir.cleanup()

    def _path(self, partition: int) -> str:
        assert self._dir is not None
        return os.path.join(self._dir.name, f"{partition}.rows")

    def add(self, rows: np.ndarray) -> None:
        """Append ``rows`` (:data:`ROW`) to the spool files of their partitions."""
        if not len(rows):
            return
        part = partition_of(rows, self.config.partitions)
        order = np.argsort(part, kind="stable")
        rows, part = rows[order], part[order]
        bounds = np.searchsorted(part, np.arange(self.config.partitions + 1, dtype=np.uint64))
        for p in np.flatnonzero(np.diff(bounds)):
            with open(self._path(int(p)), "ab") as f:
                f.write(rows[bounds[p] : bounds[p + 1]].tobytes())
        self.counts += np.diff(bounds)
        self.rows += len(rows)

    def commit(
        self, root: str, files: Sequence[tuple[int, str, str]], inputs: dict[str, Any], *, extra: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Sort each partition by (digest, position) and commit the index with its record (``files``:
        every head/middle file ``(shard, lang, bucket)`` of the snapshot, with or without rows)."""
        parts, snapshot = self.config.partitions, self.snapshot
        worst = int(np.argmax(self.counts))
        check_memory(
            int(self.counts[worst]), SORT_BYTES_PER_ROW, self.config.memory_budget, f"the index of {snapshot}, partition {worst}"
        )
        record_url = index_record_url(root, snapshot)
        with commit.UnitCommit(record_url, inputs, [index_dir(root, snapshot)], owned=lambda n: n.endswith(".npy")) as unit:
            for p in range(parts):
                rows = np.fromfile(self._path(p), dtype=ROW) if self.counts[p] else np.empty(0, dtype=ROW)
                rows = rows[np.lexsort((rows["pos"], rows["d2"], rows["d1"], rows["d0"]))]
                unit.write_bytes(index_url(root, snapshot, p, parts), _npy(rows))
            record = unit.commit(
                {
                    **(extra or {}),
                    "snapshot": snapshot,
                    "partitions": parts,
                    "rows": self.counts.tolist(),
                    "files": sorted([int(s), lang, bucket] for s, lang, bucket in files),
                }
            )
        log.info("exact dedup index of %s: %d digests in %d partitions", snapshot, self.rows, parts)
        return {**record, "skipped": False}


def write_index(
    root: str,
    snapshot: str,
    rows: np.ndarray,
    files: Sequence[tuple[int, str, str]],
    inputs: dict[str, Any],
    config: ExactDedupConfig,
    *,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Commit ``rows`` (:data:`ROW`, e.g. synthetic ones in the bench) as the index of ``snapshot``,
    through :class:`IndexSpool` as :func:`index_snapshot` does."""
    with IndexSpool(snapshot, config) as spool:
        for start in range(0, len(rows), spool.chunk_rows):
            spool.add(rows[start : start + spool.chunk_rows])
        return spool.commit(root, files, inputs, extra=extra)


def _index_record(root: str, snapshot: str, partitions: int, cache: dict[str, Any] | None = None) -> dict[str, Any]:
    """The index record of ``snapshot`` (kept in ``cache``, which a caller passes to many steps)."""
    if cache is not None and snapshot in cache:
        return dict(cache[snapshot])
    record_url = index_record_url(root, snapshot)
    record = commit.load_record(record_url)
    if record is None:
        raise MissingInputError(f"exact dedup: {snapshot} has no index ({record_url}): run its index task first")
    if record["partitions"] != partitions:
        raise ConfigError(
            f"exact dedup: the index of {snapshot} has {record['partitions']} partitions, not {partitions}: "
            "index it again with the same partitions setting as the other snapshots"
        )
    if cache is not None:
        cache[snapshot] = record
    return record


# ---------------------------------------------------------------- step 2: one partition over every snapshot


def find_duplicates(arrays: list[np.ndarray], scope: str = "release") -> list[np.ndarray]:
    """The duplicate rows of each snapshot, by position; ``arrays`` are the snapshots' rows of one
    partition, **newest first** (it is emptied: the rows are concatenated, not copied twice).

    A row is a duplicate when an earlier row has the same 20 digest bytes, in the order (snapshot
    newest first, position); with ``scope="snapshot"`` only rows of its own snapshot count.

    Only rows that share their first 8 digest bytes with another row can be duplicates: one sort on
    those 8 bytes (each snapshot's rows come sorted, so it merges runs) finds them, and only they
    are sorted on the full key (:func:`find_duplicates_reference` sorts everything; same result)."""
    sizes = [len(a) for a in arrays]
    if sum(sizes) == 0:
        arrays.clear()
        return [np.empty(0, dtype=ROW) for _ in sizes]
    rows = np.concatenate(arrays)
    arrays.clear()
    rank = np.repeat(np.arange(len(sizes), dtype=np.uint16), sizes)
    if scope == "release":
        order = np.argsort(rows["d0"], kind="stable")
    else:
        order = np.lexsort((rows["d0"], rank))
    rows, rank = rows[order], rank[order]
    del order
    same = rows["d0"][1:] == rows["d0"][:-1]
    if scope != "release":
        same &= rank[1:] == rank[:-1]
    candidate = np.zeros(len(rows), dtype=bool)
    candidate[1:] = same
    candidate[:-1] |= same
    del same
    held = [rows[candidate], rank[candidate]]
    del rows, rank, candidate  # only the candidates stay in memory
    return _duplicates_by_full_sort(held, len(sizes), scope)


def find_duplicates_reference(arrays: list[np.ndarray], scope: str = "release") -> list[np.ndarray]:
    """:func:`find_duplicates` by one sort of every row on the full key (the definition, for tests)."""
    sizes = [len(a) for a in arrays]
    rows = np.concatenate(arrays) if arrays else np.empty(0, dtype=ROW)
    arrays.clear()
    return _duplicates_by_full_sort([rows, np.repeat(np.arange(len(sizes), dtype=np.uint16), sizes)], len(sizes), scope)


def _duplicates_by_full_sort(held: list[np.ndarray], snapshots: int, scope: str) -> list[np.ndarray]:
    """The duplicates among ``held = [rows, ranks]`` (emptied, so that the sorted copies replace them)."""
    rows, rank = held
    held.clear()
    if scope == "release":
        order = np.lexsort((rows["pos"], rank, rows["d2"], rows["d1"], rows["d0"]))
    else:
        order = np.lexsort((rows["pos"], rows["d2"], rows["d1"], rows["d0"], rank))
    rows, rank = rows[order], rank[order]
    dup = np.zeros(len(rows), dtype=bool)
    dup[1:] = rows["d0"][1:] == rows["d0"][:-1]
    dup[1:] &= rows["d1"][1:] == rows["d1"][:-1]
    dup[1:] &= rows["d2"][1:] == rows["d2"][:-1]
    if scope != "release":
        dup[1:] &= rank[1:] == rank[:-1]
    out = []
    for k in range(snapshots):
        mine = rows[dup & (rank == k)]
        out.append(mine[np.argsort(mine["pos"], kind="stable")])
    return out


def _unchanged(url: str, data: bytes, old: dict[str, Any] | None, base: str) -> bool:
    """Whether ``url`` already holds ``data``: listed with its sha256 and size in the previous record
    ``old`` (relative to ``base``), or, without such a record, the same bytes on storage."""
    meta = (old or {}).get("outputs", {}).get(commit.relative(base, url))
    if meta is not None:
        try:
            size = storage.size(url)
        except FileNotFoundError:
            return False
        return size == meta["bytes"] == len(data) and meta["sha256"] == hashlib.sha256(data).hexdigest()
    try:
        return storage.read_bytes(url) == data
    except FileNotFoundError:
        return False


def _keep_or_write(unit: commit.UnitCommit, url: str, data: bytes, old: dict[str, Any] | None) -> bool:
    """Write ``data`` to ``url`` through ``unit`` unless it is there already (then only list it); True if written."""
    if _unchanged(url, data, old, unit.base):
        unit.add_outputs({url: {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}})
        return False
    unit.write_bytes(url, data)
    return True


def _set_of(snapshots: Iterable[str]) -> list[str]:
    snaps = sorted({layout.validate_snapshot(s) for s in snapshots}, reverse=True)
    if not snaps:
        raise ConfigError("exact dedup: no snapshots given")
    return snaps


def _partition_inputs(
    root: str, snaps: list[str], partition: int, config: ExactDedupConfig, cache: dict[str, Any] | None
) -> dict[str, Any]:
    parts = config.partitions
    shas = {}
    for snap in snaps:
        record = _index_record(root, snap, parts, cache)
        rel = commit.relative(index_record_url(root, snap).rsplit("/", 1)[0], index_url(root, snap, partition, parts))
        shas[snap] = record["outputs"][rel]["sha256"]
    return {"format": FORMAT_VERSION, "partitions": parts, "partition": partition, "scope": config.scope, "index": shas}


def dedup_partition(
    root: str,
    snapshots: Iterable[str],
    partition: int,
    config: ExactDedupConfig | None = None,
    *,
    force: bool = False,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Step 2: merge ``partition`` over the indexes of ``snapshots`` and commit each snapshot's
    duplicate rows of it (only the files whose bytes change are written); returns the record.
    ``cache`` keeps the index records between calls (:func:`run_exact_dedup`)."""
    cache = {} if cache is None else cache
    config = config or ExactDedupConfig()
    parts = config.partitions
    if not 0 <= partition < parts:
        raise ConfigError(f"exact dedup: partition {partition} is not in 0-{parts - 1}")
    snaps = _set_of(snapshots)
    name = part_name(partition, parts)
    inputs = _partition_inputs(root, snaps, partition, config, cache)
    rows = sum(_index_record(root, s, parts, cache)["rows"][partition] for s in snaps)
    need = check_memory(rows, MERGE_BYTES_PER_ROW, config.memory_budget, f"partition {name}")
    group = group_name(snaps, config.scope)
    record_url = partition_record_url(root, group, partition, parts)
    old = commit.load_record(record_url)
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        return {**record, "skipped": True}
    started = time.perf_counter()
    with commit.UnitCommit(
        record_url, inputs, [dups_dir(root, group, partition, parts)], owned=lambda n: n.endswith(".npy")
    ) as unit:
        found = find_duplicates([_load(index_url(root, s, partition, parts)) for s in snaps], config.scope)
        written = [
            s
            for s, dups in zip(snaps, found)
            if _keep_or_write(unit, dups_url(root, group, s, partition, parts), _npy(dups), old)
        ]
        record = unit.commit(
            {
                "rows": int(rows),
                "memory_bytes": need,
                "duplicates": {s: len(d) for s, d in zip(snaps, found)},
                "written": written,
                "wall_seconds": round(time.perf_counter() - started, 3),
            }
        )
    return {**record, "skipped": False}


# ---------------------------------------------------------------- step 3: the duplicates files of a snapshot


def parquet_bytes(key: str, rows: np.ndarray) -> bytes:
    """One duplicates file: ``shard_id``, ``doc_id``, ``digest`` (base32, no prefix) of ``rows`` (by position)."""
    lines = (rows["pos"] & np.uint64(LINE_MASK)).tolist()
    table = pa.table(
        {
            "shard_id": pa.array([key] * len(rows), pa.string()),
            "doc_id": pa.array([f"{key}/{i}" for i in lines], pa.string()),
            "digest": pa.array([base64.b32encode(d).decode("ascii") for d in raw_digests(rows)], pa.string()),
        },
        schema=DUPLICATES_SCHEMA,
    )
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf, compression="snappy")
    return bytes(buf.getvalue().to_pybytes())


def _rows_sha1(rows: np.ndarray) -> str:
    """SHA-1 of a file's rows and the parquet writer's version (what its bytes are a function of)."""
    return hashlib.sha1(pa.__version__.encode() + b"\0" + np.ascontiguousarray(rows, dtype=ROW).tobytes()).hexdigest()


def _has_size(url: str, size: int) -> bool:
    try:
        return storage.size(url) == size
    except FileNotFoundError:
        return False


def write_duplicates(
    root: str,
    snapshot: str,
    snapshots: Iterable[str],
    config: ExactDedupConfig | None = None,
    *,
    force: bool = False,
    cache: dict[str, Any] | None = None,
    partition_records: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Step 3: the duplicates files of ``snapshot`` from its rows of every partition (as step 2 computed
    them over ``snapshots``); a file is written only when its bytes change.  Returns the record.
    ``cache`` and ``partition_records`` (by partition) spare reading the records again."""
    config = config or ExactDedupConfig()
    cache = {} if cache is None else cache
    parts = config.partitions
    snapshot = layout.validate_snapshot(snapshot)
    snaps = _set_of(snapshots)
    if snapshot not in snaps:
        raise ConfigError(f"exact dedup: {snapshot} is not one of the snapshots {snaps}")
    index = _index_record(root, snapshot, parts, cache)
    shas, total = [], 0
    group = group_name(snaps, config.scope)
    for p in range(parts):
        record_url = partition_record_url(root, group, p, parts)
        record = (partition_records or {}).get(p) or commit.load_record(record_url)
        if record is None or record["inputs"] != _partition_inputs(root, snaps, p, config, cache):
            raise MissingInputError(
                f"exact dedup: partition {part_name(p, parts)} is not finished for snapshots {snaps} "
                f"(scope {config.scope}): run dedup_partition for it first"
            )
        rel = commit.relative(record_url.rsplit("/", 1)[0], dups_url(root, group, snapshot, p, parts))
        shas.append(record["outputs"][rel]["sha256"])
        total += record["duplicates"][snapshot]
    check_memory(total, DUPLICATES_BYTES_PER_ROW, config.memory_budget, f"the duplicates files of {snapshot}")
    inputs = {"format": FORMAT_VERSION, "files": index["files"], "dups": shas}
    record_url = duplicates_record_url(root, snapshot)
    old = commit.load_record(record_url)
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        return {**record, "skipped": True}
    started = time.perf_counter()
    out_dir = storage.join(root, "duplicates", snapshot)
    owned = lambda n: n.endswith(layout.DUPLICATES_SUFFIX)  # noqa: E731
    with commit.UnitCommit(record_url, inputs, [out_dir], owned=owned, recursive=True) as unit:
        rows = np.concatenate([_load(dups_url(root, group, snapshot, p, parts)) for p in range(parts)] or [np.empty(0, ROW)])
        rows = rows[np.argsort(rows["pos"], kind="stable")]
        file_of = rows["pos"] >> np.uint64(FILE_SHIFT)
        written, listed, row_sha1 = [], 0, {}
        old_sha1 = (old or {}).get("row_sha1", {})
        for shard, lang, bucket in index["files"]:
            start = np.uint64(position(shard, lang, bucket) >> FILE_SHIFT)
            lo, hi = np.searchsorted(file_of, start, "left"), np.searchsorted(file_of, start, "right")
            listed += int(hi - lo)
            tag, url = layout.base_tag(snapshot, shard, lang, bucket), layout.duplicates_url(root, snapshot, shard, lang, bucket)
            # the file is a function of its rows (and the parquet writer): same rows as the file the
            # previous record lists, still of its size, then it is kept without being built again
            sha1 = row_sha1[tag] = _rows_sha1(rows[lo:hi])
            meta = (old or {}).get("outputs", {}).get(commit.relative(unit.base, url))
            if meta is not None and old_sha1.get(tag) == sha1 and _has_size(url, meta["bytes"]):
                unit.add_outputs({url: dict(meta)})
                continue
            if _keep_or_write(unit, url, parquet_bytes(layout.shard_key(snapshot, shard, lang, bucket), rows[lo:hi]), old):
                written.append(tag)
        if listed != len(rows):
            raise PermanentError(f"exact dedup: {len(rows) - listed} duplicate rows of {snapshot} belong to no indexed file")
        record = unit.commit(
            {
                "snapshot": snapshot,
                "duplicates": listed,
                "files": len(index["files"]),
                "written": written,
                "wall_seconds": round(time.perf_counter() - started, 3),
                "row_sha1": row_sha1,
            }
        )
    log.info("exact dedup of %s: %d duplicates, %d of %d files written", snapshot, listed, len(written), len(index["files"]))
    return {**record, "skipped": False}


def run_exact_dedup(root: str, snapshots: Iterable[str] | None = None, config: ExactDedupConfig | None = None) -> dict[str, Any]:
    """Steps 2 and 3 over ``snapshots`` (default: every indexed snapshot): the memory plan (refused
    over the budget before anything runs), every partition, then every snapshot's files."""
    config = config or ExactDedupConfig()
    snaps = _set_of(indexed_snapshots(root) if snapshots is None else snapshots)
    cache: dict[str, Any] = {}
    need = memory_plan(root, snaps, config, cache=cache)
    partitions = {p: dedup_partition(root, snaps, p, config, cache=cache) for p in range(config.partitions)}
    files = {s: write_duplicates(root, s, snaps, config, cache=cache, partition_records=partitions) for s in snaps}
    return {
        "snapshots": snaps,
        "max_partition_bytes": max(need),
        "partitions_written": sum(1 for r in partitions.values() if not r["skipped"] and r["written"]),
        "files_written": {s: r["written"] for s, r in files.items() if not r["skipped"]},
    }
