"""rpj_tasks.core.lines: the line reader (offsets, terminators, gzip endings) and bad-line accounting."""

from __future__ import annotations

import gzip
import io
import json
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rpj_tasks.core.lines import (
    INVALID_JSON,
    INVALID_UTF8,
    MAX_LOGGED_BAD_LINES,
    NOT_AN_OBJECT,
    BadLines,
    iter_lines,
    parse_json,
    parse_object,
)
from rpj_tasks.core.stats import Stats


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data, mtime=0) if name.endswith(".gz") else data)
    return path.as_uri()


def read(url: str, **kwargs) -> tuple[list[tuple[int, bytes]], Stats, BadLines]:
    stats = Stats()
    bad = BadLines(stats, "t")
    return list(iter_lines(url, bad, **kwargs)), stats, bad


@pytest.mark.parametrize("name", ["a.jsonl", "a.jsonl.gz"])
def test_offsets_and_terminators(tmp_path: Path, name: str) -> None:
    url = write(tmp_path, name, b'{"a": 1}\n\n{"b": 2}\nlast')
    lines, stats, bad = read(url)
    assert lines == [(0, b'{"a": 1}'), (9, b""), (10, b'{"b": 2}'), (19, b"last")]
    assert not stats.counts and bad.messages == []
    assert read(write(tmp_path, "b" + name, b"x\n"))[0] == [(0, b"x")]  # a final newline starts no line
    assert read(write(tmp_path, "c" + name, b""))[0] == []


def test_compression_follows_the_suffix_unless_told(tmp_path: Path) -> None:
    plain = tmp_path / "plain.gz"
    plain.write_bytes(b"not gzip\n")
    assert read(plain.as_uri(), compressed=False)[0] == [(0, b"not gzip")]
    lines, stats, bad = read(plain.as_uri())  # taken for gzip: nothing readable, counted
    assert lines == [] and stats["t.truncated"] == 1 and "byte 0: gzip stream ends early" in bad.messages[0]
    packed = tmp_path / "packed.txt"
    packed.write_bytes(gzip.compress(b"a\nb\n"))
    assert read(packed.as_uri(), compressed=True)[0] == [(0, b"a"), (2, b"b")]


def test_blank_lines_are_yielded(tmp_path: Path) -> None:
    lines, _, _ = read(write(tmp_path, "b.txt.gz", b"\n\n  \nx\n\n"))
    assert lines == [(0, b""), (1, b""), (2, b"  "), (5, b"x"), (7, b"")]


def test_crlf(tmp_path: Path) -> None:
    data = b'{"a": 1}\r\n{"b": 2}\r\nlone\rcr\r\n\r\nend\r'
    url = write(tmp_path, "crlf.jsonl.gz", data)
    lines, _, _ = read(url)
    # default: split at \n only; the \r stays (JSON ignores it), a lone \r is inside its line
    assert lines == [(0, b'{"a": 1}\r'), (10, b'{"b": 2}\r'), (20, b"lone\rcr\r"), (29, b"\r"), (31, b"end\r")]
    assert [parse_json(line)[0] for _, line in lines[:2]] == [{"a": 1}, {"b": 2}]
    # universal newlines: \r\n, \r and \n all end a line, as Python's text mode
    lines, _, _ = read(url, universal_newlines=True)
    assert lines == [(0, b'{"a": 1}'), (10, b'{"b": 2}'), (20, b"lone"), (25, b"cr"), (29, b""), (31, b"end")]
    assert [data[o : o + len(line)] for o, line in lines] == [line for _, line in lines]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b"ab\r\n"[x % 4] for x in b)))
def test_universal_newlines_split_as_text_mode(tmp_path_factory, data: bytes) -> None:
    url = write(tmp_path_factory.mktemp("u"), "u.txt", data)
    expected = [line.removesuffix("\n").encode() for line in io.TextIOWrapper(io.BytesIO(data), encoding="ascii")]
    lines, _, _ = read(url, universal_newlines=True)
    assert [line for _, line in lines] == expected
    assert all(data[o : o + len(line)] == line for o, line in lines)
    parts = data.split(b"\n")
    if parts[-1] == b"":
        parts.pop()  # a final newline (or an empty file) starts no line
    assert [line for _, line in read(url)[0]] == parts


def test_truncated_gzip_keeps_the_lines_before(tmp_path: Path) -> None:
    records = [json.dumps({"i": i, "text": f"line {i} " * 30}).encode() for i in range(300)]
    full = gzip.compress(b"\n".join(records) + b"\n", mtime=0)
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(full[: len(full) // 2])
    lines, stats, bad = read(path.as_uri())
    assert 0 < len(lines) < len(records)
    assert [line for _, line in lines] == records[: len(lines)]  # whole lines only: a partly read one is lost
    end = lines[-1][0] + len(lines[-1][1]) + 1
    assert stats["t.truncated"] == 1 and bad.messages == [
        f"{path.as_uri()}: byte {end}: gzip stream ends early (Compressed file ended before the end-of-stream marker "
        "was reached); later lines are lost"
    ]
    # a missing trailer alone (all data there) loses nothing but is still reported
    path.write_bytes(full[:-8])
    lines, stats, _ = read(path.as_uri())
    assert [line for _, line in lines] == records and stats["t.truncated"] == 1


def test_corrupt_gzip_data(tmp_path: Path) -> None:
    records = [b"line %d" % i for i in range(5000)]
    data = bytearray(gzip.compress(b"\n".join(records) + b"\n", mtime=0))
    data[-8] ^= 0xFF  # the CRC: every line reads, then the check fails
    path = tmp_path / "crc.txt.gz"
    path.write_bytes(bytes(data))
    lines, stats, bad = read(path.as_uri())
    assert [line for _, line in lines] == records and stats["t.truncated"] == 1 and "CRC check failed" in bad.messages[0]
    data[-8] ^= 0xFF
    data[len(data) // 2] ^= 0xFF  # deflate data: what decodes before the error is read (gzip cannot tell)
    path.write_bytes(bytes(data))
    lines, stats, _ = read(path.as_uri())
    assert stats["t.truncated"] == 1 and [line for _, line in lines[:100]] == records[:100]


def test_a_huge_line(tmp_path: Path) -> None:
    huge = b'{"raw_content": "' + b"x" * (24 << 20) + b'"}'
    url = write(tmp_path, "huge.jsonl.gz", b"{}\n" + huge + b"\n" + b"[1]\n")
    lines, stats, _ = read(url)
    assert [(o, len(line)) for o, line in lines] == [(0, 2), (3, len(huge)), (4 + len(huge), 3)]
    assert lines[1][1] == huge and not stats.counts
    assert len(parse_object(lines[1][1])[0]["raw_content"]) == 24 << 20


def test_parse_reasons() -> None:
    assert parse_json(b'{"a": "\xc3\xa9"}') == ({"a": "é"}, None)
    assert parse_json(b'{"a": "\xff"}') == (None, INVALID_UTF8)
    assert parse_json(b'{"a": "cut') == (None, INVALID_JSON)
    assert parse_json(b"") == (None, INVALID_JSON)  # a blank line is not JSON
    assert parse_json(b"[1, 2]") == ([1, 2], None)
    assert parse_object(b"[1, 2]") == (None, NOT_AN_OBJECT)
    assert parse_object(b'"s"') == (None, NOT_AN_OBJECT)
    assert parse_object(b"\xff") == (None, INVALID_UTF8)
    assert parse_object(b' {"a": null}\r') == ({"a": None}, None)
    # strict UTF-8 (documents) versus json's own detection (corpora): a BOM, encoded surrogates
    assert parse_json(b'\xef\xbb\xbf{"a": 1}') == (None, INVALID_JSON)
    assert parse_json(b'\xef\xbb\xbf{"a": 1}', encoding=None) == ({"a": 1}, None)
    assert parse_json(b'"\xed\xa0\x80"') == (None, INVALID_UTF8)
    assert parse_json(b'"\xed\xa0\x80"', encoding=None) == ("\ud800", None)
    assert parse_json(b'"\xff"', encoding=None) == (None, INVALID_UTF8)


def test_bad_lines_are_counted_and_the_first_described(caplog: pytest.LogCaptureFixture) -> None:
    stats = Stats()
    logger = logging.getLogger("rpj.test_lines")
    bad = BadLines(stats, "p", logger=logger)
    with caplog.at_level(logging.WARNING, logger="rpj.test_lines"):
        for i in range(MAX_LOGGED_BAD_LINES + 5):
            bad.line("file:///x.jsonl", 10 * i, INVALID_JSON if i % 2 else INVALID_UTF8, index=i)
        bad.truncated("file:///x.jsonl", 999, EOFError("cut"))
        bad.log_unlogged("x.jsonl")
    assert stats["p.bad_line"] == MAX_LOGGED_BAD_LINES + 5
    assert stats["p.bad_line.invalid_utf8"] == 13 and stats["p.bad_line.invalid_json"] == 12 and stats["p.truncated"] == 1
    assert len(bad.messages) == MAX_LOGGED_BAD_LINES and bad.not_logged == 6
    assert bad.messages[:2] == [
        "file:///x.jsonl: line 0 (byte 0): invalid utf8; skipped",
        "file:///x.jsonl: line 1 (byte 10): invalid json; skipped",
    ]
    assert caplog.text.count("; skipped") == MAX_LOGGED_BAD_LINES
    assert "x.jsonl: 6 more bad lines not logged" in caplog.text

    quiet = BadLines(stats := Stats(), "q", by_reason=False, limit=1)
    quiet.line("u", 5, NOT_AN_OBJECT, outcome="null record", detail="a list")
    quiet.line("u", 6, NOT_AN_OBJECT)
    assert dict(stats.counts) == {"q.bad_line": 2}
    assert quiet.messages == ["u: byte 5: not an object (a list); null record"] and quiet.not_logged == 1
    quiet.log_unlogged("u")  # no logger: nothing to do


# ---------------------------------------------------------------- the readers built on it


def test_models_corpus_reader(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """ccnet.models.read_corpus: text-mode line ends, blank lines skipped, bad lines counted and skipped."""
    from rpj_tasks.ccnet.models import read_corpus

    txt = write(tmp_path, "c.txt.gz", b"one\r\ntwo\rthree\n \n\xff bad\nfour")
    stats = Stats()
    with caplog.at_level(logging.WARNING, logger="rpj.models"):
        assert list(read_corpus(txt, stats)) == ["one", "two", "three", "four"]
    assert dict(stats.counts) == {"corpus.bad_line": 1, "corpus.bad_line.invalid_utf8": 1}
    assert f"{txt}: byte 17: invalid utf8; skipped" in caplog.text
    jsonl = write(tmp_path, "c.jsonl", b'{"text": "a"}\r\n\r\n{"text": 5}\n[1]\n{"text": "b\\r\\nc"}\n{"te')
    stats = Stats()
    assert list(read_corpus(jsonl, stats)) == ["a", "b\r\nc"]
    assert stats["corpus.bad_line"] == 3 and stats["corpus.bad_line.no_string_text"] == 2
    assert stats["corpus.bad_line.invalid_json"] == 1


def test_artifacts_corpus_reader(tmp_path: Path) -> None:
    """annotate.artifacts.build.iter_texts: json's own decoding of the bytes, a CR kept in text lines,
    one bad-line counter (the artifacts' manifest lists the counts)."""
    from rpj_tasks.annotate.artifacts.build import iter_texts

    url = write(tmp_path, "c.jsonl.gz", b'\xef\xbb\xbf{"text": "a"}\n{"text": null}\n\n{"text": "\xed\xa0\x80"}\n\xff\n')
    stats = Stats()
    assert list(iter_texts(url, stats, "c")) == ["a", "\ud800"]
    assert dict(stats.counts) == {"c.docs": 2, "c.bad_line": 3}
    url = write(tmp_path, "c.txt", b"x\r\n\n \ny")
    stats = Stats()
    assert list(iter_texts(url, stats, "c")) == ["x\r", "y"]
    assert dict(stats.counts) == {"c.docs": 2, "c.blank_line": 2}
