"""Property tests: the fast signal code against a literal, slow reading of docs/spec/quality_signals.md §2-3.

The oracle below follows the spec text step by step (stdlib ``re`` RW and line regexes, every
n-gram materialised, ``Counter.most_common``, explicit loops); the production code takes
shortcuts (bytes punctuation removal, ASCII fast paths, chained n-gram levels, prefix filters),
so agreement on arbitrary text is the evidence that the shortcuts are exact.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rpj_tasks import native as speedups
from rpj_tasks.annotate import minhash
from rpj_tasks.annotate.artifacts.load import ldnoobw_entries
from rpj_tasks.annotate.hashseed import SEED42
from rpj_tasks.annotate.signals import (
    SIGNAL_KEYS,
    DsirScorer,
    SignalArtifacts,
    call_with_seed42,
    compute,
    compute_signals,
    encode_record,
    make_record,
    models,
    prepare,
    repetition,
)
from rpj_tasks.annotate.signals import text as text_mod
from rpj_tasks.annotate.signals.models import DSIR_BUCKETS
from rpj_tasks.annotate.signals.repetition import repetition_scores

R = 8


def lit_normalize(text: str) -> str:
    text = text.translate(str.maketrans("", "", string.punctuation)).lower().strip()
    return unicodedata.normalize("NFD", re.sub(r"\s+", " ", text))


def ngrams(seq: list, n: int) -> list[tuple]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def ratio(a: float, b: float) -> float:
    return round(a / b, R)


def oracle(raw: str, stop: frozenset[str], bad: frozenset[str]) -> dict:
    """Signals 8-11 and 13-36 as the spec words them (doc-level values, line-level lists)."""
    n_text = lit_normalize(raw)
    nw = n_text.split()
    rw = re.findall(r"\w+|[^\w\s]+", raw)
    slices = [(m.start(), m.end()) for m in re.finditer(r"([^\n]*\n|[^\n]+$)", raw)]
    total = sum(len(w) for w in nw)
    out: dict = {}
    braces = raw.count("{") + raw.count("}")
    out["rps_doc_curly_bracket"] = ratio(braces, len(raw)) if raw and braces else 0.0
    dirty = 0
    for k in {1 + e.count(" ") for e in bad}:
        grams = nw if k == 1 else [" ".join(g) for g in ngrams(nw, k)]
        dirty += sum(1 for g in grams if g in bad)
    out["rps_doc_ldnoobw_words"] = float(dirty) if n_text else 0.0
    out["rps_doc_lorem_ipsum"] = (
        ratio(len(re.findall("lorem ipsum", n_text, re.IGNORECASE)), len(n_text)) if "lorem ipsum" in n_text else 0.0
    )
    out["rps_doc_stop_word_fraction"] = ratio(sum(t in stop for t in rw), len(rw)) if nw else 0.0
    for n in (10, 5, 6, 7, 8, 9):
        score = 0.0
        if len(nw) >= n:
            grams = ngrams(nw, n)
            count = Counter(grams)
            marked = [False] * len(nw)
            for i, g in enumerate(grams):
                if count[g] > 1:
                    for j in range(i, i + n):
                        marked[j] = True
            chars = sum(len(w) for w, m in zip(nw, marked) if m)
            score = ratio(chars, total) if total else 0.0
        out[f"rps_doc_frac_chars_dupe_{n}grams"] = score
    for n in (2, 3, 4):
        common = Counter(ngrams(nw, n)).most_common(1)
        score = 0.0
        if common and common[0][1] > 1:
            gram, count = common[0]
            score = round(sum(len(w) for w in gram) * count / total, R)
        out[f"rps_doc_frac_chars_top_{n}gram"] = score
    out["rps_doc_frac_all_caps_words"] = ratio(sum(t.isupper() for t in rw), len(rw)) if rw else None
    ell = sum(raw[a:b].rstrip().endswith(("...", "\u2026")) for a, b in slices)
    out["rps_doc_frac_lines_end_with_ellipsis"] = ratio(ell, len(slices)) if slices else None
    alpha = sum(re.search("[a-zA-Z]", t) is not None for t in rw)
    out["rps_doc_frac_no_alph_words"] = round(1.0 - alpha / len(rw), R) if rw else None
    out["rps_doc_frac_unique_words"] = ratio(len(set(nw)), len(nw)) if nw else None
    out["rps_doc_mean_word_length"] = ratio(total, len(nw)) if nw else None
    out["rps_doc_num_sentences"] = float(len(re.findall(r"\b[^.!?]+[.!?]*", raw)))
    symbols = raw.count("#") + raw.count("...") + raw.count("\u2026")
    out["rps_doc_symbol_to_word_ratio"] = ratio(symbols, len(rw)) if rw else None
    entropy = None
    if nw:
        entropy = 0.0
        for c in Counter(nw).values():
            entropy = entropy + (-c / len(nw) * math.log(c / len(nw)))
        entropy = round(entropy, R)
    out["rps_doc_unigram_entropy"] = entropy
    out["rps_doc_word_count"] = len(nw)
    lines = []
    for a, b in slices:
        line, norm = raw[a:b], lit_normalize(raw[a:b])
        lines.append((a, b, line, norm))
    bullets = ("\u2022", "\u2023", "\u25b6", "\u25c0", "\u25e6", "\u25a0", "\u25a1", "\u25aa", "\u25ab", "\u2013")
    out["rps_lines_ending_with_terminal_punctution_mark"] = [
        (a, b, float(line.rstrip().endswith((".", "!", "?", "\u201d")))) for a, b, line, _ in lines
    ]
    out["rps_lines_javascript_counts"] = [
        (a, b, float(sum(w == "javascript" for w in norm.split())) if norm else 0.0) for a, b, _, norm in lines
    ]
    out["rps_lines_num_words"] = [(a, b, len(norm.split())) for a, b, _, norm in lines]
    out["rps_lines_numerical_chars_fraction"] = [
        (a, b, ratio(sum(c.isnumeric() for c in norm), len(norm)) if norm else 0.0) for a, b, _, norm in lines
    ]
    out["rps_lines_start_with_bulletpoint"] = (
        [(a, b, float(line.lstrip().startswith(bullets))) for a, b, line, _ in lines] if lines else [(0, 0, None)]
    )
    out["rps_lines_uppercase_letter_fraction"] = [
        (a, b, ratio(sum(c.isupper() for c in line), len(line))) for a, b, line, _ in lines
    ]
    return out


@pytest.fixture(scope="module")
def en(shared_data: Path) -> SignalArtifacts:
    stop = frozenset(json.loads((shared_data / "stopwords" / "en.json").read_text()))
    bad = ldnoobw_entries((shared_data / "ldnoobw" / "en.txt").read_text(encoding="utf-8"))
    return SignalArtifacts(lang="en", stop_words=stop, ldnoobw=bad | {"two girls one cup", "a a"})


PIECES = [
    "a",
    "A",
    "the",
    "The",
    "THE",
    "cat",
    "Cat",
    "lorem",
    "ipsum",
    "Lorem,",
    "javascript",
    "JavaScript,",
    "javascript:void(0)",
    "nude",
    "strip",
    "club",
    "two",
    "girls",
    "one",
    "cup",
    "...",
    "\u2026",
    "#",
    "{x}",
    "3\u00bd",
    "\u00b2",
    "\u4e09",
    "caf\u00e9",
    "cafe\u0301",
    "\u00dcber",
    "\u00c0\u00c9\u00ce",
    "\u03a3\u039f\u03a3",
    "\u0131psum",
    "\u017f",
    "\u212a",
    "\u037e",
    "\u2260",
    "\u1fef",
    "\u201cq\u201d",
    "\u2022",
    "\u2013",
    "\u25aa",
    "x_y",
    "42",
    "A1",
    "e.g.",
    "z.B.",
    "und?",
    "!?",
    "\U0001f600",
    "\ud800",
    "\udfff",
    "\u0301",
    "\u2028",
    "\x1c",
    "\r",
    "\t",
    "\x0c",
    " ",
    "  ",
    "\n",
    "\n",
    "\n\n",
    ". ",
    "! ",
    "?\n",
]
pieces_text = st.lists(st.sampled_from(PIECES), max_size=80).map(
    lambda parts: "".join(p if p.isspace() or not p.strip() else p + " " for p in parts)
)
doc_text = st.one_of(pieces_text, st.text(max_size=200), st.text(alphabet=string.printable, max_size=200))


def check_against_oracle(raw: str, arts: SignalArtifacts) -> dict:
    signals = compute_signals({"raw_content": raw}, arts)
    expected = oracle(raw, arts.stop_words, arts.ldnoobw)
    for key, want in expected.items():
        got = signals[key]
        if key.startswith("rps_lines_"):
            assert got == want, key
            assert [type(t[2]) for t in got] == [type(t[2]) for t in want], key
        else:
            assert got == [(0, len(raw), want)], key
            assert type(got[0][2]) is type(want), key
    return signals


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=doc_text)
@example(raw="")
@example(raw=" \t\n \u2028\xa0")
@example(raw="!!! ... ?!. \u2026 ###")
@example(raw="\ud800 lone \udfff surrogates\n\U0001f600\U0001f469\u200d\U0001f4bb emoji")
@example(raw="a a a a a a a a a a a a\na a a a a a a a a a a a")
def test_signals_equal_literal_spec(en: SignalArtifacts, raw: str) -> None:
    check_against_oracle(raw, en)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=doc_text, domain=st.one_of(st.none(), st.text(max_size=20)), idx=st.integers(0, 10**7))
def test_record_shape_spans_and_types(en: SignalArtifacts, raw: str, domain: str | None, idx: int) -> None:
    doc = {"raw_content": raw, "source_domain": domain, "url": raw[:30], "length": len(raw), "bucket": "middle"}
    record = make_record(doc, "2023-06/0000/en_head.json.gz", idx, en)
    signals = record["quality_signals"]
    assert tuple(signals) == SIGNAL_KEYS
    slices = [(m.start(), m.end()) for m in re.finditer(r"([^\n]*\n|[^\n]+$)", raw)]
    for key, value in signals.items():
        if key.startswith("rps_lines_") and (slices or key != "rps_lines_start_with_bulletpoint"):
            assert [(a, b) for a, b, _ in value] == slices, key  # one triple per line, covering RAW
        else:
            assert [(a, b) for a, b, _ in value] == [(0, len(raw) if key != "rps_lines_start_with_bulletpoint" else 0)]
        for _, _, score in value:
            if key in ("rps_doc_word_count", "rps_lines_num_words"):
                assert type(score) is int
            elif key == "rps_doc_ut1_blacklist" or key.startswith(
                ("rps_doc_ml_", "rps_doc_books", "rps_doc_open", "rps_doc_wikipedia")
            ):
                assert score is None
            else:
                assert score is None or type(score) is float, key
    decoded = json.loads(encode_record(record))
    assert decoded["id"].endswith(f"/{idx}") and list(decoded["quality_signals"]) == list(SIGNAL_KEYS)


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.sampled_from(["a", "b", "c", "dd", "e\u0301"]), max_size=60))
def test_repetition_engines_agree(words: list[str]) -> None:
    raw = " ".join(words)
    expected = oracle(raw, frozenset(), frozenset())
    engines = [{"use_numpy": False}, {"use_numpy": True}, {"use_native": True}]
    for engine in engines if speedups.native is not None else engines[:2]:
        top, dupe = repetition_scores(prepare(raw).words, **engine)
        assert {f"rps_doc_frac_chars_top_{n}gram": v for n, v in top.items()} | {
            f"rps_doc_frac_chars_dupe_{n}grams": v for n, v in dupe.items()
        } == {k: v for k, v in expected.items() if "frac_chars" in k}


def test_prepare_shares_views_with_minhash() -> None:
    text = prepare("Hello, World!\nCaf\u00e9 caf\u00e9")
    assert text.words == lit_normalize(text.raw).split() and text.norm == lit_normalize(text.raw)
    assert compute_signals({"raw_content": text.raw}, SignalArtifacts(lang="xx"), text) == compute_signals(
        {"raw_content": text.raw}, SignalArtifacts(lang="xx")
    )


def test_thousands_of_lines(en: SignalArtifacts) -> None:
    rng = random.Random(3)
    lines = [" ".join(rng.choices(PIECES[:40], k=rng.randint(0, 12))) for _ in range(4000)]
    raw = "\n".join(lines) + "\n"
    signals = check_against_oracle(raw, en)
    assert len(signals["rps_lines_num_words"]) == 4000


def zipf_line(size: int, seed: int = 5) -> str:
    """One line (no ``\\n``) of >= ``size`` chars: 40-word sentences from a 3000-word vocabulary,
    30% of them the same sentence (heavy n-gram repetition)."""
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(3000)]
    sentence = " ".join(rng.choices(vocab, k=40))
    parts, total = [], 0
    while total < size:
        piece = sentence if rng.random() < 0.3 else " ".join(rng.choices(vocab, k=40))
        parts.append(piece)
        total += len(piece) + 1
    return " ".join(parts)


def spy(monkeypatch: pytest.MonkeyPatch, module: object, name: str, calls: Counter) -> None:
    """Replace ``module.name`` by a wrapper that counts its calls in ``calls[name]``."""
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        calls[name] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def dsir_native_and_python(raw: str) -> dict:
    """Runs in a PYTHONHASHSEED=42 worker: DSIR features and signals of ``raw`` with the compiled
    counter and with :meth:`DsirScorer.features_python` (synthetic counts; only equality matters)."""
    rng = np.random.default_rng(0)

    def pair(lam: float) -> tuple[np.ndarray, np.ndarray]:
        return rng.integers(1, 1000, DSIR_BUCKETS, dtype=np.int64), np.asarray(lam)

    source, targets = pair(900.0), {"wikipedia": pair(500.0), "books": pair(610.0)}
    compiled = DsirScorer(source, targets, SEED42)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(models, "native", None)
        python = DsirScorer(source, targets, SEED42)
    tokens = prepare(raw).tokens
    features = compiled.features(tokens)
    return {
        "native_flags": (compiled._native, python._native),
        "features_equal": bool(np.array_equal(features, compiled.features_python(tokens))),
        "features_total": int(features.sum()),
        "tokens": len(tokens),
        "signals": [
            {
                k: v
                for k, v in compute_signals({"raw_content": raw}, SignalArtifacts(lang="en", dsir=s)).items()
                if "importance" in k
            }
            for s in (compiled, python)
        ],
    }


def test_single_5mb_line(en: SignalArtifacts, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 5 MB line of Zipf-like words with heavy repetition: every signal equals its pure-Python twin's,
    the literal oracle agrees on a 250 KB line built the same way, and both MinHash paths agree."""
    raw = zipf_line(5_000_000)
    assert "\n" not in raw and len(raw) >= 5_000_000
    calls: Counter = Counter()
    for module, name in [
        (compute, "_token_stats_python"),
        (compute, "_line_columns_python"),
        (compute, "_line_columns_native"),
        (repetition, "_chain_native"),
        (repetition, "_chain_numpy"),
        (repetition, "_chain_python"),
    ]:
        spy(monkeypatch, module, name, calls)
    signals = compute_signals({"raw_content": raw}, en)
    assert len(signals["rps_lines_num_words"]) == 1 and signals["rps_doc_word_count"][0][2] > 700_000
    assert signals["rps_doc_frac_chars_top_2gram"][0][2] > 0 and signals["rps_doc_frac_chars_dupe_10grams"][0][2] > 0
    doc = prepare(raw)
    words = doc.words

    # the same document on the pure-Python twins of every compiled loop
    if speedups.native is None:
        assert calls["_line_columns_python"] == 1 and calls["_chain_native"] == 0
    else:
        assert calls == Counter({"_line_columns_native": 1, "_chain_native": 1})
        assert text_mod.raw_words is speedups.native.word_punct
        calls.clear()
        for module in (compute, text_mod, repetition, models, minhash):
            assert module.native is speedups.native
            monkeypatch.setattr(module, "native", None)
        spy(monkeypatch, text_mod, "raw_words_python", calls)
        monkeypatch.setattr(text_mod, "raw_words", text_mod.raw_words_python)
        # the pure-Python n-gram chain (numpy is the default above NUMPY_MIN_WORDS without C)
        monkeypatch.setattr(repetition, "NUMPY_MIN_WORDS", math.inf)
        python_signals = compute_signals({"raw_content": raw}, en)
        assert calls == Counter({"raw_words_python": 1, "_token_stats_python": 1, "_line_columns_python": 1, "_chain_python": 1})
        assert python_signals == signals
        # RW tokens in full (one token more or less would not move an 8-place ratio of this text)
        assert prepare(raw) == doc and calls["raw_words_python"] == 2
        monkeypatch.undo()
        assert compute.native is speedups.native and text_mod.raw_words is speedups.native.word_punct
    # the numpy n-gram chain on all the words
    top, dupe = repetition_scores(words, use_numpy=True, use_native=False)
    assert {f"rps_doc_frac_chars_top_{n}gram": [(0, len(raw), v)] for n, v in top.items()} | {
        f"rps_doc_frac_chars_dupe_{n}grams": [(0, len(raw), v)] for n, v in dupe.items()
    } == {k: v for k, v in signals.items() if "frac_chars" in k}

    # DSIR: the compiled counter needs builtin hash with PYTHONHASHSEED=42, so a seed-42 worker
    if speedups.native is not None:
        dsir = call_with_seed42(dsir_native_and_python, raw)
        assert dsir["native_flags"] == (True, False) and dsir["features_equal"]
        assert dsir["features_total"] == 2 * dsir["tokens"] - 1 and dsir["tokens"] > 700_000
        assert dsir["signals"][0] == dsir["signals"][1]
        assert dsir["signals"][0]["rps_doc_wikipedia_importance"][0][2] is not None

    # MinHash: the compiled loop and the numpy path
    numpy_sigs = minhash.signatures_from_words_numpy([words])
    assert numpy_sigs[0] is not None and numpy_sigs[0].shape == (minhash.NUM_PERM,)
    if speedups.native is not None:
        native_sigs = minhash.signatures_from_words_native([words])
        assert native_sigs[0] is not None and np.array_equal(native_sigs[0], numpy_sigs[0])
        assert native_sigs[0].dtype == numpy_sigs[0].dtype == np.uint32

    # the literal oracle on a shorter line built the same way
    short = zipf_line(250_000)
    assert "\n" not in short and len(short) >= 250_000
    short_signals = check_against_oracle(short, en)
    assert len(short_signals["rps_lines_num_words"]) == 1 and short_signals["rps_doc_word_count"][0][2] > 35_000
