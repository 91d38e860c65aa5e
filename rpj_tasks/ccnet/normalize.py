"""CCNet's two text normalisations and the paragraph hash (docs/spec/rpv2_format.md §9.4, §9.6 step 1).

Both normalisations are one regex scan over precomputed tables (see ``_charset_regex``), so they
cost a few microseconds per line.  Order of the reference steps is kept where it matters: digits are
mapped to ``0`` *before* the special characters are handled, so ``１`` (a digit) becomes ``0``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import sys
import unicodedata
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from rpj_tasks.native import native

# The 34 special characters cc_net handles, with their replacement in ``ccnet_normalize``.
UNICODE_PUNCT = {
    "，": ",",
    "。": ".",
    "、": ",",
    "„": '"',
    "”": '"',
    "“": '"',
    "«": '"',
    "»": '"',
    "１": '"',
    "」": '"',
    "「": '"',
    "《": '"',
    "》": '"',
    "´": "'",
    "∶": ":",
    "：": ":",
    "？": "?",
    "！": "!",
    "（": "(",
    "）": ")",
    "；": ";",
    "–": "-",
    "—": " - ",
    "．": ". ",
    "～": "~",
    "’": "'",
    "…": "...",
    "━": "-",
    "〈": "<",
    "〉": ">",
    "【": "[",
    "】": "]",
    "％": "%",
    "►": "-",
}
CONTROL_CHARS = [*range(0, 32), *range(127, 160)]

#: The Nd and Mn code points of the Unicode database this table was written from (ranges), so
#: that a process does not scan all 1.1M code points at import; see :func:`category_ranges`.
CATEGORY_TABLE = Path(__file__).resolve().parents[1] / "data" / "unicode_nd_mn.json"
_CATEGORIES = ("Nd", "Mn")


def category_ranges() -> dict[str, Any]:
    """``{"unidata_version": ..., "Nd": [[first, last], ...], "Mn": [...]}`` of this Python's
    ``unicodedata``, by scanning every code point (what :data:`CATEGORY_TABLE` holds)."""
    out: dict[str, Any] = {"unidata_version": unicodedata.unidata_version}
    for cat in _CATEGORIES:
        ranges: list[list[int]] = []
        for cp in range(sys.maxunicode + 1):
            if unicodedata.category(chr(cp)) == cat:
                if ranges and ranges[-1][1] == cp - 1:
                    ranges[-1][1] = cp
                else:
                    ranges.append([cp, cp])
        out[cat] = ranges
    return out


def _category_code_points() -> dict[str, list[int]]:
    """Nd and Mn code points: from :data:`CATEGORY_TABLE` when it was written for this Python's
    Unicode database, else by scanning (a different Python gives the same results, only slower)."""
    try:
        table = json.loads(CATEGORY_TABLE.read_text())
    except (OSError, ValueError):
        table = {}
    if table.get("unidata_version") != unicodedata.unidata_version:
        table = category_ranges()
    return {cat: [cp for first, last in table[cat] for cp in range(first, last + 1)] for cat in _CATEGORIES}


_BY_CATEGORY = _category_code_points()
_DIGITS = dict.fromkeys(_BY_CATEGORY["Nd"], "0")  # what re's \d matches
_MARKS: dict[int, str | None] = dict.fromkeys(_BY_CATEGORY["Mn"])
_CONTROLS = dict.fromkeys(CONTROL_CHARS)

_DEDUP_TABLE = {**{ord(c): None for c in UNICODE_PUNCT}, **_CONTROLS, **_DIGITS}
_DEDUP_TABLE_KEEP_NL = {k: v for k, v in _DEDUP_TABLE.items() if k != ord("\n")}
_PERPLEXITY_TABLE = {**_MARKS, **{ord(c): r for c, r in UNICODE_PUNCT.items()}, **_CONTROLS, **_DIGITS}


def _charset_regex(codepoints: Iterable[int]) -> re.Pattern[str]:
    """A pattern matching ``codepoints`` that sre compiles to a bitmap, plus any astral character.

    sre only builds its fast bitmap when the class stays within the BMP, so astral code points
    are matched by one cheap range and sorted out by the substitution callbacks below.
    """
    cps, parts, i = sorted(cp for cp in codepoints if cp <= 0xFFFF), [], 0
    while i < len(cps):
        j = i
        while j + 1 < len(cps) and cps[j + 1] == cps[j] + 1:
            j += 1
        parts.append(re.escape(chr(cps[i])) + (f"-{re.escape(chr(cps[j]))}" if j > i else ""))
        i = j + 1
    return re.compile(f"[{''.join(parts)}\U00010000-\U0010ffff]")


# A regex scan that calls back only on the (rare) characters to change is several times faster
# than ``str.translate`` with a dict table, which looks up every character of non-ASCII text.
_DEDUP_RE = _charset_regex(_DEDUP_TABLE)
_DEDUP_KEEP_NL_RE = _charset_regex(_DEDUP_TABLE_KEEP_NL)
_PERPLEXITY_RE = _charset_regex(_PERPLEXITY_TABLE)


def _dedup_sub(m: re.Match[str]) -> str:
    c = m.group()
    return _DEDUP_TABLE.get(ord(c), c) or ""


def _perplexity_sub(m: re.Match[str]) -> str:
    c = m.group()
    return _PERPLEXITY_TABLE.get(ord(c), c) or ""


def normalize_for_dedup(line: str) -> str:
    """strip, lower, digits -> 0, delete the 34 special and the control characters."""
    line = line.strip()
    if not line:
        return line
    return _DEDUP_RE.sub(_dedup_sub, line.lower())


def ccnet_normalize(text: str) -> str:
    """cc_net ``text_normalizer.normalize`` with its defaults (used before SentencePiece/KenLM).

    strip, lower, NFD minus combining marks, digits -> 0, special characters replaced,
    control characters (``\\n`` included) deleted: the document becomes one line.
    """
    text = text.strip()
    if not text:
        return text
    nfd = unicodedata.normalize("NFD", text.lower())
    if native is None:
        return _PERPLEXITY_RE.sub(_perplexity_sub, nfd)
    return native.ccnet_translate(nfd, _marks_bitmap())  # the same table step, in C


def ccnet_normalize_python(text: str) -> str:
    """:func:`ccnet_normalize` without the extension (its table step by regex), the C path's twin."""
    text = text.strip()
    if not text:
        return text
    return _PERPLEXITY_RE.sub(_perplexity_sub, unicodedata.normalize("NFD", text.lower()))


@functools.cache
def _marks_bitmap() -> bytes:
    """The Mn code points as a bitmap of 0x110000 bits (bit ``cp & 7`` of byte ``cp >> 3``)."""
    bits = np.zeros(sys.maxunicode + 1, dtype=bool)
    bits[np.fromiter(_MARKS, dtype=np.int64)] = True
    return np.packbits(bits, bitorder="little").tobytes()


def line_hash(normalized_line: str) -> int:
    """First 8 bytes of SHA-1 of the UTF-8 line, as a little-endian uint64."""
    return int.from_bytes(hashlib.sha1(normalized_line.encode("utf-8")).digest()[:8], "little")


def line_hashes(lines: list[str]) -> np.ndarray:
    """uint64 paragraph hashes of ``normalize_for_dedup(line)`` for each line.

    Equivalent to hashing each line separately, but lower-cases all lines in one call (lines
    contain no ``\n``, lower-casing acts within a line, and no character lower-cases to or from
    whitespace); the rest runs in ``rpj_tasks.native._speedups.ccnet_line_hashes`` when the
    extension is built, else in :func:`line_hashes_python`, its twin (same hashes).
    """
    if not lines:
        return np.zeros(0, dtype="<u8")
    if native is None:
        return line_hashes_python(lines)
    return np.frombuffer(native.ccnet_line_hashes("\n".join(lines).lower()), dtype="<u8")


def content_hashes(text: str) -> np.ndarray:
    """``line_hashes(text.split("\\n"))``: the paragraph hashes of a document's lines, without
    splitting it when the extension does the work."""
    if native is None:
        return line_hashes_python(text.split("\n"))
    return np.frombuffer(native.ccnet_line_hashes(text.lower()), dtype="<u8")


def line_hashes_python(lines: list[str]) -> np.ndarray:
    """:func:`line_hashes` in Python: strip, then lower-case and translate all lines in one call."""
    if not lines:
        return np.zeros(0, dtype="<u8")
    joined = _DEDUP_KEEP_NL_RE.sub(_dedup_sub, "\n".join(line.strip() for line in lines).lower())
    sha1 = hashlib.sha1
    digests = b"".join(sha1(n.encode("utf-8", "surrogatepass")).digest()[:8] for n in joined.split("\n"))
    return np.frombuffer(digests, dtype="<u8")
