"""RPv2 MinHash signatures (``docs/spec/quality_signals.md`` §6) and the minhash parquet file (``docs/spec/rpv2_format.md`` §5).

A document's signature is 128 uint32 values: for each permutation ``(a_i, b_i)`` the minimum over its
distinct 13-word shingles of ``((h·a_i + b_i) mod 2^64) mod (2^61 − 1) & 0xFFFFFFFF``, where ``h`` is the
little-endian uint32 prefix of the shingle's SHA-1.  The signature is cut into bands per similarity
threshold and stored as big-endian bytes.

datasketch is the reference shell: its ``MinHash(scheme="legacy")`` update arithmetic is exactly the
RPv2 arithmetic (uint64 wrap, then the Mersenne modulus, then the 32-bit mask; its 2.0 default scheme
``affine32`` is *not*), it accepts our permutation table through ``permutations=``, and its LSH
optimiser gives the band layout.  :func:`datasketch_signature` is that path.  datasketch is imported
only there and in :func:`optimal_bands` (it pulls in scipy, ~0.4 s): the stage's import stays fast, and
the band layout it uses is the spec's (``core.schema.MINHASH_BANDS``), which ``tests/annotate/test_minhash.py``
checks against datasketch's optimiser (:func:`_checked_bands`).  :func:`signatures`
computes the same values for a batch of documents with one vectorised numpy pass over all their
shingles, replacing the hardware ``%`` by a Mersenne reduction; it is about twice as fast.
:func:`signatures_from_words_native` runs the same arithmetic in C (``rpj_tasks/native/_speedups.c``, with
its own SHA-1), several times faster again; it is the default when built.  All three are checked
against each other and the spec vectors in ``tests/test_minhash.py`` / ``tests/test_speedups.py``.  NW comes from the
shared :func:`rpj_tasks.annotate.signals.text.normalize`; callers that already hold NW (``DocText.words``)
use :func:`signatures_from_words` and hand the arrays to :func:`write_minhash_parquet`.
"""

from __future__ import annotations

import hashlib
import logging
import re
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, islice
from typing import TYPE_CHECKING, Any

import numpy as np

from rpj_tasks.annotate.signals.text import normalize
from rpj_tasks.core import schema, storage
from rpj_tasks.core.errors import PermanentError
from rpj_tasks.core.ids import doc_id, id_int
from rpj_tasks.core.schema import MINHASH_BANDS as SPEC_BANDS
from rpj_tasks.core.schema import MINHASH_NUM_PERM as NUM_PERM
from rpj_tasks.core.schema import MINHASH_ROW_GROUP_SIZE as ROW_GROUP_SIZE
from rpj_tasks.core.schema import MINHASH_SIGNATURE_COLUMNS as COLUMNS
from rpj_tasks.core.schema import MINHASH_THRESHOLDS as THRESHOLDS
from rpj_tasks.core.schema import signature_column
from rpj_tasks.core.stats import Stats
from rpj_tasks.native import native

if TYPE_CHECKING:
    import pyarrow as pa

    SCHEMA: pa.Schema  # rpj_tasks.core.schema.MINHASH_SCHEMA (pyarrow is imported when it is first used)

log = logging.getLogger(__name__)

# NUM_PERM, THRESHOLDS, SPEC_BANDS ((bands, rows) per threshold, checked against datasketch's optimiser
# below), ROW_GROUP_SIZE, the column names and SCHEMA come from rpj_tasks.core.schema (rpv2_format.md §5).
SEED = 42
SHINGLE_SIZE = 13
PERMUTATIONS_SHA256 = "6a5665743fa1884640a8eb3543348255a90b4dbd55b093f39e3d61ac90eac9e1"

_MERSENNE = np.uint64((1 << 61) - 1)
_SHIFT61 = np.uint64(61)
_SHIFT3 = np.uint64(3)
_ONE = np.uint64(1)
_MAX32 = 0xFFFFFFFF
_CARRY_RISK = np.uint64((1 << 64) - (1 << 6))  # x << 3 at least this: bits 3..60 of x all set
# Shingles per vectorised block (scratch: 512 x 128 x 20 bytes = 1.3 MB); larger gains nothing.
_BLOCK = 512
_SHA1 = hashlib.sha1
_DIGEST = type(hashlib.sha1()).digest
_SURROGATES = "surrogatepass"
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


class MinHashSetupError(PermanentError, RuntimeError):
    """The permutation table or band layout differs from the RPv2 reference."""


def reference_permutations() -> np.ndarray:
    """The 2x128 uint64 table: ``RandomState(42)``, draws interleaved ``a_0, b_0, a_1, b_1, ...`` (§6.4)."""
    rng = np.random.RandomState(SEED)
    pairs = [
        (rng.randint(1, int(_MERSENNE), dtype=np.uint64), rng.randint(0, int(_MERSENNE), dtype=np.uint64))
        for _ in range(NUM_PERM)
    ]
    return np.ascontiguousarray(np.array(pairs, dtype=np.uint64).T)


def permutations_checksum(permutations: np.ndarray) -> str:
    """SHA-256 of the table's C-order little-endian bytes (all a's, then all b's)."""
    return hashlib.sha256(np.ascontiguousarray(permutations, dtype="<u8").tobytes()).hexdigest()


def _checked_permutations() -> np.ndarray:
    table = reference_permutations()
    checksum = permutations_checksum(table)
    if checksum != PERMUTATIONS_SHA256:
        raise MinHashSetupError(
            f"MinHash permutation checksum {checksum} != reference {PERMUTATIONS_SHA256}: "
            "numpy's legacy RandomState stream changed; signatures would not match RPv2"
        )
    table.flags.writeable = False
    return table


def optimal_bands(threshold: float) -> tuple[int, int]:
    """(bands, rows) from datasketch's LSH optimiser (equal false-positive / false-negative weights).

    datasketch is a pinned dependency; its optimiser is private API, so a datasketch release that
    moves it fails here with a clear error (the tests call this through :func:`_checked_bands`)."""
    try:
        from datasketch.lsh import _optimal_param
    except ImportError as exc:
        raise MinHashSetupError(
            f"datasketch.lsh._optimal_param is not available ({exc}); the MinHash band layout is derived "
            "from it: install the pinned datasketch release"
        ) from exc
    bands, rows = _optimal_param(threshold, NUM_PERM, 0.5, 0.5)
    return int(bands), int(rows)


def _checked_bands() -> dict[str, tuple[int, int]]:
    """The spec's band layout by column, after checking it against datasketch's optimiser (slow: scipy)."""
    layout = {t: optimal_bands(t) for t in THRESHOLDS}
    if layout != SPEC_BANDS:
        raise MinHashSetupError(f"MinHash band layout {layout} != RPv2 {SPEC_BANDS}")
    return {signature_column(t): layout[t] for t in THRESHOLDS}


PERMUTATIONS: np.ndarray = _checked_permutations()
# The spec's layout; _checked_bands() derives it from datasketch's optimiser (tests/annotate/test_minhash.py).
BANDS: dict[str, tuple[int, int]] = {signature_column(t): SPEC_BANDS[t] for t in THRESHOLDS}
_A = PERMUTATIONS[0]
_B = PERMUTATIONS[1]


def shingle_hashes(words: Sequence[str]) -> np.ndarray:
    """uint32 SHA-1 prefixes of the 13-word shingles of ``words``, in order (repeats kept).

    Repeated shingles are harmless: the signature is a minimum, so it depends only on the set.
    The words are joined once; shingle ``i`` is the UTF-8 byte slice from word ``i`` to word ``i+12``.
    Lone surrogates (invalid JSON escapes, on which the reference crashes) are encoded with
    ``surrogatepass``; valid text encodes exactly as with plain UTF-8.
    """
    count = len(words) - SHINGLE_SIZE + 1
    if count <= 0:
        return np.empty(0, dtype=np.uint32)
    text = " ".join(words).encode("utf-8", _SURROGATES)
    spaces = np.flatnonzero(np.frombuffer(text, dtype=np.uint8) == 32)
    starts = [0, *(spaces[: count - 1] + 1).tolist()]
    ends = [*spaces[SHINGLE_SIZE - 1 :].tolist(), len(text)]
    digests = b"".join(map(_DIGEST, map(_SHA1, [text[s:e] for s, e in zip(starts, ends)])))
    return np.frombuffer(digests, dtype="<u4")[::5]  # first 4 of each 20-byte digest


class _Permuter:
    """Applies permutations ``(a, b)`` to blocks of at most ``block`` hashes, reusing scratch buffers.

    The value is ``((h·a + b) mod 2^64) mod P & 0xFFFFFFFF`` with ``P = 2^61 − 1``.  With
    ``x = h·a + b`` (wrapping) and ``y = (x & P) + (x >> 61)``, ``x mod P`` is ``y`` or, only if
    ``y ≥ P``, ``y − P``.  The low 32 bits of ``x & P`` are those of ``x``, so the result is
    ``low32(x + (x >> 61))`` unless ``y ≥ P``; that needs bits 3..60 of ``x`` all set (probability
    2^-58 per value), which is tested per block and then handled by the exact formula.
    """

    def __init__(self, a: np.ndarray, b: np.ndarray, block: int) -> None:
        self.a, self.b = a, b
        self._x = np.empty((block, a.size), dtype=np.uint64)
        self._t = np.empty((block, a.size), dtype=np.uint64)
        self._v = np.empty((block, a.size), dtype=np.uint32)

    def low32(self, hashes: np.ndarray) -> np.ndarray:
        """uint32[len(hashes), k]; a view of a scratch buffer, valid until the next call."""
        n = hashes.size
        x, t, v = self._x[:n], self._t[:n], self._v[:n]
        np.multiply(hashes.astype(np.uint64)[:, None], self.a, out=x)
        x += self.b
        np.left_shift(x, _SHIFT3, out=t)
        if n and t.max() >= _CARRY_RISK:
            return self._exact(x, t, v)
        np.right_shift(x, _SHIFT61, out=t)
        x += t
        np.copyto(v, x, casting="unsafe")  # keeps the low 32 bits
        return v

    @staticmethod
    def _exact(x: np.ndarray, t: np.ndarray, v: np.ndarray) -> np.ndarray:
        """The same values with the full reduction ``y + (y ≥ P)``, computed as ``y + ((y + 1) >> 61)``."""
        y = x & _MERSENNE
        np.right_shift(x, _SHIFT61, out=t)
        y += t
        np.add(y, _ONE, out=t)
        t >>= _SHIFT61
        y += t
        np.copyto(v, y, casting="unsafe")
        return v


def _signatures_from_hashes(hashes: np.ndarray, counts: Sequence[int], block: int = _BLOCK) -> np.ndarray:
    """uint32[len(counts), 128]: minima over consecutive runs of ``counts`` (> 0) hashes.

    The hashes are permuted in fixed-size blocks that may span several documents (small ones
    share one numpy pass) or cut one (memory stays bounded); each block folds into ``out``.
    """
    out = np.full((len(counts), NUM_PERM), _MAX32, dtype=np.uint32)
    bounds = [0, *accumulate(counts)]
    permuter = _Permuter(_A, _B, block)
    for lo in range(0, hashes.size, block):
        hi = min(lo + block, hashes.size)
        values = permuter.low32(hashes[lo:hi])
        for doc in range(bisect_right(bounds, lo) - 1, bisect_left(bounds, hi)):
            segment = values[max(bounds[doc], lo) - lo : min(bounds[doc + 1], hi) - lo]
            np.minimum(out[doc], segment.min(axis=0), out=out[doc])
    return out


def signatures_from_words_numpy(word_lists: Sequence[Sequence[str]]) -> list[np.ndarray | None]:
    """Vectorised signatures (uint32[128]) of already-normalised word lists; None below 13 words."""
    per_doc = [shingle_hashes(words) for words in word_lists]
    present = [h for h in per_doc if h.size]
    if not present:
        return [None] * len(per_doc)
    matrix = _signatures_from_hashes(np.concatenate(present), [h.size for h in present])
    rows = iter(matrix)
    return [next(rows) if h.size else None for h in per_doc]


def signatures_from_words_native(word_lists: Sequence[Sequence[str]]) -> list[np.ndarray | None]:
    """The same signatures from the compiled loop (own SHA-1, one pass per shingle over the 128
    permutations with the exact Mersenne reduction); needs :mod:`rpj_tasks.native._speedups`."""
    if native is None:
        raise RuntimeError("rpj_tasks.native._speedups is not built")
    out: list[np.ndarray | None] = []
    for words in word_lists:
        if len(words) < SHINGLE_SIZE:
            out.append(None)
            continue
        raw = native.minhash(" ".join(words).encode("utf-8", _SURROGATES), _A, _B, SHINGLE_SIZE)
        out.append(np.frombuffer(raw, dtype=np.uint32))
    return out


#: Signatures of NW word lists: the compiled loop when built, else the numpy path (same values).
signatures_from_words = signatures_from_words_native if native is not None else signatures_from_words_numpy


def signatures(texts: Sequence[str]) -> list[np.ndarray | None]:
    """Signatures of raw document texts (NW = ``normalize(text).split()``); None below 13 words."""
    return signatures_from_words([normalize(text).split() for text in texts])


def datasketch_signature(words: Sequence[str]) -> np.ndarray | None:
    """One signature through ``datasketch.MinHash`` (legacy scheme, reference table): the slow oracle."""
    if len(words) < SHINGLE_SIZE:
        return None
    from datasketch import MinHash  # imports scipy: only on this slow path

    shingles = {" ".join(words[i : i + SHINGLE_SIZE]) for i in range(len(words) - SHINGLE_SIZE + 1)}
    sketch = MinHash(num_perm=NUM_PERM, seed=SEED, scheme="legacy", permutations=PERMUTATIONS)
    sketch.update_batch([s.encode("utf-8", _SURROGATES) for s in shingles])
    return sketch.hashvalues.astype(np.uint32)


def band_bytes(signature: np.ndarray) -> dict[str, list[bytes]]:
    """Band byte strings per column: band k is values ``k·r … k·r+r−1`` as big-endian uint32."""
    if signature.shape != (NUM_PERM,):
        raise ValueError(f"signature must have shape ({NUM_PERM},), got {signature.shape}")
    raw = np.asarray(signature, dtype=">u4").tobytes()
    return {column: [raw[4 * rows * k : 4 * rows * (k + 1)] for k in range(bands)] for column, (bands, rows) in BANDS.items()}


MinHashItem = str | np.ndarray | None


def _resolve(chunk: list[MinHashItem], where: str, first_idx: int, stats: Stats) -> list[np.ndarray | None]:
    """Signatures for a chunk of items: texts are hashed in one batch, arrays pass through, None stays."""
    texts = [item for item in chunk if isinstance(item, str)]
    computed = iter(signatures(texts))
    resolved: list[np.ndarray | None] = []
    for idx, item in enumerate(chunk, first_idx):
        if isinstance(item, str):
            sig = next(computed)
            if sig is None:
                stats.inc("minhash.null.short")
            if not item.isascii() and _LONE_SURROGATE.search(item):
                stats.inc("minhash.lone_surrogates")
                log.warning("%s row %d: lone surrogates in text, hashed with surrogatepass", where, idx)
        elif item is None:
            sig = None
            stats.inc("minhash.null.missing")
        else:
            sig = np.asarray(item)
            if sig.shape != (NUM_PERM,) or sig.dtype != np.uint32:
                raise ValueError(f"signature must be uint32[{NUM_PERM}], got {sig.dtype}{list(sig.shape)}")
        resolved.append(sig)
    return resolved


def __getattr__(name: str) -> Any:
    if name == "SCHEMA":
        return schema.MINHASH_SCHEMA
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _row_group(shard_key: str, first_idx: int, sigs: list[np.ndarray | None]) -> pa.Table:
    import pyarrow as pa

    ids = [doc_id(shard_key, first_idx + i) for i in range(len(sigs))]
    bands = [band_bytes(sig) if sig is not None else None for sig in sigs]
    columns = {
        "shard_id": pa.array([shard_key] * len(sigs), pa.string()),
        "id": pa.array(ids, pa.string()),
        "id_int": pa.array([id_int(i) for i in ids], pa.uint64()),
    }
    for name in COLUMNS:
        columns[name] = pa.array([b[name] if b is not None else None for b in bands], pa.list_(pa.binary()))
    return pa.table(columns, schema=schema.MINHASH_SCHEMA)


def _chunks(items: Iterable[MinHashItem], size: int) -> Iterator[list[MinHashItem]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


def write_minhash_parquet(
    url: str,
    shard_key: str,
    items: Iterable[MinHashItem],
    stats: Stats | None = None,
    digests: dict[str, Any] | None = None,
) -> int:
    """Write ``{base_tag}.minhash.parquet`` atomically: one row per item, in order; returns the row count.

    Each item is a document's raw text, a precomputed uint32[128] signature, or None for a line that
    has no usable text (e.g. undecodable): its row keeps its id with null signatures.  Row ``i`` has
    ``id = f"{shard_key}/{i}"``.  A row group is written every 1000 rows; the bytes are deterministic.
    """
    import pyarrow.parquet as pq

    stats = stats if stats is not None else Stats()
    rows = 0
    with stats.timer("minhash"), storage.atomic_write(url, digests=digests) as raw:
        with pq.ParquetWriter(raw, schema.MINHASH_SCHEMA, compression="snappy") as writer:
            for chunk in _chunks(items, ROW_GROUP_SIZE):
                sigs = _resolve(chunk, url, rows, stats)
                writer.write_table(_row_group(shard_key, rows, sigs), ROW_GROUP_SIZE)
                rows += len(chunk)
    stats.inc("minhash.rows", rows)
    log.info("minhash: wrote %d rows to %s", rows, url)
    return rows
