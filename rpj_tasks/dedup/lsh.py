"""Fuzzy-dedup clusters from the MinHash files, exactly as ``run_lsh.py`` (``docs/spec/rpv2_format.md`` §7).

For a threshold ``s`` (1.0, 0.9, 0.8, 0.7; default 0.8) over the MinHash files of one snapshot or a
set of snapshots:

1. read ``id_int`` and ``signature_sim{s}``; rows whose signature is null are dropped;
2. explode each row into ``(band_index, band_bytes)`` (``b`` bands of ``W`` bytes, §5);
3. group by ``(band_index, band_bytes)``: equal bytes at different band positions do not match;
   groups of at least 2 members give an edge from every member to the group's minimum ``id_int``;
4. connected components of the (unique) edges; ``cluster_id`` = the minimum ``id_int`` of the
   component;
5. per input file, the documents whose ``id_int`` is in a component (the reference's join on
   ``id_int``), **in the input file's row order** (line order), columns ``id, id_int, cluster_id,
   shard_id`` (:data:`~rpj_tasks.core.schema.CLUSTERS_SCHEMA`), written to
   ``clusters/{snapshot}/{shard}/{lang}_{bucket}.clusters.parquet``.  As in the reference, a file
   without a clustered document gets no clusters file (absent = every document is a singleton).

Keep rule (:func:`keep`): a listed document is kept iff ``id_int == cluster_id``.

Scale-out.  The grouping is split into ``P`` partitions by a 64-bit hash of ``(band_index,
band_bytes)`` (:func:`band_keys`), so a group never spans two partitions.  The work directory of
a unit is ``staging/lsh/{scope}/sim{s}/{key}`` (:attr:`ClustersUnit.work`), ``key`` = the first 16
hex digits of the sha256 of the inputs' fingerprint and ``P`` (:func:`work_key`): intermediates of
another input set or partitioning are never read.

* :func:`scatter` (per batch of input files) writes, for every partition ``p``, the rows
  ``(key, id_int, band_index, band_bytes)`` of the batch that fall in ``p``:
  ``{work}/bands/{p:04d}/{batch:06d}.npy``;
* :func:`group_partition` (per partition; the DAG maps over it) loads its rows, sorts their keys
  (the key's high bits and the row number packed in one ``uint64``: :func:`group_keys`), checks
  full byte equality inside every run of equal high bits (a collision is split exactly, never
  merged) and writes the partition's unique edges ``(member, group minimum)`` to
  ``{work}/edges/{p:04d}.npy``, atomically (then ``int64[rows, microseconds]`` for the record);
* :func:`components` reads the edges alone (nothing else crosses partitions), remaps the ids to
  ``0..n-1`` and labels every node with its component's smallest node (numpy: hooking roots
  across edges and pointer jumping, :func:`_min_labels`);
* :func:`write_clusters_file` (per input file) looks the file's ``id_int`` up in the components.

The edge set does not depend on ``P`` or the batch size, so neither do the clusters files: same
inputs and threshold, same bytes.  The unit is published through the commit protocol (record
``stats/clusters/{scope}/sim{s}.json``, or ``stats/{component}/…``, written last, listing every
input's sha256 and every output), in three separately runnable steps (one task process each, on
any machine that shares the storage root; each can be killed and rerun):

1. :func:`clusters_scatter`: removes the record, clears the work directory, scatters every batch,
   then writes ``{work}/scattered.json`` (fingerprint, ``P``, counts) **last**;
2. :func:`clusters_group` (per partition): needs that marker (:class:`MissingInputError`
   otherwise), writes the partition's edges (an edges file already there is kept);
3. :func:`clusters_write`: needs the marker and every edges file, computes the components and
   writes the clusters files and the record through one :class:`~rpj_tasks.core.commit.UnitCommit`,
   then removes ``staging/lsh/{scope}/sim{s}`` (this unit's work directory and stale ones).

Each step is skipped when the unit is finished (unless ``force``).  :func:`run_clusters` runs the
three in one process; when every band row fits its ``memory_budget`` it does their work in memory
instead (:func:`_run_in_memory`: every file's rows read into one array, one :func:`group_keys`
over all of them, then the same components, clusters files and record as the write step; no band,
edges or marker file), with the same clusters files and record counts (tested against the steps).

Memory of :func:`run_clusters`' in-memory path (:func:`in_memory_bytes`): for ``N`` documents
(null signatures included), the band bytes, ids and keys of every row, ``N · (16 + b·(W + 8))``,
plus 2 bytes a row while sorting, plus about ``W + 80`` bytes per candidate row (a row whose band
key is shared; up to a quarter of the rows assumed, every row at worst): ~870 bytes per document
at 0.8.  It is used when that fits ``memory_budget`` (default 2 GiB: about 2.4 million documents
at 0.8); otherwise the three steps run with their files.

Memory (one partition task): about ``R · (2·(17 + W) + 40)`` bytes for ``R = N·b/P`` rows
(``N`` documents with a signature): the rows twice while loading; then the rows, the packed
sorted keys and their high bits (16 bytes a row), and the fetched candidate rows (at most the rows
again) with their run numbers; ~180 bytes per row at 0.8 (``W`` = 52, ``b`` = 9); see
:func:`partition_memory_bytes`.  Components: about 100 bytes per edge.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.errors import ConfigError, MissingInputError, PermanentError
from rpj_tasks.core.layout import CLUSTERS_SUFFIX
from rpj_tasks.core.redact import redact
from rpj_tasks.core.schema import CLUSTERS_SCHEMA, MINHASH_BANDS, MINHASH_THRESHOLDS, signature_column
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.lsh")

DEFAULT_THRESHOLD = 0.8
DEFAULT_PARTITIONS = 8
DEFAULT_BATCH_FILES = 16
DEFAULT_MEMORY_BUDGET = 2 << 30  # bytes run_clusters may hold in memory (in_memory_bytes)
ALGORITHM = "rpv2_format.md §7 (run_lsh.py)"

_MINHASH_PATH = re.compile(r"(\d{4}-\d{2})/(\d{4})/([a-z]{2,3})_([a-z]+)" + re.escape(layout.MINHASH_SUFFIX) + "$")


class LshInputError(PermanentError, ValueError):
    """A MinHash file whose signature column does not have the §5 band layout."""


@contextlib.contextmanager
def small_pages() -> Iterator[None]:
    """numpy's large arrays without ``madvise(MADV_HUGEPAGE)`` inside the block (numpy's switch,
    ``NUMPY_MADVISE_HUGEPAGE``, set back after).  The arrays here are written once, soon after
    they are allocated: with the kernel's default THP ``defrag=madvise``, a huge page fault may
    compact memory first, which measured 2.5-4x the system time of small pages for the same
    bytes on the benchmark machine."""
    switch = getattr(getattr(np, "_core", None), "multiarray", None)
    setter = getattr(switch, "_set_madvise_hugepage", None)
    if setter is None:  # pragma: no cover - another numpy
        yield
        return
    before = setter(False)
    try:
        yield
    finally:
        setter(before)


# ---------------------------------------------------------------- inputs


@dataclass(frozen=True)
class MinHashInput:
    """One MinHash file: where it is, the base tag it describes, and its sha256 (for the record)."""

    url: str
    snapshot: str
    shard: int
    lang: str
    bucket: str
    sha256: str

    @property
    def base_tag(self) -> str:
        return layout.base_tag(self.snapshot, self.shard, self.lang, self.bucket)


def minhash_input(url: str, sha256: str | None = None) -> MinHashInput:
    """A MinHash file from its URL (``…/{snapshot}/{shard}/{lang}_{bucket}.minhash.parquet``);
    the sha256 is computed if not given."""
    m = _MINHASH_PATH.search(url)
    if m is None:
        raise LshInputError(f"{url}: not a MinHash file path ({{snapshot}}/{{shard}}/{{lang}}_{{bucket}}.minhash.parquet)")
    snapshot, shard, lang, bucket = m.groups()
    digest = sha256 if sha256 is not None else storage.digest(url)["sha256"]
    return MinHashInput(url, layout.validate_snapshot(snapshot), int(shard), lang, bucket, digest)


def snapshot_inputs(root: str, snapshots: Sequence[str]) -> list[MinHashInput]:
    """Every MinHash file the annotation records of ``snapshots`` list, with the sha256 they record
    (files of unfinished shards are not read), sorted by base tag."""
    found: list[MinHashInput] = []
    for snapshot in sorted(set(snapshots)):
        stats_dir = layout.annotate_stats_dir(root, snapshot)
        names = [n for n in storage.listdir(stats_dir) if re.fullmatch(r"\d{4}\.json", n)]
        if not names:
            raise MissingInputError(f"snapshot {snapshot} has no annotation records under {stats_dir}: annotate it first")
        for name in names:
            record_url = storage.join(stats_dir, name)
            record = commit.load_record(record_url)
            if record is None:
                continue
            for rel, url in commit.listed_outputs(record_url, record).items():
                if url.endswith(layout.MINHASH_SUFFIX):
                    found.append(minhash_input(url, record["outputs"][rel]["sha256"]))
    return sorted(found, key=lambda i: i.base_tag)


# ---------------------------------------------------------------- bands and keys


def band_layout(threshold: float) -> tuple[int, int]:
    """``(bands, bytes per band)`` of a threshold's signature column (§5)."""
    t = float(threshold)
    if t not in MINHASH_BANDS:
        raise LshInputError(f"threshold {threshold!r}: expected one of {', '.join(map(str, MINHASH_THRESHOLDS))}")
    bands, rows = MINHASH_BANDS[t]
    return bands, 4 * rows


def _read_columns(url: str, columns: list[str]) -> pa.Table:
    """Columns of a Parquet file, by :class:`pyarrow.parquet.ParquetFile` (less per-file overhead
    than ``read_table``'s datasets layer; one thread: the callers run files in parallel); local
    files are read column chunk by column chunk, remote ones pre-buffered."""
    with storage.open_read(url) as f:
        return pq.ParquetFile(f, pre_buffer=not storage.is_local(url)).read(columns=columns, use_threads=False)


def read_bands(url: str, threshold: float) -> tuple[np.ndarray, np.ndarray, int]:
    """``(id_int uint64[n], bands uint8[n, b, W], null rows)`` of a MinHash file; null signatures dropped.
    ``bands`` is a view of the file's decoded column (no copy)."""
    bands, width = band_layout(threshold)
    column = signature_column(threshold)
    table = _read_columns(url, ["id_int", column])
    ids = table.column("id_int").combine_chunks()
    sigs = table.column(column).combine_chunks()
    if pa.types.is_large_list(sigs.type):
        sigs = sigs.cast(pa.list_(pa.binary()))
    nulls = sigs.null_count
    valid = np.asarray(sigs.is_valid()) if nulls else None
    n = len(sigs) - nulls
    if n == 0:
        return np.empty(0, np.uint64), np.empty((0, bands, width), np.uint8), nulls
    if ids.null_count and (ids.filter(pa.array(valid)) if valid is not None else ids).null_count:
        raise LshInputError(f"{url}: null id_int")
    offsets = np.frombuffer(sigs.buffers()[1], dtype=np.int32)[sigs.offset : sigs.offset + len(sigs) + 1]
    lengths = np.diff(offsets)
    if np.any((lengths[valid] if valid is not None else lengths) != bands):
        raise LshInputError(f"{url}: {column} must hold {bands} bands per row")
    values = sigs.flatten()  # the valid rows' bands, in order (no copy when null rows are empty lists)
    if pa.types.is_large_binary(values.type):
        values = values.cast(pa.binary())
    voffsets = np.frombuffer(values.buffers()[1], dtype=np.int32)[values.offset : values.offset + len(values) + 1]
    if values.null_count or len(values) != n * bands or np.any(np.diff(voffsets) != width):
        raise LshInputError(f"{url}: every band of {column} must be {width} bytes")
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[voffsets[0] : voffsets[-1]]
    id_ints = ids.fill_null(0).to_numpy(zero_copy_only=False) if ids.null_count else ids.to_numpy()
    if valid is not None:
        id_ints = id_ints[valid]
    return id_ints.astype(np.uint64, copy=False), data.reshape(n, bands, width), nulls


_KEY_BLOCK = 2048  # documents per block of band_keys
#: odd 64-bit multipliers: one per 32-bit value of a band (at most 128), then the band factor
_MIX = (np.arange(1, 130, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15) ^ np.uint64(0xBF58476D1CE4E5B9)) | np.uint64(1)


def band_keys(bands: np.ndarray) -> np.ndarray:
    """uint64[n, b]: a 64-bit hash of ``(band_index, band_bytes)`` (partitioning and sort key only;
    equality is always checked on the bytes): the sum of the band's 32-bit values times odd
    constants, plus a band term, then an xor-shift.  Two bands differing in one value never
    collide.  Computed in blocks of documents that stay in cache."""
    n, b, width = bands.shape
    out = np.empty((n, b), np.uint64)
    if not n:
        return out
    mix = _MIX[: width // 4]
    band_mix = (np.arange(b, dtype=np.uint64) + np.uint64(1)) * _MIX[128]
    values = np.ascontiguousarray(bands).reshape(n, b * width).view(np.uint32).reshape(n, b, width // 4)
    shift = np.uint64(29)
    with np.errstate(over="ignore"):
        for lo in range(0, n, _KEY_BLOCK):
            block = out[lo : lo + _KEY_BLOCK]
            np.matmul(values[lo : lo + _KEY_BLOCK].astype(np.uint64), mix, out=block)
            block += band_mix
            block ^= block >> shift
    return out


@dataclass
class BandRows:
    """Band rows ``(key, id_int, band_index, band_bytes)`` as four arrays (one partition's, or a batch's)."""

    keys: np.ndarray  # uint64[m]
    ids: np.ndarray  # uint64[m]
    band: np.ndarray  # uint8[m]
    data: np.ndarray  # uint8[m, W]

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: Any) -> BandRows:
        if isinstance(index, np.ndarray) and index.dtype.kind in "iu":  # np.take: faster for rows
            return BandRows(self.keys[index], self.ids[index], self.band[index], np.take(self.data, index, axis=0))
        return BandRows(self.keys[index], self.ids[index], self.band[index], self.data[index])

    @staticmethod
    def concatenate(parts: Sequence[BandRows], width: int) -> BandRows:
        if not parts:
            return BandRows(np.empty(0, np.uint64), np.empty(0, np.uint64), np.empty(0, np.uint8), np.empty((0, width), np.uint8))
        return BandRows(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("keys", "ids", "band", "data")))


def _save(url: str, rows: BandRows) -> None:
    """Write an intermediate (four ``.npy`` arrays in one file), atomically; not fsynced: a lost
    intermediate only means the unit is redone (its record is written last)."""
    arrays = (rows.keys, rows.ids, rows.band, rows.data)
    if storage.is_local(url):
        path = storage.fs_and_path(url)[1]
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), storage.temp_name(os.path.basename(path)))
        with open(tmp, "wb") as f:
            for array in arrays:
                np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        os.replace(tmp, path)
        return
    with storage.atomic_write(url) as f:
        for array in arrays:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)


def _load(url: str) -> BandRows:
    with storage.open_read(url) as raw:
        f = raw if storage.is_local(url) else io.BytesIO(raw.read())
        return BandRows(*(np.load(f, allow_pickle=False) for _ in range(4)))


def _save_edges(url: str, edges: np.ndarray, rows: int = 0, seconds: float = 0.0) -> None:
    """The edges, then ``int64[rows, microseconds]`` of the group that made them (for the record)."""
    with storage.atomic_write(url) as f:
        np.save(f, np.ascontiguousarray(edges, dtype=np.uint64), allow_pickle=False)
        np.save(f, np.array([rows, round(seconds * 1e6)], dtype=np.int64), allow_pickle=False)


def _load_edges(url: str) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False)


def _read_edges(url: str) -> tuple[np.ndarray, dict[str, Any]]:
    """An edges file's edges and ``{"rows", "edges", "seconds"}`` (zeros if it has no meta array)."""
    f = io.BytesIO(storage.read_bytes(url))
    edges = np.load(f, allow_pickle=False)
    meta = np.load(f, allow_pickle=False).tolist() if f.tell() < len(f.getbuffer()) else [0, 0]
    return edges, {"rows": int(meta[0]), "edges": len(edges), "seconds": meta[1] / 1e6}


def bands_dir(work: str, partition: int) -> str:
    return storage.join(work, "bands", f"{partition:04d}")


def edges_url(work: str, partition: int) -> str:
    return storage.join(work, "edges", f"{partition:04d}.npy")


# ---------------------------------------------------------------- step 1: scatter (per batch of files)


def scatter(inputs: Sequence[MinHashInput], threshold: float, work: str, partitions: int, batch: int) -> dict[str, int]:
    """Split the band rows of ``inputs`` into ``partitions`` files ``{work}/bands/{p:04d}/{batch:06d}.npy``
    (one per partition, possibly empty); returns counts (``docs``, ``null_signatures``, ``rows``)."""
    bands, width = band_layout(threshold)
    if not 1 <= partitions <= 65535:
        raise ValueError(f"partitions must be 1..65535, got {partitions}")
    read = [read_bands(item.url, threshold) for item in inputs]
    nulls = sum(r[2] for r in read)
    ids = np.concatenate([r[0] for r in read]) if read else np.empty(0, np.uint64)
    data = np.concatenate([r[1] for r in read]) if read else np.empty((0, bands, width), np.uint8)
    del read
    keys = band_keys(data).ravel()
    part = (keys % np.uint64(partitions)).astype(np.uint16)
    order = np.argsort(part, kind="stable")  # radix sort on 16 bits
    bounds = np.r_[0, np.cumsum(np.bincount(part, minlength=partitions))]
    del part
    doc, band = np.divmod(order, bands)
    rows = BandRows(keys[order], ids[doc], band.astype(np.uint8), np.take(data.reshape(-1, width), order, axis=0))
    del keys, order, doc, band, data
    for p in range(partitions):
        _save(storage.join(bands_dir(work, p), f"{batch:06d}.npy"), rows[bounds[p] : bounds[p + 1]])
    return {"docs": len(ids), "null_signatures": nulls, "rows": len(rows)}


# ---------------------------------------------------------------- step 2: group (per partition)


def _exact_groups(rows: BandRows) -> list[np.ndarray]:
    """Index arrays of the rows with equal ``(band, bytes)`` (slow path for runs of colliding keys)."""
    groups: dict[tuple[int, bytes], list[int]] = {}
    for i, band in enumerate(rows.band.tolist()):
        groups.setdefault((band, rows.data[i].tobytes()), []).append(i)
    return [np.array(g) for g in groups.values()]


_NO_EDGES = np.empty((0, 2), np.uint64)
_BLOCK = 1 << 16  # rows per block of elementwise work: small temporaries, reused by malloc


def _equal_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``bool[m]``: row ``i`` of ``a`` equals row ``i`` of ``b`` (``uint8[m, W]``; compared as
    32-bit words when ``W`` allows)."""
    if a.shape[1] % 4 == 0:
        a = np.ascontiguousarray(a).view(np.uint32)
        b = np.ascontiguousarray(b).view(np.uint32)
    return (a == b).all(axis=1)


def group_keys(keys: np.ndarray, fetch: Callable[[np.ndarray], BandRows], *, overwrite: bool = False) -> np.ndarray:
    """The unique edges ``uint64[m, 2]`` (member, group minimum; member != minimum), sorted, of the
    groups of rows with equal ``(band, bytes)`` and at least 2 members, where ``keys[i]`` is row
    ``i``'s :func:`band_keys` value and ``fetch(rows)`` gives the rows ``rows`` (ids, band, bytes;
    called for blocks of candidate rows).

    The keys' high bits and the row number in the low bits are packed in one ``uint64`` and
    sorted (no argsort); only the rows of runs of equal high bits (candidates) are fetched and
    compared with their run's first row.  A run whose bytes or band differ (a collision of the
    high bits) is grouped exactly (:func:`_exact_groups`, over all such runs at once), so a
    collision never merges two groups.  The keys of the fetched rows are not read.  With
    ``overwrite``, ``keys`` itself is the sort buffer (its content is lost)."""
    m = len(keys)
    if m < 2:
        return _NO_EDGES
    bits = np.uint64(max(1, (m - 1).bit_length()))
    low = np.uint64((1 << int(bits)) - 1)
    packed = keys if overwrite else keys.copy()
    packed &= ~low
    for lo in range(0, m, _BLOCK):  # bounded temporaries
        packed[lo : lo + _BLOCK] |= np.arange(lo, min(m, lo + _BLOCK), dtype=np.uint64)
    packed.sort()
    same_next = np.empty(m - 1, dtype=bool)
    for lo in range(0, m - 1, _BLOCK):  # bounded temporaries
        hi = min(lo + _BLOCK, m - 1)
        np.equal(packed[lo + 1 : hi + 1] >> bits, packed[lo:hi] >> bits, out=same_next[lo:hi])
    in_run = np.zeros(m, dtype=bool)
    in_run[1:] = same_next
    in_run[:-1] |= same_next
    del same_next
    candidates = packed[in_run]
    del packed, in_run
    if not len(candidates):
        return _NO_EDGES
    prefix = candidates >> bits
    start = np.flatnonzero(np.r_[True, prefix[1:] != prefix[:-1]])
    del prefix
    sizes = np.diff(np.r_[start, len(candidates)])
    run = np.repeat(np.arange(len(start)), sizes)
    row = (candidates & low).astype(np.intp)
    del candidates
    # a run is one group iff every row equals the one before it (equality is transitive)
    ids = np.empty(len(row), np.uint64)
    same = np.empty(len(row), dtype=bool)
    same[0] = True
    for lo in range(0, len(row), _BLOCK):  # fetched a block at a time: small temporaries
        these = fetch(row[max(0, lo - 1) : lo + _BLOCK])  # with the row before the block
        ids[lo : lo + _BLOCK] = these.ids[1:] if lo else these.ids
        same[max(1, lo) : lo + _BLOCK] = (these.band[1:] == these.band[:-1]) & _equal_rows(these.data[1:], these.data[:-1])
    same[start] = True  # a run's first row
    bad_run = np.zeros(len(start), dtype=bool)
    bad_run[run[~same]] = True
    del same
    good = ~bad_run[run]
    edges: list[np.ndarray] = []
    if good.any():
        ids, good_runs = ids[good], run[good]
        firsts = np.flatnonzero(np.r_[True, good_runs[1:] != good_runs[:-1]])
        mins = np.minimum.reduceat(ids, firsts)
        edges.append(np.stack([ids, np.repeat(mins, np.diff(np.r_[firsts, len(ids)]))], axis=1))
    if not good.all():
        colliding = fetch(row[~good])
        for group in _exact_groups(colliding):
            if len(group) >= 2:
                gids = colliding.ids[group]
                edges.append(np.stack([gids, np.full(len(gids), gids.min(), np.uint64)], axis=1))
    out = np.concatenate(edges) if edges else _NO_EDGES
    return unique_edges(out[out[:, 0] != out[:, 1]])


def group_rows(rows: BandRows) -> np.ndarray:
    """The unique edges ``uint64[m, 2]`` (member, group minimum; member != minimum), sorted, of the
    groups of rows with equal ``(band, bytes)`` and at least 2 members (:func:`group_keys`)."""
    return group_keys(rows.keys, rows.__getitem__)


def _ranks(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(unique, rank)``: the sorted distinct values and each value's index in them (one argsort;
    a searchsorted of unsorted values into a large array is several times slower)."""
    flat = values.ravel()
    order = np.argsort(flat)
    ordered = flat[order]
    new = np.empty(len(flat), dtype=bool)
    new[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new[1:])
    rank = np.empty(len(flat), dtype=np.intp)
    rank[order] = np.cumsum(new) - 1
    return ordered[new], rank.reshape(values.shape)


def _sorted_positions(haystack: np.ndarray, needles: np.ndarray) -> np.ndarray:
    """``np.searchsorted(haystack, needles)``, with the needles looked up in sorted order."""
    order = np.argsort(needles)
    pos = np.empty(len(needles), dtype=np.intp)
    pos[order] = np.searchsorted(haystack, needles[order])
    return pos


def unique_edges(edges: np.ndarray) -> np.ndarray:
    """Sorted unique rows of ``uint64[m, 2]``: each row as one ``uint64`` of the ranks of its two
    ids among the ids present, sorted (no lexsort)."""
    if not len(edges):
        return _NO_EDGES
    nodes, rank = _ranks(edges)
    if len(nodes) >= 2**32:  # pragma: no cover - more ids than fit a rank pair
        order = np.lexsort((edges[:, 1], edges[:, 0]))
        edges = edges[order]
        return np.ascontiguousarray(edges[np.r_[True, (edges[1:] != edges[:-1]).any(axis=1)]], dtype=np.uint64)
    packed = rank[:, 0].astype(np.uint64) << np.uint64(32)
    packed |= rank[:, 1].astype(np.uint64)
    del rank
    packed.sort()
    packed = packed[np.r_[True, packed[1:] != packed[:-1]]]
    out = np.empty((len(packed), 2), np.uint64)
    out[:, 0] = nodes[packed >> np.uint64(32)]
    out[:, 1] = nodes[packed & np.uint64(0xFFFFFFFF)]
    return out


def batch_names(work: str, partition: int) -> list[str]:
    """The committed batch files of one partition (temp files of a writer excluded)."""
    return [n for n in storage.listdir(bands_dir(work, partition)) if n.endswith(".npy") and not storage.is_temp_name(n)]


def group_partition(work: str, partition: int) -> dict[str, Any]:
    """Group one partition's band rows (every batch's file) and write its edges to
    ``{work}/edges/{p:04d}.npy`` atomically; returns ``rows``, ``edges`` and ``seconds``."""
    started = time.perf_counter()
    directory = bands_dir(work, partition)
    loaded = []
    for name in batch_names(work, partition):
        url = storage.join(directory, name)
        try:
            loaded.append(_load(url))
        except (EOFError, ValueError) as exc:  # a truncated file (not fsynced, e.g. after an OS crash)
            raise MissingInputError(f"{redact(url)}: unreadable batch file ({exc}): run the scatter step again") from exc
    rows = BandRows.concatenate(loaded, loaded[0].data.shape[1] if loaded else 4)
    del loaded
    edges = group_rows(rows)
    seconds = time.perf_counter() - started
    _save_edges(edges_url(work, partition), edges, len(rows), seconds)
    return {"rows": len(rows), "edges": len(edges), "seconds": seconds}


# ---------------------------------------------------------------- step 3: components (edges only)


def _min_labels(n: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``label[i]`` = the smallest node of ``i``'s connected component (nodes ``0..n-1``, edges
    ``(u, v)``): roots are hooked to the smaller root across every edge, then the labels are
    compressed to roots (pointer jumping), until every edge joins equal labels."""
    label = np.arange(n, dtype=np.intp)
    while True:
        lu, lv = label[u], label[v]
        differ = lu != lv
        if not differ.any():
            return label
        lu, lv = lu[differ], lv[differ]
        low = np.minimum(lu, lv)
        np.minimum.at(label, lu, low)
        np.minimum.at(label, lv, low)
        while True:
            jumped = label[label]
            if np.array_equal(jumped, label):
                break
            label = jumped


def components(edges: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(nodes, cluster_ids)``: every id on an edge, ascending, and the minimum id of its component."""
    if not len(edges):
        return np.empty(0, np.uint64), np.empty(0, np.uint64)
    nodes, idx = _ranks(edges)
    return nodes, nodes[_min_labels(len(nodes), idx[:, 0], idx[:, 1])]


def load_edges(work: str, partitions: int) -> np.ndarray:
    parts = [_load_edges(edges_url(work, p)) for p in range(partitions)]
    return unique_edges(np.concatenate(parts)) if parts else np.empty((0, 2), np.uint64)


# ---------------------------------------------------------------- step 4: write (per input file)


def cluster_table(url: str, nodes: np.ndarray, cluster_ids: np.ndarray) -> pa.Table:
    """The clustered documents of one MinHash file, in its row order (CLUSTERS_SCHEMA)."""
    table = _read_columns(url, ["id", "id_int", "shard_id"])
    ids = table.column("id_int").to_numpy().astype(np.uint64)
    pos = _sorted_positions(nodes, ids)
    pos[pos >= len(nodes)] = 0
    hit = (nodes[pos] == ids) if len(nodes) else np.zeros(len(ids), bool)
    mask = pa.array(hit)
    return pa.table(
        {
            "id": table.column("id").filter(mask),
            "id_int": pa.array(ids[hit], pa.uint64()),
            "cluster_id": pa.array(cluster_ids[pos[hit]], pa.uint64()),
            "shard_id": table.column("shard_id").filter(mask),
        },
        schema=CLUSTERS_SCHEMA,
    )


def write_clusters_file(
    item: MinHashInput, out_url: str, nodes: np.ndarray, cluster_ids: np.ndarray, digests: dict[str, Any] | None = None
) -> int:
    """Write ``out_url`` atomically if the file has clustered documents; returns their number."""
    table = cluster_table(item.url, nodes, cluster_ids)
    if table.num_rows:
        with storage.atomic_write(out_url, digests=digests) as f:
            pq.write_table(table, f, compression="snappy")
    return table.num_rows


def keep(id_int: Any, cluster_id: Any) -> Any:
    """The keep rule (§7, maintainer issue #96): a listed document is kept iff ``id_int == cluster_id``
    (scalars or arrays); documents absent from the clusters files are singletons: keep them."""
    return np.equal(np.asarray(id_int, dtype=np.uint64), np.asarray(cluster_id, dtype=np.uint64))


def partition_memory_bytes(docs: int, threshold: float = DEFAULT_THRESHOLD, partitions: int = DEFAULT_PARTITIONS) -> int:
    """Estimated peak working memory of one :func:`group_partition` task (see the module doc)."""
    bands, width = band_layout(threshold)
    rows = -(-docs * bands // partitions)
    return rows * (2 * (17 + width) + 40)


# ---------------------------------------------------------------- driver: three steps of one unit


MARKER = "scattered.json"


def _batches(items: Sequence[MinHashInput], size: int) -> list[Sequence[MinHashInput]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _clear(url: str) -> None:
    fs, path = storage.fs_and_path(url)
    if fs.exists(path):
        fs.rm(path, recursive=True)


def _invalidate_overlapping(root: str, component: str, record_url: str, output_dirs: list[str]) -> list[str]:
    """Remove the records of other clusters units (another scope or threshold) that list outputs
    under ``output_dirs``: this run rewrites those files, so those units are no longer finished."""
    removed = []
    prefixes = [d.rstrip("/") + "/" for d in output_dirs]
    stats_root = storage.join(root, "stats", component)
    for scope in storage.listdir(stats_root):
        for name in storage.listdir(storage.join(stats_root, scope)):
            url = storage.join(stats_root, scope, name)
            if url == record_url or not name.endswith(".json") or storage.is_temp_name(name):
                continue
            record = commit.load_record(url)
            if record and any(u.startswith(tuple(prefixes)) for u in commit.listed_outputs(url, record).values()):
                storage.remove(url)
                removed.append(url)
                log.info("%s: its clusters files are rewritten by %s: no longer finished", url, record_url)
    return removed


def work_key(fingerprint: dict[str, Any], partitions: int) -> str:
    """The name of a work directory: the first 16 hex digits of the sha256 of the fingerprint
    (inputs' sha256s, threshold, algorithm) and the partition count, so that intermediates of
    another input set or partitioning are never read."""
    text = json.dumps({"fingerprint": fingerprint, "partitions": partitions}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ClustersUnit:
    """What every step of one clusters unit computes the same way from its arguments."""

    root: str
    scope: list[str]
    threshold: float
    items: list[MinHashInput]
    fingerprint: dict[str, Any]
    record_url: str
    partitions: int
    component: str

    @property
    def name(self) -> str:
        return f"clusters {'+'.join(self.scope)} sim{self.threshold}"

    @property
    def work_root(self) -> str:
        """Every work directory of this scope and threshold (``staging/lsh/{scope}/sim{s}``)."""
        return layout.lsh_work_url(self.root, self.scope, self.threshold)

    @property
    def work(self) -> str:
        """This unit's work directory: ``{work_root}/{work_key}``."""
        return storage.join(self.work_root, work_key(self.fingerprint, self.partitions))

    @property
    def marker_url(self) -> str:
        return storage.join(self.work, MARKER)

    def finished(self) -> dict[str, Any] | None:
        return commit.finished(self.record_url, self.fingerprint)

    def skipped(self, step: str) -> dict[str, Any]:
        log.info("%s %s: finished earlier, skipped", self.name, step)
        return {
            "skipped": True,
            "partitions": list(range(self.partitions)),
            "record": redact(self.record_url),
        }


def clusters_unit(
    root: str,
    snapshots: Sequence[str],
    threshold: float,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    inputs: Iterable[MinHashInput] | None = None,
    component: str = "clusters",
) -> ClustersUnit:
    """The unit of ``snapshots`` at ``threshold``: its inputs (``inputs``, default
    :func:`snapshot_inputs`), fingerprint, record and work directory."""
    band_layout(threshold)
    if not 1 <= partitions <= 65535:
        raise ConfigError(f"partitions must be 1..65535, got {partitions}")
    scope = sorted({layout.validate_snapshot(s) for s in snapshots})
    items = sorted(inputs if inputs is not None else snapshot_inputs(root, scope), key=lambda i: i.base_tag)
    outside = [i.url for i in items if i.snapshot not in scope]
    if outside:
        raise LshInputError(f"inputs outside the snapshots {scope}: {outside[:3]}")
    fingerprint = {
        "algorithm": ALGORITHM,
        "threshold": float(threshold),
        "minhash": {i.base_tag: i.sha256 for i in items},
    }
    record_url = layout.clusters_record_url(root, scope, threshold, component)
    return ClustersUnit(root, scope, float(threshold), items, fingerprint, record_url, partitions, component)


def _marker(unit: ClustersUnit, step: str) -> dict[str, Any]:
    """The scatter marker of this unit's inputs, or MissingInputError naming the step to rerun."""
    try:
        marker = json.loads(storage.read_bytes(unit.marker_url))
    except FileNotFoundError:
        marker = None
    if not marker or marker.get("fingerprint") != unit.fingerprint or marker.get("partitions") != unit.partitions:
        raise MissingInputError(
            f"{unit.name} {step}: the scatter step has not finished for these inputs and {unit.partitions} partitions "
            f"(no {redact(unit.marker_url)}): run clusters_scatter first"
        )
    return marker


def _scatter(unit: ClustersUnit, batch_files: int, workers: int) -> dict[str, Any]:
    """Step 1 (no skip check): clear the work directory, scatter every batch, write the marker last."""
    if batch_files < 1:
        raise ConfigError(f"batch_files must be >= 1, got {batch_files}")
    started = time.perf_counter()
    storage.remove(unit.record_url)  # commit protocol rule 2: a redo that dies is never skipped
    _clear(unit.work)
    stats = Stats()
    batches = _batches(unit.items, batch_files)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

        def one(numbered: tuple[int, Sequence[MinHashInput]]) -> dict[str, int]:
            return scatter(numbered[1], unit.threshold, unit.work, unit.partitions, numbered[0])

        for counts in pool.map(one, enumerate(batches)):
            for name, value in counts.items():
                stats.inc(f"lsh.{name}", value)
    stats.add_time("scatter", time.perf_counter() - started)
    marker = {
        "fingerprint": unit.fingerprint,
        "partitions": unit.partitions,
        "batches": len(batches),
        **stats.to_dict(),
    }
    storage.write_bytes(unit.marker_url, json.dumps(marker, indent=1, sort_keys=True).encode())
    log.info(
        "%s scatter: %d files in %d batches, %d docs (%d null signatures), %d band rows in %d partitions, %.2f s",
        unit.name,
        len(unit.items),
        len(batches),
        stats["lsh.docs"],
        stats["lsh.null_signatures"],
        stats["lsh.rows"],
        unit.partitions,
        stats.seconds["scatter"],
    )
    return {
        "skipped": False,
        "partitions": list(range(unit.partitions)),
        "work": redact(unit.work),
        "files": len(unit.items),
        "batches": len(batches),
        "docs": stats["lsh.docs"],
        "null_signatures": stats["lsh.null_signatures"],
        "rows": stats["lsh.rows"],
        "seconds": round(stats.seconds["scatter"], 3),
    }


def _group(unit: ClustersUnit, partition: int, force: bool) -> dict[str, Any]:
    """Step 2 (no skip check): the edges of one partition; an edges file of this work directory is kept."""
    if not 0 <= partition < unit.partitions:
        raise ConfigError(f"partition {partition} is not in 0..{unit.partitions - 1}")
    marker = _marker(unit, f"group {partition}")
    names = batch_names(unit.work, partition)
    if len(names) != marker["batches"]:
        raise MissingInputError(
            f"{unit.name} group {partition}: {len(names)} of {marker['batches']} batch files under "
            f"{redact(bands_dir(unit.work, partition))}: run clusters_scatter again"
        )
    url = edges_url(unit.work, partition)
    if not force and storage.exists(url):
        counts, kept = _read_edges(url)[1], True
    else:
        counts, kept = group_partition(unit.work, partition), False
    log.info(
        "%s group %d/%d: %d band rows, %d edges, %.2f s%s",
        unit.name,
        partition,
        unit.partitions,
        counts["rows"],
        counts["edges"],
        counts["seconds"],
        " (edges of an earlier run kept)" if kept else "",
    )
    return {"skipped": False, "partition": partition, "kept": kept, **counts, "seconds": round(counts["seconds"], 3)}


def _write(unit: ClustersUnit, workers: int) -> dict[str, Any]:
    """Step 3 (no skip check): components of every partition's edges, the clusters files through one
    :class:`~rpj_tasks.core.commit.UnitCommit`, then every work directory of the scope and threshold
    is removed; returns the record."""
    started = time.perf_counter()
    marker = _marker(unit, "write")
    missing = [p for p in range(unit.partitions) if not storage.exists(edges_url(unit.work, p))]
    if missing:
        from rpj_tasks.core.plan import format_shards  # (its config and yaml imports: here only)

        raise MissingInputError(
            f"{unit.name} write: no edges of partition(s) {format_shards(missing)} of {unit.partitions} "
            f"under {redact(unit.work)}: run clusters_group for them first"
        )
    stats = Stats.from_dict(marker)

    def edges() -> np.ndarray:
        parts = []
        for p in range(unit.partitions):
            part, meta = _read_edges(edges_url(unit.work, p))
            parts.append(part)
            stats.add_time("group", meta["seconds"])  # the sum over the partitions
        return unique_edges(np.concatenate(parts))

    return _publish(unit, stats, edges, workers, started)


def _publish(
    unit: ClustersUnit, stats: Stats, edges_of: Callable[[], np.ndarray], workers: int, started: float
) -> dict[str, Any]:
    """Components of the edges ``edges_of()`` gives, the clusters files and the record through one
    :class:`~rpj_tasks.core.commit.UnitCommit`, then every work directory of the scope and threshold
    is removed; returns the record (``wall_seconds``: the scatter and group seconds in ``stats``
    plus the time since ``started``)."""
    root, component = unit.root, unit.component
    output_dirs = [storage.join(root, component, s) for s in unit.scope]
    with commit.UnitCommit(
        unit.record_url, unit.fingerprint, output_dirs, owned=lambda n: n.endswith(CLUSTERS_SUFFIX), recursive=True
    ) as committing:
        _invalidate_overlapping(root, component, unit.record_url, output_dirs)
        with stats.timer("components"):
            edges = edges_of()
            nodes, cluster_ids = components(edges)
        stats.inc("lsh.edges", len(edges))
        del edges
        stats.inc("lsh.clustered_docs", len(nodes))
        stats.inc("lsh.clusters", int(np.count_nonzero(keep(nodes, cluster_ids))))
        files: dict[str, int] = {}
        with stats.timer("write"), ThreadPoolExecutor(max_workers=max(1, workers)) as pool:

            def write(item: MinHashInput) -> tuple[str, int, dict[str, Any]]:
                digests: dict[str, Any] = {}
                out = layout.clusters_url(root, item.snapshot, item.shard, item.lang, item.bucket, component)
                return item.base_tag, write_clusters_file(item, out, nodes, cluster_ids, digests), digests

            for tag, rows, digests in pool.map(write, unit.items):
                committing.add_outputs(digests)
                if rows:
                    files[tag] = rows
        own = time.perf_counter() - started
        record = committing.commit(
            {
                "snapshots": unit.scope,
                "threshold": unit.threshold,
                "files_with_clusters": len(files),
                "wall_seconds": round(stats.seconds["scatter"] + stats.seconds.get("group", 0.0) + own, 3),
                **stats.to_dict(),
            }
        )
    _clear(unit.work_root)  # this unit's intermediates and any stale ones of other inputs
    log.info(
        "%s write: %d docs, %d clustered in %d clusters, %d files, %.2f s | %s",
        unit.name,
        stats["lsh.docs"],
        stats["lsh.clustered_docs"],
        stats["lsh.clusters"],
        len(files),
        own,
        stats.summary(),
    )
    return record


# ---------------------------------------------------------------- in one process: band rows in memory


def file_rows(items: Sequence[MinHashInput]) -> list[int]:
    """The row count of every MinHash file (nulls included), from the Parquet footers."""
    counts = []
    for item in items:
        with storage.open_read(item.url) as f:
            counts.append(pq.read_metadata(f).num_rows)
    return counts


def in_memory_bytes(docs: int, threshold: float = DEFAULT_THRESHOLD) -> int:
    """Estimated peak working memory of :func:`run_clusters`' in-memory path for ``docs`` rows
    (see the module doc)."""
    bands, width = band_layout(threshold)
    return docs * (16 + bands * (width + 10) + bands * (width + 80) // 4)


def _group_in_memory(unit: ClustersUnit, counts: list[int], workers: int) -> tuple[Stats, np.ndarray]:
    """Every file's band rows read into one array (``counts``: the files' row counts), their edges
    grouped with one :func:`group_keys`; the counts and seconds the scatter and group steps record."""
    bands, width = band_layout(unit.threshold)
    stats = Stats()
    started = time.perf_counter()
    base = np.r_[0, np.cumsum(counts, dtype=np.int64)]
    data = np.empty((int(base[-1]), bands, width), np.uint8)  # file i's valid rows at base[i]..
    ids = np.empty(int(base[-1]), np.uint64)

    keys = np.empty(int(base[-1]) * bands, np.uint64)  # file i's at base[i] * bands.., then compacted

    def read(i: int) -> int:
        item_ids, item_bands, nulls = read_bands(unit.items[i].url, unit.threshold)
        n = len(item_ids)
        if n + nulls != counts[i]:
            raise LshInputError(f"{unit.items[i].url}: {n + nulls} rows, its footer says {counts[i]}")
        lo = int(base[i])
        data[lo : lo + n] = item_bands
        ids[lo : lo + n] = item_ids
        keys[lo * bands : (lo + n) * bands] = band_keys(data[lo : lo + n]).ravel()
        return n

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        valid = list(pool.map(read, range(len(unit.items))))
    docs = sum(valid)
    done = 0
    for lo, n in zip(base[:-1].tolist(), valid, strict=True):  # in place: the valid rows' keys first
        keys[done * bands : (done + n) * bands] = keys[lo * bands : (lo + n) * bands]
        done += n
    keys = keys[: docs * bands]
    # the row of the i-th valid document in data and ids
    where = np.repeat(base[:-1] - np.r_[0, np.cumsum(valid, dtype=np.int64)][:-1], valid) + np.arange(docs)
    stats.inc("lsh.docs", docs)
    stats.inc("lsh.null_signatures", int(base[-1]) - docs)
    stats.inc("lsh.rows", len(keys))
    stats.add_time("scatter", time.perf_counter() - started)
    started = time.perf_counter()
    flat = data.reshape(-1, width)

    def fetch(rows: np.ndarray) -> BandRows:
        doc, band = np.divmod(rows, bands)
        at = where[doc]
        data_rows = np.take(flat, at * bands + band, axis=0)  # several times faster than flat[...]
        return BandRows(np.zeros(len(rows), np.uint64), ids[at], band.astype(np.uint8), data_rows)

    edges = group_keys(keys, fetch, overwrite=True)
    stats.add_time("group", time.perf_counter() - started)
    return stats, edges


def _run_in_memory(unit: ClustersUnit, counts: list[int], workers: int) -> dict[str, Any]:
    """The three steps' work in this process without intermediates: the same clusters files and
    record (counts) as :func:`_scatter`, :func:`_group` and :func:`_write`."""
    started = time.perf_counter()
    storage.remove(unit.record_url)  # commit protocol rule 2: a redo that dies is never skipped
    stats, edges = _group_in_memory(unit, counts, workers)
    log.info(
        "%s in memory: %d files, %d docs (%d null signatures), %d band rows, %d edges, %.2f s",
        unit.name,
        len(unit.items),
        stats["lsh.docs"],
        stats["lsh.null_signatures"],
        stats["lsh.rows"],
        len(edges),
        time.perf_counter() - started,
    )
    return _publish(unit, stats, lambda: edges, workers, time.perf_counter())


def clusters_scatter(
    root: str,
    snapshots: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    partitions: int = DEFAULT_PARTITIONS,
    batch_files: int = DEFAULT_BATCH_FILES,
    workers: int = 1,
    force: bool = False,
    component: str = "clusters",
    inputs: Iterable[MinHashInput] | None = None,
) -> dict[str, Any]:
    """Step 1 of the clusters of ``snapshots`` at ``threshold``: scatter the band rows into
    ``partitions`` partitions in the unit's own work directory (:attr:`ClustersUnit.work`, cleared
    first), then write ``scattered.json`` (fingerprint, counts) last.  Skipped if the unit is
    finished (unless ``force``).  Returns a small JSON-able dict: ``skipped``, ``partitions`` (the
    list to map the group step over), and when run ``work`` and the counts.  Starting removes the
    unit's record (it is unfinished until the write step commits)."""
    unit = clusters_unit(root, snapshots, threshold, partitions=partitions, inputs=inputs, component=component)
    if not force and unit.finished() is not None:
        return unit.skipped("scatter")
    with small_pages():
        return _scatter(unit, batch_files, workers)


def clusters_group(
    root: str,
    snapshots: Sequence[str],
    threshold: float,
    partition: int,
    *,
    partitions: int,
    force: bool = False,
    component: str = "clusters",
    inputs: Iterable[MinHashInput] | None = None,
) -> dict[str, Any]:
    """Step 2: the edges of one partition (``{work}/edges/{p:04d}.npy``, written atomically).
    Skipped if the unit is finished (unless ``force``); needs the scatter marker of these inputs and
    ``partitions`` (else :class:`MissingInputError`); an edges file already in the work directory
    (same inputs, by its name) is kept unless ``force``."""
    unit = clusters_unit(root, snapshots, threshold, partitions=partitions, inputs=inputs, component=component)
    if not force and unit.finished() is not None:
        return {**unit.skipped(f"group {partition}"), "partition": partition}
    with small_pages():
        return _group(unit, partition, force)


def clusters_write(
    root: str,
    snapshots: Sequence[str],
    threshold: float,
    *,
    partitions: int,
    workers: int = 1,
    force: bool = False,
    component: str = "clusters",
    inputs: Iterable[MinHashInput] | None = None,
) -> dict[str, Any]:
    """Step 3: connected components of every partition's edges, the clusters files and the record
    (one commit unit), then the work directories of the scope and threshold are removed.  Skipped
    if the unit is finished (unless ``force``); needs the marker and all ``partitions`` edges files
    (else :class:`MissingInputError` naming the missing partitions).  Returns a small summary
    (``skipped``, ``record``, counts, ``files_with_clusters``, ``wall_seconds``)."""
    unit = clusters_unit(root, snapshots, threshold, partitions=partitions, inputs=inputs, component=component)
    if not force and (record := unit.finished()) is not None:
        return {**unit.skipped("write"), **record_summary(record)}
    with small_pages():
        return {"skipped": False, "record": redact(unit.record_url), **record_summary(_write(unit, workers))}


def record_summary(record: dict[str, Any]) -> dict[str, Any]:
    """The figures of a clusters record worth a log line or an XCom: counts, files, seconds."""
    counts = record.get("counts", {})
    return {
        "docs": counts.get("lsh.docs", 0),
        "clustered_docs": counts.get("lsh.clustered_docs", 0),
        "clusters": counts.get("lsh.clusters", 0),
        "files_with_clusters": record.get("files_with_clusters", 0),
        "wall_seconds": record.get("wall_seconds", 0.0),
    }


def run_clusters(
    root: str,
    snapshots: Sequence[str],
    threshold: float = DEFAULT_THRESHOLD,
    *,
    inputs: Iterable[MinHashInput] | None = None,
    partitions: int = DEFAULT_PARTITIONS,
    batch_files: int = DEFAULT_BATCH_FILES,
    workers: int = 1,
    force: bool = False,
    component: str = "clusters",
    memory_budget: int = DEFAULT_MEMORY_BUDGET,
) -> dict[str, Any]:
    """Clusters of ``snapshots`` at ``threshold``: the three steps in this process; returns the record.

    ``inputs`` defaults to the MinHash files the annotation records list (:func:`snapshot_inputs`).
    A finished run with the same inputs is skipped (unless ``force``); ``partitions`` and
    ``batch_files`` change memory and time, never the output; ``workers`` threads run scatter
    batches, partitions and file writes concurrently (numpy and pyarrow release the GIL; memory
    grows with it).  One ``(scope, threshold)`` owns ``{component}/{snapshot}/`` of its snapshots;
    use another ``component`` for a second threshold.

    When every band row fits ``memory_budget`` bytes (:func:`in_memory_bytes` of the files' row
    counts), the steps' work is done in memory without intermediates (no band or edges files; same
    clusters files and record counts); otherwise, and with ``memory_budget=0``, the three steps run
    with their intermediates.
    """
    unit = clusters_unit(root, snapshots, threshold, partitions=partitions, inputs=inputs, component=component)
    if not force and (record := unit.finished()) is not None:
        log.info("%s: finished, skipped", unit.name)
        return {**record, "skipped": True}
    with small_pages():
        if memory_budget > 0:
            counts = file_rows(unit.items)
            if in_memory_bytes(sum(counts), threshold) <= memory_budget:
                return {**_run_in_memory(unit, counts, workers), "skipped": False}
        _scatter(unit, batch_files, workers)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            list(pool.map(lambda p: _group(unit, p, True), range(partitions)))
        return {**_write(unit, workers), "skipped": False}
