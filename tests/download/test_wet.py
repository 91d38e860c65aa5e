"""WET reader/writer: real fixtures (reference values from the data README) and damaged inputs."""

from __future__ import annotations

import gzip
import io
import json
import logging
import subprocess
import sys
import threading
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpj_tasks.core.config import DEFAULT_MAX_RECORD_BYTES
from rpj_tasks.core.schema import WET_DOCUMENT_FIELDS
from rpj_tasks.core.stats import Stats
from rpj_tasks.download.wet import (
    WetFormatError,
    _content_lines,
    _parse_headers,
    _parse_headers_python,
    block_digest,
    conversion_record,
    gzip_member,
    iter_documents,
    iter_records,
    url_netloc,
    warcinfo_record,
)

KEYS = list(WET_DOCUMENT_FIELDS)  # the first 8 documents fields, in order (core.schema, checked against the spec)
OLD_2014 = "CC-MAIN-20140820021334-00006-ip-10-180-136-8.ec2.internal.warc.wet"
DATE = "2023-01-26T21:25:04Z"


def read_docs(data: bytes, min_len: int = 1, **kwargs) -> tuple[list[dict], Stats]:
    stats = Stats()
    docs = list(iter_documents(io.BytesIO(data), "test.warc.wet.gz", stats, min_len, **kwargs))
    return docs, stats


def wet_file(path: Path) -> bytes:
    return path.read_bytes()


def text_of(i: int) -> str:
    return f"Title {i}\n" + "\n".join(f"line {j} of document {i}" for j in range(5))


def records(n: int) -> list[bytes]:
    return [conversion_record(f"https://example.com/{i}", DATE, text_of(i)) for i in range(n)]


def gz(recs: list[bytes]) -> list[bytes]:
    return [gzip_member(r) for r in recs]


class ShortReads(io.RawIOBase):
    """A stream whose reads return at most ``step`` bytes, to exercise every buffer boundary."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data, self._pos, self._step = data, 0, step

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        out = self._data[self._pos : self._pos + min(self._step, n if n >= 0 else self._step)]
        self._pos += len(out)
        return out


# ---- real fixtures --------------------------------------------------------------------------


def test_whirlwind_2024_layout(shared_data: Path) -> None:
    docs, stats = read_docs(wet_file(shared_data / "wet/whirlwind.warc.wet.gz"), min_len=300)
    assert len(docs) == 1
    doc = docs[0]
    assert list(doc) == KEYS
    assert doc["url"] == "https://an.wikipedia.org/wiki/Escopete"
    assert doc["date_download"] == "2024-05-18T01:58:10Z"
    assert doc["digest"] == "sha1:RDTSR52RUHWDA7QK4BK7OUHU3EXTXYUL"
    assert (doc["length"], doc["nlines"], len(doc["raw_content"])) == (4456, 181, 4258)
    assert doc["title"] == "Escopete - Biquipedia, a enciclopedia libre"
    assert doc["source_domain"] == "an.wikipedia.org"
    assert doc["nlines"] == len(doc["raw_content"].split("\n"))
    assert stats["wet.records"] == 2 and stats["wet.non_conversion"] == 1 and stats["wet.docs"] == 1


def test_whirlwind_without_language_header(shared_data: Path) -> None:
    plain = gzip.decompress(wet_file(shared_data / "wet/whirlwind.warc.wet.gz"))
    edited = plain.replace(b"WARC-Identified-Content-Language: spa\r\n", b"")
    assert len(edited) == len(plain) - 39
    expected, _ = read_docs(plain)
    for data in (edited, gzip_member(edited)):
        docs, stats = read_docs(data, min_len=300)
        assert docs == expected
        assert stats["wet.length_mismatch"] == 0


def test_old_2014_layout(shared_data: Path) -> None:
    docs, stats = read_docs(wet_file(shared_data / "wet" / OLD_2014), min_len=300)
    assert [d["length"] for d in docs] == [629, 626, 1283]
    assert [d["nlines"] for d in docs] == [22, 22, 84]
    assert [len(d["raw_content"]) for d in docs] == [621, 618, 1196]
    assert [d["title"] for d in docs] == [
        "Photos",
        "Photos",
        'Pages that link to "Thread:Talk:Gentse feesten/foo" - Whitespace (Hackerspace Gent)',
    ]
    assert docs[2]["source_domain"] == "0x20.be"
    assert stats["wet.length_mismatch"] == 0


@pytest.mark.parametrize("name", ["whirlwind.warc.wet.gz", OLD_2014])
def test_block_digest_of_real_files(shared_data: Path, name: str) -> None:
    stats = Stats()
    with open(shared_data / "wet" / name, "rb") as f:
        recs = [r for r in iter_records(f, name, stats) if r.headers["warc-type"] == "conversion"]
    assert recs and all(r.by_length for r in recs)
    for rec in recs:
        assert block_digest(rec.block) == rec.headers["warc-block-digest"]
        assert len(rec.block) == int(rec.headers["content-length"])


def test_cc_net_sample_with_wrong_lengths(shared_data: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = wet_file(shared_data / "wet/sample.warc.wet")
    with caplog.at_level(logging.WARNING, logger="rpj.wet"):
        docs, stats = read_docs(data, min_len=1)
    assert [d["url"] for d in docs] == [
        "http://sample_english.com",
        "http://sample_chinese.zh",
        "http://sample_russian.ru",
    ]
    assert docs[0]["raw_content"].endswith("\n")  # followed by one blank line only, as in cc_net
    assert len(docs[1]["raw_content"]) == 101
    assert [d["length"] for d in docs] == [353, 109, 355]  # the declared Content-Length
    assert stats["wet.length_mismatch"] == 4  # warcinfo + 3 conversions
    assert "test.warc.wet.gz: Content-Length 353" in caplog.text and "byte offset 617" in caplog.text
    assert len(read_docs(data, min_len=300)[0]) == 2
    with pytest.raises(WetFormatError, match=r"test\.warc\.wet\.gz: .* at byte offset 0"):
        read_docs(data, max_bad_records=0)


def test_clipped_record_is_reported_not_hanging(shared_data: Path) -> None:
    data = wet_file(shared_data / "wet/clipped.warc.gz")
    partial = zlib.decompressobj(31).decompress(data)  # what a lenient gunzip recovers
    results: dict[str, tuple[list[dict], Stats]] = {}

    def run() -> None:
        results["gz"] = read_docs(data)
        results["plain"] = read_docs(partial)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=20)
    assert not worker.is_alive(), "reader hangs on clipped.warc.gz"
    docs, stats = results["gz"]
    assert docs == [] and stats["wet.skipped.truncated_gzip"] == 1
    docs, stats = results["plain"]
    assert docs == [] and stats["wet.skipped.truncated"] == 1 and stats["wet.records"] == 0


# ---- writer ---------------------------------------------------------------------------------


def test_writer_round_trip() -> None:
    text = "A title\n  first line  \n\nsecond line with ünïcödé"
    rec = conversion_record("http://User@Example.com:8080/a?b", DATE, text, language="eng")
    info = warcinfo_record("x.warc.wet.gz", DATE, {"isPartOf": "CC-MAIN-2023-06"})
    data = gzip_member(info) + gzip_member(rec)
    assert gzip_member(rec) == gzip_member(rec)
    assert conversion_record("http://User@Example.com:8080/a?b", DATE, text, language="eng") == rec
    docs, stats = read_docs(data)
    assert docs == [
        {
            "url": "http://User@Example.com:8080/a?b",
            "date_download": DATE,
            "digest": block_digest((text + "\n").encode()),
            "length": len((text + "\n").encode()),
            "nlines": 3,
            "source_domain": "User@Example.com:8080",
            "title": "A title",
            "raw_content": "first line\n\nsecond line with ünïcödé",
        }
    ]
    assert stats["wet.non_conversion"] == 1
    head = rec.split(b"\r\n\r\n", 1)[0].decode()
    assert "WARC-Identified-Content-Language: eng" in head
    assert "WARC-Record-ID: <urn:uuid:" in head and "WARC-Refers-To: <urn:uuid:" in head
    assert rec.endswith(b"\n\r\n\r\n")


def test_record_ids_are_deterministic_and_distinct() -> None:
    a, b = (conversion_record(f"http://x/{i}", DATE, "t\nbody") for i in range(2))
    ids = [r.split(b"WARC-Record-ID: ", 1)[1].split(b"\r\n", 1)[0] for r in (a, b)]
    assert ids[0] != ids[1]
    given_id = conversion_record("http://x/0", DATE, "t", record_id="<urn:uuid:1>")
    assert b"WARC-Record-ID: <urn:uuid:1>\r\n" in given_id


@settings(max_examples=40, deadline=None)
@given(
    texts=st.lists(st.text(st.characters(blacklist_categories=["Cs"]), max_size=200), max_size=6),
    step=st.integers(1, 300),
    compress=st.booleans(),
)
def test_round_trip_any_text_any_chunking(texts: list[str], step: int, compress: bool) -> None:
    recs = [conversion_record(f"http://h/{i}", DATE, t) for i, t in enumerate(texts)]
    data = b"".join(gz(recs) if compress else recs)
    stats = Stats()
    got = list(iter_documents(ShortReads(data, step), "s", stats, 0))
    expected, _ = read_docs(b"".join(recs), min_len=0)
    assert got == expected
    assert [d["url"] for d in got] == [f"http://h/{i}" for i in range(len(texts))]
    assert stats["wet.records"] == len(texts) and stats["wet.length_mismatch"] == 0


@pytest.mark.parametrize("step", [1, 2, 7, 4096])
def test_tiny_reads(step: int) -> None:
    recs = records(4)
    expected, _ = read_docs(b"".join(recs))
    for data in (b"".join(recs), b"".join(gz(recs)), gzip_member(b"".join(recs))):
        assert list(iter_documents(ShortReads(data, step), "s", Stats(), 1)) == expected


# ---- damaged and unusual input --------------------------------------------------------------


def corrupt(member: bytes) -> bytes:
    mid = len(member) // 2
    return member[:mid] + bytes(b ^ 0x55 for b in member[mid : mid + 8]) + member[mid + 8 :]


@pytest.mark.parametrize("where", ["deflate data", "crc"])
def test_corrupt_gzip_member_in_the_middle(where: str, caplog: pytest.LogCaptureFixture) -> None:
    members = gz(records(5))
    bad = corrupt(members[2]) if where == "deflate data" else members[2][:-8] + b"\0" * 4 + members[2][-4:]
    data = b"".join(members[:2] + [bad] + members[3:])
    with caplog.at_level(logging.WARNING, logger="rpj.wet"):
        docs, stats = read_docs(data)
    assert [d["url"] for d in docs] == [f"https://example.com/{i}" for i in (0, 1, 3, 4)]
    assert stats["wet.skipped.corrupt_gzip"] == 1
    offset = len(members[0]) + len(members[1])
    assert "test.warc.wet.gz: corrupt gzip member" in caplog.text
    assert f"at byte offset {offset}" in caplog.text


def test_garbage_between_gzip_members() -> None:
    members = gz(records(3))
    docs, stats = read_docs(members[0] + b"\0\0junk" + members[1] + members[2] + b"\n")
    assert len(docs) == 3
    assert stats["wet.skipped.corrupt_gzip"] == 2


def test_corrupt_part_of_a_single_big_member() -> None:
    """A whole file in one gzip member: records decoded before the damage are kept."""
    recs = [conversion_record(f"http://h/{i}", DATE, f"T\n{i}" + " word" * 60_000) for i in range(8)]
    member = gzip_member(b"".join(recs))
    docs, _ = read_docs(member)
    assert len(docs) == 8
    cut = len(member) * 3 // 4
    damaged = member[:cut] + bytes(b ^ 0xFF for b in member[cut : cut + 64]) + member[cut + 64 :]
    docs, stats = read_docs(damaged)
    assert 1 <= len(docs) < 8
    assert [d["url"] for d in docs] == [f"http://h/{i}" for i in range(len(docs))]
    assert stats["wet.skipped.corrupt_gzip"] == 1 and stats["wet.skipped.truncated"] == 1


def test_truncated_final_member() -> None:
    members = gz(records(3))
    docs, stats = read_docs(b"".join(members[:2]) + members[2][: len(members[2]) // 2])
    assert [d["url"] for d in docs] == ["https://example.com/0", "https://example.com/1"]
    assert stats["wet.skipped.truncated_gzip"] == 1


def test_truncated_record_in_plain_file() -> None:
    recs = records(3)
    docs, stats = read_docs(b"".join(recs)[:-40])
    assert len(docs) == 2 and stats["wet.skipped.truncated"] == 1


def test_missing_required_headers() -> None:
    recs = records(4)
    recs[1] = recs[1].replace(b"WARC-Target-URI: https://example.com/1\r\n", b"")
    recs[2] = recs[2].replace(b"Content-Length:", b"Content-Size:")
    docs, stats = read_docs(b"".join(gz(recs)))
    assert [d["url"] for d in docs] == ["https://example.com/0", "https://example.com/3"]
    assert stats["wet.skipped.missing_header"] == 2
    # the same without gzip members: framing must recover after the record without a length
    docs, _ = read_docs(b"".join(recs))
    assert [d["url"] for d in docs] == ["https://example.com/0", "https://example.com/3"]


def test_reordered_lowercase_headers_and_lf_only() -> None:
    rec = records(1)[0]
    head, rest = rec.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    shuffled = [lines[0]] + [line.lower() if b"Length" in line else line for line in reversed(lines[1:])]
    reordered = b"\r\n".join(shuffled) + b"\r\n\r\n" + rest
    lf_only = b"\n".join(lines) + b"\n\n" + rest[: -len(b"\r\n\r\n")] + b"\n\n"
    expected, _ = read_docs(rec)
    for data in (reordered, lf_only):
        docs, stats = read_docs(data + data)
        assert docs == expected + expected
        assert stats["wet.length_mismatch"] == 0


def test_invalid_utf8_is_replaced_and_counted() -> None:
    rec = conversion_record("http://h/", DATE, "T\ncafX ok").replace(b"cafX", b"caf\xe9")  # same length
    docs, stats = read_docs(rec)
    assert docs[0]["raw_content"] == "caf\ufffd ok"
    assert stats["wet.invalid_utf8"] == 1


def test_empty_and_blank_blocks() -> None:
    empty = conversion_record("http://h/0", DATE, "")
    blank = conversion_record("http://h/1", DATE, "\n")
    assert b"Content-Length: 0\r\n" in empty
    docs, stats = read_docs(empty + blank, min_len=0)
    assert [(d["title"], d["raw_content"], d["nlines"], d["length"]) for d in docs] == [
        ("", "", 0, 0),
        ("", "", 0, 1),
    ]
    docs, stats = read_docs(empty + blank)
    assert docs == [] and stats["wet.too_short"] == 2


def test_single_empty_line_record_in_line_framing() -> None:
    """cc_net raises IndexError on a record whose content is one empty line; we must not."""
    rec = conversion_record("http://h/", DATE, "").replace(b"Content-Length: 0", b"Content-Length: 5")
    data = rec[: -len(b"\r\n\r\n")] + b"\n" + records(1)[0]
    docs, stats = read_docs(data, min_len=0)
    assert [(d["title"], d["raw_content"], d["nlines"]) for d in docs[:1]] == [("", "", 0)]
    assert len(docs) == 2 and stats["wet.length_mismatch"] == 1


def test_warc_line_inside_a_block_does_not_start_a_record() -> None:
    text = "Title\nbefore\nWARC/1.0\nWARC-Type: conversion\n\nafter"
    data = b"".join(gz([conversion_record("http://h/0", DATE, text)] + records(1)))
    docs, stats = read_docs(data)
    assert docs[0]["raw_content"] == "before\nWARC/1.0\nWARC-Type: conversion\n\nafter"
    assert len(docs) == 2 and stats["wet.records"] == 2


def test_garbage_before_a_record_resyncs() -> None:
    recs = records(2)
    docs, stats = read_docs(b"junk\r\nWARC/0.9 \n" + recs[0] + recs[1])
    assert len(docs) == 2 and stats["wet.skipped.garbage"] == 1


def test_bytes_after_a_block_that_are_not_a_record_mean_a_wrong_length() -> None:
    """After a block must come the separator and ``WARC/``; otherwise lines decide (as cc_net)."""
    recs = records(2)
    docs, stats = read_docs(recs[0] + b"extra line\n" + recs[1])
    assert docs[0]["raw_content"].endswith("line 4 of document 0\n\n\nextra line")
    assert docs[1] == read_docs(recs[1])[0][0]
    assert stats["wet.length_mismatch"] == 1


def test_min_len_and_counters() -> None:
    recs = [conversion_record(f"http://h/{n}", DATE, "T\n" + "x" * n) for n in (299, 300)]
    docs, stats = read_docs(b"".join(gz(recs)), min_len=300)
    assert [d["url"] for d in docs] == ["http://h/300"]
    assert (stats["wet.records"], stats["wet.docs"], stats["wet.too_short"]) == (2, 1, 1)


# ---- the per-record size limit (max_record_bytes) ------------------------------------------

LIMIT = 1 << 12


def sized_record(url: str, size: int, declared: int | None = None) -> bytes:
    """A conversion record whose block is ``size`` bytes (a title, then one long line); with
    ``declared``, its Content-Length says that instead."""
    rec = conversion_record(url, DATE, "T\n" + "y" * (size - 3))
    assert f"Content-Length: {size}\r\n".encode() in rec
    return (
        rec
        if declared is None
        else rec.replace(f"Content-Length: {size}\r\n".encode(), f"Content-Length: {declared}\r\n".encode())
    )


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("step", [None, 1000])
def test_a_record_over_the_limit_is_dropped_and_the_next_ones_read(
    compress: bool, step: int | None, caplog: pytest.LogCaptureFixture
) -> None:
    good = records(2)
    big = sized_record("http://h/big", LIMIT + 1)
    parts = gz([good[0], big, good[1]]) if compress else [good[0], big, good[1]]
    data = b"".join(parts)
    stats = Stats()
    with caplog.at_level(logging.WARNING, logger="rpj.wet"):
        stream = ShortReads(data, step) if step else io.BytesIO(data)
        docs = list(iter_documents(stream, "test.warc.wet.gz", stats, 1, max_record_bytes=LIMIT))
    assert docs == read_docs(parts[0] + parts[2])[0]  # the good records, as if the big one were not there
    assert (stats["wet.too_large"], stats["wet.records"], stats["wet.docs"]) == (1, 2, 2)
    assert f"test.warc.wet.gz: WARC record of {LIMIT + 1} bytes (Content-Length) over max_record_bytes {LIMIT}" in caplog.text
    assert f"at byte offset {len(parts[0])}" in caplog.text  # of its gzip member, or of the record in a plain file


def test_a_record_exactly_at_the_limit_is_kept() -> None:
    data = b"".join(gz([sized_record("http://h/at", LIMIT)]))
    docs, stats = read_docs(data, max_record_bytes=LIMIT)
    assert [d["length"] for d in docs] == [LIMIT] and stats["wet.too_large"] == 0
    docs, stats = read_docs(data, max_record_bytes=LIMIT - 1)
    assert docs == [] and stats["wet.too_large"] == 1


def test_the_default_limit_is_the_snapshot_default() -> None:
    data = b"".join(
        gz([sized_record("http://h/at", DEFAULT_MAX_RECORD_BYTES), sized_record("http://h/over", DEFAULT_MAX_RECORD_BYTES + 1)])
    )
    docs, stats = read_docs(data)
    assert [d["url"] for d in docs] == ["http://h/at"] and stats["wet.too_large"] == 1
    with pytest.raises(ValueError, match="max_record_bytes must be a positive integer"):
        read_docs(data, max_record_bytes=0)


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("block", [LIMIT, LIMIT + 1, LIMIT + 100, 3 * LIMIT])
def test_a_line_framed_block_respects_the_limit(compress: bool, block: int, caplog: pytest.LogCaptureFixture) -> None:
    """A wrong Content-Length frames the block by lines up to the next WARC/1.x line (block = the
    text and the 4 separator bytes); that block too must fit the limit, and is searched no further."""
    good = records(2)
    liar = sized_record("http://h/liar", block - 4, declared=10)
    recs = [good[0], liar, good[1]]
    with caplog.at_level(logging.WARNING, logger="rpj.wet"):
        docs, stats = read_docs(b"".join(gz(recs) if compress else recs), max_record_bytes=LIMIT)
    if block <= LIMIT:
        assert [d["url"] for d in docs] == ["https://example.com/0", "http://h/liar", "https://example.com/1"]
        assert (stats["wet.length_mismatch"], stats["wet.too_large"]) == (1, 0)
    else:
        assert [d["url"] for d in docs] == ["https://example.com/0", "https://example.com/1"]
        assert (stats["wet.length_mismatch"], stats["wet.too_large"], stats["wet.skipped.garbage"]) == (0, 1, 0)
        assert f"max_record_bytes {LIMIT}" in caplog.text


def test_a_declared_length_over_the_limit_is_skipped_by_that_length() -> None:
    """The bytes a record declares are skipped unread; if they were not all its own (a wrong
    Content-Length), what follows them is not a record and the reader resyncs on the next one."""
    good = records(2)
    liar = sized_record("http://h/liar", 100, declared=LIMIT + 1)
    docs, stats = read_docs(good[0] + liar + b"z" * LIMIT + b"\n" + good[1], max_record_bytes=LIMIT)
    assert [d["url"] for d in docs] == ["https://example.com/0", "https://example.com/1"]
    assert (stats["wet.too_large"], stats["wet.skipped.garbage"]) == (1, 1)


_PEAK_RSS_OF_READING = """
import json, resource, sys
from rpj_tasks.core.stats import Stats
from rpj_tasks.download.wet import iter_documents
stats = Stats()
with open(sys.argv[1], "rb") as f:
    urls = [doc["url"] for doc in iter_documents(f, sys.argv[1], stats, 1)]
print(json.dumps({"urls": urls, "too_large": stats["wet.too_large"], "peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
"""


def write_wet_with_giant_record(path: Path, size: int, compress: bool) -> None:
    """A good record, a ``size``-byte single-line conversion record (written a MiB at a time, in one
    gzip member when ``compress``), another good record."""
    good = records(2)
    head = (
        f"WARC/1.0\r\nWARC-Type: conversion\r\nWARC-Target-URI: http://h/giant\r\nWARC-Date: {DATE}\r\n"
        f"WARC-Block-Digest: sha1:X\r\nContent-Length: {size}\r\n\r\n"
    ).encode()
    chunk = b"giant line " * (1 << 17)
    with open(path, "wb") as f:
        f.write(gzip_member(good[0]) if compress else good[0])
        z = zlib.compressobj(6, zlib.DEFLATED, 31) if compress else None
        for piece in [head, *[chunk[: min(len(chunk), size - done)] for done in range(0, size, len(chunk))], b"\r\n\r\n"]:
            f.write(z.compress(piece) if z else piece)
        if z:
            f.write(z.flush())
        f.write(gzip_member(good[1]) if compress else good[1])


@pytest.mark.parametrize("compress", [True, False])
def test_memory_stays_bounded_past_a_giant_record(tmp_path: Path, compress: bool) -> None:
    """A 50 MB record (over the default limit) is skipped without being held: reading the file
    takes about as much memory as reading the same file without it (measured: +13 MB with gzip,
    +4 MB plain; before the limit, +240 MB)."""

    def read(size: int) -> dict:
        path = tmp_path / f"{size}.warc.wet"
        write_wet_with_giant_record(path, size, compress)
        out = subprocess.run(
            [sys.executable, "-c", _PEAK_RSS_OF_READING, str(path)], capture_output=True, timeout=300, check=True
        )
        return json.loads(out.stdout)

    baseline, giant = read(0), read(50_000_000)
    assert giant["urls"] == ["https://example.com/0", "https://example.com/1"] and giant["too_large"] == 1
    assert giant["peak_kib"] - baseline["peak_kib"] < 32 * 1024, (baseline, giant)


URL_PARTS = st.sampled_from(
    [
        "http://",
        "https://",
        "HTTP://",
        "ftp://",
        "//",
        "[",
        "]",
        "[::1]",
        "@",
        ":",
        "/",
        "?",
        "#",
        " ",
        "\t",
        "\n",
        "\x00",
        "\x7f",
        "é",
        "ｅ",
        "\u2100",
        "a",
        "b.example",
        ":8080",
        "%41",
    ]
)


@settings(max_examples=1000, deadline=None)
@given(st.tuples(st.sampled_from(["", "http://", "https://"]), st.lists(URL_PARTS, max_size=12).map("".join)).map("".join))
def test_url_netloc_is_urlsplit_netloc(url):
    try:
        expected: str | type[ValueError] = urlsplit(url).netloc
    except ValueError:
        expected = ValueError
    try:
        got: str | type[ValueError] = url_netloc(url)
    except ValueError:
        got = ValueError
    assert got == expected


def test_url_netloc_plain_urls():
    for url in ("https://a.example/x?y#z", "http://u:p@b.example:80", "http://c.example?q", "https://[::1]:8/", "http://[x/"):
        try:
            expected = urlsplit(url).netloc
        except ValueError:
            with pytest.raises(ValueError):
                url_netloc(url)
        else:
            assert url_netloc(url) == expected


_BLOCK_CHARS = st.sampled_from(["\r", "\n", "\r\n", " ", "\t", "\x85", "\u3000", "a", "é", "\x1f", "WARC/1.0"])


@settings(max_examples=1000, deadline=None)
@given(st.lists(_BLOCK_CHARS, max_size=16).map("".join), st.booleans())
def test_content_lines_equal_the_literal_reading(text: str, by_length: bool) -> None:
    """The lines of a block equal universal-newline reading of the block plus, when framed by its
    Content-Length, the ``\\r\\n\\r\\n`` separator (what the reader did before it added the
    separator as two empty lines instead of as text)."""
    literal = text + ("\r\n\r\n" if by_length else "")
    pieces = io.StringIO(literal, newline=None).read().split("\n")
    if not pieces[-1]:
        pieces.pop()
    assert _content_lines(text, by_length) == [line.strip() for line in pieces]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["WARC/1.0", "\r\n", "\n", ":", " ", "\t", "\x1c", "Name", "naMe", "v", "é", "\r"]), max_size=24))
def test_header_fields_equal_the_literal_reading(parts: list[str]) -> None:
    """Headers: each line with a non-empty name before its first colon, name stripped and
    lower-cased, value stripped, the last of a repeated name wins."""
    raw = "".join(parts)
    expected = {}
    for line in raw.split("\n"):
        name, colon, value = line.partition(":")
        if colon and name:
            expected[name.strip().lower()] = value.strip()
    for parse in (_parse_headers, _parse_headers_python):
        got = parse(raw.encode())
        assert got == expected and list(got) == list(expected)


_HEADER_BYTES = st.sampled_from(
    [b"WARC/1.0", b"\r\n", b"\n", b":", b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x1f", b"\x00", b"\x7f", b"\x80"]
    + [b"\xc3\xa9", b"\xff", b"\xe2\x80\x83", b"A-Z", b"a", b"Content-Length", b"WARC-Type", b"=", b"\xc2\x85", b"x" * 300]
)


def test_native_wet_headers_is_built() -> None:
    from rpj_tasks.native import native

    assert native is not None and hasattr(native, "wet_headers")


@settings(max_examples=2000, deadline=None)
@given(st.lists(_HEADER_BYTES, max_size=30).map(b"".join))
def test_native_wet_headers_equal_python(raw: bytes) -> None:
    """The C header parser equals its twin on any bytes (None, i.e. the twin, for non-ASCII ones),
    key order included."""
    from rpj_tasks.native import native

    assert native is not None
    expected = _parse_headers_python(raw)
    got = native.wet_headers(raw)
    if not raw.isascii():
        assert got is None
        got = _parse_headers(raw)
    assert got == expected and list(got) == list(expected)


def test_native_wet_headers_every_ascii_byte() -> None:
    """Every ASCII byte as a name's and a value's first, middle and last character."""
    from rpj_tasks.native import native

    assert native is not None
    for code in range(128):
        ch = bytes([code])
        for raw in (ch + b"n" + ch + b":" + ch + b"v" + ch, b"n" + ch + b"x: v" + ch + b"w\r\n", ch + b": " + ch):
            expected = _parse_headers_python(raw)
            got = native.wet_headers(raw)
            assert got == expected and list(got) == list(expected), raw
