"""Expected failures: one line from the CLI (exit 2 permanent, 1 transient), never a traceback;
a source is only ever read."""

import gzip
import subprocess
import sys
from pathlib import Path

import pytest
from test_download import MirrorServer

from rpj_tasks import cli
from rpj_tasks.core.config import ConfigError, SnapshotConfig
from rpj_tasks.core.errors import MissingInputError, PermanentError, TransientError
from rpj_tasks.download import fetch as download
from rpj_tasks.download import listing as listings
from rpj_tasks.sample.setup import ensure_mirror

BIN = Path(sys.executable).parent


def registry(tmp_path: Path, source: str, *, sample: bool = False, generate: bool = False) -> Path:
    path = tmp_path / "registry.yaml"
    entry = f'  - {{id: "2000-01", dag_id: rpv2_sample, sample: {str(sample).lower()}, generate_source: {str(generate).lower()}, num_shards: 4}}'
    path.write_text(
        f"defaults:\n  storage_root: {(tmp_path / 'data').as_uri()}\n  source_base: {source}\nsnapshots:\n" + entry + "\n"
    )
    return path


def run_rpj(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "rpj"), *args], capture_output=True, text=True, timeout=300)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_error_classes_say_what_to_do():
    assert issubclass(ConfigError, PermanentError) and issubclass(ConfigError, ValueError)
    assert issubclass(MissingInputError, PermanentError)
    assert issubclass(download.PermanentDownloadError, PermanentError)
    assert issubclass(download.DownloadFailedError, TransientError)


def test_out_of_range_shard_is_one_line_exit_2(tmp_path):
    proc = run_rpj(
        "--registry", str(registry(tmp_path, (tmp_path / "m").as_uri())), "ccnet", "--snapshot", "2000-01", "--shards", "9"
    )
    assert proc.returncode == 2
    assert one_line(proc.stderr) == "rpj: error: shard 9 out of range: this snapshot has 4 shards (0..3)"


def test_missing_listing_is_one_line_exit_2_and_nothing_generated(tmp_path):
    source = tmp_path / "missing-mirror"
    proc = run_rpj("--registry", str(registry(tmp_path, source.as_uri())), "ccnet", "--snapshot", "2000-01")
    assert proc.returncode == 2
    line = one_line(proc.stderr)
    assert line.startswith("rpj: error: ") and "wet.paths.gz" in line and "FileNotFoundError" in line
    assert not source.exists()


def test_http_404_listing_is_permanent(tmp_path):
    server = MirrorServer(tmp_path / "empty")
    try:
        proc = run_rpj("--registry", str(registry(tmp_path, server.url)), "ccnet", "--snapshot", "2000-01")
    finally:
        server.close()
    assert proc.returncode == 2
    assert "HTTP 404" in one_line(proc.stderr)
    assert server.hits == {"crawl-data/CC-MAIN-2000-01/wet.paths.gz": 1}  # no retry of a 404


def test_offline_source_is_one_transient_line_exit_1(tmp_path, monkeypatch, capsys, caplog):
    """Connection refused on every attempt (the network is down): retried, each attempt logged,
    then one line and exit 1."""
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fast = download.RetryPolicy(max_attempts=3, base_delay=0.01, connect_timeout=1.0)
    monkeypatch.setitem(listings.stage_listing.__kwdefaults__, "retry", fast)
    code = cli.main(["--registry", str(registry(tmp_path, f"http://127.0.0.1:{port}/")), "ccnet", "--snapshot", "2000-01"])
    err = capsys.readouterr().err
    assert code == 1
    last = [line for line in err.splitlines() if line.startswith("rpj:")]
    assert len(last) == 1 and last[0].startswith("rpj: transient error (try again later): ")
    assert "failed after 3 attempts" in last[0] and "ConnectionError" in last[0]
    retries = [r.getMessage() for r in caplog.records if r.name == "rpj.download" and "retrying in" in r.getMessage()]
    assert [m.split(": attempt ")[1][:3] for m in retries] == ["1/3", "2/3"]  # each failed attempt logged
    assert "Traceback" not in err


def test_a_failing_http_source_is_never_written_to(tmp_path):
    """A 503 on the listing is an error, not an absence: no mirror is generated, nothing is sent."""
    listing = tmp_path / "src" / "crawl-data" / "CC-MAIN-2000-01" / "wet.paths.gz"
    listing.parent.mkdir(parents=True)
    listing.write_bytes(gzip.compress(b"crawl-data/x.warc.wet.gz\n"))
    server = MirrorServer(tmp_path / "src")
    server.failures["crawl-data/CC-MAIN-2000-01/wet.paths.gz"] = [503] * 10
    cfg = SnapshotConfig(
        id="2000-01", storage_root=(tmp_path / "data").as_uri(), source_base=server.url, sample=True, num_shards=4
    )
    try:
        ensure_mirror(cfg)  # generate_source is off: nothing to do, nothing read
        with pytest.raises(download.DownloadFailedError, match="503"):
            listings.stage_listing(
                cfg.source_base, cfg.crawl, cfg.storage_root, retry=download.RetryPolicy(max_attempts=2, base_delay=0.01)
            )
    finally:
        server.close()
    assert set(server.hits) == {"crawl-data/CC-MAIN-2000-01/wet.paths.gz"}  # GETs only (the server answers nothing else)
    with pytest.raises(ConfigError, match="never writes to a source"):
        SnapshotConfig(id="2000-01", storage_root="file:///x", source_base=server.url, sample=True, generate_source=True)


def test_sample_mirror_generated_only_with_generate_source(tmp_path):
    mirror = tmp_path / "mirror"
    base = {
        "id": "2000-01",
        "storage_root": (tmp_path / "data").as_uri(),
        "source_base": mirror.as_uri() + "/",
        "sample": True,
        "num_shards": 4,
    }
    ensure_mirror(SnapshotConfig(**base))
    assert not mirror.exists()
    ensure_mirror(SnapshotConfig(**base, generate_source=True))
    listing = mirror / "crawl-data" / "CC-MAIN-2000-01" / "wet.paths.gz"
    assert len(gzip.decompress(listing.read_bytes()).splitlines()) == 4
