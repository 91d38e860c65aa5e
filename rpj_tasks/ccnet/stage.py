"""The CCNet stage, per shard: ``hashes`` then ``mine`` (docs/spec/rpv2_format.md §9).

``compute_hashes`` reads a shard's staged WET segments and stores the paragraph-hash map of the
shard.  ``mine_shard`` merges the maps of the shard's hash group, then for every document:
line dedup -> fastText LID (threshold, language whitelist) -> SentencePiece + KenLM perplexity
-> head/middle/tail bucket, and writes ``documents/{snapshot}/{shard}/{lang}_{bucket}.json.gz``
in WET order (so reruns are byte-identical, fixing D6).

Commit protocol (:mod:`rpj_tasks.core.commit`): each step of a shard is a unit whose record is
written last and lists its input fingerprint and outputs.  ``hashes``: inputs = the shard's staged
segments (sha256 from the download record), ``min_len`` and ``max_record_bytes``; record
``stats/hashes/``.  ``mine``: inputs = the staged segments, the hash files of the shard's hash
group (sha256 from their records), the models' manifest digest and the settings that change
documents (``max_record_bytes`` among them); record ``stats/ccnet/`` (with the shard's counts).
A finished shard whose inputs are unchanged is skipped unless ``force``; anything else is redone,
and a redo that dies leaves no record.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import logging
import time
from collections.abc import Iterator
from typing import IO, Any

from rpj_tasks.ccnet.dedup import ShardHashes, remove_duplicate_lines_batch
from rpj_tasks.ccnet.lid import LanguageIdentifier
from rpj_tasks.ccnet.lm import bucket as perplexity_bucket
from rpj_tasks.ccnet.models import CCNetModels
from rpj_tasks.ccnet.normalize import content_hashes
from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import DEFAULT_MAX_RECORD_BYTES, SnapshotConfig, validate_shard
from rpj_tasks.core.errors import MissingInputError
from rpj_tasks.core.logctx import iterate, log_context, shard_label
from rpj_tasks.core.stats import Stats
from rpj_tasks.download.wet import iter_documents

log = logging.getLogger("rpj.ccnet")

#: Documents mined per batch: each step runs over a batch, so its model stays in the CPU caches;
#: memory is one batch of documents (a few MB) whatever the shard's size.
DEFAULT_BATCH_DOCS = 1000


def hash_group(cfg: SnapshotConfig, shard: int) -> range:
    """The consecutive block of shards whose hashes are merged for ``shard`` (cc_net ``hash_in_mem``)."""
    return layout.hash_group(shard, cfg.hash_group_size, cfg.num_shards)


def read_shard_documents(
    staged: list[tuple[str, str]], stats: Stats, min_len: int, *, max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
) -> Iterator[dict[str, Any]]:
    """CCNet documents of ``staged`` = ``[(segment path, staged URL), ...]`` in segment then record order.

    ``hashes`` and ``mine`` both read through here with the snapshot's ``min_len`` and
    ``max_record_bytes``, so the hash map and the mined documents come from the same records.
    The reader's log lines carry the segment's file name (:mod:`rpj_tasks.core.logctx`)."""
    for segment, url in staged:
        if not storage.exists(url):
            raise MissingInputError(f"staged WET segment {url} does not exist; run the download task first")
        stats.inc("wet.bytes", storage.size(url))
        with storage.open_read(url) as stream:
            docs = iter_documents(stream, source=url, stats=stats, min_len=min_len, max_record_bytes=max_record_bytes)
            for doc in iterate(docs, file=segment.rsplit("/", 1)[-1]):
                doc["cc_segment"] = segment
                yield doc


def staged_segments(cfg: SnapshotConfig, segments: list[str]) -> list[tuple[str, str]]:
    return [(seg, layout.staged_segment_url(cfg.storage_root, seg)) for seg in segments]


def _segment_digests(cfg: SnapshotConfig, shard: int, segments: list[str]) -> dict[str, str]:
    """``{segment: sha256}`` of the shard's staged segments, from its download record."""
    record_url = layout.download_record_url(cfg.storage_root, cfg.id, shard)
    record = commit.finished(record_url, {"segments": list(segments)})
    if record is None:
        raise MissingInputError(
            f"shard {shard:04d} of {cfg.id}: its segments are not staged ({record_url} is missing, stale or "
            "lists files that are gone); run the download task for this shard first"
        )
    digests = {url: record["outputs"][rel]["sha256"] for rel, url in commit.listed_outputs(record_url, record).items()}
    return {seg: digests[url] for seg, url in staged_segments(cfg, segments)}


def _hashes_inputs(cfg: SnapshotConfig, shard: int, segments: list[str]) -> dict[str, Any]:
    return {"segments": _segment_digests(cfg, shard, segments), "min_len": cfg.min_len, "max_record_bytes": cfg.max_record_bytes}


def compute_hashes(cfg: SnapshotConfig, shard: int, segments: list[str], *, force: bool = False) -> dict[str, Any]:
    """``hashes`` stage: store the paragraph-hash map of one shard (a unit of the commit protocol)."""
    shard = validate_shard(shard, cfg.num_shards)
    with log_context(shard=shard_label(cfg.id, shard)):
        return _compute_hashes(cfg, shard, segments, force)


def _compute_hashes(cfg: SnapshotConfig, shard: int, segments: list[str], force: bool) -> dict[str, Any]:
    url = layout.hashes_url(cfg.storage_root, cfg.id, shard)
    record_url = layout.hashes_record_url(cfg.storage_root, cfg.id, shard)
    inputs = _hashes_inputs(cfg, shard, segments)
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        log.info("shard %04d: hashes exist at %s, skipping (force: --force in the CLI, the force Param in Airflow)", shard, url)
        return {**record, "shard": shard, "url": url, "skipped": True}
    stats = Stats()
    started = time.perf_counter()
    name = url.rsplit("/", 1)[1]
    with commit.UnitCommit(record_url, inputs, [url.rsplit("/", 1)[0]], owned=lambda n: n == name) as unit:
        docs = read_shard_documents(staged_segments(cfg, segments), stats, cfg.min_len, max_record_bytes=cfg.max_record_bytes)
        with stats.timer("hashes"):
            table = ShardHashes.collect_hashes(content_hashes(doc["raw_content"]) for doc in docs)
        unit.write_bytes(url, table.to_bytes())
        record = unit.commit({"snapshot": cfg.id, "shard": shard, "distinct_line_hashes": len(table), **stats.to_dict()})
    log.info(
        "shard %04d: %d documents, %d distinct line hashes in %.1fs -> %s",
        shard,
        stats["wet.docs"],
        len(table),
        time.perf_counter() - started,
        url,
    )
    return {**record, "shard": shard, "url": url, "skipped": False}


def _group_hash_digests(cfg: SnapshotConfig, shard: int) -> dict[str, str]:
    """``{member shard: sha256 of its hash file}`` for the shard's hash group, from their records."""
    out = {}
    for member in hash_group(cfg, shard):
        record_url = layout.hashes_record_url(cfg.storage_root, cfg.id, member)
        url = layout.hashes_url(cfg.storage_root, cfg.id, member)
        record = commit.load_record(record_url)
        rel = commit.relative(record_url.rsplit("/", 1)[0], url)
        if record is None or rel not in record.get("outputs", {}) or not storage.exists(url):
            raise MissingInputError(
                f"shard {shard:04d} needs the hashes of shard {member:04d} (its hash group), "
                f"but {url} or its record {record_url} does not exist; run the hashes task for that shard first"
            )
        out[f"{member:04d}"] = record["outputs"][rel]["sha256"]
    return out


def load_group_hashes(cfg: SnapshotConfig, shard: int, expected: dict[str, str] | None = None) -> ShardHashes:
    """The merged hash map of the shard's group; with ``expected`` (``{member: sha256}``), each file
    is checked against it (a hash file rewritten since the fingerprint was taken fails the shard)."""
    parts = []
    for member in hash_group(cfg, shard):
        url = layout.hashes_url(cfg.storage_root, cfg.id, member)
        if not storage.exists(url):
            raise MissingInputError(
                f"shard {shard:04d} needs the hashes of shard {member:04d} (its hash group), "
                f"but {url} does not exist; run the hashes task for that shard first"
            )
        data = storage.read_bytes(url)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected[f"{member:04d}"]:
            raise MissingInputError(f"{url} changed while shard {shard:04d} was being mined; run it again")
        parts.append(ShardHashes.from_bytes(data))
    return ShardHashes.merge(parts)


def is_finished(cfg: SnapshotConfig, shard: int) -> bool:
    return storage.exists(layout.ccnet_stats_url(cfg.storage_root, cfg.id, shard))


_ENCODE = json.JSONEncoder(ensure_ascii=False).encode  # what json.dumps(doc, ensure_ascii=False) does


class _ShardWriter:
    """Lazily opened ``{lang}_{bucket}.json.gz`` files of one shard, committed through ``unit``.

    ``add`` encodes a document; ``flush`` writes each file's pending lines as one block (gzip's
    output bytes do not depend on how its input is split between writes)."""

    def __init__(self, cfg: SnapshotConfig, shard: int, unit: commit.UnitCommit, stack: contextlib.ExitStack) -> None:
        self.cfg, self.shard, self.unit, self.stack = cfg, shard, unit, stack
        self.files: dict[tuple[str, str], IO[bytes]] = {}
        self.pending: dict[tuple[str, str], list[str]] = {}

    def add(self, doc: dict[str, Any]) -> None:
        key = (doc["language"], doc["bucket"])
        lines = self.pending.get(key)
        if lines is None:
            lines = self.pending[key] = []
        lines.append(_ENCODE(doc))

    def flush(self) -> None:
        for key, lines in self.pending.items():
            out = self.files.get(key)
            if out is None:
                url = layout.documents_url(self.cfg.storage_root, self.cfg.id, self.shard, *key)
                out = self.files[key] = self.stack.enter_context(self.unit.gzip_writer(url))
            lines.append("")
            out.write("\n".join(lines).encode("utf-8"))
        self.pending.clear()

    def produced(self) -> set[str]:
        return {layout.file_name(lang, bucket) for lang, bucket in self.files}


def mine_inputs(cfg: SnapshotConfig, shard: int, segments: list[str], models_fingerprint: str) -> dict[str, Any]:
    """What the documents of a shard depend on: the fingerprint of its ``mine`` unit."""
    return {
        "segments": _segment_digests(cfg, shard, segments),
        "hashes": _group_hash_digests(cfg, shard),
        "models": models_fingerprint,
        "languages": list(cfg.languages),
        "lid_threshold": cfg.lid_threshold,
        "lid_model": cfg.lid_model,
        "min_len": cfg.min_len,
        "max_record_bytes": cfg.max_record_bytes,
    }


def mine_shard(
    cfg: SnapshotConfig, shard: int, segments: list[str], *, force: bool = False, batch_docs: int = DEFAULT_BATCH_DOCS
) -> dict[str, Any]:
    """``mine`` stage of one shard; returns the shard's stats record (also stored under stats/).

    Documents go through the steps ``batch_docs`` at a time (memory: one batch of documents);
    the batch size changes speed only, never the output."""
    shard = validate_shard(shard, cfg.num_shards)
    if batch_docs < 1:
        raise ValueError(f"batch_docs must be at least 1, not {batch_docs}")
    with log_context(shard=shard_label(cfg.id, shard)):
        return _mine_shard(cfg, shard, segments, force, batch_docs)


def _mine_batch(
    batch: list[dict[str, Any]],
    table: ShardHashes,
    lid: LanguageIdentifier,
    models: CCNetModels,
    threshold: float,
    languages: set[str],
    writer: _ShardWriter,
    stats: Stats,
) -> None:
    """Dedup, LID, perplexity, bucket and write one batch of documents, each step over the whole
    batch (perplexity per language), in WET order within each output file."""
    with stats.timer("dedup"):
        deduped = [doc for doc in remove_duplicate_lines_batch(batch, table, stats) if doc is not None]
    with stats.timer("lid"):
        predictions = lid.predict_batch([doc["raw_content"] for doc in deduped])
    by_language: dict[str, list[dict[str, Any]]] = {}
    kept = []
    for doc, (lang, score) in zip(deduped, predictions):
        if score < threshold:
            stats.inc("lid.dropped.below_threshold")
            continue
        if lang not in languages:
            stats.inc("lid.dropped.other_language")
            continue
        doc["language"] = lang
        doc["language_score"] = score
        by_language.setdefault(lang, []).append(doc)
        kept.append(doc)
    with stats.timer("perplexity"):
        for lang, group in by_language.items():
            cutoffs = models.cutoffs.get(lang)
            for doc, perplexity in zip(group, models.scorer(lang).perplexities([doc["raw_content"] for doc in group])):
                doc["perplexity"] = perplexity
                doc["bucket"] = perplexity_bucket(perplexity, cutoffs)
    with stats.timer("write"):
        for doc in kept:
            writer.add(doc)
            stats.inc(f"kept.{doc['language']}.{doc['bucket']}")
            stats.inc("kept")
        writer.flush()


def _mine_shard(cfg: SnapshotConfig, shard: int, segments: list[str], force: bool, batch_docs: int) -> dict[str, Any]:
    stats_url = layout.ccnet_stats_url(cfg.storage_root, cfg.id, shard)
    models = CCNetModels.load(layout.models_url(cfg.storage_root, cfg.models_version), cfg.languages)
    inputs = mine_inputs(cfg, shard, segments, models.fingerprint)
    if not force and (record := commit.finished(stats_url, inputs)) is not None:
        log.info(
            "shard %04d: finished earlier (%s), skipping (force: --force in the CLI, the force Param in Airflow)",
            shard,
            stats_url,
        )
        return {**record, "skipped": True}

    started = time.perf_counter()
    stats = Stats()
    lid = LanguageIdentifier(cfg.lid_model or None)
    languages = set(cfg.languages)
    shard_docs = layout.shard_dir(cfg.storage_root, "documents", cfg.id, shard)
    with commit.UnitCommit(stats_url, inputs, [shard_docs], owned=lambda n: n.endswith(layout.DOCUMENTS_SUFFIX)) as unit:
        with stats.timer("load_hashes"):
            table = load_group_hashes(cfg, shard, inputs["hashes"])
        with contextlib.ExitStack() as stack:
            writer = _ShardWriter(cfg, shard, unit, stack)
            docs = read_shard_documents(staged_segments(cfg, segments), stats, cfg.min_len, max_record_bytes=cfg.max_record_bytes)
            while True:
                with stats.timer("read"):
                    batch = list(itertools.islice(docs, batch_docs))
                if not batch:
                    break
                _mine_batch(batch, table, lid, models, cfg.lid_threshold, languages, writer, stats)
            produced = writer.produced()
        stats.inc("stale_files_removed", unit.remove_stale())
        record = unit.commit(
            {
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
        )
    log.info(
        "shard %04d: read %d docs, kept %d in %d files (%.1f docs/s) | %s",
        shard,
        stats["wet.docs"],
        stats["kept"],
        len(produced),
        stats["wet.docs"] / max(record["wall_seconds"], 1e-9),
        stats.summary(),
    )
    return {**record, "skipped": False}
