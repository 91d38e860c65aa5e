"""The annotation stage, per shard: quality signals and MinHash signatures (docs/spec/rpv2_format.md §1, §3-5).

For every ``documents/{snapshot}/{shard}/{lang}_{bucket}.json.gz`` of a shard whose bucket is
head or middle (tail too with ``annotate_tail``; the reference annotates head and middle only)
it writes::

    quality_signals/{base_tag}.signals.json.gz   one encode_record line per document line
    minhash/{base_tag}.minhash.parquet           one row per document line

Line ``i`` of both describes line ``i`` of the documents file, ids ``{shard_key}/{i}``.  A line
that is not a usable document (invalid UTF-8 or JSON, not an object, no string ``raw_content``)
still gets a record with null scores and a row with null signatures (D18), counted and logged
with its byte offset.

DSIR (D11): with artifacts in hash mode ``cpython-seed42`` the work runs in a process that passes
the §5 item 3 self-check: this one if it already does, otherwise one ``seed42_pool`` worker per
shard task (a subprocess of :mod:`rpj_tasks.core.workers`, which starts the same under Airflow, Celery,
the CLI or pytest) that checks itself before it starts, gets this process's storage options and
is reused for all the shard's files; if it dies, the shard fails at once with
:class:`~rpj_tasks.core.workers.WorkerDiedError`.  A run whose hash mode differs from the one the
artifacts' ``MANIFEST.json`` records is refused.

Commit protocol (as :mod:`rpj_tasks.ccnet.stage`): every output is written atomically; outputs of an
earlier run that this run did not produce are removed; the per-shard stats record
``stats/annotate/{snapshot}/{shard}.json`` is written last and marks the shard finished.  A
finished shard is skipped unless ``force`` or its CCNet record changed since (documents re-mined).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np

from rpj_tasks.annotate.hashseed import HASH_MODES, SEED42
from rpj_tasks.annotate.minhash import signatures_from_words, write_minhash_parquet
from rpj_tasks.annotate.signals import (
    ArtifactsError,
    SignalArtifacts,
    dsir_hash_selfcheck,
    encode_record,
    make_record,
    null_record,
    prepare,
    require_seed42,
    seed42_pool,
)
from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import SnapshotConfig, validate_shard
from rpj_tasks.core.inputs import mined_documents
from rpj_tasks.core.layout import ANNOTATED_BUCKETS as DEFAULT_BUCKETS
from rpj_tasks.core.layout import DOCUMENTS_FILE, MINHASH_SUFFIX, SIGNALS_SUFFIX
from rpj_tasks.core.lines import (
    MAX_LOGGED_BAD_LINES,  # noqa: F401 - described bad lines per file; importable from here
    BadLines,
    iter_lines,
    parse_object,
)
from rpj_tasks.core.logctx import log_context, shard_label
from rpj_tasks.core.schema import REQUIRED_DOCUMENT_FIELDS as REQUIRED_FIELDS  # the reference reader's 14 (§4)
from rpj_tasks.core.stats import Stats
from rpj_tasks.core.workers import WorkerDiedError  # noqa: F401 - raised by run_jobs; importable from here

log = logging.getLogger("rpj.annotate")

BATCH_LINES = 256
# ... or fewer, once the batch holds this many bytes of documents: a batch of documents near
# ``max_record_bytes`` (4 MiB) then stays a few hundred MB of working memory, not gigabytes.
BATCH_BYTES = 8 << 20


# ---------------------------------------------------------------- paths


annotate_stats_url = layout.annotate_stats_url  # the shard's commit marker


# ---------------------------------------------------------------- per file (runs in the worker)


@dataclass(frozen=True)
class FileJob:
    """One documents file to annotate and where its outputs go."""

    name: str
    lang: str
    shard_key: str
    documents_url: str
    signals_url: str
    minhash_url: str
    artifacts_url: str
    hash_mode: str

    @property
    def label(self) -> str:
        """The file in log lines (:mod:`rpj_tasks.core.logctx`): ``en_head``."""
        return _label(self.name)


def _label(name: str) -> str:
    return name.removesuffix(layout.DOCUMENTS_SUFFIX)


def _no_label(job: Any) -> str | None:
    return None


def _decode(line: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The document of a line, or ``(partial document or None, reason)`` when it is not usable:
    ``invalid_utf8``, ``invalid_json``, ``not_an_object`` (:func:`rpj_tasks.core.lines.parse_object`,
    strict UTF-8) or ``no_raw_content``."""
    doc, reason = parse_object(line)
    if doc is not None and not isinstance(doc.get("raw_content"), str):
        return doc, "no_raw_content"
    return doc, reason


def _decoded_batch(lines: Iterator[tuple[int, tuple[int, bytes]]]) -> list[tuple[int, int, Any, str | None]]:
    """The next :data:`BATCH_LINES` lines (fewer past :data:`BATCH_BYTES`) as ``(idx, byte offset,
    document, reason unusable)``.  Batching never changes the output: every line is annotated alone."""
    batch: list[tuple[int, int, Any, str | None]] = []
    size = 0
    for idx, (offset, line) in lines:
        batch.append((idx, offset, *_decode(line)))
        size += len(line)
        if len(batch) == BATCH_LINES or size >= BATCH_BYTES:
            break
    return batch


def _annotate_batch(
    batch: list[tuple[int, int, Any, str | None]],
    job: FileJob,
    artifacts: SignalArtifacts,
    stats: Stats,
    bad: BadLines,
) -> tuple[list[bytes], list[list[str]]]:
    """Signals lines and NW word lists (empty for unusable lines) of a decoded batch."""
    out: list[bytes] = []
    words: list[list[str]] = []
    for idx, offset, doc, reason in batch:
        if reason is not None:
            bad.line(job.documents_url, offset, reason, index=idx, outcome="null record")  # annotate.bad_line[.reason]
            out.append(encode_record(null_record(job.shard_key, idx, doc)))
            words.append([])
            continue
        if not REQUIRED_FIELDS <= doc.keys():
            stats.inc("annotate.incomplete_document")
        text = prepare(doc["raw_content"])
        out.append(encode_record(make_record(doc, job.shard_key, idx, artifacts, text)))
        words.append(text.words)
    return out, words


def _signatures(
    job: FileJob, artifacts: SignalArtifacts, signals_out: IO[bytes], stats: Stats, bad: BadLines
) -> Iterator[np.ndarray | None]:
    """Annotate the file batch by batch: write the signals lines, yield one signature per line."""
    lines = enumerate(iter_lines(job.documents_url, bad, compressed=True))  # a truncated gzip: annotate.truncated
    while True:
        with stats.timer("read"):
            batch = _decoded_batch(lines)
        if not batch:
            return
        with stats.timer("signals"):
            records, words = _annotate_batch(batch, job, artifacts, stats, bad)
        with stats.timer("minhash"):
            sigs = signatures_from_words(words)
        with stats.timer("write"):
            signals_out.write(b"\n".join(records) + b"\n")
        stats.inc("annotate.lines", len(batch))
        stats.inc("minhash.null", sum(sig is None for sig in sigs))
        yield from sigs


def _artifacts_summary(artifacts: SignalArtifacts) -> dict[str, Any]:
    """What a language's signals could use (absent parts give null scores)."""
    return {
        "stop_words": len(artifacts.stop_words),
        "ldnoobw": len(artifacts.ldnoobw),
        "ut1_domains": len(artifacts.ut1),
        "classifiers": sorted(artifacts.classifiers),
        "dsir_targets": sorted(artifacts.dsir.targets) if artifacts.dsir is not None else [],
    }


def annotate_file(job: FileJob) -> dict[str, Any]:
    """Write the signals and MinHash files of one documents file; returns its stats.

    In hash mode ``cpython-seed42`` the interpreter must pass the DSIR self-check (else
    :class:`~rpj_tasks.annotate.signals.HashSeedError`).  Bad lines are reported in ``"bad_lines"``
    (the first :data:`MAX_LOGGED_BAD_LINES` messages), for the caller to log.
    """
    if job.hash_mode == SEED42:
        require_seed42()
    stats = Stats()
    bad = BadLines(stats, "annotate")  # described here, logged by the caller (_log_file)
    with stats.timer("load_artifacts"):
        artifacts = SignalArtifacts.load(job.artifacts_url, job.lang, job.hash_mode)
    started = time.perf_counter()
    outputs: dict[str, Any] = {}  # committed outputs' sha256 and size, for the parent's record
    with storage.atomic_gzip_write(job.signals_url, digests=outputs) as signals_out:
        write_minhash_parquet(
            job.minhash_url, job.shard_key, _signatures(job, artifacts, signals_out, stats, bad), digests=outputs
        )
    # Parquet encoding happens inside write_minhash_parquet, between the steps timed above.
    inner = sum(stats.seconds.get(step, 0.0) for step in ("read", "signals", "minhash", "write"))
    stats.add_time("write", max(0.0, time.perf_counter() - started - inner))
    return {
        "name": job.name,
        "lang": job.lang,
        "stats": stats.to_dict(),
        "artifacts": _artifacts_summary(artifacts),
        "bad_lines": bad.messages,
        "bad_lines_not_logged": bad.not_logged,
        "outputs": outputs,
    }


# ---------------------------------------------------------------- the worker process


def run_jobs(
    fn: Callable[[Any], Any], jobs: Iterable[Any], hash_mode: str, *, label: Callable[[Any], str | None] = _no_label
) -> Iterator[Any]:
    """``fn(job)`` for each job, in order: here if this interpreter reproduces ``hash_mode``, else
    in one ``PYTHONHASHSEED=42`` worker (``seed42_pool``: checked on start, given this process's
    storage options, reused for every job).  A worker that dies raises
    :class:`~rpj_tasks.core.workers.WorkerDiedError` for the job it held.  Each job runs in the
    log context ``file=label(job)`` (here or in the worker)."""
    jobs = list(jobs)
    if hash_mode != SEED42 or dsir_hash_selfcheck():
        for job in jobs:
            with log_context(file=label(job)):
                result = fn(job)
            yield result
        return
    if not jobs:
        return
    with seed42_pool(1, name="annotate") as pool:
        for job in jobs:
            with log_context(file=label(job)):
                result = pool.apply(fn, (job,), what=f"annotation of {getattr(job, 'documents_url', job)}")
            yield result


# ---------------------------------------------------------------- the shard


def artifacts_manifest(artifacts_url: str, hash_mode: str) -> dict[str, Any]:
    """The artifacts' identity for the stats record; refuses (``ArtifactsError``) a directory without a
    ``MANIFEST.json`` or artifacts built in another hash mode up front."""
    if hash_mode not in HASH_MODES:
        raise ValueError(f"unknown hash_mode {hash_mode!r}; expected one of {HASH_MODES}")
    url = storage.join(artifacts_url, "MANIFEST.json")
    if not storage.exists(url):
        # Without it a mistyped version would annotate with no word lists, models or DSIR counts
        # (null signals), and the stats could not say which artifacts were used.
        raise ArtifactsError(
            f"no signal artifacts at {artifacts_url} (no MANIFEST.json): build them "
            "(rpj signal-artifacts --config, or the rpv2_prep_artifacts DAG with signals_source=build) or install "
            "the published RPv2 artifacts (rpj signal-artifacts --install-from, signals_source=install)"
        )
    data = storage.read_bytes(url)
    manifest = json.loads(data)
    recorded = manifest.get("hash_mode", SEED42)  # installed published artifacts: the reference's seed 42
    if recorded != hash_mode:
        raise ArtifactsError(
            f"{artifacts_url}: the signal artifacts were built with DSIR hash_mode {recorded!r}, "
            f"but the annotation runs in {hash_mode!r}; use matching artifacts or hash_mode"
        )
    return {
        "url": artifacts_url,
        "manifest_sha256": hashlib.sha256(data).hexdigest(),
        "format_version": manifest.get("format_version"),
        "hash_mode": hash_mode,
    }


def _documents(
    documents: dict[str, dict[str, Any]], shard: int, buckets: tuple[str, ...], stats: Stats
) -> list[tuple[str, str, str]]:
    """``(name, lang, bucket)`` of the listed documents files to annotate, sorted by name."""
    selected = []
    for name in sorted(documents):
        match = DOCUMENTS_FILE.match(name)
        if match is None:
            stats.inc("files.ignored")
            log.warning("shard %04d: ignoring %s (not a {lang}_{bucket}.json.gz documents file)", shard, name)
            continue
        lang, bucket = match.groups()
        if bucket not in buckets:
            stats.inc(f"files.not_annotated.{bucket}")
            continue
        selected.append((name, lang, bucket))
    return selected


def _log_file(shard: int, result: dict[str, Any]) -> None:
    for message in result["bad_lines"]:
        log.warning("%s", message)
    if result["bad_lines_not_logged"]:
        log.warning("%s: %d more bad lines not logged", result["name"], result["bad_lines_not_logged"])
    counts, seconds = result["stats"]["counts"], result["stats"]["seconds"]
    log.info(
        "shard %04d: %s: %d lines, %d bad, %d without MinHash in %.1fs",
        shard,
        result["name"],
        counts.get("annotate.lines", 0),
        counts.get("annotate.bad_line", 0),
        counts.get("minhash.null", 0),
        sum(seconds.values()),
    )


def annotate_shard(
    cfg: SnapshotConfig,
    shard: int,
    *,
    artifacts_url: str,
    annotate_tail: bool = False,
    force: bool = False,
    hash_mode: str = SEED42,
) -> dict[str, Any]:
    """Annotate one CCNet shard; returns its stats record (also stored under ``stats/annotate/``).

    ``hash_mode`` is the DSIR mode of the run (``cpython-seed42``, the reference, or ``stable``);
    it must be the mode the artifacts under ``artifacts_url`` were built with.  Its log lines (and
    its worker's) carry the shard and the file (:mod:`rpj_tasks.core.logctx`).
    """
    shard = validate_shard(shard, cfg.num_shards)
    with log_context(shard=shard_label(cfg.id, shard)):
        return _annotate_shard(cfg, shard, artifacts_url, annotate_tail, force, hash_mode)


def _annotate_shard(
    cfg: SnapshotConfig, shard: int, artifacts_url: str, annotate_tail: bool, force: bool, hash_mode: str
) -> dict[str, Any]:
    stats_url = annotate_stats_url(cfg.storage_root, cfg.id, shard)
    documents = mined_documents(cfg, shard)
    artifacts = artifacts_manifest(artifacts_url, hash_mode)
    buckets = (*DEFAULT_BUCKETS, "tail") if annotate_tail else DEFAULT_BUCKETS
    stats = Stats()
    selected = _documents(documents, shard, buckets, stats)
    inputs = {
        "documents": {name: documents[name]["sha256"] for name, _, _ in selected},
        "artifacts": {key: artifacts[key] for key in ("url", "manifest_sha256", "hash_mode")},
        "buckets": list(buckets),
    }
    if not force and (record := commit.finished(stats_url, inputs)) is not None:
        log.info(
            "shard %04d: annotated earlier (%s), skipping (force: --force in the CLI, the force Param in Airflow)",
            shard,
            stats_url,
        )
        return {**record, "skipped": True}

    started = time.perf_counter()
    jobs = [
        FileJob(
            name=name,
            lang=lang,
            shard_key=layout.shard_key(cfg.id, shard, lang, bucket),
            documents_url=documents[name]["url"],
            signals_url=layout.signals_url(cfg.storage_root, cfg.id, shard, lang, bucket),
            minhash_url=layout.minhash_url(cfg.storage_root, cfg.id, shard, lang, bucket),
            artifacts_url=artifacts_url,
            hash_mode=hash_mode,
        )
        for name, lang, bucket in selected
    ]
    files: dict[str, Any] = {}
    languages: dict[str, Any] = {}
    output_dirs = [layout.shard_dir(cfg.storage_root, component, cfg.id, shard) for component in ("quality_signals", "minhash")]
    with commit.UnitCommit(stats_url, inputs, output_dirs, owned=lambda n: n.endswith((SIGNALS_SUFFIX, MINHASH_SUFFIX))) as unit:
        for result in run_jobs(annotate_file, jobs, hash_mode, label=lambda job: job.label):
            with log_context(file=_label(result["name"])):
                _log_file(shard, result)
            unit.add_outputs(result["outputs"])
            file_stats = Stats.from_dict(result["stats"])
            stats.merge(file_stats)
            languages[result["lang"]] = result["artifacts"]
            files[result["name"]] = {
                "lines": file_stats["annotate.lines"],
                "bad_lines": file_stats["annotate.bad_line"],
                "minhash_null": file_stats["minhash.null"],
                "seconds": round(sum(file_stats.seconds.values()), 3),
            }
        stats.inc("files.annotated", len(files))
        stats.inc("stale_files_removed", unit.remove_stale())
        wall = time.perf_counter() - started
        record = unit.commit(
            {
                "snapshot": cfg.id,
                "shard": shard,
                "buckets": list(buckets),
                "artifacts": {**artifacts, "languages": dict(sorted(languages.items()))},
                "files": files,
                "wall_seconds": round(wall, 3),
                "docs_per_second": round(stats["annotate.lines"] / wall, 1) if wall else None,
                **stats.to_dict(),
            }
        )
    log.info(
        "shard %04d: annotated %d lines in %d files (%.1f docs/s) | %s",
        shard,
        stats["annotate.lines"],
        len(files),
        record["docs_per_second"] or 0.0,
        stats.summary(),
    )
    return {**record, "skipped": False}
