"""Text primitives of the RPv2 quality signals (``docs/spec/quality_signals.md`` §2).

Every signal reads one of four views of a document's ``raw_content`` (RAW):

* **N**  = :func:`normalize` (RAW): ASCII punctuation deleted, lower-cased, stripped, whitespace runs
  collapsed to one space, then Unicode NFD (in that order: NFD runs *after* punctuation removal);
* **NW** = ``N.split()``, the normalised words;
* **RW** = the matches of ``\\w+|[^\\w\\s]+`` over RAW with the standard-library ``re`` (nltk <= 3.10.2
  ``WordPunctTokenizer`` behaviour; the third-party ``regex`` module gives other tokens, D14);
* **lines** = the slices of ``([^\\n]*\\n|[^\\n]+$)``: each line keeps its ``\\n``, blank lines are
  slices of their own, an empty RAW has none.

:class:`DocText` computes them once per document so that signals and MinHash share them.
Python's ``re`` ``\\s`` and ``str.split()`` / ``str.strip()`` use the same whitespace set and
``\\w`` is ``str.isalnum() or "_"`` (both checked over all code points in the tests), which the fast
paths below rely on.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import string
import sys
import unicodedata
from dataclasses import dataclass
from itertools import accumulate

from rpj_tasks.native import native

_PUNCT_TABLE = str.maketrans("", "", string.punctuation)
_PUNCT_BYTES = string.punctuation.encode("ascii")
_WORD_PUNCT = re.compile(r"\w+|[^\w\s]+")
_NFD = unicodedata.normalize


def strip_punctuation(text: str) -> str:
    """Delete the 32 ASCII punctuation characters (on the UTF-8 bytes: ~30x faster than ``str.translate``)."""
    try:
        return text.encode("utf-8").translate(None, _PUNCT_BYTES).decode("utf-8")
    except UnicodeEncodeError:  # lone surrogates
        return text.translate(_PUNCT_TABLE)


def normalize(text: str) -> str:
    """§2.1: delete ASCII punctuation, ``lower()``, ``strip()``, collapse whitespace, NFD."""
    return _NFD("NFD", " ".join(strip_punctuation(text).lower().split()))


def raw_words_python(text: str) -> list[str]:
    """§2.3 RW: stdlib-``re`` matches of ``\\w+|[^\\w\\s]+``, left to right (pure Python).

    Tokens never contain whitespace, so the text is cut at whitespace first and an all-``\\w``
    chunk (the common case) is one token without running the regex.
    """
    tokens: list[str] = []
    for chunk in text.split():
        if chunk.isalnum():
            tokens.append(chunk)
        else:
            tokens += _WORD_PUNCT.findall(chunk)
    return tokens


#: RW tokens of a text: the compiled scanner (same \\w / \\s tests as ``re``) or :func:`raw_words_python`.
raw_words = native.word_punct if native is not None else raw_words_python


def stable_bmp_computed() -> bytes:
    """Bitmap of the non-ASCII BMP code points ``c`` (surrogates excluded) with ``c.lower() == c`` and
    ``NFD(c) == c``, from this interpreter's Unicode tables: a line made of ASCII and such characters
    normalises without any character changing, so its normalised counts need no ``lower()`` / NFD."""
    bits = bytearray(65536 // 8)
    for code in range(128, 65536):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        if char.lower() == char and unicodedata.is_normalized("NFD", char):
            bits[code >> 3] |= 1 << (code & 7)
    return bytes(bits)


def stable_bmp_path() -> str:
    """Where :func:`stable_bmp` keeps the bitmap: the cache directory (``$RPJ_CACHE_DIR``), one file
    per interpreter build and Unicode version (the inputs of :func:`stable_bmp_computed`)."""
    from rpj_tasks.core.storage import cache_dir

    key = hashlib.sha256(f"{sys.version}\0{unicodedata.unidata_version}\0{sys.executable}".encode()).hexdigest()[:24]
    return os.path.join(cache_dir(), "unicode", f"stable_bmp-{key}.bin")


@functools.lru_cache(maxsize=1)
def stable_bmp() -> bytes:
    """:func:`stable_bmp_computed`, read from :func:`stable_bmp_path` when an earlier process stored it
    (computing it costs ~0.1 s of CPU per process); written there atomically otherwise."""
    from rpj_tasks.core.storage import read_cache, write_cache

    path = stable_bmp_path()
    # the bitmap, then its SHA-256: a torn or foreign file is recomputed
    stored = read_cache(path, 65536 // 8)
    if stored is not None:
        return stored
    bits = stable_bmp_computed()
    write_cache(path, bits)
    return bits


def split_lines(text: str) -> list[str]:
    """§2.4 line slices: each line with its trailing ``\\n``; a last line without one if non-empty."""
    pieces = text.split("\n")
    lines = [piece + "\n" for piece in pieces[:-1]]
    if pieces[-1]:
        lines.append(pieces[-1])
    return lines


@dataclass(frozen=True, slots=True)
class DocText:
    """The shared views of one document (RAW, N, NW, RW, lines); build with :func:`prepare`."""

    raw: str
    norm: str
    words: list[str]
    tokens: list[str]
    lines: list[str]
    line_ends: list[int]


def prepare(raw: str) -> DocText:
    """Compute N, NW, RW and the line slices of ``raw`` once."""
    words = strip_punctuation(raw).lower().split()
    norm = " ".join(words)
    if not unicodedata.is_normalized("NFD", norm):
        norm = _NFD("NFD", norm)
        words = norm.split()
    lines = split_lines(raw)
    return DocText(raw, norm, words, raw_words(raw), lines, list(accumulate(map(len, lines))))
