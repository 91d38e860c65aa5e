"""Publish a snapshot (``docs/spec/rpv2_format.md`` §8): only once its validation passed, write

    listings/{lang}-{snapshot}-head_middle.txt    base tags of the head and middle files, one per line
    listings/{lang}-{snapshot}-tail.txt           base tags of the tail files
    listings/{snapshot}.manifest.json             the release manifest of the snapshot

through one unit of the commit protocol (record ``stats/publish/{snapshot}.json``).  A base tag is
``{snapshot}/{shard:04d}/{lang}_{bucket}`` without extension; lines are sorted by shard, then
bucket (head before middle).  A consumer appends a component's suffix (``documents/{tag}.json.gz``,
``quality_signals/{tag}.signals.json.gz``, ``minhash/{tag}.minhash.parquet``,
``duplicates/{tag}.duplicates.parquet``).

Every file named is taken from the commit records of the stages that wrote it, never from a
listing of the storage (a stray or half-written file is never published); the manifest gives each
file's sha256 and size as recorded, the documents per language and bucket, the tokens per language
and bucket before and after exact and fuzzy dedup (``rpj_tasks.tokens.token_totals``), the code version and
the models' and signal artifacts' versions with their manifests' sha256.  A snapshot whose shards
are not all finished in every published component is refused before anything is written
(:class:`PublishError`), and so is one whose validation result did not pass: the listings
published earlier stay as they were.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Iterable
from importlib import metadata
from typing import Any

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.errors import PermanentError
from rpj_tasks.core.inputs import mined_shards

log = logging.getLogger("rpj.publish")

FORMAT_VERSION = 3  # bumped when the manifest changes: a rerun then publishes again
LISTING_PARTS = ("head_middle", "tail")


class PublishError(PermanentError):
    """The snapshot cannot be published (validation failed, or an output is not finished)."""


def listing_url(root: str, lang: str, snapshot: str, part: str) -> str:
    """``listings/{lang}-{snapshot}-{part}.txt`` (§8)."""
    if part not in LISTING_PARTS:
        raise ValueError(f"listing part {part!r}")
    return storage.join(root, "listings", f"{lang}-{layout.validate_snapshot(snapshot)}-{part}.txt")


def manifest_url(root: str, snapshot: str) -> str:
    return storage.join(root, "listings", f"{layout.validate_snapshot(snapshot)}.manifest.json")


def publish_record_url(root: str, snapshot: str) -> str:
    return storage.join(root, "stats", "publish", layout.validate_snapshot(snapshot) + ".json")


def code_version() -> str:
    try:
        return "rpj " + metadata.version("rpj")
    except metadata.PackageNotFoundError:  # a source tree that is not installed
        return "rpj (not installed)"


def _recorded(root: str, record_url: str, what: str) -> dict[str, dict[str, Any]]:
    """``{path relative to root: {"sha256", "bytes"}}`` of the outputs a record lists."""
    record = commit.load_record(record_url)
    if record is None:
        raise PublishError(f"cannot publish: {what} is not finished (no record {record_url})")
    out = {}
    prefix = root.rstrip("/") + "/"
    for rel, url in commit.listed_outputs(record_url, record).items():
        if not url.startswith(prefix):
            raise PublishError(f"cannot publish: {record_url} lists {url}, outside the storage root")
        meta = record["outputs"][rel]
        out[url[len(prefix) :]] = {"sha256": meta["sha256"], "bytes": meta["bytes"]}
    return out


def release_files(cfg: SnapshotConfig, shards: Iterable[int]) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, int]]]:
    """Every file of the snapshot's release (documents, quality signals, MinHash, duplicates, and
    token counts and clusters where their records exist), from the records; and the documents
    kept per language and bucket."""
    root = cfg.storage_root
    files: dict[str, dict[str, Any]] = {}
    kept: dict[str, dict[str, int]] = {}
    for shard in sorted(set(shards)):
        label = f"shard {shard:04d} of {cfg.id}"
        record_url = layout.ccnet_stats_url(root, cfg.id, shard)
        files.update(_recorded(root, record_url, f"CCNet of {label}"))
        for name, n in (commit.load_record(record_url) or {}).get("counts", {}).items():
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "kept":
                kept.setdefault(parts[1], {})[parts[2]] = kept.get(parts[1], {}).get(parts[2], 0) + n
        files.update(_recorded(root, layout.annotate_stats_url(root, cfg.id, shard), f"annotation of {label}"))
        tokens = storage.join(root, "stats", "tokens", cfg.id, f"{shard:04d}.json")
        if storage.exists(tokens):
            files.update(_recorded(root, tokens, f"token counts of {label}"))
    files.update(_recorded(root, layout.duplicates_record_url(root, cfg.id), f"exact dedup of {cfg.id}"))
    clusters = layout.clusters_record_url(root, [cfg.id], cfg.clusters_threshold)
    if storage.exists(clusters):
        files.update(_recorded(root, clusters, f"fuzzy clusters of {cfg.id}"))
    return dict(sorted(files.items())), {lang: dict(sorted(b.items())) for lang, b in sorted(kept.items())}


def listings(cfg: SnapshotConfig, files: dict[str, dict[str, Any]]) -> dict[str, dict[str, list[str]]]:
    """``{lang: {"head_middle": [tags], "tail": [tags]}}`` of the documents files among ``files``;
    a head or middle file must have its signals, MinHash and duplicates files."""
    prefix = f"documents/{cfg.id}/"
    found: dict[str, dict[str, list[tuple[int, int, str]]]] = {}
    for rel in files:
        if not rel.startswith(prefix) or not rel.endswith(layout.DOCUMENTS_SUFFIX):
            continue
        shard_text, name = rel[len(prefix) :].split("/")
        match = layout.DOCUMENTS_FILE.match(name)
        if match is None or match.group(1) not in cfg.languages:
            continue
        lang, bucket = match.groups()
        tag = layout.base_tag(cfg.id, int(shard_text), lang, bucket)
        if bucket in layout.ANNOTATED_BUCKETS:
            for component, suffix in (
                ("quality_signals", layout.SIGNALS_SUFFIX),
                ("minhash", layout.MINHASH_SUFFIX),
                ("duplicates", layout.DUPLICATES_SUFFIX),
            ):
                if f"{component}/{tag}{suffix}" not in files:
                    raise PublishError(f"cannot publish {cfg.id}: {component}/{tag}{suffix} is not recorded as finished")
        part = "tail" if bucket == "tail" else "head_middle"
        found.setdefault(lang, {p: [] for p in LISTING_PARTS})[part].append((int(shard_text), layout.BUCKETS.index(bucket), tag))
    return {lang: {p: [t for *_, t in sorted(rows)] for p, rows in parts.items()} for lang, parts in sorted(found.items())}


def check_validated(cfg: SnapshotConfig, shards: list[int], files: dict[str, dict[str, Any]]) -> None:
    """Every file to be published is a file a passed shard validation read, with the same sha256:
    a file rewritten since (e.g. the duplicates files, when a newer snapshot's dedup ran meanwhile)
    is never published unvalidated."""
    root = cfg.storage_root
    validated: dict[str, str] = {}
    for shard in shards:
        url = storage.join(root, "stats", "validate", cfg.id, f"{shard:04d}.json")
        record = commit.load_record(url)
        if record is None or not (record.get("result") or {}).get("success"):
            raise PublishError(f"cannot publish {cfg.id}: shard {shard:04d} has no passed validation ({url})")
        validated.update(record["inputs"]["files"])
    changed = sorted(rel for rel, meta in files.items() if validated.get(rel) != meta["sha256"])
    if changed:
        raise PublishError(
            f"cannot publish {cfg.id}: {len(changed)} files differ from what validation read, e.g. {changed[0]} "
            "(rewritten since, e.g. by a newer snapshot's dedup): validate again, then publish"
        )


def validate_and_publish(cfg: SnapshotConfig, shards: list[int], *, force: bool = False) -> dict[str, Any]:
    """Validate every shard (those validated earlier for the same files are skipped), then the
    snapshot, then publish: the one sequence the DAGs and ``rpj publish`` share after a change."""
    from rpj_tasks.validate.stage import validate_shard, validate_snapshot

    for shard in shards:
        validate_shard(cfg, shard)
    result = validate_snapshot(cfg, shards)
    summary = f"{len(shards)} shards valid; Data Docs {result['data_docs']}"
    return publish_snapshot(cfg, shards, validation={**result, "summary": summary}, force=force)


def republish_if_published(cfg: SnapshotConfig) -> bool:
    """Validate and publish ``cfg``'s snapshot again if it was published before (its files changed,
    e.g. its duplicates after a newer snapshot's dedup); False when it never was."""
    if commit.load_record(publish_record_url(cfg.storage_root, cfg.id)) is None:
        return False
    log.info("%s: published earlier and its files changed: validating and publishing again", cfg.id)
    validate_and_publish(cfg, mined_shards(cfg))
    return True


def _token_totals(cfg: SnapshotConfig, files: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Tokens per language and bucket, before and after exact and fuzzy dedup (None without token files)."""
    if not any(rel.startswith(f"tokens/{cfg.id}/") for rel in files):
        return None
    from rpj_tasks.tokens import token_totals

    return token_totals(cfg.storage_root, cfg.id)


def _version_of(url: str) -> dict[str, Any]:
    try:
        return {"url": url, "manifest_sha256": storage.digest(storage.join(url, "MANIFEST.json"))["sha256"]}
    except FileNotFoundError:
        return {"url": url, "manifest_sha256": None}


def publish_snapshot(
    cfg: SnapshotConfig, shards: Iterable[int], *, validation: dict[str, Any], force: bool = False
) -> dict[str, Any]:
    """Write the snapshot's listings and manifest if ``validation`` (the snapshot validation's
    result) passed; returns the record (``skipped`` when finished for the same files)."""
    if validation.get("success") is not True:
        raise PublishError(
            f"{cfg.id} is not published: its validation did not pass ({validation.get('summary', 'no summary')}); "
            "earlier listings are left as they were"
        )
    root = cfg.storage_root
    shards = sorted(set(shards))
    files, kept = release_files(cfg, shards)
    check_validated(cfg, shards, files)
    lists = listings(cfg, files)
    if not lists:
        raise PublishError(f"cannot publish {cfg.id}: no documents files of the languages {cfg.languages}")
    versions = {
        "models": {"version": cfg.models_version, **_version_of(layout.models_url(root, cfg.models_version))},
        "signal_artifacts": {
            "version": cfg.signals_version,
            **_version_of(layout.signal_artifacts_url(root, cfg.signals_version)),
        },
    }
    inputs = {
        "format": FORMAT_VERSION,
        "languages": sorted(lists),
        "files": {rel: meta["sha256"] for rel, meta in files.items()},
        "versions": versions,
        "code": code_version(),
    }
    record_url = publish_record_url(root, cfg.id)
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        log.info("%s: published earlier with the same files, skipping", cfg.id)
        return {**record, "skipped": True}
    manifest = {
        "snapshot": cfg.id,
        "crawl": cfg.crawl,
        "code": code_version(),
        "versions": versions,
        "shards": shards,
        "languages": cfg.languages,
        "documents": kept,
        "listings": {lang: {p: len(tags) for p, tags in parts.items()} for lang, parts in lists.items()},
        "tokens": _token_totals(cfg, files),
        "validation": {k: validation[k] for k in ("summary", "data_docs") if k in validation},
        "files": files,
    }
    mine = {f"{lang}-{cfg.id}-{p}.txt" for lang in lists for p in LISTING_PARTS} | {f"{cfg.id}.manifest.json"}
    ours = re.compile(rf"[a-z]{{2,3}}-{re.escape(cfg.id)}-({'|'.join(LISTING_PARTS)})\.txt|{re.escape(cfg.id)}\.manifest\.json")
    with commit.UnitCommit(
        record_url, inputs, [storage.join(root, "listings")], owned=lambda name: ours.fullmatch(name) is not None
    ) as unit:
        for lang, parts in lists.items():
            for part, tags in parts.items():
                unit.write_bytes(listing_url(root, lang, cfg.id, part), "".join(t + "\n" for t in tags).encode())
        body = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
        unit.write_bytes(manifest_url(root, cfg.id), body)
        record = unit.commit({"listings": sorted(mine), "files": len(files), "manifest_sha256": hashlib.sha256(body).hexdigest()})
    log.info(
        "%s published: %s; manifest %s (%d files)",
        cfg.id,
        ", ".join(f"{lang} {len(p['head_middle'])}+{len(p['tail'])} tags" for lang, p in lists.items()),
        manifest_url(root, cfg.id),
        len(files),
    )
    return {**record, "skipped": False}
