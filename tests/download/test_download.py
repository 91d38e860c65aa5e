"""The download stage against a real HTTP server on 127.0.0.1 serving a generated sample mirror."""

from __future__ import annotations

import gzip
import logging
import random
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rpj_tasks.core import storage
from rpj_tasks.core.stats import Stats
from rpj_tasks.download.fetch import DownloadError, PermanentDownloadError, RetryPolicy, download_shard
from rpj_tasks.download.listing import list_segments, shard_segments
from rpj_tasks.sample.mirror import SAMPLE_CRAWL, generate_mirror


class MirrorServer:
    """Serves ``root`` over HTTP; can be told to fail for given paths."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.not_found: set[str] = set()
        self.failures: dict[str, list[int]] = {}  # path -> status codes to answer first, in order
        self.truncate_once: set[str] = set()
        self.corrupt_once: set[str] = set()  # served once with a byte flipped in the middle (same length)
        self.hits: Counter[str] = Counter()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path.lstrip("/")
                server.hits[path] += 1
                file = server.root / path
                if path in server.not_found or not file.is_file():
                    return self._reply(404, b"NoSuchKey")
                if server.failures.get(path):
                    status = server.failures[path].pop(0)
                    return self._reply(status, b"<Error><Code>SlowDown</Code></Error>")
                body = file.read_bytes()
                if path in server.truncate_once:
                    server.truncate_once.discard(path)
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body[: len(body) // 2])
                    self.close_connection = True
                    return None
                if path in server.corrupt_once:
                    server.corrupt_once.discard(path)
                    middle = len(body) // 2
                    body = body[:middle] + bytes([body[middle] ^ 0xFF]) + body[middle + 1 :]
                return self._reply(200, body)

            def _reply(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        return Handler


@pytest.fixture(scope="module")
def mirror(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("mirror")
    manifest = generate_mirror(str(root), seed=5, segments=3, docs_per_segment=4, broken=False)
    return root, manifest


@pytest.fixture
def server(mirror: tuple[Path, dict]) -> Iterator[MirrorServer]:
    srv = MirrorServer(mirror[0])
    yield srv
    srv.close()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def policy(sleeps: list[float]) -> RetryPolicy:
    return RetryPolicy(max_attempts=4, base_delay=0.01, max_delay=0.05, sleep=sleeps.append, rng=random.Random(7))


def _staged_files(staging: Path) -> list[Path]:
    return sorted(p for p in staging.rglob("*") if p.is_file())


def test_list_segments_over_http_and_file(server: MirrorServer, mirror: tuple[Path, dict]) -> None:
    root, manifest = mirror
    assert list_segments(server.url, SAMPLE_CRAWL) == manifest["paths"]
    assert list_segments(root.as_uri(), SAMPLE_CRAWL) == manifest["paths"]


def test_paths_file_with_blank_lines_and_spaces(tmp_path: Path) -> None:
    crawl_dir = tmp_path / "crawl-data" / "CC-MAIN-2099-01"
    crawl_dir.mkdir(parents=True)
    a, b, c = (f"crawl-data/CC-MAIN-2099-01/segments/16{i}.{i}/wet/CC-MAIN-2099-0000{i}.warc.wet.gz" for i in (1, 2, 3))
    (crawl_dir / "wet.paths.gz").write_bytes(gzip.compress(f"{b}\n\n  {a} \r\n\n\n{c}".encode()))
    assert list_segments(tmp_path.as_uri(), "CC-MAIN-2099-01") == [b, a, c]


def test_missing_paths_file_fails_naming_url(server: MirrorServer, policy: RetryPolicy) -> None:
    with pytest.raises(DownloadError, match=r"CC-MAIN-1999-99/wet\.paths\.gz.*404"):
        list_segments(server.url, "CC-MAIN-1999-99", retry=policy)


def test_download_over_http(
    server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root, manifest = mirror
    stats = Stats()
    with caplog.at_level(logging.INFO, logger="rpj.download"):
        staged = download_shard(server.url, manifest["paths"], tmp_path.as_uri(), stats)
    assert staged == [(tmp_path / p).as_uri() for p in manifest["paths"]]
    for path in manifest["paths"]:
        assert (tmp_path / path).read_bytes() == (root / path).read_bytes()
    total = sum((root / p).stat().st_size for p in manifest["paths"])
    assert stats["download.segments"] == 3 and stats["download.bytes"] == total
    assert stats["download.retries"] == 0 and stats["download.skipped_existing"] == 0
    assert sum("1 attempt(s)" in r.getMessage() for r in caplog.records) == 3
    assert not [p for p in _staged_files(tmp_path) if ".tmp-" in p.name]


@pytest.mark.parametrize("status", [503, 500, 429])
def test_transient_status_is_retried(
    status: int, server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy, sleeps: list[float]
) -> None:
    root, manifest = mirror
    target = manifest["paths"][1]
    server.failures[target] = [status, status]
    stats = Stats()
    download_shard(server.url, manifest["paths"], str(tmp_path), stats, retry=policy)
    assert server.hits[target] == 3
    assert stats["download.retries"] == 2 and stats["download.segments"] == 3
    assert (tmp_path / target).read_bytes() == (root / target).read_bytes()
    # full jitter: retry k sleeps in [0, base * 2 ** (k - 1)]
    assert len(sleeps) == 2 and 0 <= sleeps[0] <= 0.01 and 0 <= sleeps[1] <= 0.02


def test_404_fails_at_once_naming_url(
    server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy, sleeps: list[float]
) -> None:
    manifest = mirror[1]
    target = manifest["paths"][2]
    server.not_found.add(target)
    stats = Stats()
    with pytest.raises(DownloadError, match="404") as err:
        download_shard(server.url, manifest["paths"], str(tmp_path), stats, retry=policy)
    assert server.url + target in str(err.value)
    assert server.hits[target] == 1 and sleeps == [] and stats["download.retries"] == 0
    assert stats["download.segments"] == 2 and not (tmp_path / target).exists()


def test_persistent_503_gives_up_after_max_attempts(
    server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy, sleeps: list[float]
) -> None:
    target = mirror[1]["paths"][0]
    server.failures[target] = [503] * 10
    stats = Stats()
    with pytest.raises(DownloadError, match="503") as err:
        download_shard(server.url, [target], str(tmp_path), stats, retry=policy)
    assert server.url + target in str(err.value) and "4 attempts" in str(err.value)
    assert server.hits[target] == 4 and len(sleeps) == 3 and stats["download.retries"] == 3
    assert all(s <= 0.05 for s in sleeps)  # capped by max_delay
    assert _staged_files(tmp_path) == []


def test_truncated_body_is_retried(server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy) -> None:
    root, manifest = mirror
    target = manifest["paths"][0]
    server.truncate_once.add(target)
    stats = Stats()
    download_shard(server.url, [target], str(tmp_path), stats, retry=policy)
    assert server.hits[target] == 2 and stats["download.retries"] == 1
    assert (tmp_path / target).read_bytes() == (root / target).read_bytes()
    assert len(_staged_files(tmp_path)) == 1


def test_connection_refused_is_retried_then_fails(
    mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy, sleeps: list[float]
) -> None:
    with socket.socket() as s:  # a port with nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="ConnectionError") as err:
        download_shard(f"http://127.0.0.1:{port}/", mirror[1]["paths"][:1], str(tmp_path), Stats(), retry=policy)
    assert f"127.0.0.1:{port}" in str(err.value) and len(sleeps) == 3


def test_non_gzip_body_is_rejected(server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy) -> None:
    with pytest.raises(DownloadError, match="not gzip"):
        download_shard(server.url, [f"crawl-data/{SAMPLE_CRAWL}/sample_manifest.json"], str(tmp_path), Stats(), retry=policy)
    assert _staged_files(tmp_path) == []


def test_skip_existing_and_force(server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path) -> None:
    root, manifest = mirror
    paths = manifest["paths"]
    download_shard(server.url, paths, str(tmp_path), Stats())
    stats = Stats()
    download_shard(server.url, paths, str(tmp_path), stats)
    assert stats["download.skipped_existing"] == 3 and stats["download.segments"] == 0
    assert all(server.hits[p] == 1 for p in paths)
    stats = Stats()
    download_shard(server.url, paths, str(tmp_path), stats, force=True)
    assert stats["download.segments"] == 3 and stats["download.skipped_existing"] == 0
    assert all(server.hits[p] == 2 for p in paths)
    assert (tmp_path / paths[0]).read_bytes() == (root / paths[0]).read_bytes()


def test_damaged_staged_file_without_record_is_fetched_again(
    server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path
) -> None:
    """A staged file with no integrity record (a run died before its record) is kept only if its gzip
    stream is whole: a truncated copy (the defect: it was kept and mined as finished) is replaced."""
    root, manifest = mirror
    paths = manifest["paths"]
    download_shard(server.url, paths, str(tmp_path), Stats())
    whole = (root / paths[0]).read_bytes()
    (tmp_path / paths[0]).write_bytes(whole[: len(whole) // 2])
    stats = Stats()
    download_shard(server.url, paths, str(tmp_path), stats)
    assert stats["download.skipped_existing"] == 2 and stats["download.segments"] == 1
    assert stats["download.refetched_staged"] == 1
    assert (tmp_path / paths[0]).read_bytes() == whole


def test_staged_file_not_matching_its_record_is_fetched_again(
    server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path
) -> None:
    root, manifest = mirror
    paths = manifest["paths"]
    first: dict[str, dict] = {}
    download_shard(server.url, paths, str(tmp_path), Stats(), digests=first)
    staged = tmp_path / paths[1]
    data = bytearray(staged.read_bytes())
    data[-30] ^= 0x01  # same size, one bit: only the sha256 tells
    staged.write_bytes(bytes(data))
    stats, again = Stats(), {}
    download_shard(server.url, paths, str(tmp_path), stats, digests=again, known=first)
    assert stats["download.segments"] == 1 and stats["download.refetched_staged"] == 1 and server.hits[paths[1]] == 2
    assert staged.read_bytes() == (root / paths[1]).read_bytes() and again == first


def test_gzip_damaged_in_transit_is_fetched_again(
    server: MirrorServer, mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy
) -> None:
    """A body of the announced length whose gzip stream does not inflate is retried."""
    root, manifest = mirror
    target = manifest["paths"][2]
    server.corrupt_once.add(target)
    stats, digests = Stats(), {}
    download_shard(server.url, [target], str(tmp_path), stats, retry=policy, digests=digests)
    assert server.hits[target] == 2 and stats["download.retries"] == 1 and stats["download.damaged_source"] == 0
    assert (tmp_path / target).read_bytes() == (root / target).read_bytes()
    assert "damage" not in digests[str(tmp_path / target)]


def test_truncated_at_the_source_is_staged_with_its_damage_and_counted(tmp_path: Path, policy: RetryPolicy) -> None:
    """The same damaged bytes twice: the source's own damage.  Staged (the reader keeps the records
    before the cut), recorded in the integrity record and counted, never only logged."""
    source = tmp_path / "src"
    generate_mirror(str(source), seed=5, segments=1, docs_per_segment=6, broken=False)
    target = next(p.relative_to(source).as_posix() for p in source.rglob("*.warc.wet.gz"))
    whole = (source / target).read_bytes()
    (source / target).write_bytes(whole[: len(whole) * 2 // 3])
    stats, digests = Stats(), {}
    with MirrorServerFor(source) as server:
        download_shard(server.url, [target], str(tmp_path / "stage"), stats, retry=policy, digests=digests)
        assert server.hits[target] == 2
    entry = digests[str(tmp_path / "stage" / target)]
    assert entry["damage"].startswith("truncated: the gzip member at byte offset")
    assert stats["download.damaged_source"] == 1 and stats["download.retries"] == 1
    assert (tmp_path / "stage" / target).read_bytes() == whole[: len(whole) * 2 // 3]
    (source / target).write_bytes(whole)  # the source repaired: a plain rerun keeps the recorded copy ...
    stats, again = Stats(), {}
    with MirrorServerFor(source) as server:
        download_shard(server.url, [target], str(tmp_path / "stage"), stats, retry=policy, digests=again, known=digests)
        assert stats["download.skipped_existing"] == 1 and again == digests and server.hits[target] == 0
        stats, again = Stats(), {}  # ... and force fetches it again
        download_shard(server.url, [target], str(tmp_path / "stage"), stats, retry=policy, digests=again, force=True)
    assert stats["download.segments"] == 1 and stats["download.damaged_source"] == 0
    assert (tmp_path / "stage" / target).read_bytes() == whole and "damage" not in again[str(tmp_path / "stage" / target)]


def test_empty_source_file_is_permanent_and_not_retried(tmp_path: Path, policy: RetryPolicy, sleeps: list[float]) -> None:
    source = tmp_path / "src"
    target = "crawl-data/CC-MAIN-2000-01/segments/1.1/wet/CC-MAIN-0-0-00000.warc.wet.gz"
    (source / target).parent.mkdir(parents=True)
    (source / target).write_bytes(b"")
    with pytest.raises(PermanentDownloadError, match=r"empty \(0 bytes\)"):
        download_shard(source.as_uri(), [target], str(tmp_path / "stage"), Stats(), retry=policy)
    with MirrorServerFor(source) as server, pytest.raises(PermanentDownloadError, match=r"empty \(0 bytes\)"):
        download_shard(server.url, [target], str(tmp_path / "stage"), Stats(), retry=policy)
    assert sleeps == [] and _staged_files(tmp_path / "stage") == []


class MirrorServerFor:
    """``with MirrorServerFor(root) as server``: a MirrorServer for one test."""

    def __init__(self, root: Path) -> None:
        self.server = MirrorServer(root)

    def __enter__(self) -> MirrorServer:
        return self.server

    def __exit__(self, *exc: object) -> None:
        self.server.close()


def test_file_mirror(mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy) -> None:
    root, manifest = mirror
    stats = Stats()
    staged = download_shard(root.as_uri(), manifest["paths"], (tmp_path / "stage").as_uri(), stats)
    assert [Path(u.removeprefix("file://")).read_bytes() for u in staged] == [(root / p).read_bytes() for p in manifest["paths"]]
    assert stats["download.segments"] == 3
    with pytest.raises(DownloadError, match="FileNotFoundError"):
        download_shard(root.as_uri(), ["crawl-data/missing.warc.wet.gz"], str(tmp_path / "stage"), Stats(), retry=policy)


def test_s3_mirror(
    mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy, sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    from moto_s3 import moto_s3

    with moto_s3() as (endpoint, client):
        client.create_bucket(Bucket="commoncrawl")
        monkeypatch.setitem(storage._OPTIONS, "s3", {"endpoint_url": endpoint, "key": "k", "secret": "s"})
        root, manifest = mirror
        for path in [*manifest["paths"], f"crawl-data/{SAMPLE_CRAWL}/wet.paths.gz"]:
            storage.write_bytes(f"s3://commoncrawl/{path}", (root / path).read_bytes())
        segments = list_segments("s3://commoncrawl/", SAMPLE_CRAWL)
        assert segments == manifest["paths"]
        stats = Stats()
        download_shard("s3://commoncrawl/", segments, str(tmp_path), stats, retry=policy)
        assert [(tmp_path / p).read_bytes() for p in segments] == [(root / p).read_bytes() for p in segments]
        assert stats["download.segments"] == 3
        with pytest.raises(DownloadError, match="s3://commoncrawl/crawl-data/nope.warc.wet.gz"):
            download_shard("s3://commoncrawl/", ["crawl-data/nope.warc.wet.gz"], str(tmp_path), Stats(), retry=policy)
        assert sleeps == []  # a missing key is not retried


def test_shard_assignment() -> None:
    segments = [f"s{i}" for i in range(10)]
    assert [len(shard_segments(segments, i, 4)) for i in range(4)] == [2, 3, 2, 3]
    assert shard_segments(segments, 0, 4) == ["s0", "s1"]
    for n in range(0, 40):
        for num_shards in (1, 2, 3, 7, 16, 50):
            segs = list(range(n))
            parts = [shard_segments(segs, i, num_shards) for i in range(num_shards)]
            assert [x for part in parts for x in part] == segs
            assert max(map(len, parts)) - min(map(len, parts)) <= 1
    with pytest.raises(ValueError):
        shard_segments(segments, 4, 4)


def test_backoff_is_capped_full_jitter() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=8.0, rng=random.Random(1))
    delays = [[policy.delay(k) for _ in range(200)] for k in range(1, 7)]
    for k, ds in enumerate(delays, start=1):
        cap = min(8.0, 2 ** (k - 1))
        assert all(0 <= d <= cap for d in ds) and max(ds) > 0.8 * cap


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        ("crawl-data/CC-MAIN-2099-01/segments/1.1/wet/../../../../../elsewhere/evil.warc.wet.gz", "not a WET segment path"),
        ("../../../../elsewhere/evil.warc.wet.gz", "not a WET segment path"),
        ("/etc/passwd", "not a WET segment path"),
        ("https://evil.example/x.warc.wet.gz", "not a WET segment path"),
        ("crawl-data/CC-MAIN-2099-01/segments/1.1/wet/a\\b.warc.wet.gz", "not a WET segment path"),
        ("crawl-data/CC-MAIN-2023-06/segments/1.1/wet/CC-MAIN-1-00000.warc.wet.gz", "belongs to CC-MAIN-2023-06"),
        ("crawl-data/CC-MAIN-2099-01/segments/1.1/wet/CC-MAIN-1-00000.warc.wet.gz", "listed twice"),
    ],
)
def test_listing_entries_are_checked_and_a_bad_one_fails_naming_it(tmp_path: Path, entry: str, problem: str) -> None:
    """Listing entries become paths under the storage root: anything but one of the crawl's WET
    segment paths (the defect: ``../`` entries wrote outside the root, exit 0) refuses the listing."""
    from rpj_tasks.core.errors import UnsafePathError

    good = "crawl-data/CC-MAIN-2099-01/segments/1.1/wet/CC-MAIN-1-00000.warc.wet.gz"
    crawl_dir = tmp_path / "crawl-data" / "CC-MAIN-2099-01"
    crawl_dir.mkdir(parents=True)
    (crawl_dir / "wet.paths.gz").write_bytes(gzip.compress(f"{good}\n{entry}\n".encode()))
    with pytest.raises(UnsafePathError, match=f"line 2: .*{problem}") as err:
        list_segments(tmp_path.as_uri(), "CC-MAIN-2099-01")
    assert "wet.paths.gz" in str(err.value)


def test_real_common_crawl_segment_paths_pass() -> None:
    from rpj_tasks.download.listing import SEGMENT_RE

    for path in (
        "crawl-data/CC-MAIN-2023-06/segments/1674764494826.88/wet/CC-MAIN-20230126210844-20230127000844-00000.warc.wet.gz",
        "crawl-data/CC-MAIN-2014-15/segments/1397609521512.15/wet/CC-MAIN-20140416005201-00000-ip-10-147-4-33.ec2.internal.warc.wet.gz",
        "crawl-data/CC-MAIN-2013-20/segments/1368696381249/wet/CC-MAIN-20130516092621-00000-ip-10-60-113-184.ec2.internal.warc.wet.gz",
    ):
        assert SEGMENT_RE.fullmatch(path), path


def test_download_refuses_a_segment_path_leaving_its_root(tmp_path: Path, policy: RetryPolicy) -> None:
    """Second line of defence: whatever the caller passes, nothing is read or written outside the
    source and staging roots."""
    from rpj_tasks.core.errors import UnsafePathError

    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.warc.wet.gz").write_bytes(gzip.compress(b"x"))
    with pytest.raises(UnsafePathError, match="segment path '../elsewhere/x.warc.wet.gz'"):
        download_shard(
            (tmp_path / "src").as_uri(), ["../elsewhere/x.warc.wet.gz"], str(tmp_path / "stage"), Stats(), retry=policy
        )
    assert not (tmp_path / "stage").exists()


def test_credentials_in_the_source_url_never_reach_logs_or_errors(
    mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    root, manifest = mirror
    server = MirrorServer(root)
    try:
        base = server.url.replace("http://", "http://reader:s3cr3t-pw@")
        server.failures[manifest["paths"][0]] = [503]
        caplog.set_level(logging.INFO, logger="rpj")
        digests: dict[str, dict] = {}
        download_shard(base, manifest["paths"][:1], str(tmp_path), Stats(), retry=policy, digests=digests)
        with pytest.raises(DownloadError) as err:
            download_shard(base, ["crawl-data/nope.warc.wet.gz"], str(tmp_path), Stats(), retry=policy)
    finally:
        server.close()
    text = caplog.text + str(err.value) + repr(digests)
    assert "attempt 1/4 failed" in caplog.text and "http://***@127.0.0.1" in text
    assert "s3cr3t-pw" not in text and "reader" not in text


def test_a_listing_that_inflates_past_the_limit_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hostile listing cannot exhaust memory: it is inflated only up to MAX_LISTING_BYTES."""
    from rpj_tasks.download import listing

    monkeypatch.setattr(listing, "MAX_LISTING_BYTES", 1 << 20)
    bomb = gzip.compress(b"\n" * (4 << 20))
    with pytest.raises(PermanentDownloadError, match="inflates to more than 1 MiB"):
        listing.parse_listing(bomb, "https://u:pw@h/wet.paths.gz", "CC-MAIN-2099-01")


def test_small_reads_are_bounded_and_bad_urls_are_permanent(tmp_path: Path, policy: RetryPolicy, sleeps: list[float]) -> None:
    from rpj_tasks.download.fetch import read_small

    (tmp_path / "big").write_bytes(b"x" * 2000)
    with pytest.raises(PermanentDownloadError, match="larger than 1000 bytes"):
        read_small((tmp_path / "big").as_uri(), policy, max_bytes=1000)
    server = MirrorServer(tmp_path)
    try:
        with pytest.raises(PermanentDownloadError, match="larger than 1000 bytes"):
            read_small(server.url + "big", policy, max_bytes=1000)
        assert read_small(server.url + "big", policy) == b"x" * 2000
    finally:
        server.close()
    with pytest.raises(PermanentDownloadError, match="not a usable URL"):
        read_small("http://127.0.0.1:99999/x", policy)
    with pytest.raises(PermanentDownloadError, match="not a usable URL"):
        download_shard("http://127.0.0.1:99999/", ["crawl-data/x.warc.wet.gz"], str(tmp_path / "s"), Stats(), retry=policy)
    assert sleeps == []


def test_a_symlink_in_the_mirror_that_leads_out_is_refused(
    mirror: tuple[Path, dict], tmp_path: Path, policy: RetryPolicy
) -> None:
    from rpj_tasks.core.errors import UnsafePathError

    root, manifest = mirror
    source = tmp_path / "src"
    target = manifest["paths"][0]
    (source / target).parent.mkdir(parents=True)
    secret = tmp_path / "private.warc.wet.gz"
    secret.write_bytes((root / target).read_bytes())
    (source / target).symlink_to(secret)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        download_shard(source.as_uri(), [target], str(tmp_path / "stage"), Stats(), retry=policy)
    assert _staged_files(tmp_path / "stage") == []
