"""The 45 RPv2 quality signals of a document and its signals record (``docs/spec/quality_signals.md`` §3,
``docs/spec/rpv2_format.md`` §3-4), value for value and key for key as the reference writes them.

Scores are rounded with Python ``round(x, 8)`` exactly where the reference rounds; counts it stores
as floats stay floats.  The record is encoded with ``msgspec.json`` (compact, raw UTF-8, msgspec's
shortest float form), which is the reference writer's text.
"""

from __future__ import annotations

import functools
import math
import operator
import re
import string
from collections import Counter
from collections.abc import Mapping
from itertools import compress, repeat
from typing import TYPE_CHECKING, Any

import msgspec

from rpj_tasks.annotate.signals.models import DSIR_TARGETS, classifier_score, classifier_text
from rpj_tasks.annotate.signals.repetition import DUPE_NS, TOP_NS, repetition_scores
from rpj_tasks.annotate.signals.text import DocText, normalize, prepare, stable_bmp
from rpj_tasks.core.ids import doc_id, id_int, snapshot_id
from rpj_tasks.core.schema import LINE_SIGNAL_KEYS as _LINE_KEYS
from rpj_tasks.core.schema import SIGNAL_KEYS
from rpj_tasks.native import native

if TYPE_CHECKING:  # the artifacts module imports the signal modules
    from rpj_tasks.annotate.artifacts.load import SignalArtifacts

PRECISION = 8
CCNET_FIELDS = ("length", "original_length", "nlines", "original_nlines", "language_score", "perplexity")
BUCKET_VALUES = {"head": 0.0, "middle": 1.0, "tail": 2.0}
METADATA_FIELDS = ("cc_segment", "url", "source_domain", "language")
# SIGNAL_KEYS (the 45 keys in emitted order) and the six line keys are rpj_tasks.core.schema's;
# compute_signals returns them in that order (tests/test_schema.py checks the names built here).

_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)
_SENTENCE = re.compile(r"\b[^.!?]+[.!?]*")
_ASCII_LETTER = re.compile(r"[a-zA-Z]")
_TERMINAL = (".", "!", "?", "\u201d")
_ELLIPSIS = ("...", "\u2026")
_BULLETS = ("\u2022", "\u2023", "\u25b6", "\u25c0", "\u25e6", "\u25a0", "\u25a1", "\u25aa", "\u25ab", "\u2013")
_ASCII_UPPER = bytes(range(ord("A"), ord("Z") + 1))
_ASCII_DIGITS = b"0123456789"
_ASCII_BYTES = bytes(range(128))
# every byte except ASCII letters and the space that separates joined tokens
_NOT_LETTER_OR_SPACE = bytes(b for b in range(256) if not (chr(b).isascii() and chr(b).isalpha()) and b != 32)
_PUNCT_BYTES = string.punctuation.encode("ascii")

Score = float | int | None
Signal = list[tuple[int, int, Score]]


class BadDocument(ValueError):
    """A document lacks a string ``raw_content``; its line gets :func:`null_record`."""


def compute_signals(doc: Mapping[str, Any], artifacts: SignalArtifacts, text: DocText | None = None) -> dict[str, Signal]:
    """The 45-key ``quality_signals`` dict of a CCNet document, in the reference key order.

    ``text`` may carry the document's precomputed views (shared with MinHash); it is built from
    ``doc["raw_content"]`` otherwise.  A CCNet field that is missing or not a number gives a null
    ``ccnet_*`` score (the reference rejected such lines; here every line keeps its record).
    """
    raw = doc.get("raw_content") if isinstance(doc, Mapping) else None
    if not isinstance(raw, str):
        raise BadDocument("not a JSON object with a string raw_content")
    text = text if text is not None and text.raw is raw else prepare(raw)
    span = len(raw)

    def doc_level(score: Score) -> Signal:
        return [(0, span, score)]

    signals: dict[str, Signal] = {f"ccnet_{name}": doc_level(_as_float(doc.get(name))) for name in CCNET_FIELDS}
    bucket = doc.get("bucket")
    signals["ccnet_bucket"] = doc_level(BUCKET_VALUES.get(bucket) if isinstance(bucket, str) else None)
    word_counts = Counter(text.words)
    tokens = _token_stats(text.tokens, artifacts.stop_words)
    scores = {
        **_content(text, word_counts, artifacts, doc.get("source_domain"), tokens[0]),
        **_repetition(text),
        **_natural_language(text, word_counts, tokens[1], tokens[2]),
    }
    signals.update((key, doc_level(value)) for key, value in scores.items())
    signals.update(_lines(text))
    signals.update((key, doc_level(value)) for key, value in _models(text, artifacts).items())
    return {key: signals[key] for key in SIGNAL_KEYS}


def _as_float(value: Any) -> float | None:
    """``float(value)`` for a JSON number; ``None`` for anything else (or an int beyond float range)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return None
    return None


def _ratio(count: int, total: int) -> float:
    return round(count / total, PRECISION)


def _token_stats_python(tokens: list[str], stop_words: frozenset[str]) -> tuple[int, int, int]:
    """RW tokens that are stop words, that are ``isupper()``, and that contain ``[a-zA-Z]``."""
    return sum(map(stop_words.__contains__, tokens)), sum(map(str.isupper, tokens)), _tokens_with_ascii_letter(tokens)


def _token_stats(tokens: list[str], stop_words: frozenset[str]) -> tuple[int, int, int]:
    if native is not None and type(tokens) is list and isinstance(stop_words, (set, frozenset)):
        return native.token_stats(tokens, stop_words)
    return _token_stats_python(tokens, stop_words)


def _content(text: DocText, counts: Counter[str], artifacts: SignalArtifacts, domain: Any, stop_tokens: int) -> dict[str, Score]:
    raw, norm, words, tokens = text.raw, text.norm, text.words, text.tokens
    braces = raw.count("{") + raw.count("}")
    lorem = 0.0
    if "lorem ipsum" in norm:
        lorem = _ratio(len(_LOREM.findall(norm)), len(norm))
    return {
        "rps_doc_curly_bracket": _ratio(braces, len(raw)) if braces else 0.0,
        "rps_doc_ldnoobw_words": float(_ldnoobw_count(words, counts, artifacts.ldnoobw)) if norm else 0.0,
        "rps_doc_lorem_ipsum": lorem,
        "rps_doc_stop_word_fraction": _ratio(stop_tokens, len(tokens)) if words else 0.0,
        "rps_doc_ut1_blacklist": artifacts.ut1.get(domain) if isinstance(domain, str) else None,
    }


@functools.lru_cache(maxsize=16)
def _multiword_sizes(entries: frozenset[str]) -> dict[str, tuple[int, ...]]:
    """First word of each multi-word entry -> the entry sizes k (1 + number of spaces) it starts."""
    sizes: dict[str, set[int]] = {}
    for entry in entries:
        if " " in entry:
            sizes.setdefault(entry.split(" ", 1)[0], set()).add(entry.count(" ") + 1)
    return {first: tuple(sorted(ks)) for first, ks in sizes.items()}


def _ldnoobw_count(words: list[str], counts: Counter[str], entries: frozenset[str]) -> int:
    """§3.2 item 9: words of NW in the list plus, per entry size k > 1, space-joined k-grams in it.

    A k-gram can only match where its first word starts a k-word entry, so only there is it joined.
    """
    if not entries:
        return 0
    count = sum(counts[w] for w in entries.intersection(counts))
    sizes = _multiword_sizes(entries)
    starts = sizes.keys() & counts.keys()
    if starts:
        n_words = len(words)
        for i in compress(range(n_words), map(starts.__contains__, words)):
            for k in sizes[words[i]]:
                if i + k <= n_words and " ".join(words[i : i + k]) in entries:
                    count += 1
    return count


def _repetition(text: DocText) -> dict[str, Score]:
    top, dupe = repetition_scores(text.words)
    return {
        **{f"rps_doc_frac_chars_dupe_{n}grams": dupe[n] for n in DUPE_NS},
        **{f"rps_doc_frac_chars_top_{n}gram": top[n] for n in TOP_NS},
    }


def _entropy(counts: Counter[str], total: int) -> float:
    """Σ -(c/S)·ln(c/S) over distinct words, added left to right in first-occurrence order like
    CPython 3.11 ``sum`` (each distinct count's term is computed once)."""
    terms = {c: -c / total * math.log(c / total) for c in set(counts.values())}
    return round(functools.reduce(operator.add, map(terms.__getitem__, counts.values()), 0.0), PRECISION)


def _natural_language(text: DocText, counts: Counter[str], upper_tokens: int, letter_tokens: int) -> dict[str, Score]:
    raw, words, tokens, lines = text.raw, text.words, text.tokens, text.lines
    n_words, n_tokens = len(words), len(tokens)
    ellipsis_lines = sum(1 for line in lines if line.rstrip().endswith(_ELLIPSIS))
    symbols = raw.count("#") + raw.count("...") + raw.count("\u2026")
    word_chars = sum(map(len, words))
    return {
        "rps_doc_frac_all_caps_words": _ratio(upper_tokens, n_tokens) if tokens else None,
        "rps_doc_frac_lines_end_with_ellipsis": _ratio(ellipsis_lines, len(lines)) if lines else None,
        "rps_doc_frac_no_alph_words": round(1.0 - letter_tokens / n_tokens, PRECISION) if tokens else None,
        "rps_doc_frac_unique_words": _ratio(len(counts), n_words) if words else None,
        "rps_doc_mean_word_length": _ratio(word_chars, n_words) if words else None,
        "rps_doc_num_sentences": float(len(_SENTENCE.findall(raw))),
        "rps_doc_symbol_to_word_ratio": _ratio(symbols, n_tokens) if tokens else None,
        "rps_doc_unigram_entropy": _entropy(counts, n_words) if words else None,
        "rps_doc_word_count": n_words,
    }


def _tokens_with_ascii_letter(tokens: list[str]) -> int:
    """RW tokens containing ``[a-zA-Z]``: join them with spaces (tokens have no whitespace), keep only
    ASCII letters and spaces of the UTF-8 bytes, count the non-empty pieces."""
    try:
        return len(" ".join(tokens).encode("utf-8").translate(None, _NOT_LETTER_OR_SPACE).split())
    except UnicodeEncodeError:  # lone surrogates
        return sum(1 for t in tokens if _ASCII_LETTER.search(t))


def _count_chars(text: str, ascii_set: bytes, predicate: Any) -> int:
    """Characters of ``text`` with ``predicate``, whose ASCII members are ``ascii_set``.

    ASCII characters are counted on the UTF-8 bytes; only the non-ASCII ones (multi-byte
    sequences, which never contain ASCII bytes) are tested one by one.
    """
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return sum(map(predicate, text))
    count = len(encoded) - len(encoded.translate(None, ascii_set))
    if len(encoded) != len(text):
        count += sum(map(predicate, encoded.translate(None, _ASCII_BYTES).decode("utf-8")))
    return count


def _normalized_line_scores(line: str, has_javascript: bool) -> tuple[float, float, int]:
    """(javascript count, numerical fraction, word count) of the normalised line (§3.5, 32-34)."""
    if line.isascii():
        # NFD and lower() keep ASCII lengths, so the normalised length is known from the words.
        kept = line.encode("ascii").translate(None, _PUNCT_BYTES)
        words = kept.decode("ascii").split()
        if not words:
            return 0.0, 0.0, 0
        length = sum(map(len, words)) + len(words) - 1
        digits = len(kept) - len(kept.translate(None, _ASCII_DIGITS))
        js = [w.lower() for w in words].count("javascript") if has_javascript else 0
    else:
        norm = normalize(line)
        if not norm:
            return 0.0, 0.0, 0
        words = norm.split()
        length = len(norm)
        digits = _count_chars(norm, _ASCII_DIGITS, str.isnumeric)
        js = words.count("javascript") if has_javascript else 0
    return float(js), _ratio(digits, length), len(words)


def _upper_fraction(line: str) -> float:
    return _ratio(_count_chars(line, _ASCII_UPPER, str.isupper), len(line))


def _lines(text: DocText) -> dict[str, Signal]:
    lines, ends = text.lines, text.line_ends
    if not lines:
        return {key: [] for key in _LINE_KEYS} | {"rps_lines_start_with_bulletpoint": [(0, 0, None)]}
    starts = [0, *ends[:-1]]
    columns = _line_columns_native(text) if native is not None else _line_columns_python(text)
    return {key: list(zip(starts, ends, column)) for key, column in zip(_LINE_KEYS, columns)}


def _line_columns_python(text: DocText) -> tuple[Any, ...]:
    """The six line-signal columns, in :data:`_LINE_KEYS` order (the definition)."""
    lines = text.lines
    # "javascript" can only be a word of a normalised line if it is a substring of N
    normalized = map(_normalized_line_scores, lines, repeat("javascript" in text.norm))
    javascript, numerical, num_words = zip(*normalized)
    return (
        [float(line.rstrip().endswith(_TERMINAL)) for line in lines],
        javascript,
        num_words,
        numerical,
        [float(line.lstrip().startswith(_BULLETS)) for line in lines],
        list(map(_upper_fraction, lines)),
    )


def _line_columns_native(text: DocText) -> tuple[Any, ...]:
    """The same columns from per-line counts taken in C; lines whose normalisation needs ``lower()``
    or NFD to change a non-ASCII character are normalised here (:func:`_normalized_line_scores`)."""
    lines = text.lines
    assert native is not None  # the caller chose the native path
    rows = native.line_stats(lines, stable_bmp())
    terminal, bullet, upper, javascript, num_words, numerical = [], [], [], [], [], []
    has_javascript = "javascript" in text.norm
    for line, (end_mark, bullet_mark, uppers, js, words, numeric, norm_len) in zip(lines, rows):
        terminal.append(float(end_mark))
        bullet.append(float(bullet_mark))
        upper.append(round(uppers / len(line), PRECISION))
        if norm_len < 0:
            js_count, fraction, words = _normalized_line_scores(line, has_javascript)
            javascript.append(js_count)
            numerical.append(fraction)
        else:
            javascript.append(float(js))
            numerical.append(round(numeric / norm_len, PRECISION) if words else 0.0)
        num_words.append(words)
    return terminal, javascript, num_words, numerical, bullet, upper


def _models(text: DocText, artifacts: SignalArtifacts) -> dict[str, Score]:
    raw = text.raw
    scores: dict[str, Score] = {}
    clf_text = classifier_text(raw) if raw and artifacts.classifiers else ""
    for name in ("palm", "wikipedia", "wikiref"):
        model = artifacts.classifiers.get(name)
        scores[f"rps_doc_ml_{name}_score"] = classifier_score(model, clf_text) if model is not None and raw else None
    dsir = artifacts.dsir.scores(text.tokens, len(raw)) if artifacts.dsir is not None and raw else {}
    for target in DSIR_TARGETS:
        base, corrected = dsir.get(target, (None, None))
        scores[f"rps_doc_{target}_importance"] = base
        scores[f"rps_doc_{target}_importance_length_correction"] = corrected
    return scores


def make_record(
    doc: Mapping[str, Any], shard_key: str, idx: int, artifacts: SignalArtifacts, text: DocText | None = None
) -> dict[str, Any]:
    """The signals record of line ``idx`` of the documents file ``shard_key`` (``docs/spec/rpv2_format.md`` §4).

    Raises :class:`BadDocument` when ``raw_content`` is not a string (use :func:`null_record`).
    """
    signals = compute_signals(doc, artifacts, text)
    return _record(doc, shard_key, idx, signals)


def null_record(shard_key: str, idx: int, doc: Any = None) -> dict[str, Any]:
    """The record kept for a line that is not a usable document (D18): every score null.

    Spans are ``[0, len(raw_content), null]`` when a string ``raw_content`` exists, else ``[0, 0,
    null]``; metadata holds the string fields ``doc`` has, if it is a JSON object (null otherwise).
    """
    doc = doc if isinstance(doc, Mapping) else {}
    raw = doc.get("raw_content")
    span = len(raw) if isinstance(raw, str) else 0
    return _record(doc, shard_key, idx, {key: [(0, span, None)] for key in SIGNAL_KEYS})


def _record(doc: Mapping[str, Any], shard_key: str, idx: int, signals: dict[str, Signal]) -> dict[str, Any]:
    identifier = doc_id(shard_key, idx)
    meta = {name: value if isinstance(value := doc.get(name), str) else None for name in METADATA_FIELDS}
    return {
        "id": identifier,
        "id_int": id_int(identifier),
        "metadata": {
            "cc_segment": meta["cc_segment"],
            "cc_net_source": shard_key,
            "url": meta["url"],
            "source_domain": meta["source_domain"],
            "language": meta["language"],
            "snapshot_id": snapshot_id(shard_key),
        },
        "quality_signals": signals,
    }


_ENCODER = msgspec.json.Encoder()
_SURROGATE = re.compile("[\ud800-\udfff]")


def encode_record(record: dict[str, Any]) -> bytes:
    """One signals line without its ``\\n``: the reference writer's msgspec JSON text.

    Strings with lone surrogates (not UTF-8 encodable; only possible in metadata) are written with
    each of them replaced by U+FFFD.
    """
    try:
        return _ENCODER.encode(record)
    except UnicodeEncodeError:
        return _ENCODER.encode(_replace_surrogates(record))


def _replace_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return _SURROGATE.sub("\ufffd", value)
    if isinstance(value, dict):
        return {key: _replace_surrogates(item) for key, item in value.items()}
    return value
