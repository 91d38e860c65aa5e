"""Document ids of the RPv2 signals, MinHash and duplicates files (``docs/spec/rpv2_format.md`` §3).

``id`` is ``{shard_key}/{line number}`` where the shard key is the documents file's path relative
to the release root (``2023-06/0000/en_head.json.gz``) and the line number is 0-based; ``id_int``
is the first 8 bytes of its SHA-1, read as an unsigned little-endian integer.  The key is built
from the relative path, never searched for in a full URI (defect D9).
"""

from __future__ import annotations

import hashlib
import re

_SNAPSHOT = re.compile(r"\b\d{4}-\d{2}\b")


def doc_id(shard_key: str, idx: int) -> str:
    """``f"{shard_key}/{idx}"``, e.g. ``2023-06/0000/en_head.json.gz/17``."""
    return f"{shard_key}/{idx}"


def id_int(doc: str) -> int:
    """uint64 from the first 8 bytes of SHA-1(``doc`` as UTF-8), little-endian."""
    return int.from_bytes(hashlib.sha1(doc.encode("utf-8")).digest()[:8], "little")


def snapshot_id(shard_key: str) -> str:
    """The first ``dddd-dd`` of the shard key (its leading component), e.g. ``2023-06``."""
    match = _SNAPSHOT.search(shard_key)
    if match is None:
        raise ValueError(f"shard key {shard_key!r} contains no snapshot id (YYYY-WW)")
    return match.group(0)
