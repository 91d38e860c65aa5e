"""The compiled inner loops (rpj_tasks/native/_speedups.c) give exactly what their pure-Python twins give."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rpj_tasks import native as speedups
from rpj_tasks.annotate import minhash
from rpj_tasks.annotate.signals.repetition import repetition_scores
from rpj_tasks.annotate.signals.text import raw_words_python

REPO = Path(__file__).resolve().parents[2]
native = speedups.native
WORD_PUNCT = re.compile(r"\w+|[^\w\s]+")
# text with every kind of character the scanners branch on: ASCII, \w and \s outside ASCII,
# combining marks, digits of other scripts, emoji, lone surrogates
TEXT = st.text(
    st.one_of(
        st.sampled_from(list(" \t\n\r\x0b\x0c\x1c\x1f\x85\xa0\u2028\u3000_.,;!?'\"-")),
        st.characters(codec=None),
        st.sampled_from(["\u00bd", "\u0301", "\u0663", "\U0001f600", "\ud800", "\udfff", "\u00e9", "\u1680"]),
    ),
    max_size=200,
)


def test_extension_is_built() -> None:
    """The install builds the extension (uv sync); a missing compiler must not pass unnoticed here."""
    assert os.environ.get("RPJ_PURE_PYTHON", "") in ("", "0"), "run the suite without RPJ_PURE_PYTHON"
    assert native is not None, "rpj_tasks.native._speedups is not built: run `uv sync` with a C compiler"


needs_native = pytest.mark.skipif(native is None, reason="covered by test_extension_is_built")


# ---------------------------------------------------------------- RW tokenizer


@needs_native
def test_word_punct_every_code_point() -> None:
    """Every code point (surrogates included) alone, after a letter, and between spaces."""
    for start in range(0, 0x110000, 0x1000):
        chars = "".join(map(chr, range(start, start + 0x1000)))
        for text in (chars, "a".join(chars), " ".join(chars)):
            assert native.word_punct(text) == WORD_PUNCT.findall(text), hex(start)


@needs_native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=TEXT)
@example(text="3\u00bd cats_and dogs!! -- \u201cquoted\u201d\u2026")
@example(text="")
def test_word_punct_equals_re_and_python_twin(text: str) -> None:
    assert native.word_punct(text) == WORD_PUNCT.findall(text) == raw_words_python(text)


# ---------------------------------------------------------------- SHA-1 and MinHash


@needs_native
def test_sha1_prefix_all_padding_lengths() -> None:
    rng = np.random.default_rng(5)
    for length in [*range(0, 300), 1000, 4096, 100_000]:
        data = rng.integers(0, 256, length, dtype=np.uint8).tobytes()
        expected = int.from_bytes(hashlib.sha1(data).digest()[:4], "little")
        assert native.sha1_prefix32(data) == expected, length
        assert native.sha1_prefix32(data, True) == expected, length


def supported_simd() -> list[str]:
    """The SHA-1 lane variants this CPU runs (``generic`` always; ``avx2``, ``avx512f`` on x86)."""
    current = native.simd()
    names = []
    for name in ("generic", "avx2", "avx512f"):
        try:
            names.append(native.simd(name))
        except ValueError as exc:
            assert "not supported by this CPU" in str(exc) or "unknown" in str(exc)
    native.simd(current)
    return names


@needs_native
def test_simd_variants_give_the_same_hashes() -> None:
    """Every variant this CPU supports: all padding lengths, and MinHash over shingles of mixed block
    counts (lanes that finish early keep their state), equal to hashlib / the numpy path."""
    names = supported_simd()
    assert names[0] == "generic" and native.simd() == names[-1]  # the widest supported is the default
    with pytest.raises(ValueError, match="SIMD variant 'neon' is unknown"):
        native.simd("neon")
    rng = np.random.default_rng(11)
    data = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (*range(0, 140), 1000)]
    expected = [int.from_bytes(hashlib.sha1(d).digest()[:4], "little") for d in data]
    vocab = ["a", "bb", "ccc" * 9, "d" * 60, "caf\u00e9", "\U0001f600"]
    docs = [[vocab[int(i)] for i in rng.integers(0, len(vocab), n)] for n in (13, 14, 29, 40, 333)]
    numpy_sigs = minhash.signatures_from_words_numpy(docs)
    default = native.simd()
    try:
        for name in names:
            assert native.simd(name) == name
            assert [native.sha1_prefix32(d, True) for d in data] == expected, name
            got = minhash.signatures_from_words_native(docs)
            assert [g.tolist() for g in got] == [v.tolist() for v in numpy_sigs], name
    finally:
        native.simd(default)


WORDS = st.lists(
    st.one_of(
        st.sampled_from(["the", "a", "caf\u00e9", "x" * 70, "\U0001f600", "\ud800z", "e\u0301"]),
        st.text(st.characters(codec=None, exclude_categories=["Zs", "Zl", "Zp", "Cc"]), min_size=1, max_size=30).filter(
            lambda w: not any(c.isspace() for c in w)
        ),
    ),
    max_size=80,
)


@needs_native
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=WORDS)
@example(words=["w"] * 12)
@example(words=[f"w{i}" for i in range(13)])
@example(words=["y" * 200] * 20)  # shingles of several SHA-1 blocks
def test_minhash_native_equals_numpy_and_datasketch(words: list[str]) -> None:
    (got,) = minhash.signatures_from_words_native([words])
    (vectorised,) = minhash.signatures_from_words_numpy([words])
    oracle = minhash.datasketch_signature(words)
    if len(words) < minhash.SHINGLE_SIZE:
        assert got is None and vectorised is None and oracle is None
    else:
        assert got.dtype == np.uint32 and got.shape == (minhash.NUM_PERM,)
        assert got.tolist() == vectorised.tolist() == oracle.tolist()


@needs_native
def test_minhash_many_lanes_and_shared_data_vectors(shared_data: Path) -> None:
    """Documents of the reference test vectors (every band equal) and a long document (many lanes)."""
    from rpj_tasks.annotate.signals.text import normalize

    tv = shared_data / "testvectors"
    for lang in ("en", "de"):
        docs = [json.loads(line) for line in (tv / f"docs_{lang}.jsonl").read_text(encoding="utf-8").splitlines()]
        rows = [json.loads(line) for line in (tv / f"expected_{lang}.minhash.jsonl").read_text().splitlines()]
        words = [normalize(d["raw_content"]).split() for d in docs]
        for sig, row, w in zip(minhash.signatures_from_words_native(words), rows, words, strict=True):
            if sig is None:
                assert len(w) < minhash.SHINGLE_SIZE
                continue
            bands = minhash.band_bytes(sig)
            for column, expected in row.items():
                if column.startswith("signature_sim"):
                    assert [b.hex() for b in bands[column]] == expected, (lang, column)
    rng = np.random.default_rng(9)
    long_doc = [f"w{int(i)}" for i in rng.integers(0, 50, 5000)]
    assert (minhash.signatures_from_words_native([long_doc])[0] == minhash.signatures_from_words_numpy([long_doc])[0]).all()


@needs_native
def test_minhash_rejects_bad_tables() -> None:
    with pytest.raises(ValueError):
        native.minhash(b"a b", minhash._A, minhash._B[:3], 1)
    with pytest.raises(ValueError):
        native.minhash(b"a b", b"", b"", 1)
    assert native.minhash(b"", minhash._A, minhash._B, 1) is None


# ---------------------------------------------------------------- DSIR counts


def python_counts(tokens: list[str]) -> np.ndarray:
    counts = np.zeros(10_000, dtype=np.int64)
    for item in [*tokens, *zip(tokens, tokens[1:])]:
        counts[abs(hash(item)) % 10_000] += 1
    return counts


@needs_native
@settings(max_examples=200, deadline=None)
@given(tokens=st.lists(st.text(max_size=8), max_size=40))
@example(tokens=["the", "cat", ".", "The"])
def test_dsir_counts_equal_builtin_hash_of_tokens_and_tuples(tokens: list[str]) -> None:
    """Any process: the C pair hash is CPython's tuple hash of the two str hashes."""
    out = np.zeros(10_000, dtype=np.int64)
    native.dsir_counts(tokens, out)
    assert (out == python_counts(tokens)).all()


@needs_native
def test_dsir_counts_checks_arguments() -> None:
    with pytest.raises(TypeError):
        native.dsir_counts(["a", 1], np.zeros(10, np.int64))
    with pytest.raises(TypeError):
        native.dsir_counts(("a",), np.zeros(10, np.int64))
    with pytest.raises((ValueError, BufferError, TypeError)):
        native.dsir_counts(["a"], np.zeros(10, np.int64)[::2])


# ---------------------------------------------------------------- repetition


@needs_native
@settings(max_examples=400, deadline=None)
@given(
    words=st.lists(st.sampled_from(["a", "b", "c", "dd", "e\u0301", "\U0001f600", "\ud800"]), max_size=120),
    period=st.integers(0, 12),
)
def test_repetition_native_equals_python_and_numpy(words: list[str], period: int) -> None:
    if period:
        words = (words[:period] * (len(words) // max(1, period) + 1))[: len(words)]
    expected = repetition_scores(words, use_numpy=False)
    assert repetition_scores(words, use_native=True) == expected == repetition_scores(words, use_numpy=True)


@needs_native
def test_repetition_long_documents() -> None:
    rng = np.random.default_rng(3)
    for vocab, size in ((3, 20_000), (500, 20_000), (20_000, 50_000)):
        words = [f"w{int(i)}" for i in rng.integers(0, vocab, size)]
        assert repetition_scores(words, use_native=True) == repetition_scores(words, use_numpy=True)
    # distinct str objects with equal text are one word
    words = ["".join(["a", "b"]) for _ in range(10)]
    assert repetition_scores(words, use_native=True) == repetition_scores(words, use_numpy=False)


# ---------------------------------------------------------------- the pure-Python path as a whole

PURE_SCRIPT = """
import json, sys
from pathlib import Path
from rpj_tasks import native as speedups
from rpj_tasks.annotate import minhash
from rpj_tasks.annotate.signals import SignalArtifacts, encode_record, make_record
from rpj_tasks.annotate.artifacts.load import ldnoobw_entries
from rpj_tasks.annotate.signals.text import raw_words, raw_words_python, normalize
assert speedups.native is None and raw_words is raw_words_python
assert minhash.signatures_from_words is minhash.signatures_from_words_numpy
shared, out = Path(sys.argv[1]), []
for lang, key in (("en", "2023-06/0000/en_head.json.gz"), ("de", "2023-06/0000/de_middle.json.gz")):
    stop = frozenset(json.loads((shared / "stopwords" / f"{lang}.json").read_text()))
    bad = ldnoobw_entries((shared / "ldnoobw" / f"{lang}.txt").read_text(encoding="utf-8"))
    art = SignalArtifacts(lang=lang, stop_words=stop, ldnoobw=bad)
    tv = shared / "testvectors"
    docs = [json.loads(l) for l in (tv / f"docs_{lang}.jsonl").read_text(encoding="utf-8").splitlines()]
    expected = (tv / f"expected_{lang}.signals.jsonl").read_bytes().splitlines()
    for idx, (doc, line) in enumerate(zip(docs, expected, strict=True)):
        assert encode_record(make_record(doc, key, idx, art)) == line, (lang, idx)
    out.append(len(docs))
print(json.dumps(out))
"""


def test_pure_python_path_gives_the_reference_bytes(shared_data: Path) -> None:
    """RPJ_PURE_PYTHON=1 (what a platform without a compiler runs) still gives the reference lines."""
    env = {**os.environ, "RPJ_PURE_PYTHON": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PURE_SCRIPT, str(shared_data)], env=env, cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(n > 0 for n in json.loads(done.stdout))


# ---------------------------------------------------------------- token and line statistics


@needs_native
def test_token_stats_every_code_point() -> None:
    """isupper / ASCII-letter / stop-word counts per single character, pairs and with a cased prefix."""
    from rpj_tasks.annotate.signals.compute import _token_stats_python

    chars = [chr(c) for c in range(0x110000)]
    stop = frozenset(chars[::97])
    for tokens in (chars, [a + b for a, b in zip(chars, chars[1:])], ["A" + c for c in chars], ["\u01c5" + c for c in chars]):
        assert native.token_stats(tokens, stop) == _token_stats_python(tokens, stop)
    assert native.token_stats([], frozenset()) == (0, 0, 0)
    with pytest.raises(TypeError):
        native.token_stats(["a"], ["a"])


LINE_CHARS = st.one_of(
    st.sampled_from(
        list("aAzZ09 .!?:;,'\"-_\t\x0b\x0c\r\x1c")
        + [
            "javascript",
            "JavaScript,",
            "java script",
            "\u201d",
            "\u2026",
            "\u2022",
            "\u2013",
            "\u25aa",
            "\xa0",
            "\u2028",
            "\u00bd",
            "\u0663",
            "\u00e9",
            "e\u0301",
            "\u0301\u0316",
            "\u00c9",
            "\u03a3",
            "\u0130",
            "\u212b",
            "\uac00",
            "\U0001f600",
            "\ud800",
            "\u3000",
            "\u01c5",
        ]
    ),
    st.characters(codec=None),
)


def line_columns(raw: str) -> tuple[tuple, tuple]:
    from rpj_tasks.annotate.signals.compute import _line_columns_native, _line_columns_python
    from rpj_tasks.annotate.signals.text import prepare

    text = prepare(raw)
    if not text.lines:  # handled before the columns are built
        return (), ()
    return tuple(map(list, _line_columns_native(text))), tuple(map(list, _line_columns_python(text)))


@needs_native
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(st.lists(LINE_CHARS, max_size=30).map("".join), min_size=1, max_size=8))
@example(lines=["JavaScript, javascript javascript:void(0) JAVASCRIPT", "\u2022 item", "  Done.\u201d  "])
def test_line_columns_native_equal_python(lines: list[str]) -> None:
    native_columns, python_columns = line_columns("\n".join(lines))
    assert native_columns == python_columns
    assert [list(map(type, c)) for c in native_columns] == [list(map(type, c)) for c in python_columns]


@needs_native
def test_line_columns_every_bmp_code_point() -> None:
    """Every BMP character inside words, alone, upper-cased neighbours, next to digits and punctuation."""
    for start in range(0, 0x10000, 0x400):
        chars = [chr(c) for c in range(start, start + 0x400)]
        raw = "\n".join(f"Ab{c}9 {c}. x{c}javascript {c}" for c in chars)
        native_columns, python_columns = line_columns(raw)
        assert native_columns == python_columns, hex(start)


def test_stable_bmp_is_cached_on_disk(tmp_path, monkeypatch) -> None:
    """The bitmap the line counts use is stored once per interpreter and Unicode version; a stored
    copy equals the computed one, and a damaged file is recomputed and rewritten."""
    from rpj_tasks.annotate.signals import text as text_module

    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path))
    computed = text_module.stable_bmp_computed()
    text_module.stable_bmp.cache_clear()
    try:
        assert text_module.stable_bmp() == computed
        path = Path(text_module.stable_bmp_path())
        assert path.read_bytes()[: len(computed)] == computed and path.stat().st_size == len(computed) + 32
        text_module.stable_bmp.cache_clear()
        monkeypatch.setattr(text_module, "stable_bmp_computed", lambda: pytest.fail("recomputed"))
        assert text_module.stable_bmp() == computed  # read back, not recomputed
        path.write_bytes(b"\xff" * (len(computed) + 32))  # damaged: recomputed
        monkeypatch.setattr(text_module, "stable_bmp_computed", lambda: computed)
        text_module.stable_bmp.cache_clear()
        assert text_module.stable_bmp() == computed
        assert path.read_bytes()[: len(computed)] == computed
    finally:
        text_module.stable_bmp.cache_clear()
