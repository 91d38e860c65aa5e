"""CCNet paragraph (line) dedup: the ``hashes`` map of a shard and the removal rule (§9.4).

A :class:`ShardHashes` is two sorted numpy arrays (uint64 keys, uint8 flags), so a real shard
(~30M lines) costs ~9 bytes per distinct line instead of a Python dict.

* ``collect``: a hash's flag is 1 when it occurs in at least two documents of the shard; repeats
  inside one document count once (the reference inserts a document's hashes as one batch).
* ``merge`` (one hash group): flag = appears in more than one part, or flagged in any part.
* ``remove_duplicate_lines``: drop flagged lines (first occurrence included), then repeats inside
  the document, and set the CCNet fields in the reference order.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from rpj_tasks.ccnet.normalize import content_hashes, line_hashes
from rpj_tasks.core.stats import Stats

_MAGIC = b"RPJHASH1"


class ShardHashes:
    def __init__(self, keys: np.ndarray, flags: np.ndarray) -> None:
        self.keys = keys.astype("<u8", copy=False)
        self.flags = flags.astype(np.uint8, copy=False)

    def __len__(self) -> int:
        return len(self.keys)

    @classmethod
    def _from_occurrences(cls, keys: np.ndarray, flags: np.ndarray) -> ShardHashes:
        """Flag = occurs more than once in ``keys`` or any occurrence flagged."""
        uniq, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        flagged = np.zeros(len(uniq), dtype=np.uint8)
        np.maximum.at(flagged, inverse, flags)
        return cls(uniq, ((counts > 1) | (flagged > 0)).astype(np.uint8))

    @classmethod
    def collect(cls, docs_lines: Iterable[list[str]]) -> ShardHashes:
        return cls.collect_hashes(line_hashes(lines) for lines in docs_lines)

    @classmethod
    def collect_hashes(cls, docs_hashes: Iterable[np.ndarray], chunk: int = 4096) -> ShardHashes:
        """``collect`` from each document's line hashes; a document's repeats are dropped for
        ``chunk`` documents at a time (one sort) instead of one ``np.unique`` per document."""
        per_chunk, pending = [], []
        for hashes in docs_hashes:
            pending.append(hashes)
            if len(pending) >= chunk:
                per_chunk.append(_distinct_per_document(pending))
                pending = []
        if pending:
            per_chunk.append(_distinct_per_document(pending))
        keys = np.concatenate(per_chunk) if per_chunk else np.zeros(0, dtype="<u8")
        return cls._from_occurrences(keys, np.zeros(len(keys), dtype=np.uint8))

    @classmethod
    def merge(cls, parts: Sequence[ShardHashes]) -> ShardHashes:
        if len(parts) == 1:
            return parts[0]
        keys = np.concatenate([p.keys for p in parts]) if parts else np.zeros(0, dtype="<u8")
        flags = np.concatenate([p.flags for p in parts]) if parts else np.zeros(0, dtype=np.uint8)
        return cls._from_occurrences(keys, flags)

    def flags_of(self, hashes: np.ndarray) -> np.ndarray:
        """Flag per hash (0 for hashes not in the map)."""
        if not len(self.keys):
            return np.zeros(len(hashes), dtype=np.uint8)
        pos = np.searchsorted(self.keys, hashes)
        pos[pos == len(self.keys)] = 0
        found = self.keys[pos] == hashes
        return np.where(found, self.flags[pos], 0).astype(np.uint8)

    def to_bytes(self) -> bytes:
        return _MAGIC + struct.pack("<Q", len(self.keys)) + self.keys.tobytes() + self.flags.tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> ShardHashes:
        if data[:8] != _MAGIC:
            raise ValueError("not an rpj paragraph-hash file (bad magic)")
        (n,) = struct.unpack("<Q", data[8:16])
        if len(data) != 16 + 9 * n:
            raise ValueError(f"truncated paragraph-hash file: {len(data)} bytes for {n} keys")
        keys = np.frombuffer(data, dtype="<u8", count=n, offset=16)
        flags = np.frombuffer(data, dtype=np.uint8, count=n, offset=16 + 8 * n)
        return cls(keys, flags)


def _distinct_per_document(docs_hashes: list[np.ndarray]) -> np.ndarray:
    """The distinct hashes of each document, concatenated (in no particular order)."""
    keys = np.concatenate(docs_hashes)
    doc = np.repeat(np.arange(len(docs_hashes)), [len(h) for h in docs_hashes])
    order = np.lexsort((doc, keys))
    keys, doc = keys[order], doc[order]
    first = np.ones(len(keys), dtype=bool)
    first[1:] = (keys[1:] != keys[:-1]) | (doc[1:] != doc[:-1])
    return keys[first]


def remove_duplicate_lines(doc: dict[str, Any], table: ShardHashes, stats: Stats) -> dict[str, Any] | None:
    """Apply the §9.4 removal rule to ``doc`` in place; ``None`` when no line survives."""
    return remove_duplicate_lines_batch([doc], table, stats)[0]


def remove_duplicate_lines_batch(docs: list[dict[str, Any]], table: ShardHashes, stats: Stats) -> list[dict[str, Any] | None]:
    """:func:`remove_duplicate_lines` of each document (one flag lookup for the whole list)."""
    per_doc = [content_hashes(doc["raw_content"]) for doc in docs if doc["raw_content"]]
    if per_doc:
        hashes = np.concatenate(per_doc)
        all_hashes, all_flags = hashes.tolist(), table.flags_of(hashes).tolist()
    out: list[dict[str, Any] | None] = []
    start = 0
    for doc in docs:
        content = doc["raw_content"]
        if not content:
            stats.inc("dedup.dropped.empty")
            out.append(None)
            continue
        lines = content.split("\n")
        end = start + len(lines)
        out.append(_remove(doc, lines, all_hashes[start:end], all_flags[start:end], stats))
        start = end
    return out


def _remove(doc: dict[str, Any], lines: list[str], hashes: list[int], flags: list[int], stats: Stats) -> dict[str, Any] | None:
    content = doc["raw_content"]
    stats.inc("dedup.lines_in", len(lines))
    if all(flags):
        stats.inc("dedup.dropped.all_lines_duplicate")
        return None
    seen: set[int] = set()
    kept_ids: list[int] = []
    for i, (h, flagged) in enumerate(zip(hashes, flags)):
        if not flagged and h != 0 and h not in seen:
            kept_ids.append(i)
        seen.add(h)
    if not kept_ids:  # only lines hashing to 0 were left: a mechanism artefact
        stats.inc("dedup.dropped.all_lines_duplicate")
        return None
    doc.setdefault("original_nlines", doc.get("nlines", len(lines)))
    doc.setdefault("original_length", doc.get("length", len(content)))
    doc["raw_content"] = "\n".join(lines[i] for i in kept_ids)
    doc["nlines"] = len(kept_ids)
    doc["length"] = len(doc["raw_content"])
    doc["line_ids"] = kept_ids
    stats.inc("dedup.lines_kept", len(kept_ids))
    return doc
