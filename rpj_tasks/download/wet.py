"""Common Crawl WET (WARC/1.0 ``conversion`` records): a streaming reader and a small writer.

The writer builds real WARC/1.0 records in the Common Crawl WET layout (CRLF header lines, a
blank line, the UTF-8 text block, then the ``\\r\\n\\r\\n`` record separator); a caller gzips each
record as its own gzip member with :func:`gzip_member`, as Common Crawl does.

The reader (spec ``docs/spec/rpv2_format.md`` §9.2, "implement instead") reads headers by name and frames
records by Content-Length, then applies cc_net's content rules.  An all-ASCII header block (every
real one) is split into fields by ``rpj_tasks.native._speedups.wet_headers``, any other by its
pure-Python twin :func:`_parse_headers_python` (same dict, ``tests/download/test_wet.py``).  A declared block that is not
followed by the separator and the next ``WARC/`` header has a wrong Content-Length: that record
is framed by lines up to the next ``WARC/1.x`` line, as cc_net does, and counted as
``wet.length_mismatch`` (so cc_net's hand-made ``sample.warc.wet`` still gives its 3 documents).

A record whose block is larger than ``max_record_bytes`` (default
:data:`~rpj_tasks.core.config.DEFAULT_MAX_RECORD_BYTES`, the snapshot setting) is dropped as
``wet.too_large``: when its Content-Length says so, its bytes are read and dropped a piece at a
time, never held, so memory stays bounded whatever a record declares; a line-framed block is never
searched further than the limit.
"""

from __future__ import annotations

import base64
import bisect
import gzip
import hashlib
import logging
import re
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

from rpj_tasks.core.config import DEFAULT_MAX_RECORD_BYTES
from rpj_tasks.core.stats import Stats
from rpj_tasks.native import native

_CRLF = b"\r\n"
_SEPARATOR = b"\r\n\r\n"


def block_digest(block: bytes) -> str:
    """``sha1:`` + base32(SHA-1(block)): the WARC-Block-Digest that RPv2 keeps as ``digest``."""
    return "sha1:" + base64.b32encode(hashlib.sha1(block).digest()).decode("ascii")


def _urn(*parts: str) -> str:
    """A deterministic ``<urn:uuid:...>`` record id derived from ``parts``."""
    return f"<urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, chr(0).join(parts))}>"


def _record(headers: list[tuple[str, str]], block: bytes) -> bytes:
    head = b"".join(f"{name}: {value}".encode() + _CRLF for name, value in headers)
    return b"WARC/1.0" + _CRLF + head + _CRLF + block + _SEPARATOR


def conversion_record(
    url: str,
    date: str,
    text: str,
    *,
    record_id: str | None = None,
    refers_to: str | None = None,
    language: str | None = None,
) -> bytes:
    """One WET ``conversion`` record for ``text`` (first line = page title).

    As in real WET files, the block is the UTF-8 text ending with ``\\n`` (one is added to a
    non-empty text that lacks it).  Record ids default to UUIDs derived from ``url`` and ``date``.
    """
    if text and not text.endswith("\n"):
        text += "\n"
    block = text.encode("utf-8")
    headers = [
        ("WARC-Type", "conversion"),
        ("WARC-Target-URI", url),
        ("WARC-Date", date),
        ("WARC-Record-ID", record_id or _urn("conversion", url, date)),
        ("WARC-Refers-To", refers_to or _urn("response", url, date)),
        ("WARC-Block-Digest", block_digest(block)),
    ]
    if language is not None:
        headers.append(("WARC-Identified-Content-Language", language))
    headers += [("Content-Type", "text/plain"), ("Content-Length", str(len(block)))]
    return _record(headers, block)


def warcinfo_record(filename: str, date: str, info: dict[str, str]) -> bytes:
    """The ``warcinfo`` record that opens a WET file (``info`` as ``key: value`` fields)."""
    block = b"".join(f"{key}: {value}".encode() + _CRLF for key, value in info.items()) + _CRLF
    headers = [
        ("WARC-Type", "warcinfo"),
        ("WARC-Date", date),
        ("WARC-Filename", filename),
        ("WARC-Record-ID", _urn("warcinfo", filename, date)),
        ("Content-Type", "application/warc-fields"),
        ("Content-Length", str(len(block))),
        ("WARC-Block-Digest", block_digest(block)),
    ]
    return _record(headers, block)


def gzip_member(record: bytes) -> bytes:
    """``record`` as one deterministic gzip member (mtime 0, no file name)."""
    return gzip.compress(record, compresslevel=6, mtime=0)


def corrupt_gzip_member(member: bytes) -> bytes:
    """``member`` with 8 deflate bytes inverted, at the first spot from the middle that zlib rejects
    (a damaged member for the sample mirror and the fault tests)."""
    for pos in range(len(member) // 2, len(member) - 16):
        bad = member[:pos] + bytes(b ^ 0xFF for b in member[pos : pos + 8]) + member[pos + 8 :]
        try:
            zlib.decompressobj(31).decompress(bad)
        except zlib.error:
            return bad
    raise ValueError("could not corrupt the gzip member")


logger = logging.getLogger("rpj.wet")

_GZIP_MAGIC = b"\x1f\x8b\x08"
_READ_SIZE = 1 << 20  # bytes read from the stored file at a time
_FEED_SIZE = 1 << 14  # compressed bytes fed to zlib at a time (bounds unused_data copies)
_MAX_OUT = 1 << 20  # decompressed bytes per zlib call (bounds memory on gzip bombs)
_HOLD = 1 << 20  # a member's output is held back until its CRC checks, up to this size
_MAX_HEADER = 1 << 16  # a WARC header block larger than this is garbage
_LOOKAHEAD = 16  # bytes after a block that must hold the separator and the next "WARC/"

_HEADER_END = re.compile(rb"\n\r?\n")
_WARC_LINE = re.compile(rb"\nWARC/1\.[01]\r?\n")
_NEWLINES = re.compile(rb"[\r\n]*")
_HEADER_FIELD = re.compile(r"^([^:\n]+):(.*)", re.M)  # ".*" stops at the line end
_REQUIRED = ("warc-target-uri", "warc-date", "warc-block-digest")


class WetFormatError(ValueError):
    """Raised when a WET file has more bad records than the caller allows."""


@dataclass(slots=True)
class WarcRecord:
    """One framed WARC record.

    ``headers`` maps lower-cased names to stripped values; ``offset`` is the byte offset in the
    stored file (for gzip input: of the gzip member where the record starts); ``by_length`` is
    False when the block was framed by lines because Content-Length did not match the bytes.
    """

    headers: dict[str, str]
    block: bytes
    offset: int
    by_length: bool


class _Report:
    """Counts and logs bad input; raises WetFormatError past ``max_bad`` bad records."""

    def __init__(self, source: str, stats: Stats, max_bad: int | None) -> None:
        self.source, self.stats, self.max_bad = source, stats, max_bad
        self.n_bad = 0

    def bad(self, counter: str, offset: int, what: str) -> None:
        self.stats.inc(counter)
        logger.warning("%s: %s at byte offset %d", self.source, what, offset)
        self.n_bad += 1
        if self.max_bad is not None and self.n_bad > self.max_bad:
            raise WetFormatError(f"{self.source}: {what} at byte offset {offset} (more than {self.max_bad} bad records)")

    def too_large(self, offset: int, what: str) -> None:
        """A well-formed record over the size limit: counted (``wet.too_large``, a drop reason like
        ``wet.too_short``) and logged, but not a bad record (it does not count towards ``max_bad``)."""
        self.stats.inc("wet.too_large")
        logger.warning("%s: %s at byte offset %d", self.source, what, offset)


# A piece of decompressed data: (bytes, stored offset, linear).  ``linear`` pieces map byte for
# byte onto the stored file (uncompressed input); otherwise the offset is the gzip member's.
# ``None`` marks a discontinuity: data was lost (corrupt or truncated gzip member).
_Piece = tuple[bytes, int, bool] | None


class _Compressed:
    """Sequential reader over the stored bytes with a small window for look-back and search."""

    def __init__(self, stream: IO[bytes], head: bytes) -> None:
        self.stream, self.buf, self.pos, self.base = stream, head, 0, 0

    @property
    def offset(self) -> int:
        return self.base + self.pos

    def available(self) -> int:
        return len(self.buf) - self.pos

    def more(self) -> bool:
        """Read the next block of the file; False at EOF."""
        data = self.stream.read(_READ_SIZE)
        if not data:
            return False
        self.base += self.pos
        self.buf, self.pos = self.buf[self.pos :] + data, 0
        return True

    def take(self, n: int) -> memoryview:
        view = memoryview(self.buf)[self.pos : self.pos + n]
        self.pos += len(view)
        return view

    def skip_to_magic(self, start: int) -> None:
        """Move to the next gzip magic at or after stored offset ``start`` (or to EOF).

        Bytes before the window (already fed to zlib in an earlier read) are not searched."""
        self.pos = max(start - self.base, 0)
        while True:
            found = self.buf.find(_GZIP_MAGIC, self.pos)
            if found >= 0:
                self.pos = found
                return
            self.pos = max(self.pos, len(self.buf) - len(_GZIP_MAGIC) + 1)
            if not self.more():
                self.pos = len(self.buf)
                return


def _plain_pieces(stream: IO[bytes], head: bytes) -> Iterator[_Piece]:
    offset = 0
    while head:
        yield head, offset, True
        offset += len(head)
        head = stream.read(_READ_SIZE)


def _gzip_pieces(stream: IO[bytes], head: bytes, report: _Report) -> Iterator[_Piece]:
    """Decompress member by member.  A member that fails (bad data, bad CRC, cut off) is
    reported and skipped; reading resumes at the next gzip magic.  Output of a member is held
    until its CRC checks (up to ``_HOLD`` bytes), so in the Common Crawl layout of one record
    per member a damaged member contributes no bytes at all."""
    src = _Compressed(stream, head)
    while src.available() or src.more():
        start = src.offset
        while src.available() < len(_GZIP_MAGIC) and src.more():
            pass
        if src.buf[src.pos : src.pos + len(_GZIP_MAGIC)] != _GZIP_MAGIC:
            report.bad("wet.skipped.corrupt_gzip", start, "bytes that are not a gzip member")
            src.skip_to_magic(start + 1)
            yield None
            continue
        inflater = zlib.decompressobj(31)
        held: list[bytes] = []
        size = 0
        try:
            while not inflater.eof and (src.available() or src.more()):
                out = inflater.decompress(src.take(_FEED_SIZE), _MAX_OUT)
                while True:
                    held.append(out)
                    size += len(out)
                    if size > _HOLD:
                        yield b"".join(held), start, False
                        held, size = [], 0
                    if inflater.eof or not inflater.unconsumed_tail:
                        break
                    out = inflater.decompress(inflater.unconsumed_tail, _MAX_OUT)
        except zlib.error as exc:
            report.bad("wet.skipped.corrupt_gzip", start, f"corrupt gzip member ({exc}), skipped")
            src.skip_to_magic(start + 1)
            yield None
            continue
        if not inflater.eof:
            report.bad("wet.skipped.truncated_gzip", start, "truncated gzip member at end of file")
            yield None
            return
        src.pos -= len(inflater.unused_data)
        if size:
            yield b"".join(held), start, False


def _pieces(stream: IO[bytes], report: _Report) -> Iterator[_Piece]:
    """Decompressed pieces of ``stream``: gzip (detected by its magic) or uncompressed."""
    head = b""
    while len(head) < 2 and (data := stream.read(_READ_SIZE)):
        head += data
    if head.startswith(_GZIP_MAGIC[:2]):
        return _gzip_pieces(stream, head, report)
    return _plain_pieces(stream, head)


class _Buffer:
    """Decompressed bytes from ``pos`` on (the current record), filled on demand.

    Filling stops at EOF or at a discontinuity (``ended``); :meth:`resume` continues after a
    discontinuity once the parser has given up the bytes before it.
    """

    def __init__(self, pieces: Iterator[_Piece]) -> None:
        self._pieces = pieces
        self.data = b""
        self.pos = 0
        self._base = 0  # decompressed offset of data[0]
        self.ended = False
        self.eof = False
        # where each piece starts: decompressed offsets (sorted) and (stored offset, linear)
        self._mark_at: list[int] = []
        self._marks: list[tuple[int, bool]] = []

    def available(self) -> int:
        return len(self.data) - self.pos

    def fill(self, n: int) -> bool:
        """Make ``n`` bytes available from ``pos``; False if the data ends first."""
        have = len(self.data) - self.pos
        if have >= n or self.ended:
            return have >= n
        parts = [self.data[self.pos :]]
        self._base += self.pos
        self.pos = 0
        want = max(n, 2 * have, 1 << 16)
        while have < want:
            piece = next(self._pieces, False)
            if piece is False:
                self.ended = self.eof = True
                break
            if piece is None or piece is True:  # None: the stream stopped early
                self.ended = True
                break
            data, stored, linear = piece
            self._mark_at.append(self._base + have)
            self._marks.append((stored, linear))
            parts.append(data)
            have += len(data)
        self.data = b"".join(parts)
        keep = max(bisect.bisect_right(self._mark_at, self._base) - 1, 0)
        del self._mark_at[:keep], self._marks[:keep]
        return have >= n

    def skip(self, n: int) -> int:
        """Move ``pos`` forward by ``n`` bytes, reading and dropping them a piece at a time (they are
        never held together); returns how many were skipped (fewer if the data ends first)."""
        done = 0
        while done < n and (self.available() or self.fill(1)):
            step = min(n - done, self.available())
            self.pos += step
            done += step
        return done

    def resume(self) -> None:
        """Drop all buffered bytes and continue after a discontinuity."""
        self.pos = len(self.data)
        if not self.eof:
            self.ended = False

    def offset(self, rel: int = 0) -> int:
        """Stored-file offset of the byte at ``pos + rel``."""
        at = self._base + self.pos + rel
        i = bisect.bisect_right(self._mark_at, at) - 1
        if i < 0:
            return at
        stored, linear = self._marks[i]
        return stored + (at - self._mark_at[i] if linear else 0)

    def search(self, pattern: re.Pattern[bytes], rel: int, limit: int) -> re.Match[bytes] | None:
        """First match of ``pattern`` at or after ``pos + rel`` within ``limit`` bytes of ``pos``."""
        begin = rel
        while True:
            match = pattern.search(self.data, self.pos + begin, self.pos + limit)
            if match:
                return match
            have = self.available()
            if have >= limit or not self.fill(have + 1):
                return None
            begin = max(rel, have - _LOOKAHEAD)


def _parse_headers(raw: bytes) -> dict[str, str]:
    """``Name: value`` lines after the version line, names lower-cased, values stripped: an ASCII
    block in ``rpj_tasks.native._speedups.wet_headers`` when the extension is built, anything else
    (and everything without it) in :func:`_parse_headers_python`, which defines the result."""
    if native is not None:
        headers: dict[str, str] | None = native.wet_headers(raw)
        if headers is not None:
            return headers
    return _parse_headers_python(raw)


def _parse_headers_python(raw: bytes) -> dict[str, str]:
    """Each line with a non-empty name before its first colon: ``name.strip().lower()`` ->
    ``value.strip()`` (the bytes decoded as UTF-8, U+FFFD for bad ones; the last of a repeated name wins)."""
    text = raw.decode("utf-8", "replace")
    return {name.strip().lower(): value.strip() for name, value in _HEADER_FIELD.findall(text)}


def _content_length(headers: dict[str, str]) -> int | None:
    value = headers.get("content-length", "")
    return int(value) if value.isascii() and value.isdigit() else None


def _separator_follows(buf: _Buffer, end: int) -> bool:
    """True if the bytes at ``pos + end`` are newlines, then ``WARC/`` (or the end of data)."""
    buf.fill(end + _LOOKAHEAD)
    tail = buf.data[buf.pos + end : buf.pos + end + _LOOKAHEAD].lstrip(b"\r\n")
    return tail[:5] == b"WARC/"[: len(tail)]


def _resync(buf: _Buffer) -> None:
    """Move to the next ``WARC/1.x`` line, or past all data up to the end/discontinuity.

    The bytes before it are searched and dropped a piece at a time (only the last few are kept, for
    a line split between pieces), so a long stretch of garbage takes no memory."""
    while True:
        match = _WARC_LINE.search(buf.data, buf.pos)
        if match:
            buf.pos = match.start() + 1
            return
        keep = min(buf.available(), _LOOKAHEAD)
        buf.pos = len(buf.data) - keep
        if not buf.fill(keep + 1):
            buf.resume()
            return


def _skip_newlines(buf: _Buffer) -> bool:
    """Skip the newlines before a record; False if the data runs out."""
    while buf.fill(1):
        match = _NEWLINES.match(buf.data, buf.pos)  # zero or more newlines: always matches
        buf.pos = match.end() if match else buf.pos
        if buf.available():
            return True
    return False


def _next_record(buf: _Buffer, report: _Report, max_record_bytes: int) -> WarcRecord | None:
    """Frame the next record; None at the end of the data.  Bad spans are reported and skipped."""
    while True:
        if not _skip_newlines(buf):
            if buf.eof:
                return None
            buf.resume()
            continue
        if not buf.fill(5) or buf.data[buf.pos : buf.pos + 5] != b"WARC/":
            report.bad("wet.skipped.garbage", buf.offset(), "bytes that are not a WARC record")
            _resync(buf)
            continue
        end = buf.search(_HEADER_END, 0, _MAX_HEADER)
        if end is None:
            if buf.ended:
                report.bad("wet.skipped.truncated", buf.offset(), "WARC header cut off")
                buf.resume()
            else:
                report.bad("wet.skipped.garbage", buf.offset(), "oversized WARC header")
                buf.pos += 1
                _resync(buf)
            continue
        record = _frame_block(buf, end.start() - buf.pos, end.end() - buf.pos, report, max_record_bytes)
        if record is not None:
            return record


def _frame_block(buf: _Buffer, head_len: int, start: int, report: _Report, max_record_bytes: int) -> WarcRecord | None:
    """Cut the block of the record at ``pos``, whose header ends at ``head_len``.

    Framing is by Content-Length when the declared block is followed by the record separator
    and the next ``WARC/`` header (or the end of data).  Otherwise the block runs up to the next
    ``WARC/1.x`` line (cc_net's line framing) and the record is reported as a length mismatch;
    if there is no such line and the declared block runs past the data, it is truncated.

    A block larger than ``max_record_bytes`` is dropped (``wet.too_large``): a declared one is
    skipped unread, by its Content-Length; a line-framed one is searched for no further than the
    limit, then the reader moves on to the next ``WARC/1.x`` line.
    """
    offset = buf.offset()
    headers = _parse_headers(buf.data[buf.pos : buf.pos + head_len])
    length = _content_length(headers)
    if length is None:
        report.bad("wet.skipped.missing_header", offset, "WARC record without a valid Content-Length")
        buf.pos += start - 1  # the newline before the block, so a WARC/ line right there is found
        _resync(buf)
        return None
    if length > max_record_bytes:
        report.too_large(
            offset, f"WARC record of {length} bytes (Content-Length) over max_record_bytes {max_record_bytes}, skipped unread"
        )
        buf.skip(start + length)
        return None
    if buf.fill(start + length) and _separator_follows(buf, start + length):
        block = buf.data[buf.pos + start : buf.pos + start + length]
        buf.pos += start + length
        return WarcRecord(headers, block, offset, True)
    window = start + max_record_bytes + _LOOKAHEAD  # holds the WARC/1.x line after any block within the limit
    match = buf.search(_WARC_LINE, start - 1, window)
    if match is None and buf.available() >= window:  # the whole window searched: the block runs past the limit
        what = f"Content-Length {length} does not match the block, and no WARC/1.x line follows within max_record_bytes {max_record_bytes}"
        report.too_large(offset, what + "; skipped to the next WARC/1.x line")
        buf.pos += start - 1
        _resync(buf)
        return None
    if match is None and (not buf.eof or buf.available() < start + length):
        report.bad("wet.skipped.truncated", offset, f"WARC record cut off (Content-Length {length})")
        buf.resume()
        return None
    stop = match.start() + 1 if match else len(buf.data)
    if stop - (buf.pos + start) > max_record_bytes:  # a few bytes over, at the window's end
        size = stop - buf.pos - start
        report.too_large(offset, f"line-framed WARC record of {size} bytes over max_record_bytes {max_record_bytes}, skipped")
        buf.pos = stop
        return None
    block = buf.data[buf.pos + start : stop]
    buf.pos = stop
    report.bad(
        "wet.length_mismatch",
        offset,
        f"Content-Length {length} does not match the block ({len(block)} bytes up to the next WARC/1.x line or the end)",
    )
    return WarcRecord(headers, block, offset, False)


def _records(stream: IO[bytes], report: _Report, max_record_bytes: int) -> Iterator[WarcRecord]:
    if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, int) or max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be a positive integer, not {max_record_bytes!r}")
    buf = _Buffer(_pieces(stream, report))
    while (record := _next_record(buf, report, max_record_bytes)) is not None:
        report.stats.inc("wet.records")
        yield record


def iter_records(
    stream: IO[bytes],
    source: str,
    stats: Stats,
    *,
    max_bad_records: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[WarcRecord]:
    """Every WARC record of a WET file (gzip, one or many members, or uncompressed), streamed.

    Damaged input is counted in ``stats`` (``wet.skipped.<reason>``, ``wet.length_mismatch``),
    logged on logger ``rpj.wet`` with ``source`` and the byte offset, and skipped; good records
    around it are kept.  With ``max_bad_records`` set, exceeding it raises WetFormatError.
    A record whose block exceeds ``max_record_bytes`` is dropped unread (``wet.too_large``, logged
    the same way; not a bad record).
    """
    yield from _records(stream, _Report(source, stats, max_bad_records), max_record_bytes)


def _content_lines(text: str, by_length: bool) -> list[str]:
    """The stripped lines cc_net sees for a block (universal newlines, as ``open(..., "rt")``).

    A length-framed block is followed by the standard ``\\r\\n\\r\\n`` separator, as in real files;
    a line-framed block already holds whatever followed it up to the next record.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    pieces = text.split("\n")
    if by_length:  # the separator, as lines: no "\r\n" pair spans the block's end and the separator
        pieces += ("", "")
    if not pieces[-1]:
        pieces.pop()
    return list(map(str.strip, pieces))


# A plain http(s) URL: printable ASCII, the host part free of brackets.  For these, urlsplit's
# netloc is the text between "//" and the first of "/?#" (nothing to strip, no IPv6 literal to
# check, nothing non-ASCII to NFKC-check), so one match gives it; any other URL goes to urlsplit.
_PLAIN_HTTP_URL = re.compile(r"https?://([^/?#\[\]\x00-\x20\x7f-\U0010ffff]*)(?:[/?#][\x21-\x7e]*)?\Z")


def url_netloc(url: str) -> str:
    """``urllib.parse.urlsplit(url).netloc`` (ValueError as it raises), plain http(s) URLs without
    calling it (see ``_PLAIN_HTTP_URL``)."""
    match = _PLAIN_HTTP_URL.match(url)
    if match is not None:
        return match.group(1)
    return urlsplit(url).netloc


def _document(record: WarcRecord, report: _Report) -> dict | None:
    """The CCNet document of a conversion record (cc_net ``parse_doc``, headers read by name)."""
    headers = record.headers
    missing = [name for name in _REQUIRED if not headers.get(name)]
    if missing:
        what = f"conversion record without {', '.join(missing)}"
        report.bad("wet.skipped.missing_header", record.offset, what)
        return None
    url = headers["warc-target-uri"]
    try:
        domain = url_netloc(url)
    except ValueError:
        report.bad("wet.skipped.bad_url", record.offset, f"unparsable WARC-Target-URI {url!r}")
        return None
    try:
        text = record.block.decode("utf-8")
    except UnicodeDecodeError:
        report.stats.inc("wet.invalid_utf8")
        logger.warning("%s: invalid UTF-8 replaced at byte offset %d", report.source, record.offset)
        text = record.block.decode("utf-8", "replace")
    lines = _content_lines(text, record.by_length) or [""]
    # The separator lines: cc_net drops two trailing empty lines, and only that case.
    end = -2 if len(lines) >= 2 and not lines[-1] and not lines[-2] else len(lines)
    body = lines[1:end]
    return {
        "url": url,
        "date_download": headers["warc-date"],
        "digest": headers["warc-block-digest"],
        "length": len(record.block) if record.by_length else _content_length(headers),
        "nlines": len(body),
        "source_domain": domain,
        "title": lines[0],
        "raw_content": "\n".join(body),
    }


def iter_documents(
    stream: IO[bytes],
    source: str,
    stats: Stats,
    min_len: int = 300,
    *,
    max_bad_records: int | None = None,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[dict]:
    """CCNet documents (``url, date_download, digest, length, nlines, source_domain, title,
    raw_content``) of the ``conversion`` records with ``len(raw_content) >= min_len``.

    Counters: ``wet.records``, ``wet.non_conversion``, ``wet.too_short``, ``wet.docs``,
    ``wet.invalid_utf8`` (decoded with U+FFFD and kept), plus those of :func:`iter_records`
    (``wet.too_large`` for a record over ``max_record_bytes``).
    """
    report = _Report(source, stats, max_bad_records)
    for record in _records(stream, report, max_record_bytes):
        if record.headers.get("warc-type") != "conversion":
            stats.inc("wet.non_conversion")
            continue
        doc = _document(record, report)
        if doc is None:
            continue
        if len(doc["raw_content"]) < min_len:
            stats.inc("wet.too_short")
            continue
        stats.inc("wet.docs")
        yield doc
