"""One bad shard does not stop ``rpj``: like the DAG, the CLI finishes every shard it can, prints one
line per failed shard and a summary at the end, and exits 2 (every failure permanent) or 1 (one was
transient).  A rerun skips the finished shards, retries the failed ones and ends byte-identical to
a clean run.  Failures of the whole command still stop it at once, and bugs still propagate."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
from test_cli_errors import run_rpj
from test_download import MirrorServer
from trees import digests

from rpj_tasks import cli
from rpj_tasks.cli.common import ShardSteps
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.errors import MissingInputError, TransientError
from rpj_tasks.download.fetch import RetryPolicy, download_unit
from rpj_tasks.download.listing import shard_segments
from rpj_tasks.sample.setup import ensure_mirror

SNAPSHOT = "2000-01"
DATA = ("documents", "staging/hashes", "staging/wet")  # the CCNet stage's data outputs (stats hold timings)


def registry(tmp: Path, source: str, **fields: object) -> Path:
    """A registry with the 4-shard sample snapshot, its storage root at ``tmp/data``."""
    entry = {"id": SNAPSHOT, "dag_id": "rpv2_sample", "sample": True, "num_shards": 4, **fields}
    path = tmp / "registry.yaml"
    path.write_text(
        f"defaults:\n  storage_root: {(tmp / 'data').as_uri()}\n  source_base: {source}\nsnapshots:\n  - {json.dumps(entry)}\n"
    )
    return path


def messages(stderr: str) -> list[str]:
    """What rpj itself printed on stderr (the engine's log lines left out)."""
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("rpj: ")]


def segment(mirror: Path, shard: int) -> Path:
    listing = mirror / "crawl-data" / f"CC-MAIN-{SNAPSHOT}" / "wet.paths.gz"
    [path] = shard_segments(gzip.decompress(listing.read_bytes()).decode().split(), shard, 4)
    return mirror / path


def shards_with(root: Path, component: str) -> list[int]:
    return sorted(int(p.stem) for p in (root / "stats" / component / SNAPSHOT).glob("*.json"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sample mirror (``mirror/``) and a clean ``rpj ccnet`` over it (``data/``)."""
    tmp = tmp_path_factory.mktemp("clean")
    mirror = (tmp / "mirror").as_uri()
    ensure_mirror(
        SnapshotConfig(
            id=SNAPSHOT, storage_root="file:///unused", source_base=mirror, sample=True, generate_source=True, num_shards=4
        )
    )
    proc = run_rpj("--registry", str(registry(tmp, mirror)), "ccnet", "--snapshot", SNAPSHOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def workspace(tmp: Path, clean: Path, *, without: tuple[int, ...] = ()) -> Path:
    """A copy of the clean mirror lacking the segments of shards ``without``, and a storage root
    holding the clean run's CCNet models (so that no test trains them again); returns the mirror."""
    shutil.copytree(clean / "mirror", tmp / "mirror")
    for shard in without:
        segment(tmp / "mirror", shard).unlink()
    shutil.copytree(clean / "data" / "artifacts" / "ccnet", tmp / "data" / "artifacts" / "ccnet")
    return tmp / "mirror"


def test_a_missing_segment_fails_only_its_shard_and_a_rerun_finishes_it(tmp_path: Path, clean: Path) -> None:
    mirror = workspace(tmp_path, clean, without=(2,))
    reg = str(registry(tmp_path, mirror.as_uri()))
    root = tmp_path / "data"

    proc = run_rpj("--registry", reg, "ccnet", "--snapshot", SNAPSHOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    failure, summary = messages(proc.stderr)
    assert failure.startswith("rpj: download shard 0002 failed: PermanentDownloadError: ")
    assert segment(mirror, 2).as_uri() in failure
    assert summary == "rpj: 1 of 4 shards failed: download 2 (see the messages above)"
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == [
        *(f"download shard {s:04d}" for s in (0, 1, 3)),
        *(f"mine shard {s:04d}" for s in (0, 1, 3)),
    ]
    assert shards_with(root, "ccnet") == [0, 1, 3]
    assert not (root / "documents" / SNAPSHOT / "0002").exists()
    for shard in (0, 1, 3):
        assert list((root / "documents" / SNAPSHOT / f"{shard:04d}").glob("*.json.gz"))

    shutil.copy(segment(clean / "mirror", 2), segment(mirror, 2))
    again = run_rpj("--registry", reg, "ccnet", "--snapshot", SNAPSHOT)
    assert again.returncode == 0, again.stderr[-3000:]
    assert messages(again.stderr) == []
    out = again.stdout.splitlines()
    assert [line for line in out if "skipped" not in line] == [
        "download shard 0002: 1 segments staged",
        next(line for line in out if line.startswith("mine shard 0002: kept ")),
    ]
    assert len(out) == 8  # the other shards' download and mine: skipped
    assert shards_with(root, "ccnet") == [0, 1, 2, 3]
    assert digests(root, *DATA) == digests(clean / "data", *DATA)


def test_a_failed_download_skips_the_mine_of_its_hash_group(tmp_path: Path, clean: Path) -> None:
    mirror = workspace(tmp_path, clean, without=(2,))
    root = tmp_path / "data"
    proc = run_rpj("--registry", str(registry(tmp_path, mirror.as_uri(), hash_group_size=2)), "ccnet", "--snapshot", SNAPSHOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    failure, skipped, summary = messages(proc.stderr)
    assert failure.startswith("rpj: download shard 0002 failed: PermanentDownloadError: ")
    assert skipped == "rpj: mine shard 0003 skipped: it needs the hashes of shard 0002 (its hash group), whose download failed"
    assert summary == "rpj: 2 of 4 shards failed: download 2; mine skipped 3 (see the messages above)"
    assert shards_with(root, "hashes") == [0, 1, 3]  # shard 3's own steps ran
    assert shards_with(root, "ccnet") == [0, 1]
    assert not (root / "documents" / SNAPSHOT / "0003").exists()


def test_one_transient_failure_makes_the_exit_code_1(
    tmp_path: Path, clean: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Over HTTP: shard 1's segment answers 503 on every attempt, shard 2's 404; shards 0 and 3 are
    mined, and the run exits 1 because shard 1 may pass on a retry.  (In-process, for a short retry
    policy: the CLI has no retry setting.)"""
    mirror = workspace(tmp_path, clean)
    seg1, seg2 = (str(segment(mirror, s).relative_to(mirror)) for s in (1, 2))
    server = MirrorServer(mirror)
    server.failures[seg1] = [503] * 10
    server.not_found.add(seg2)
    monkeypatch.setitem(download_unit.__kwdefaults__, "retry", RetryPolicy(max_attempts=2, base_delay=0.01))
    try:
        code = cli.main(["--registry", str(registry(tmp_path, server.url)), "ccnet", "--snapshot", SNAPSHOT])
    finally:
        server.close()
    assert code == 1
    transient, permanent, summary = messages(capsys.readouterr().err)
    assert transient.startswith(f"rpj: download shard 0001 failed: DownloadFailedError: {server.url}{seg1}: ")
    assert "failed after 2 attempts" in transient and "503" in transient
    assert permanent.startswith(f"rpj: download shard 0002 failed: PermanentDownloadError: {server.url}{seg2}: ")
    assert "HTTP 404" in permanent
    assert summary == "rpj: 2 of 4 shards failed: download 1-2 (see the messages above)"
    assert server.hits[seg1] == 2 and server.hits[seg2] == 1
    assert shards_with(tmp_path / "data", "ccnet") == [0, 3]


def test_annotate_goes_on_past_a_shard_whose_documents_are_gone(tmp_path: Path, clean: Path) -> None:
    shutil.copytree(clean / "data", tmp_path / "data")
    root = tmp_path / "data"
    gone = sorted((root / "documents" / SNAPSHOT / "0001").glob("*.json.gz"))[0]
    gone.unlink()
    proc = run_rpj("--registry", str(registry(tmp_path, (clean / "mirror").as_uri())), "annotate", "--snapshot", SNAPSHOT)
    assert proc.returncode == 2, proc.stderr[-3000:]
    failure, summary = messages(proc.stderr)
    assert failure.startswith("rpj: annotate shard 0001 failed: MissingInputError: ") and gone.name in failure
    assert summary == "rpj: 1 of 4 shards failed: annotate 1 (see the messages above)"
    assert proc.stdout.splitlines() == [f"annotate shard {s:04d}: done" for s in (0, 2, 3)]
    assert shards_with(root, "annotate") == [0, 2, 3]


def test_missing_models_stop_the_run_before_any_download(tmp_path: Path, clean: Path) -> None:
    """Not a shard's failure: one line, exit 2, nothing staged."""
    reg = registry(tmp_path, (clean / "mirror").as_uri(), sample=False)
    proc = run_rpj("--registry", str(reg), "ccnet", "--snapshot", SNAPSHOT)
    assert proc.returncode == 2
    [line] = messages(proc.stderr)
    assert line.startswith("rpj: error: no CCNet models at ")
    assert not (tmp_path / "data" / "staging" / "wet").exists()


def _fail(exc: Exception) -> None:
    raise exc


def test_shard_steps_bookkeeping(capsys: pytest.CaptureFixture) -> None:
    done: list[tuple[str, int]] = []
    steps = ShardSteps()
    steps.run("hashes", 0, done.append, ("hashes", 0))
    steps.run("hashes", 1, _fail, MissingInputError("no segment"))
    steps.run("mine", 0, done.append, ("mine", 0), needs=range(0, 2))  # skipped: shard 1's hashes failed
    steps.run("mine", 1, done.append, ("mine", 1), needs=range(0, 2))  # its own hashes failed: not attempted, said above
    steps.run("mine", 2, _fail, TransientError("worker died"), needs=range(2, 4))
    steps.run("mine", 3, done.append, ("mine", 3), needs=range(2, 4))  # shard 2's mine failing is no concern of shard 3
    assert done == [("hashes", 0), ("mine", 3)]
    assert steps.exit_code() == 1  # one failure was transient
    assert capsys.readouterr().err.splitlines() == [
        "rpj: hashes shard 0001 failed: MissingInputError: no segment",
        "rpj: mine shard 0000 skipped: it needs the hashes of shard 0001 (its hash group), whose hashes failed",
        "rpj: mine shard 0002 failed: TransientError: worker died",
        "rpj: 3 of 4 shards failed: hashes 1; mine 2; mine skipped 0 (see the messages above)",
    ]
    assert ShardSteps().exit_code() == 0
    with pytest.raises(ZeroDivisionError):  # a bug is not a shard's failure: it stops the run
        ShardSteps().run("mine", 0, _fail, ZeroDivisionError())
