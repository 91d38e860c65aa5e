"""The CCNet stage, per shard: ``hashes`` then ``mine`` (docs/spec/rpv2_format.md §9).

``compute_hashes`` reads a shard's staged WET segments and stores the paragraph-hash map of the
shard.  ``mine_shard`` merges the maps of the shard's hash group, then for every document:
line dedup -> fastText LID (threshold, language whitelist) -> SentencePiece + KenLM perplexity
-> head/middle/tail bucket, and writes ``documents/{snapshot}/{shard}/{lang}_{bucket}.json.gz``
in WET order (so reruns are byte-identical, fixing D6).

Commit protocol: the document files of a shard are written to temporary names and renamed
together at the end; files of an earlier run that this run did not produce are removed; the
per-shard stats record is written last and marks the shard finished.  A finished shard is
skipped on rerun unless ``force``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import IO, Any

from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import SnapshotConfig, validate_shard
from rpj_tasks.core.errors import MissingInputError
from rpj_tasks.ccnet.dedup import ShardHashes, remove_duplicate_lines
from rpj_tasks.ccnet.lid import LanguageIdentifier
from rpj_tasks.ccnet.lm import bucket as perplexity_bucket
from rpj_tasks.ccnet.models import CCNetModels
from rpj_tasks.core.stats import Stats
from rpj_tasks.download.wet import iter_documents

log = logging.getLogger("rpj.ccnet")


def hash_group(cfg: SnapshotConfig, shard: int) -> range:
    """The consecutive block of shards whose hashes are merged for ``shard`` (cc_net ``hash_in_mem``)."""
    size = cfg.hash_group_size
    start = (shard // size) * size
    return range(start, min(start + size, cfg.num_shards))


def read_shard_documents(
    staged: list[tuple[str, str]], stats: Stats, min_len: int
) -> Iterator[dict[str, Any]]:
    """CCNet documents of ``staged`` = ``[(segment path, staged URL), ...]`` in segment then record order."""
    for segment, url in staged:
        if not storage.exists(url):
            raise MissingInputError(f"staged WET segment {url} does not exist; run the download task first")
        stats.inc("wet.bytes", storage.size(url))
        with storage.open_read(url) as stream:
            for doc in iter_documents(stream, source=url, stats=stats, min_len=min_len):
                doc["cc_segment"] = segment
                yield doc


def staged_segments(cfg: SnapshotConfig, segments: list[str]) -> list[tuple[str, str]]:
    return [(seg, layout.staged_segment_url(cfg.storage_root, seg)) for seg in segments]


def compute_hashes(cfg: SnapshotConfig, shard: int, segments: list[str], *, force: bool = False) -> dict[str, Any]:
    """``hashes`` stage: store the paragraph-hash map of one shard."""
    shard = validate_shard(shard, cfg.num_shards)
    url = layout.hashes_url(cfg.storage_root, cfg.id, shard)
    if storage.exists(url) and not force:
        log.info("shard %04d: hashes exist at %s, skipping (force: --force in the CLI, the force Param in Airflow)", shard, url)
        return {"shard": shard, "url": url, "skipped": True}
    stats = Stats()
    started = time.perf_counter()
    docs = read_shard_documents(staged_segments(cfg, segments), stats, cfg.min_len)
    with stats.timer("hashes"):
        table = ShardHashes.collect(doc["raw_content"].split("\n") for doc in docs)
    storage.write_bytes(url, table.to_bytes())
    log.info(
        "shard %04d: %d documents, %d distinct line hashes in %.1fs -> %s",
        shard, stats["wet.docs"], len(table), time.perf_counter() - started, url,
    )
    return {"shard": shard, "url": url, "skipped": False, "counts": dict(stats.counts)}


def load_group_hashes(cfg: SnapshotConfig, shard: int) -> ShardHashes:
    parts = []
    for member in hash_group(cfg, shard):
        url = layout.hashes_url(cfg.storage_root, cfg.id, member)
        if not storage.exists(url):
            raise MissingInputError(
                f"shard {shard:04d} needs the hashes of shard {member:04d} (its hash group), "
                f"but {url} does not exist; run the hashes task for that shard first"
            )
        parts.append(ShardHashes.from_bytes(storage.read_bytes(url)))
    return ShardHashes.merge(parts)


def is_finished(cfg: SnapshotConfig, shard: int) -> bool:
    return storage.exists(layout.ccnet_stats_url(cfg.storage_root, cfg.id, shard))


class _ShardWriter:
    """Lazily opened, atomically committed ``{lang}_{bucket}.json.gz`` files of one shard."""

    def __init__(self, cfg: SnapshotConfig, shard: int, stack: contextlib.ExitStack) -> None:
        self.cfg, self.shard, self.stack = cfg, shard, stack
        self.files: dict[tuple[str, str], IO[bytes]] = {}

    def write(self, doc: dict[str, Any]) -> None:
        key = (doc["language"], doc["bucket"])
        out = self.files.get(key)
        if out is None:
            url = layout.documents_url(self.cfg.storage_root, self.cfg.id, self.shard, *key)
            out = self.files[key] = self.stack.enter_context(storage.atomic_gzip_write(url))
        out.write(json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n")

    def produced(self) -> set[str]:
        return {f"{lang}_{bucket}.json.gz" for lang, bucket in self.files}


def mine_shard(cfg: SnapshotConfig, shard: int, segments: list[str], *, force: bool = False) -> dict[str, Any]:
    """``mine`` stage of one shard; returns the shard's stats record (also stored under stats/)."""
    shard = validate_shard(shard, cfg.num_shards)
    stats_url = layout.ccnet_stats_url(cfg.storage_root, cfg.id, shard)
    if storage.exists(stats_url) and not force:
        log.info("shard %04d: finished earlier (%s), skipping (force: --force in the CLI, the force Param in Airflow)", shard, stats_url)
        record = json.loads(storage.read_bytes(stats_url))
        return {**record, "skipped": True}

    started = time.perf_counter()
    stats = Stats()
    models = CCNetModels.load(layout.models_url(cfg.storage_root, cfg.models_version), cfg.languages)
    lid = LanguageIdentifier(cfg.lid_model or None)
    with stats.timer("load_hashes"):
        table = load_group_hashes(cfg, shard)
    languages = set(cfg.languages)

    with contextlib.ExitStack() as stack:
        writer = _ShardWriter(cfg, shard, stack)
        docs = read_shard_documents(staged_segments(cfg, segments), stats, cfg.min_len)
        while True:
            with stats.timer("read"):
                doc = next(docs, None)
            if doc is None:
                break
            with stats.timer("dedup"):
                doc = remove_duplicate_lines(doc, table, stats)
            if doc is None:
                continue
            with stats.timer("lid"):
                lang, score = lid.predict(doc["raw_content"])
            if score < cfg.lid_threshold:
                stats.inc("lid.dropped.below_threshold")
                continue
            if lang not in languages:
                stats.inc("lid.dropped.other_language")
                continue
            doc["language"] = lang
            doc["language_score"] = score
            with stats.timer("perplexity"):
                doc["perplexity"] = models.scorer(lang).perplexity(doc["raw_content"])
            doc["bucket"] = perplexity_bucket(doc["perplexity"], models.cutoffs.get(lang))
            with stats.timer("write"):
                writer.write(doc)
            stats.inc(f"kept.{lang}.{doc['bucket']}")
            stats.inc("kept")
        produced = writer.produced()
    # All files of the shard are committed (renamed) now; drop leftovers of earlier runs:
    # outputs this run did not produce, and temp files of a killed run.
    shard_docs = layout.shard_dir(cfg.storage_root, "documents", cfg.id, shard)
    for name in storage.listdir(shard_docs):
        if storage.is_temp_name(name) or (name.endswith(".json.gz") and name not in produced):
            storage.remove(storage.join(shard_docs, name))
            stats.inc("stale_files_removed")

    record = {
        "snapshot": cfg.id,
        "shard": shard,
        "segments": segments,
        "languages": cfg.languages,
        "hash_group": [hash_group(cfg, shard).start, hash_group(cfg, shard).stop - 1],
        "models": models.manifest_url,
        "models_sha256": models.fingerprint,
        "files": sorted(produced),
        "wall_seconds": round(time.perf_counter() - started, 3),
        **stats.to_dict(),
    }
    storage.write_bytes(stats_url, json.dumps(record, indent=1, sort_keys=True).encode())
    log.info(
        "shard %04d: read %d docs, kept %d in %d files (%.1f docs/s) | %s",
        shard, stats["wet.docs"], stats["kept"], len(produced),
        stats["wet.docs"] / max(record["wall_seconds"], 1e-9), stats.summary(),
    )
    return {**record, "skipped": False}


def summarize(cfg: SnapshotConfig, shards: list[int]) -> dict[str, Any]:
    """Totals over the stats records of ``shards``; lists the shards without a record."""
    total = Stats()
    missing = []
    wall = 0.0
    for shard in shards:
        url = layout.ccnet_stats_url(cfg.storage_root, cfg.id, shard)
        if not storage.exists(url):
            missing.append(shard)
            continue
        record = json.loads(storage.read_bytes(url))
        total.merge(Stats.from_dict(record))
        wall += record.get("wall_seconds", 0.0)
    docs = total["wet.docs"]
    return {
        "snapshot": cfg.id,
        "shards": len(shards),
        "finished_shards": len(shards) - len(missing),
        "missing_shards": missing,
        "documents_read": docs,
        "documents_kept": total["kept"],
        "shard_seconds": round(wall, 1),
        "docs_per_second_per_shard": round(docs / wall, 1) if wall else None,
        **total.to_dict(),
    }
