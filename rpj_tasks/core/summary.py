"""A snapshot's totals from its per-shard stats records, as data and as a few human lines.

Read by ``rpj summary``, the snapshot DAG's report task and at the end of the demo: documents read,
dropped by reason and kept per language and bucket (CCNet), broken records skipped, source files
damaged at the source (from the download records), files and lines annotated, shards that did not
finish, and where the outputs are.
"""

from __future__ import annotations

import json
from typing import Any

from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.stats import Stats

DROP_REASONS = {
    "wet.too_short": "too short",
    "wet.too_large": "too large (max_record_bytes)",
    "dedup.dropped.all_lines_duplicate": "all lines duplicate",
    "lid.dropped.other_language": "other language",
    "lid.dropped.below_threshold": "LID score below threshold",
}
MAX_SHARD_TEXT = 120
MAX_DAMAGED_LINES = 5


def recorded_shards(stats_dir: str) -> set[int]:
    """The shards that have a record (``{shard:04d}.json``) in a stage's stats folder."""
    return {int(n[:-5]) for n in storage.listdir(stats_dir) if n.endswith(".json") and n[:-5].isdigit()}


def _totals(stats_dir: str, shards: set[int]) -> tuple[Stats, float]:
    """The merged counters of the records of ``shards`` in ``stats_dir``, and their wall seconds."""
    total, seconds = Stats(), 0.0
    for shard in sorted(shards):
        record = json.loads(storage.read_bytes(storage.join(stats_dir, f"{shard:04d}.json")))
        total.merge(Stats.from_dict(record))
        seconds += record.get("wall_seconds", 0.0)
    return total, seconds


def damaged_sources(cfg: SnapshotConfig, shards: set[int]) -> list[dict[str, Any]]:
    """``[{"shard", "file", "damage"}]``: staged files damaged at the source, from the download records."""
    from rpj_tasks.core import commit

    out = []
    download_dir = layout.download_stats_dir(cfg.storage_root, cfg.id)
    for shard in sorted(recorded_shards(download_dir) & shards):
        record_url = layout.download_record_url(cfg.storage_root, cfg.id, shard)
        record = commit.load_record(record_url) or {}
        for rel, url in commit.listed_outputs(record_url, record).items():
            if damage := record["outputs"][rel].get("damage"):
                out.append({"shard": shard, "file": url, "damage": damage})
    return out


def dedup_summary(cfg: SnapshotConfig) -> dict[str, Any]:
    """Exact duplicates and fuzzy clusters of the snapshot, from their commit records (``None``
    where that step has not finished)."""
    from rpj_tasks.core import commit

    exact = commit.load_record(layout.duplicates_record_url(cfg.storage_root, cfg.id))
    fuzzy = commit.load_record(layout.clusters_record_url(cfg.storage_root, [cfg.id], cfg.clusters_threshold))
    counts = (fuzzy or {}).get("counts", {})
    return {
        "exact_duplicates": exact["duplicates"] if exact else None,
        "clusters_threshold": cfg.clusters_threshold,
        "clustered_documents": counts.get("lsh.clustered_docs", 0) if fuzzy else None,
        "clusters": counts.get("lsh.clusters", 0) if fuzzy else None,
    }


def release_summary(cfg: SnapshotConfig, shards: set[int]) -> dict[str, Any]:
    """Tokens counted (the tokens records of ``shards``), the snapshot validation's outcome and
    whether it is published (``None`` where that step has not run)."""
    from rpj_tasks.core import commit

    root = cfg.storage_root
    tokens_dir = storage.join(root, "stats", "tokens", cfg.id)
    counted = recorded_shards(tokens_dir) & shards
    tokens = 0
    for shard in sorted(counted):
        record = commit.load_record(storage.join(tokens_dir, f"{shard:04d}.json")) or {}
        tokens += (record.get("totals") or {}).get("tokens") or 0
    failed = []
    validate_dir = storage.join(root, "stats", "validate", cfg.id)
    for shard in sorted(recorded_shards(validate_dir) & shards):
        result = (commit.load_record(storage.join(validate_dir, f"{shard:04d}.json")) or {}).get("result") or {}
        if not result.get("success"):
            failed.append(shard)
    validation = commit.load_record(storage.join(root, "stats", "validate", cfg.id, "snapshot.json"))
    published = commit.load_record(storage.join(root, "stats", "publish", cfg.id + ".json"))
    return {
        "token_shards": len(counted),
        "tokens": tokens if counted else None,
        "validated": None if validation is None else bool((validation.get("result") or {}).get("success")),
        "data_docs": None if validation is None else (validation.get("result") or {}).get("data_docs"),
        "published": published is not None,
        "validation_failed": failed,
    }


def snapshot_summary(cfg: SnapshotConfig, shards: list[int] | None = None) -> dict[str, Any]:
    """Totals over the CCNet and annotation records of ``shards`` (default: every shard)."""
    shards = list(range(cfg.num_shards)) if shards is None else shards
    ccnet_dir = layout.ccnet_stats_dir(cfg.storage_root, cfg.id)
    annotate_dir = layout.annotate_stats_dir(cfg.storage_root, cfg.id)
    mined, annotated = recorded_shards(ccnet_dir) & set(shards), recorded_shards(annotate_dir) & set(shards)
    ccnet, ccnet_seconds = _totals(ccnet_dir, mined)
    annotate, _ = _totals(annotate_dir, annotated)
    kept: dict[str, dict[str, int]] = {}
    for name, n in ccnet.counts.items():
        parts = name.split(".")
        if len(parts) == 3 and parts[0] == "kept":
            kept.setdefault(parts[1], {})[parts[2]] = n
    return {
        "snapshot": cfg.id,
        "storage_root": cfg.storage_root,
        "shards": len(shards),
        "mined_shards": len(mined),
        "annotated_shards": len(annotated),
        "not_mined": sorted(set(shards) - mined),
        "not_annotated": sorted(set(shards) - annotated),
        "shard_seconds": round(ccnet_seconds, 1),
        "documents_read": ccnet["wet.docs"],
        "documents_kept": ccnet["kept"],
        "dropped": {label: ccnet[key] for key, label in DROP_REASONS.items()},
        "kept_by_language": {lang: kept[lang] for lang in sorted(kept)},
        "files_annotated": annotate["files.annotated"],
        "lines_annotated": annotate["annotate.lines"],
        "bad_records": {k: v for k, v in ccnet.counts.items() if k.startswith("wet.skipped.")},
        "damaged_sources": damaged_sources(cfg, mined),
        "dedup": dedup_summary(cfg),
        "release": release_summary(cfg, set(shards)),
    }


def _shard_list(shards: list[int]) -> str:
    from rpj_tasks.core.plan import format_shards

    text = format_shards(shards)
    return text if len(text) <= MAX_SHARD_TEXT else text[:MAX_SHARD_TEXT].rsplit(",", 1)[0] + ", ..."


def format_summary(s: dict[str, Any]) -> str:
    """A few lines for a person: what was read, kept (per language), annotated, and where it is."""
    root = s["storage_root"]
    lines = [f"snapshot {s['snapshot']}: {s['mined_shards']}/{s['shards']} shards mined, {s['annotated_shards']} annotated"]
    if s["not_mined"]:
        lines.append(f"  not mined yet: shards {_shard_list(s['not_mined'])}")
    dropped = ", ".join(f"{n} {label}" for label, n in s["dropped"].items() if n)
    lines.append(
        f"  documents read {s['documents_read']}, kept {s['documents_kept']}" + (f" (dropped: {dropped})" if dropped else "")
    )
    for lang, buckets in s["kept_by_language"].items():
        total = sum(buckets.values())
        detail = ", ".join(f"{b} {buckets.get(b, 0)}" for b in layout.BUCKETS)
        lines.append(f"    {lang}: {total} kept ({detail})")
    if s["bad_records"]:
        lines.append(
            "  broken records skipped: "
            + ", ".join(f"{k.removeprefix('wet.skipped.')} {v}" for k, v in sorted(s["bad_records"].items()))
        )
    damaged = s.get("damaged_sources", [])
    if damaged:
        lines.append(f"  source files damaged at the source (staged as they are, records around the damage kept): {len(damaged)}")
        for entry in damaged[:MAX_DAMAGED_LINES]:
            lines.append(f"    shard {entry['shard']:04d} {entry['file'].rsplit('/', 1)[-1]}: {entry['damage']}")
        if len(damaged) > MAX_DAMAGED_LINES:
            lines.append(
                f"    ... {len(damaged) - MAX_DAMAGED_LINES} more in {storage.join(root, 'stats', 'download', s['snapshot'])}"
            )
    lines.append(f"  quality signals + MinHash: {s['files_annotated']} files, {s['lines_annotated']} documents")
    dedup = s.get("dedup") or {}
    exact = "not run" if dedup.get("exact_duplicates") is None else f"{dedup['exact_duplicates']} documents listed as duplicates"
    fuzzy = (
        "not run"
        if dedup.get("clusters") is None
        else f"{dedup['clustered_documents']} documents in {dedup['clusters']} clusters at {dedup['clusters_threshold']}"
    )
    lines.append(f"  exact dedup: {exact}; fuzzy: {fuzzy}")
    rel = s.get("release") or {}
    if rel.get("tokens") is not None:
        lines.append(f"  tokens (Mistral-7B-v0.1 unless configured): {rel['tokens']} in {rel['token_shards']} shards")
    if rel.get("validation_failed"):
        lines.append(
            f"  validation FAILED for shards {_shard_list(rel['validation_failed'])}: "
            f"see {storage.join(root, 'validation', s['snapshot'])}/<shard>/data_docs/index.html"
        )
    if rel.get("validated") is not None:
        verdict = "passed" if rel["validated"] else "FAILED"
        lines.append(f"  validation {verdict} (Data Docs: {rel['data_docs']}); published: {'yes' if rel['published'] else 'no'}")
    components = ("documents", "quality_signals", "minhash", "duplicates", "clusters", "tokens", "listings")
    lines.append(
        "  outputs: "
        + ", ".join(storage.join(root, c, s["snapshot"]) if c != "listings" else storage.join(root, c) for c in components)
    )
    lines.append(
        f"  per-shard stats: {storage.join(root, 'stats', 'ccnet', s['snapshot'])}, {storage.join(root, 'stats', 'annotate', s['snapshot'])}"
    )
    return "\n".join(lines)
