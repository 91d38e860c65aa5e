"""RPv2 MinHash: docs/spec/quality_signals.md §6 / §7.4 vectors, expected_*.minhash.jsonl, docs/spec/rpv2_format.md §5 parquet."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash
from hypothesis import given, settings
from hypothesis import strategies as st

from rpj_tasks.annotate import minhash
from rpj_tasks.annotate.signals.text import normalize
from rpj_tasks.core.stats import Stats

E5 = "One two three four five six seven eight nine ten eleven twelve thirteen"
SHARDS = {"en": "2023-06/0000/en_head.json.gz", "de": "2023-06/0000/de_middle.json.gz"}
P61 = (1 << 61) - 1

words_st = st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=60)


def load_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def as_hex(bands: dict[str, list[bytes]] | None) -> dict[str, list[str] | None]:
    if bands is None:
        return {c: None for c in minhash.COLUMNS}
    return {c: [b.hex() for b in bands[c]] for c in minhash.COLUMNS}


# --- permutations and band layout ------------------------------------------------------------


def test_permutation_table_checksum_and_spot_values() -> None:
    table = minhash.PERMUTATIONS
    assert table.shape == (2, 128) and table.dtype == np.uint64
    assert minhash.permutations_checksum(table) == minhash.PERMUTATIONS_SHA256
    assert minhash.PERMUTATIONS_SHA256.startswith("6a5665743f")
    a, b = table
    assert (int(a[0]), int(b[0])) == (2297359619001564596, 1396682528897996046)
    assert (int(a[1]), int(b[1])) == (1973689801170867272, 1819927849474927636)
    assert (int(a[127]), int(b[127])) == (820746394777708562, 1047798402161213417)
    # datasketch's own legacy seed-42 table is the same draw sequence
    assert np.array_equal(np.asarray(MinHash(num_perm=128, seed=42, scheme="legacy").permutations), table)


def test_checksum_mismatch_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    original = minhash.reference_permutations

    def tampered() -> np.ndarray:
        table = original()
        table[1, 5] += np.uint64(1)
        return table

    monkeypatch.setattr(minhash, "reference_permutations", tampered)
    with pytest.raises(minhash.MinHashSetupError, match="checksum"):
        minhash._checked_permutations()


def test_band_layout_comes_from_datasketch_and_matches_spec() -> None:
    from datasketch.lsh import _optimal_param

    assert {t: _optimal_param(t, 128, 0.5, 0.5) for t in minhash.THRESHOLDS} == minhash.SPEC_BANDS
    assert minhash._checked_bands() == minhash.BANDS  # the layout the stage uses (not derived at import)
    assert minhash.BANDS == {
        "signature_sim1.0": (1, 128),
        "signature_sim0.9": (5, 25),
        "signature_sim0.8": (9, 13),
        "signature_sim0.7": (14, 9),
    }


def test_band_layout_from_datasketch_else_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    assert {t: minhash.optimal_bands(t) for t in minhash.THRESHOLDS} == {1.0: (1, 128), 0.9: (5, 25), 0.8: (9, 13), 0.7: (14, 9)}
    monkeypatch.setitem(sys.modules, "datasketch.lsh", None)  # import now fails: no silent fallback
    with pytest.raises(minhash.MinHashSetupError, match="datasketch.lsh._optimal_param is not available"):
        minhash.optimal_bands(0.8)
    monkeypatch.setattr(minhash, "optimal_bands", lambda t: (2, 64))
    with pytest.raises(minhash.MinHashSetupError, match="band layout"):
        minhash._checked_bands()


# --- arithmetic ------------------------------------------------------------------------------


def reference_values(h: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The spec formula literally, in Python ints: wrap at 2^64, mod 2^61-1, low 32 bits."""

    def value(x: int, ai: int, bi: int) -> int:
        return (((x * ai) % 2**64 + bi) % 2**64) % P61 & 0xFFFFFFFF

    return np.array([[value(int(x), int(ai), int(bi)) for ai, bi in zip(a, b)] for x in h], dtype=np.uint32)


def test_mersenne_reduction_edge_cases() -> None:
    # h = 1, a = 1, so x = 1 + b: put x on both sides of every reduction boundary
    xs = [P61 - 1, P61, P61 + 1, 2 * P61, 2 * P61 + 7, 2**61, 2**62 - 1, 2**64 - 1, 2**64 - 2]
    xs += [k * 2**61 + P61 - j for k in range(8) for j in range(8)]
    b = np.array([(x - 1) % 2**64 for x in xs], dtype=np.uint64)
    a = np.ones_like(b)
    h = np.array([1], dtype=np.uint32)
    got = minhash._Permuter(a, b, block=1).low32(h)
    assert np.array_equal(got, reference_values(h, a, b))
    assert np.array_equal(got[0], np.array([x % P61 & 0xFFFFFFFF for x in xs], dtype=np.uint32))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40), st.integers(0, 2**32 - 1))
def test_vectorised_arithmetic_matches_the_formula(hashes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    a = rng.integers(1, 2**64 - 1, 16, dtype=np.uint64, endpoint=True)
    b = rng.integers(0, 2**64 - 1, 16, dtype=np.uint64, endpoint=True)
    h = np.array(hashes, dtype=np.uint32)
    assert np.array_equal(minhash._Permuter(a, b, block=len(h)).low32(h), reference_values(h, a, b))


def test_blocks_across_and_within_documents() -> None:
    rng = np.random.default_rng(7)
    counts = [1, 700, 3, 512, 511, 1, 1025]
    hashes = rng.integers(0, 2**32, sum(counts), dtype=np.uint32)
    bounds = np.cumsum([0, *counts])
    a, b = minhash.PERMUTATIONS
    expected = [reference_values(hashes[lo:hi], a, b).min(axis=0) for lo, hi in zip(bounds, bounds[1:])]
    for block in (1, 7, 512):
        assert np.array_equal(minhash._signatures_from_hashes(hashes, counts, block), np.stack(expected))


# --- spec vectors ----------------------------------------------------------------------------


def test_e5_worked_vector() -> None:
    words = normalize(E5).split()
    assert [int(h) for h in minhash.shingle_hashes(words)] == [1017634738]
    (sig,) = minhash.signatures([E5])
    assert sig is not None and sig.dtype == np.uint32 and sig.shape == (128,)
    assert sig[:4].tolist() == [1946175548, 3164831273, 3090497451, 967076254]
    bands = minhash.band_bytes(sig)
    assert bands["signature_sim0.7"][0].hex() == ("7400483cbca37e29b8353fab39a4699e00afe6d3c9892331a32a03640a80c15de8ba5156")
    full_band = bands["signature_sim1.0"][0]
    assert hashlib.sha1(full_band).hexdigest() == "940533ef4f35457bb0777aec37c07cf8848e4d87"
    assert np.array_equal(minhash.datasketch_signature(words), sig)


@pytest.mark.parametrize(
    ("lang", "idx", "distinct", "head"),
    [
        ("en", 0, 15, [20707816, 128765004, 133816323, 408042461]),
        ("en", 2, 14, [314496938, 257737373, 100419225, 99415278]),
        ("en", 4, 6, [99854180, 226323443, 158288354, 822723266]),
        ("de", 0, 8, [95488038, 891113017, 181984899, 167966732]),
    ],
)
def test_section_7_4_table(shared_data: Path, lang: str, idx: int, distinct: int, head: list[int]) -> None:
    text = load_jsonl(shared_data / "testvectors" / f"docs_{lang}.jsonl")[idx]["raw_content"]
    assert len(set(minhash.shingle_hashes(normalize(text).split()).tolist())) == distinct
    (sig,) = minhash.signatures([text])
    assert sig is not None and sig[:4].tolist() == head


@pytest.mark.parametrize("lang", ["en", "de"])
def test_expected_minhash_files(shared_data: Path, tmp_path: Path, lang: str) -> None:
    vectors = shared_data / "testvectors"
    texts = [d["raw_content"] for d in load_jsonl(vectors / f"docs_{lang}.jsonl")]
    expected = load_jsonl(vectors / f"expected_{lang}.minhash.jsonl")
    assert len(texts) == len(expected)

    sigs = minhash.signatures(texts)
    for sig, exp in zip(sigs, expected):
        got = as_hex(minhash.band_bytes(sig) if sig is not None else None)
        assert got == {c: exp[c] for c in minhash.COLUMNS}

    url = str(tmp_path / f"{lang}.minhash.parquet")
    stats = Stats()
    assert minhash.write_minhash_parquet(url, SHARDS[lang], texts, stats) == len(texts)
    rows = pq.read_table(url).to_pylist()
    for row, exp in zip(rows, expected, strict=True):
        hexed = {k: [b.hex() for b in v] if isinstance(v, list) else v for k, v in row.items()}
        assert hexed == exp
    assert stats["minhash.rows"] == len(texts)
    assert stats["minhash.null.short"] == sum(e["signature_sim1.0"] is None for e in expected)


# --- properties ------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=200))
def test_null_exactly_below_13_words(text: str) -> None:
    words = normalize(text).split()
    (sig,) = minhash.signatures([text])
    assert (sig is None) == (len(words) < 13)
    assert (minhash.datasketch_signature(words) is None) == (sig is None)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.text("xyz", min_size=1, max_size=4), max_size=12), st.sampled_from([" ", "\n", ", ", "-"]))
def test_fewer_than_13_words_give_all_null_columns(tmp_path_factory: pytest.TempPathFactory, words: list[str], sep: str) -> None:
    text = sep.join(words)
    assert minhash.signatures([text]) == [None]
    url = str(tmp_path_factory.mktemp("short") / "short.minhash.parquet")
    minhash.write_minhash_parquet(url, "2023-06/0000/en_head.json.gz", [text])
    (row,) = pq.read_table(url).to_pylist()
    assert all(row[c] is None for c in minhash.COLUMNS)


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.text("abcdefghij", min_size=1, max_size=4), min_size=1, max_size=12, unique=True),
    st.integers(2, 6),
)
def test_duplicate_shingles_count_once(period: list[str], repeats: int) -> None:
    # A periodic text has len(period) distinct shingles however long it is.
    k = len(period)
    short = [period[i % k] for i in range(13 + k - 1)]
    long = [period[i % k] for i in range((13 + k) * repeats)]
    sig_short, sig_long = minhash.signatures_from_words([short, long])
    assert sig_short is not None and np.array_equal(sig_short, sig_long)
    assert len(set(minhash.shingle_hashes(long).tolist())) == k


@settings(max_examples=40, deadline=None)
@given(st.lists(words_st, min_size=1, max_size=6))
def test_batch_matches_datasketch_oracle(word_lists: list[list[str]]) -> None:
    for got, words in zip(minhash.signatures_from_words(word_lists), word_lists, strict=True):
        oracle = minhash.datasketch_signature(words)
        assert (got is None and oracle is None) or np.array_equal(got, oracle)


def test_band_bytes_layout() -> None:
    sig = np.arange(128, dtype=np.uint32) * np.uint32(0x01010101)
    bands = minhash.band_bytes(sig)
    assert [len(bands[c]) for c in minhash.COLUMNS] == [1, 5, 9, 14]
    assert [len(bands[c][0]) for c in minhash.COLUMNS] == [512, 100, 52, 36]
    assert bands["signature_sim0.8"][1] == b"".join(int(v).to_bytes(4, "big") for v in sig[13:26])
    with pytest.raises(ValueError, match="shape"):
        minhash.band_bytes(sig[:100])


# --- parquet writer --------------------------------------------------------------------------


def test_parquet_schema_row_groups_and_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    items: list = [rng.integers(0, 2**32, 128, dtype=np.uint32) if i % 3 else None for i in range(2500)]
    items[1] = E5
    items[2] = "too short"
    url = str(tmp_path / "en_head.minhash.parquet")
    stats = Stats()
    assert minhash.write_minhash_parquet(url, SHARDS["en"], items, stats) == 2500

    schema = pq.read_schema(url)
    sims = [f"signature_sim{t}" for t in ("1.0", "0.9", "0.8", "0.7")]
    assert schema.names == ["shard_id", "id", "id_int", *sims]
    assert [f.type for f in schema][:3] == [pa.string(), pa.string(), pa.uint64()]
    assert all(pa.types.is_list(f.type) and f.type.value_type == pa.binary() for f in list(schema)[3:])
    meta = pq.read_metadata(url)
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]

    rows = pq.read_table(url).to_pylist()
    assert rows[17]["id"] == "2023-06/0000/en_head.json.gz/17" and rows[17]["shard_id"] == SHARDS["en"]
    assert rows[0]["id_int"] == 13812950656272331291
    (e5,) = minhash.signatures([E5])
    for i, (row, item) in enumerate(zip(rows, items, strict=True)):
        sig = e5 if i == 1 else item if isinstance(item, np.ndarray) else None
        assert {c: row[c] for c in minhash.COLUMNS} == (
            minhash.band_bytes(sig) if sig is not None else {c: None for c in minhash.COLUMNS}
        )
    assert stats["minhash.null.missing"] == sum(item is None for item in items)
    assert stats["minhash.null.short"] == 1


def test_parquet_bytes_are_deterministic(tmp_path: Path) -> None:
    texts = [E5, "", E5 + " fourteen", "x " * 40]
    first, second = str(tmp_path / "a.parquet"), str(tmp_path / "b.parquet")
    minhash.write_minhash_parquet(first, SHARDS["en"], texts)
    minhash.write_minhash_parquet(second, SHARDS["en"], iter(texts))
    assert Path(first).read_bytes() == Path(second).read_bytes()
    assert set(pq.read_metadata(first).metadata) == {b"ARROW:schema"}  # no timestamps or hostnames


def test_empty_shard_writes_schema_only(tmp_path: Path) -> None:
    url = str(tmp_path / "empty.minhash.parquet")
    assert minhash.write_minhash_parquet(url, SHARDS["en"], []) == 0
    table = pq.read_table(url)
    assert table.num_rows == 0 and table.schema.names == minhash.SCHEMA.names


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    def items():
        yield from [E5] * 1500
        raise RuntimeError("reader died")

    url = str(tmp_path / "x.minhash.parquet")
    with pytest.raises(RuntimeError, match="reader died"):
        minhash.write_minhash_parquet(url, SHARDS["en"], items())
    assert os.listdir(tmp_path) == []


def test_lone_surrogates_are_counted_not_fatal(tmp_path: Path) -> None:
    text = E5 + " \ud800 fourteen"
    (sig,) = minhash.signatures([text])
    assert np.array_equal(sig, minhash.datasketch_signature(normalize(text).split()))
    stats = Stats()
    minhash.write_minhash_parquet(str(tmp_path / "s.parquet"), SHARDS["en"], [E5, text], stats)
    assert stats["minhash.lone_surrogates"] == 1
    assert pq.read_table(tmp_path / "s.parquet").column("signature_sim1.0").null_count == 0


def test_bad_signature_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="uint32"):
        minhash.write_minhash_parquet(str(tmp_path / "x.pq"), SHARDS["en"], [np.zeros(128, dtype=np.int64)])
    assert os.listdir(tmp_path) == []
    assert pa.types.is_uint64(minhash.SCHEMA.field("id_int").type)
