"""The CCNet stage on the offline sample, without Airflow: reliability properties."""

import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from rpj_tasks.ccnet import stage as ccnet
from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import load_registry
from rpj_tasks.core.summary import snapshot_summary
from rpj_tasks.download.fetch import download_unit
from rpj_tasks.download.listing import list_segments
from rpj_tasks.sample.setup import ensure_sample

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ccnet")
    base = load_registry()["2000-01"]
    cfg = base.with_overrides(storage_root=(tmp / "data").as_uri(), source_base=(tmp / "mirror").as_uri())
    ensure_sample(cfg)
    segments = list_segments(cfg.source_base, cfg.crawl)
    per_shard = {
        s: segments[s * len(segments) // cfg.num_shards : (s + 1) * len(segments) // cfg.num_shards]
        for s in range(cfg.num_shards)
    }
    for s, segs in per_shard.items():
        download_unit(cfg, s, segs)
    for s, segs in per_shard.items():
        ccnet.compute_hashes(cfg, s, segs)
    return tmp, cfg, per_shard


def shard_files(cfg, shard):
    d = Path(storage.fs_and_path(layout.shard_dir(cfg.storage_root, "documents", cfg.id, shard))[1])
    return {p.name: p.read_bytes() for p in sorted(d.glob("*"))} if d.exists() else {}


def test_mine_needs_the_hashes_of_its_group(sample):
    tmp, cfg, per_shard = sample
    shutil.copytree(tmp / "data", tmp / "nohashes", dirs_exist_ok=True)
    shutil.rmtree(tmp / "nohashes" / "staging" / "hashes")  # the hash files of the group are gone
    other = cfg.with_overrides(storage_root=(tmp / "nohashes").as_uri())
    with pytest.raises(ccnet.MissingInputError, match="hashes of shard 0000"):
        ccnet.mine_shard(other, 1, per_shard[1])


def test_wet_warnings_carry_the_shard_and_segment(sample, caplog):
    """The sample's broken records are reported with the shard and the WET file in front."""
    _, cfg, per_shard = sample
    with caplog.at_level(logging.WARNING, logger="rpj.wet"):
        for shard, segments in per_shard.items():
            ccnet.compute_hashes(cfg, shard, segments, force=True)  # same bytes again
            names = {seg.rsplit("/", 1)[1] for seg in segments}
            mine = [r.getMessage() for r in caplog.records if r.args and str(r.args[0]).split("/")[-1] in names]
            assert all(m.startswith(f"[2000-01/{shard:04d} ") and m.split("]")[0].split(" ")[1] in names for m in mine), mine
    assert any("corrupt gzip member" in r.getMessage() for r in caplog.records)
    assert all(r.getMessage().startswith("[2000-01/") for r in caplog.records), caplog.text


def test_the_record_limit_is_read_by_both_steps_and_in_their_fingerprints(sample, monkeypatch):
    tmp, cfg, per_shard = sample
    shutil.copytree(tmp / "data", tmp / "limit", dirs_exist_ok=True)
    other = cfg.with_overrides(storage_root=(tmp / "limit").as_uri(), max_record_bytes=1 << 16)
    assert ccnet._hashes_inputs(other, 0, per_shard[0]) == {
        **ccnet._hashes_inputs(cfg, 0, per_shard[0]),
        "max_record_bytes": 1 << 16,
    }
    seen = []

    def spy(*args, **kwargs):
        seen.append(kwargs["max_record_bytes"])
        return real(*args, **kwargs)

    real = ccnet.iter_documents
    monkeypatch.setattr(ccnet, "iter_documents", spy)
    assert not ccnet.compute_hashes(other, 0, per_shard[0])["skipped"]  # another limit: not the finished unit
    assert not ccnet.mine_shard(other, 0, per_shard[0])["skipped"]
    assert seen == [1 << 16] * 2 * len(per_shard[0])
    assert ccnet.mine_inputs(other, 0, per_shard[0], "m")["max_record_bytes"] == 1 << 16


def test_rerun_skips_force_recomputes_same_bytes_and_stale_files_go(sample):
    _, cfg, per_shard = sample
    first = ccnet.mine_shard(cfg, 0, per_shard[0])
    assert not first["skipped"]
    files = shard_files(cfg, 0)
    assert set(files) == set(first["files"]) and files
    assert ccnet.mine_shard(cfg, 0, per_shard[0])["skipped"]
    # a leftover from an earlier run with other languages disappears on a forced rerun
    stale = layout.documents_url(cfg.storage_root, cfg.id, 0, "nl", "head")
    storage.write_bytes(stale, b"old")
    again = ccnet.mine_shard(cfg, 0, per_shard[0], force=True)
    assert shard_files(cfg, 0) == files
    assert again["counts"]["stale_files_removed"] == 1


def test_language_subset_and_counts(sample):
    _, cfg, per_shard = sample
    en_only = cfg.with_overrides(languages=["en"])
    rec = ccnet.mine_shard(en_only, 2, per_shard[2], force=True)
    assert set(rec["files"]) <= {"en_head.json.gz", "en_middle.json.gz", "en_tail.json.gz"}
    c = rec["counts"]
    dropped = c["lid.dropped.other_language"] + c.get("lid.dropped.below_threshold", 0)
    assert c["wet.docs"] == c["kept"] + dropped + c.get("dedup.dropped.all_lines_duplicate", 0) + c.get("dedup.dropped.empty", 0)
    ccnet.mine_shard(cfg, 2, per_shard[2], force=True)  # restore all languages for other tests


KILL_SCRIPT = """
import sys, time
from rpj_tasks.ccnet import stage as ccnet
from rpj_tasks.core.config import load_registry

root, source, shard, segments = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
flush = ccnet._ShardWriter.flush

def slow_flush(self):  # stall once two output files are open, so the kill lands mid-write
    flush(self)
    if len(self.files) >= 2:
        print("writing", flush=True)
        time.sleep(60)

ccnet._ShardWriter.flush = slow_flush
cfg = load_registry()["2000-01"].with_overrides(storage_root=root, source_base=source)
ccnet.mine_shard(cfg, shard, segments)
"""


def test_killed_mine_leaves_no_partial_output(sample):
    _, cfg, per_shard = sample
    shard = 3
    out_dir = Path(storage.fs_and_path(layout.shard_dir(cfg.storage_root, "documents", cfg.id, shard))[1])
    proc = subprocess.Popen(
        [sys.executable, "-c", KILL_SCRIPT, cfg.storage_root, cfg.source_base, str(shard), *per_shard[shard]],
        cwd=REPO,
        stdout=subprocess.PIPE,
    )
    assert proc.stdout.readline().strip() == b"writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    leftovers = [p.name for p in out_dir.glob("*")]
    assert leftovers, "the writer should have had temporary files open"
    assert all(storage.is_temp_name(name) for name in leftovers), leftovers
    assert not list(out_dir.glob("*.json.gz")) and not ccnet.is_finished(cfg, shard)
    rec = ccnet.mine_shard(cfg, shard, per_shard[shard])
    assert not rec["skipped"] and rec["counts"]["kept"] > 0
    assert sorted(p.name for p in out_dir.glob("*")) == sorted(rec["files"])  # temp files cleaned up too
    assert rec["counts"]["stale_files_removed"] == len(leftovers)


def test_summary_reports_missing_shards(sample):
    _, cfg, per_shard = sample
    for s in (0, 1, 2, 3):
        ccnet.mine_shard(cfg, s, per_shard[s])
    summary = snapshot_summary(cfg, [0, 1, 2, 3])
    assert summary["not_mined"] == [] and summary["documents_kept"] > 0
    other = cfg.with_overrides(storage_root=cfg.storage_root + "-nothing")
    assert snapshot_summary(other, [0, 1])["not_mined"] == [0, 1]
