"""Publish (rpj_tasks/publish/stage.py): listings and a manifest only after a passed validation, and a
client written for the public RPv2 release works unchanged on our release served over HTTP.

The release is the sample snapshot as the CLI builds it (``rpj ccnet``, ``annotate``, ``dedup``,
``clusters``: tests/helpers/deploy_harness.py ``cli_reference``), copied per test.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from deploy_harness import PUBLISHED_PARTS, SNAPSHOT, cli_reference

from rpj_tasks.core.config import load_registry
from rpj_tasks.core.errors import PermanentError
from rpj_tasks.publish import stage

PASSED = {"success": True, "summary": "every expectation passed"}


@pytest.fixture
def release(tmp_path_factory: pytest.TempPathFactory, tmp_path: Path) -> tuple[Path, object]:
    reference = cli_reference(tmp_path_factory.getbasetemp())
    root = tmp_path / "data"
    for part in PUBLISHED_PARTS:
        shutil.copytree(reference / part, root / part)
    cfg = load_registry()[SNAPSHOT].with_overrides(storage_root=root.as_uri())
    return root, cfg


def test_nothing_is_published_unless_validation_passed(release: tuple[Path, object]) -> None:
    root, cfg = release
    with pytest.raises(stage.PublishError, match="validation did not pass .*3 expectations failed"):
        stage.publish_snapshot(cfg, range(4), validation={"success": False, "summary": "3 expectations failed"})
    assert not (root / "listings").exists()
    # published once (validated for real); a later failed validation leaves those listings as they were
    stage.validate_and_publish(cfg, list(range(4)))
    before = {p.name: p.read_bytes() for p in (root / "listings").iterdir()}
    with pytest.raises(PermanentError):
        stage.publish_snapshot(cfg, range(4), validation={"success": False})
    assert {p.name: p.read_bytes() for p in (root / "listings").iterdir()} == before


def test_unfinished_outputs_are_refused(release: tuple[Path, object]) -> None:
    root, cfg = release
    (root / "stats" / "annotate" / SNAPSHOT / "0002.json").unlink()
    with pytest.raises(stage.PublishError, match="annotation of shard 0002 of 2000-01 is not finished"):
        stage.publish_snapshot(cfg, range(4), validation=PASSED)
    assert not (root / "listings").exists()


def test_listings_manifest_and_rerun(release: tuple[Path, object]) -> None:
    root, cfg = release
    record = stage.validate_and_publish(cfg, list(range(4)))
    assert not record["skipped"]
    names = sorted(p.name for p in (root / "listings").iterdir())
    assert names == sorted(
        [f"{SNAPSHOT}.manifest.json"] + [f"{lang}-{SNAPSHOT}-{p}.txt" for lang in cfg.languages for p in ("head_middle", "tail")]
    )
    en = (root / "listings" / f"en-{SNAPSHOT}-head_middle.txt").read_text().splitlines()
    assert en == [f"{SNAPSHOT}/{s:04d}/en_{b}" for s in range(4) for b in ("head", "middle")]
    manifest = json.loads((root / "listings" / f"{SNAPSHOT}.manifest.json").read_text())
    for rel, meta in manifest["files"].items():  # every file as recorded, with its real bytes
        data = (root / rel).read_bytes()
        assert (len(data), hashlib.sha256(data).hexdigest()) == (meta["bytes"], meta["sha256"]), rel
    kept = sum(n for buckets in manifest["documents"].values() for n in buckets.values())
    lines = sum(len(gzip.decompress(p.read_bytes()).splitlines()) for p in (root / "documents" / SNAPSHOT).rglob("*.json.gz"))
    assert kept == lines
    assert manifest["versions"]["models"]["version"] == "sample-v1" and manifest["versions"]["models"]["manifest_sha256"]
    assert manifest["code"].startswith("rpj ")
    tokens = manifest["tokens"]["total"]
    assert tokens["all"]["documents"] == kept and tokens["all"]["tokens"] > tokens["after_both"]["tokens"] > 0
    assert tokens["all"]["documents"] - tokens["after_exact"]["documents"] == sum(
        len(pq.read_table(p)) for p in (root / "duplicates" / SNAPSHOT).rglob("*.parquet")
    )
    # a rerun is skipped; the same inputs give the same bytes when forced
    before = {p.name: p.read_bytes() for p in (root / "listings").iterdir()}
    assert stage.validate_and_publish(cfg, list(range(4)))["skipped"]
    stage.validate_and_publish(cfg, list(range(4)), force=True)
    assert {p.name: p.read_bytes() for p in (root / "listings").iterdir()} == before


# ---------------------------------------------------------------- an RPv2 client, from the release format alone


@pytest.fixture
def served(release: tuple[Path, object]) -> Iterator[tuple[str, Path, object]]:
    root, cfg = release
    stage.validate_and_publish(cfg, list(range(4)))
    handler = functools.partial(_QuietHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, cfg
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


def gopher_rules_pass(signals: dict) -> bool:
    """The five Gopher rules of the RPv2 dataset card's example, on a quality-signals record:
    50-10,000 words, mean word length 3-10, symbol-to-word ratio <= 0.1, at most 90% of lines
    starting with a bullet point, top 2-gram character fraction <= 0.2."""

    def doc(key: str) -> float:
        return signals[key][0][2]

    if not 50 <= doc("rps_doc_word_count") <= 10_000:
        return False
    if not 3 <= doc("rps_doc_mean_word_length") <= 10:
        return False
    if doc("rps_doc_symbol_to_word_ratio") > 0.1:
        return False
    bullets = sum(span[2] for span in signals["rps_lines_start_with_bulletpoint"])
    if bullets / doc("ccnet_nlines") > 0.9:
        return False
    return doc("rps_doc_frac_chars_top_2gram") <= 0.2


def test_an_rpv2_client_reads_our_release_over_http(served: tuple[str, Path, object]) -> None:
    base, root, cfg = served
    totals = {"documents": 0, "duplicates": 0, "gopher_dropped": 0, "kept": 0}
    for lang in cfg.languages:
        tags = get(f"{base}/listings/{lang}-{SNAPSHOT}-head_middle.txt").decode().splitlines()
        assert tags
        for tag in tags:
            docs = [json.loads(line) for line in gzip.decompress(get(f"{base}/documents/{tag}.json.gz")).splitlines()]
            signals = [
                json.loads(line) for line in gzip.decompress(get(f"{base}/quality_signals/{tag}.signals.json.gz")).splitlines()
            ]
            minhash = pq.read_table(io.BytesIO(get(f"{base}/minhash/{tag}.minhash.parquet")))
            dups = pq.read_table(io.BytesIO(get(f"{base}/duplicates/{tag}.duplicates.parquet")))
            # join by line number: record i of every component describes document i
            assert len(signals) == len(docs) == minhash.num_rows
            shard_key = f"{tag}.json.gz"
            duplicate_ids = set(dups.column("doc_id").to_pylist())
            assert set(dups.column("shard_id").to_pylist()) <= {shard_key}
            for i, (document, record) in enumerate(zip(docs, signals)):
                doc_id = f"{shard_key}/{i}"
                assert record["id"] == doc_id == minhash.column("id")[i].as_py()
                assert record["metadata"]["url"] == document["url"]
                totals["documents"] += 1
                if doc_id in duplicate_ids:
                    totals["duplicates"] += 1
                    assert document["digest"].removeprefix("sha1:") in dups.column("digest").to_pylist()
                    continue
                if not gopher_rules_pass(record["quality_signals"]):
                    totals["gopher_dropped"] += 1
                    continue
                totals["kept"] += 1
    listed = sum(len(pq.read_table(p)) for p in (root / "duplicates" / SNAPSHOT).rglob("*.parquet"))
    assert totals["duplicates"] == listed > 0
    assert totals["kept"] > 0 and totals["gopher_dropped"] > 0
    assert totals["documents"] == totals["duplicates"] + totals["gopher_dropped"] + totals["kept"]
    print("RPv2 client over HTTP:", totals)


def test_rpj_publish_needs_the_gates(release: tuple[Path, object], capsys: pytest.CaptureFixture[str]) -> None:
    from rpj_tasks.cli import main

    root, _ = release
    args = ["publish", "--snapshot", SNAPSHOT, "--storage-root", root.as_uri()]
    assert main(args) == 2  # no shard validated yet: the snapshot gate fails, nothing written
    err = capsys.readouterr().err
    assert "snapshot: " in err and "shard_validated" in err, err
    assert not (root / "listings").exists()
    assert main(["validate", "--snapshot", SNAPSHOT, "--storage-root", root.as_uri()]) == 0
    assert main(args) == 0
    assert f"{SNAPSHOT}: published; manifest" in capsys.readouterr().out
    assert main(args) == 0
    assert "unchanged" in capsys.readouterr().out


def test_files_rewritten_after_validation_are_not_published_until_validated_again(release: tuple[Path, object]) -> None:
    """A newer snapshot's dedup rewrites an older snapshot's duplicates files (and their record):
    publishing must not take those bytes unvalidated; validate_and_publish brings it up to date."""
    import pyarrow as pa

    from rpj_tasks.core import commit, layout
    from rpj_tasks.core.schema import DUPLICATES_SCHEMA

    root, cfg = release
    stage.validate_and_publish(cfg, stage.mined_shards(cfg))
    # the rewrite, as exact dedup commits it: a duplicates file whose rows are now elsewhere, and the record
    record_url = layout.duplicates_record_url(cfg.storage_root, SNAPSHOT)
    record = commit.load_record(record_url)
    target = next(p for p in sorted((root / "duplicates" / SNAPSHOT).rglob("*.parquet")) if pq.read_table(p).num_rows)
    pq.write_table(pa.Table.from_pylist([], schema=DUPLICATES_SCHEMA), target)
    data = target.read_bytes()
    rel = commit.relative(record_url.rsplit("/", 1)[0], target.as_uri())
    record["outputs"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    Path(record_url.removeprefix("file://")).write_text(json.dumps(record))
    before = {p.name: p.read_bytes() for p in (root / "listings").iterdir()}
    with pytest.raises(stage.PublishError, match="differ from what validation read, e.g. duplicates/"):
        stage.publish_snapshot(cfg, stage.mined_shards(cfg), validation=PASSED)
    assert {p.name: p.read_bytes() for p in (root / "listings").iterdir()} == before
    assert stage.republish_if_published(cfg)
    manifest = json.loads((root / "listings" / f"{SNAPSHOT}.manifest.json").read_text())
    assert manifest["files"][str(target.relative_to(root))]["sha256"] == hashlib.sha256(data).hexdigest()
