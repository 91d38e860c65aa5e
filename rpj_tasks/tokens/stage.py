"""Token counts per shard: one ``tokens/…tokens.parquet`` per documents file (docs/PIPELINE.md §5).

For every documents file the shard's CCNet record lists (head, middle and tail) it writes::

    tokens/{snapshot}/{shard:04d}/{lang}_{bucket}.tokens.parquet    schema.TOKEN_COUNTS_SCHEMA

one row per documents line, in line order: ``id`` = ``{snapshot}/{shard:04d}/{lang}_{bucket}.json.gz/{line}``
(as in the signals, MinHash and duplicates files) and ``tokens`` = the tokens of its ``raw_content``
with the BOS (:mod:`rpj_tasks.tokens.tokenizer`).  A line that is not a usable document (invalid
UTF-8 or JSON, not an object, no string ``raw_content``) gets a row with a **null** count, so row
numbers stay line numbers; it is counted (``tokens.bad_line.{reason}``) and logged with its byte
offset, and it adds nothing to the totals.

Commit protocol: one :class:`~rpj_tasks.core.commit.UnitCommit` per shard; the record
``stats/tokens/{snapshot}/{shard:04d}.json`` (written last) fingerprints the documents files (their
sha256 in the CCNet record) and the tokenizer (``name``, ``kind``, ``sha256`` of its file), and
holds per file ``documents`` (lines), ``bad_lines``, ``tokens`` and ``characters`` (of the usable
documents' ``raw_content``).  Re-mined documents or another tokenizer redo the shard; ``force``
redoes it anyway.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from rpj_tasks.core import commit, layout
from rpj_tasks.core.config import SnapshotConfig, validate_shard
from rpj_tasks.core.ids import doc_id
from rpj_tasks.core.inputs import mined_documents
from rpj_tasks.core.lines import BadLines, iter_lines, parse_object
from rpj_tasks.core.logctx import log_context, shard_label
from rpj_tasks.core.schema import TOKEN_COUNTS_SCHEMA
from rpj_tasks.core.stats import Stats
from rpj_tasks.tokens.tokenizer import TokenCounter, load_counter

log = logging.getLogger("rpj.tokens")

#: Documents tokenized per call (fewer once the batch holds :data:`BATCH_BYTES` of lines).
BATCH_LINES = 256
BATCH_BYTES = 8 << 20


def tokens_stats_url(root: str, snapshot: str, shard: int) -> str:
    """The shard's commit record (:func:`rpj_tasks.core.layout.tokens_stats_url`)."""
    return layout.tokens_stats_url(root, snapshot, shard)


def _batches(url: str, bad: BadLines) -> Iterator[list[tuple[int, int, bytes]]]:
    """``(line, byte offset, bytes)`` in batches of at most :data:`BATCH_LINES` lines / :data:`BATCH_BYTES`."""
    batch: list[tuple[int, int, bytes]] = []
    size = 0
    for idx, (offset, line) in enumerate(iter_lines(url, bad, compressed=True)):
        batch.append((idx, offset, line))
        size += len(line)
        if len(batch) == BATCH_LINES or size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def count_file(
    url: str, shard_key: str, counter: TokenCounter, stats: Stats, bad: BadLines
) -> tuple[list[str], list[int | None]]:
    """Ids and token counts (``None`` for a line that is not a usable document) of one documents file."""
    ids: list[str] = []
    counts: list[int | None] = []
    batches = _batches(url, bad)
    while True:
        with stats.timer("read"):
            batch = next(batches, None)
            if batch is None:
                break
            texts: list[str] = []
            usable: list[int] = []
            for i, (idx, offset, line) in enumerate(batch):
                doc, reason = parse_object(line)
                if reason is None and doc is not None and not isinstance(doc.get("raw_content"), str):
                    reason = "no_raw_content"
                if reason is not None:
                    bad.line(url, offset, reason, index=idx, outcome="null count")  # tokens.bad_line[.reason]
                    continue
                assert doc is not None
                texts.append(doc["raw_content"])
                usable.append(i)
        with stats.timer("tokenize"):
            found = counter.count(texts)
        row: list[int | None] = [None] * len(batch)
        for i, n in zip(usable, found):
            row[i] = n
        ids.extend(doc_id(shard_key, idx) for idx, _, _ in batch)
        counts.extend(row)
        stats.inc("tokens.lines", len(batch))
        stats.inc("tokens.tokens", sum(found))
        stats.inc("tokens.characters", sum(map(len, texts)))
    return ids, counts


def write_tokens(unit: commit.UnitCommit, url: str, ids: list[str], counts: list[int | None]) -> None:
    """One token-counts parquet file (snappy, one row group), committed through ``unit``."""
    table = pa.table({"id": pa.array(ids, pa.string()), "tokens": pa.array(counts, pa.int64())}, schema=TOKEN_COUNTS_SCHEMA)
    with unit.writer(url) as f:
        pq.write_table(table, f, compression="snappy")


def count_shard(cfg: SnapshotConfig, shard: int, *, force: bool = False, tokenizer_json: str | None = None) -> dict[str, Any]:
    """Count the tokens of every documents file of one mined shard; returns its record (also stored
    under ``stats/tokens/``) with ``"skipped"``: True when it was finished for the same inputs.

    ``tokenizer_json`` (default: the snapshot's ``tokenizer_json``; ``""`` = Mistral-7B-v0.1 from the
    ``mistral-common`` wheel) is a local ``tokenizer.json`` to count with ``tokenizers`` instead."""
    shard = validate_shard(shard, cfg.num_shards)
    with log_context(shard=shard_label(cfg.id, shard)):
        return _count_shard(cfg, shard, force, cfg.tokenizer_json if tokenizer_json is None else tokenizer_json)


def _count_shard(cfg: SnapshotConfig, shard: int, force: bool, tokenizer_json: str) -> dict[str, Any]:
    record_url = tokens_stats_url(cfg.storage_root, cfg.id, shard)
    documents = mined_documents(cfg, shard)
    stats = Stats()
    selected = []
    for name in sorted(documents):
        match = layout.DOCUMENTS_FILE.match(name)
        if match is None:
            stats.inc("files.ignored")
            log.warning("shard %04d: ignoring %s (not a {lang}_{bucket}.json.gz documents file)", shard, name)
            continue
        selected.append((name, *match.groups()))
    counter = load_counter(tokenizer_json)
    inputs = {"documents": {name: documents[name]["sha256"] for name, _, _ in selected}, "tokenizer": counter.identity}
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        log.info("shard %04d: tokens counted earlier (%s), skipping (force: --force / the force Param)", shard, record_url)
        return {**record, "skipped": True}

    started = time.perf_counter()
    files: dict[str, Any] = {}
    out_dir = layout.shard_dir(cfg.storage_root, "tokens", cfg.id, shard)
    with commit.UnitCommit(record_url, inputs, [out_dir], owned=lambda n: n.endswith(layout.TOKENS_SUFFIX)) as unit:
        for name, lang, bucket in selected:
            with log_context(file=name.removesuffix(layout.DOCUMENTS_SUFFIX)):
                file_stats = Stats()
                bad = BadLines(file_stats, "tokens", logger=log)
                ids, counts = count_file(
                    documents[name]["url"], layout.shard_key(cfg.id, shard, lang, bucket), counter, file_stats, bad
                )
                bad.log_unlogged(name)
                with file_stats.timer("write"):
                    write_tokens(unit, layout.tokens_url(cfg.storage_root, cfg.id, shard, lang, bucket), ids, counts)
                files[name] = {
                    "documents": file_stats["tokens.lines"],
                    "bad_lines": file_stats["tokens.bad_line"],
                    "tokens": file_stats["tokens.tokens"],
                    "characters": file_stats["tokens.characters"],
                }
                log.info(
                    "shard %04d: %s: %d documents (%d bad), %d tokens, %d characters in %.2fs",
                    shard,
                    name,
                    *files[name].values(),
                    sum(file_stats.seconds.values()),
                )
                stats.merge(file_stats)
        stats.inc("files.counted", len(files))
        stats.inc("stale_files_removed", unit.remove_stale())
        wall = time.perf_counter() - started
        totals = {key: sum(f[key] for f in files.values()) for key in ("documents", "bad_lines", "tokens", "characters")}
        record = unit.commit(
            {
                "snapshot": cfg.id,
                "shard": shard,
                "tokenizer": {**counter.identity, "tokenizer_json": tokenizer_json},
                "files": files,
                "totals": totals,
                "wall_seconds": round(wall, 3),
                "docs_per_second": round(totals["documents"] / wall, 1) if wall else None,
                **stats.to_dict(),
            }
        )
    log.info(
        "shard %04d: counted %d tokens of %d documents in %d files (%.1f docs/s) | %s",
        shard,
        totals["tokens"],
        totals["documents"],
        len(files),
        record["docs_per_second"] or 0.0,
        stats.summary(),
    )
    return {**record, "skipped": False}
