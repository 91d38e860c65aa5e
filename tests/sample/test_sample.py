"""The offline sample mirror: determinism, manifest vs. a plain gzip+WARC scan, language mix,
duplicates, boilerplate, broken records and the reference corpora."""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from rpj_tasks.ccnet.lid import LanguageIdentifier
from rpj_tasks.core.layout import LANGUAGES as MAIN_LANGS  # the sample's main languages: the five RPv2 ones
from rpj_tasks.download.wet import block_digest, gzip_member
from rpj_tasks.sample.mirror import MANIFEST_NAME, SAMPLE_CRAWL, generate_mirror, generate_reference_corpus

ISO3 = {"eng": "en", "deu": "de", "fra": "fr", "spa": "es", "ita": "it", "nld": "nl", "por": "pt", "pol": "pl", "swe": "sv"}
GZIP_HEADER = gzip_member(b"x")[:10]


@dataclass
class Record:
    offset: int
    headers: dict[str, str]
    block: bytes


@dataclass
class FileScan:
    members: int
    records: list[Record]
    corrupt: list[int]  # offsets of members zlib rejects
    truncated: list[int]  # offset of an unfinished final member


def scan_file(data: bytes) -> FileScan:
    """Split ``data`` into gzip members (resyncing on the next member header after a corrupt one)."""
    out = FileScan(0, [], [], [])
    pos = 0
    while pos < len(data):
        out.members += 1
        d = zlib.decompressobj(31)
        try:
            raw = d.decompress(data[pos:])
        except zlib.error:
            out.corrupt.append(pos)
            nxt = data.find(GZIP_HEADER, pos + 1)
            pos = len(data) if nxt < 0 else nxt
            continue
        if not d.eof:
            out.truncated.append(pos)
            break
        out.records.append(parse_record(pos, raw))
        pos = len(data) - len(d.unused_data)
    return out


def parse_record(offset: int, raw: bytes) -> Record:
    head, sep, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    assert sep and lines[0] == "WARC/1.0"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    length = int(headers["Content-Length"])
    assert rest[length:] == b"\r\n\r\n"
    return Record(offset, headers, rest[:length])


def ccnet_raw_content(text: str) -> str:
    """Title dropped, lines stripped: what CCNet keeps as ``raw_content`` of a record's text."""
    return "\n".join(line.strip() for line in text.rstrip("\n").split("\n")[1:])


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mirror")
    return root, generate_mirror(root.as_uri(), seed=11, segments=3, docs_per_segment=200)


@pytest.fixture(scope="module")
def scans(mirror: tuple[Path, dict]) -> dict[str, FileScan]:
    root, manifest = mirror
    return {path: scan_file((root / path).read_bytes()) for path in manifest["paths"]}


@pytest.fixture(scope="module")
def documents(scans: dict[str, FileScan]) -> list[Record]:
    """Conversion records with a URL and a UTF-8 block: the good documents."""
    out = []
    for scan in scans.values():
        for rec in scan.records:
            if rec.headers["WARC-Type"] == "conversion" and "WARC-Target-URI" in rec.headers:
                try:
                    rec.block.decode("utf-8")
                except UnicodeDecodeError:
                    continue
                out.append(rec)
    return out


def test_same_arguments_same_bytes(tmp_path: Path) -> None:
    def tree(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    runs = [generate_mirror(str(tmp_path / name), seed=3, segments=2, docs_per_segment=40) for name in ("a", "b")]
    assert runs[0] == runs[1]
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    generate_mirror(str(tmp_path / "c"), seed=4, segments=2, docs_per_segment=40)
    assert tree(tmp_path / "c") != tree(tmp_path / "a")
    wet = next((tmp_path / "a").rglob("*.warc.wet.gz")).read_bytes()
    assert wet[4:8] == b"\0\0\0\0"  # gzip mtime 0


def test_layout_and_paths_file(mirror: tuple[Path, dict]) -> None:
    root, manifest = mirror
    crawl_dir = root / "crawl-data" / SAMPLE_CRAWL
    listed = gzip.decompress((crawl_dir / "wet.paths.gz").read_bytes()).decode().splitlines()
    assert listed == manifest["paths"] and len(listed) == 3
    for path in listed:
        assert re.fullmatch(
            rf"crawl-data/{SAMPLE_CRAWL}/segments/\d+\.\d+/wet/CC-MAIN-\d{{14}}-\d{{14}}-\d{{5}}\.warc\.wet\.gz", path
        )
        assert (root / path).stat().st_size == manifest["files"][path]["bytes"]
    assert json.loads((crawl_dir / MANIFEST_NAME).read_text()) == manifest


def test_manifest_matches_scan(mirror: tuple[Path, dict], scans: dict[str, FileScan], documents: list[Record]) -> None:
    manifest = mirror[1]
    for path, scan in scans.items():
        assert scan.members == manifest["files"][path]["members"]
        assert scan.records[0].headers["WARC-Type"] == "warcinfo"
        assert scan.records[0].headers["WARC-Filename"] == path.rsplit("/", 1)[1]
    assert len(documents) == manifest["documents"] == 600
    langs = Counter(ISO3[rec.headers["WARC-Identified-Content-Language"]] for rec in documents)
    assert dict(langs) == manifest["languages"]
    short = sum(len(ccnet_raw_content(rec.block.decode())) < 300 for rec in documents)
    assert short == manifest["short_documents"] > 0
    for rec in documents:
        assert rec.headers["WARC-Block-Digest"] == block_digest(rec.block)
        assert "2000-01-03T00:00:00Z" <= rec.headers["WARC-Date"] <= "2000-01-14T23:59:59Z"
    urls = [rec.headers["WARC-Target-URI"] for rec in documents]
    assert len(set(urls)) == len(urls)


def test_broken_records(mirror: tuple[Path, dict], scans: dict[str, FileScan]) -> None:
    broken = {b["kind"]: b for b in mirror[1]["broken_records"]}
    assert set(broken) == {"corrupt_gzip", "truncated_member", "missing_header", "invalid_utf8"}
    assert scans[broken["corrupt_gzip"]["path"]].corrupt == [broken["corrupt_gzip"]["offset"]]
    assert scans[broken["truncated_member"]["path"]].truncated == [broken["truncated_member"]["offset"]]
    assert sum(len(s.corrupt) for s in scans.values()) == 1 and sum(len(s.truncated) for s in scans.values()) == 1
    by_offset = {(p, r.offset): r for p, s in scans.items() for r in s.records}
    missing = by_offset[(broken["missing_header"]["path"], broken["missing_header"]["offset"])]
    assert missing.headers["WARC-Type"] == "conversion" and "WARC-Target-URI" not in missing.headers
    latin = by_offset[(broken["invalid_utf8"]["path"], broken["invalid_utf8"]["offset"])]
    assert latin.headers["WARC-Target-URI"] == broken["invalid_utf8"]["url"]
    assert latin.headers["WARC-Block-Digest"] == block_digest(latin.block)
    with pytest.raises(UnicodeDecodeError):
        latin.block.decode("utf-8")


def test_without_broken_records(tmp_path: Path) -> None:
    manifest = generate_mirror(str(tmp_path), seed=2, segments=1, docs_per_segment=30, broken=False)
    scan = scan_file(next(tmp_path.rglob("*.warc.wet.gz")).read_bytes())
    assert manifest["broken_records"] == [] and not scan.corrupt and not scan.truncated
    assert len(scan.records) == scan.members == 31


def test_language_mix_is_identifiable(documents: list[Record], mirror: tuple[Path, dict]) -> None:
    manifest = mirror[1]
    assert set(manifest["languages"]) == {*MAIN_LANGS, "nl", "pt", "pl", "sv"}
    assert sum(manifest["languages"][lang] for lang in MAIN_LANGS) > 0.8 * manifest["documents"]
    lid = LanguageIdentifier()
    hits: dict[str, list[bool]] = {lang: [] for lang in MAIN_LANGS}
    for rec in documents:
        lang = ISO3[rec.headers["WARC-Identified-Content-Language"]]
        if lang in hits:
            hits[lang].append(lid.predict(ccnet_raw_content(rec.block.decode()))[0] == lang)
    for lang, ok in hits.items():
        assert len(ok) >= 30 and sum(ok) / len(ok) >= 0.95, (lang, sum(ok), len(ok))


def test_exact_and_near_duplicates(mirror: tuple[Path, dict], documents: list[Record]) -> None:
    manifest = mirror[1]
    by_url = {rec.headers["WARC-Target-URI"]: rec for rec in documents}
    assert manifest["exact_duplicates"] and manifest["near_duplicates"]
    for url, original in manifest["exact_duplicates"]:
        assert url != original and by_url[url].block == by_url[original].block
    for url, original in manifest["near_duplicates"]:
        a, b = by_url[url].block.decode().split(" "), by_url[original].block.decode().split(" ")
        assert a != b and len(a) == len(b) and sum(x != y for x, y in zip(a, b)) <= 4
    digests = Counter(rec.headers["WARC-Block-Digest"] for rec in documents)
    assert sum(n - 1 for n in digests.values()) == len(manifest["exact_duplicates"])


def test_boilerplate_lines_repeat_across_pages(mirror: tuple[Path, dict], documents: list[Record]) -> None:
    manifest = mirror[1]
    line_pages: Counter[str] = Counter()
    copyright_years: dict[str, set[str]] = {}
    for rec in documents:
        lines = rec.block.decode().rstrip("\n").split("\n")[1:]
        line_pages.update(set(lines))
        for line in lines:
            if m := re.fullmatch(r"© (\d{4}) (.+)", line):
                copyright_years.setdefault(m.group(2), set()).add(m.group(1))
    assert len(manifest["boilerplate_lines"]) >= 10
    for line, pages in manifest["boilerplate_lines"].items():
        assert line_pages[line] == pages > 1
    assert any(len(years) >= 3 for years in copyright_years.values())


def test_quality_varies(mirror: tuple[Path, dict], documents: list[Record], tmp_path: Path) -> None:
    """Per-document unigram perplexity against the reference corpus spreads widely."""
    corpus = generate_reference_corpus(str(tmp_path), ["en"], seed=1, docs_per_lang=2000)
    counts = Counter(re.findall(r"\w+", Path(corpus["en"]).read_text().lower()))
    total, vocab = sum(counts.values()), len(counts) + 1

    def perplexity(text: str) -> float:
        words = re.findall(r"\w+", text.lower())
        logp = sum(math.log((counts[w] + 1) / (total + vocab)) for w in words)
        return math.exp(-logp / max(1, len(words)))

    ppl = sorted(
        perplexity(ccnet_raw_content(rec.block.decode()))
        for rec in documents
        if rec.headers["WARC-Identified-Content-Language"] == "eng"
    )
    low, high = ppl[len(ppl) // 10], ppl[9 * len(ppl) // 10]
    assert high > 3 * low, (low, high)


def test_reference_corpus(tmp_path: Path) -> None:
    urls = generate_reference_corpus(tmp_path.as_uri(), ["it", "de", "fr"], seed=4, docs_per_lang=50)
    again = generate_reference_corpus(str(tmp_path / "again"), ["fr", "de", "it"], seed=4, docs_per_lang=50)
    lid = LanguageIdentifier()
    for lang in ("de", "fr", "it"):
        assert urls[lang] == (tmp_path / f"{lang}.txt").as_uri()
        text = (tmp_path / f"{lang}.txt").read_text(encoding="utf-8")
        assert text == Path(again[lang]).read_text(encoding="utf-8")
        lines = text.split("\n")
        assert lines[-1] == "" and len(lines) == 51 and all(lines[:-1])
        assert sum(lid.predict(line)[0] == lang for line in lines[:-1]) >= 48
