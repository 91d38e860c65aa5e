"""Inputs that several stages read: the mined shards of a snapshot, and the documents files a
shard's CCNet record lists."""

from __future__ import annotations

from typing import Any

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.errors import MissingInputError


def mined_shards(cfg: SnapshotConfig) -> list[int]:
    """Every shard of the snapshot with a CCNet record (what dedup indexes, validation checks and a
    publication covers)."""
    from rpj_tasks.core.summary import recorded_shards

    return sorted(recorded_shards(layout.ccnet_stats_dir(cfg.storage_root, cfg.id)))


def mined_documents(cfg: SnapshotConfig, shard: int) -> dict[str, dict[str, Any]]:
    """``{file name: {"url", "sha256"}}`` of the documents files the shard's CCNet record lists (the
    only documents files a later stage may read); :class:`MissingInputError` when the shard is not
    mined or a listed file is gone."""
    record_url = layout.ccnet_stats_url(cfg.storage_root, cfg.id, shard)
    record = commit.load_record(record_url)
    if record is None:
        raise MissingInputError(
            f"shard {shard:04d} of {cfg.id} has no CCNet stats record ({record_url}): its documents are not "
            "finished; run the CCNet mine task for this shard first"
        )
    out = {}
    for rel, url in commit.listed_outputs(record_url, record).items():
        if not storage.exists(url):
            raise MissingInputError(f"shard {shard:04d} of {cfg.id}: documents {url} listed by CCNet are missing")
        out[url.rsplit("/", 1)[1]] = {"url": url, "sha256": record["outputs"][rel]["sha256"]}
    return out
