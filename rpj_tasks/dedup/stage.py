"""Dedup as pipeline stages of a snapshot: the glue between a :class:`SnapshotConfig` (and the
registry) and the engine functions of :mod:`rpj_tasks.dedup.exact`, shared by ``rpj dedup`` and the
DAGs, so that both run the same steps over the same set of snapshots.

Exact dedup of a snapshot ``S``:

1. :func:`index` — S's digest index, over every shard of S that has a CCNet record (or the shards
   given); runs concurrently with other snapshots' indexes.
2. :func:`plan` — the *set* to deduplicate together: with ``dedup_scope: release`` every
   release-scope snapshot of the registry under the same storage root that has an index
   (:func:`rpj_tasks.core.config.release_snapshots`), else S alone; then the memory each partition
   task needs, logged, refused over ``dedup_memory_budget`` before anything runs.
3. :func:`partition` for every digest partition, then :func:`write` for every snapshot of the set.

Steps 2 and 3 of the release must not run twice at once (both would rewrite the release's state):
the ``rpv2_dedup`` DAG runs them with ``max_active_runs=1``, and ``rpj dedup`` must not be run
beside it on the same storage root.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from rpj_tasks.core import layout
from rpj_tasks.core.config import SnapshotConfig, release_snapshots
from rpj_tasks.core.errors import MissingInputError
from rpj_tasks.core.inputs import mined_shards
from rpj_tasks.dedup import exact

log = logging.getLogger("rpj.dedup")


def exact_config(cfg: SnapshotConfig) -> exact.ExactDedupConfig:
    return exact.ExactDedupConfig(partitions=cfg.dedup_partitions, scope=cfg.dedup_scope, memory_budget=cfg.dedup_memory_budget)


def index(cfg: SnapshotConfig, shards: Iterable[int] | None = None, *, force: bool = False) -> dict[str, Any]:
    """Step 1 for ``cfg``'s snapshot over ``shards`` (default: every shard with a CCNet record)."""
    root = cfg.storage_root
    if shards is None:
        shards = mined_shards(cfg)
    shards = sorted(set(shards))
    if not shards:
        raise MissingInputError(f"exact dedup: {cfg.id} has no mined shard under {layout.ccnet_stats_dir(root, cfg.id)}")
    record = exact.index_snapshot(root, cfg.id, shards, exact_config(cfg), force=force)
    log.info(
        "exact dedup index of %s: %d shards, %d files, %d documents%s",
        cfg.id,
        len(shards),
        len(record["files"]),
        sum(record["rows"]),
        " (finished earlier, skipped)" if record.get("skipped") else "",
    )
    return record


def dedup_set(cfg: SnapshotConfig, registry: dict[str, SnapshotConfig]) -> list[str]:
    """The snapshots deduplicated together with ``cfg``'s, newest first (step 2)."""
    if cfg.dedup_scope != "release":
        return [cfg.id]
    indexed = set(exact.indexed_snapshots(cfg.storage_root))
    members = [s for s in release_snapshots(registry, cfg.storage_root) if s in indexed]
    if cfg.id not in members:
        raise MissingInputError(
            f"exact dedup: {cfg.id} is not an indexed release snapshot under {cfg.storage_root}: run its index step first"
        )
    return members


def plan(cfg: SnapshotConfig, registry: dict[str, SnapshotConfig]) -> dict[str, Any]:
    """The set, the partitions and the memory each partition task needs (logged; refused over the
    budget, naming the setting to change).  Small and JSON-serialisable (an XCom)."""
    snapshots = dedup_set(cfg, registry)
    config = exact_config(cfg)
    need = exact.memory_plan(cfg.storage_root, snapshots, config)
    log.info(
        "exact dedup (scope %s) of %d snapshots (%s): %d partition tasks, memory per task %.1f-%.1f MiB, budget %.1f MiB",
        cfg.dedup_scope,
        len(snapshots),
        ", ".join(snapshots),
        config.partitions,
        min(need) / 2**20,
        max(need) / 2**20,
        config.memory_budget / 2**20,
    )
    width = len(exact.part_name(0, config.partitions))
    for start in range(0, len(need), 16):  # every task's need, 16 to a line
        log.info(
            "memory per partition task (MiB): %s",
            " ".join(f"{p:0{width}d}:{n / 2**20:.1f}" for p, n in enumerate(need[start : start + 16], start)),
        )
    return {
        "snapshots": snapshots,
        "partitions": list(range(config.partitions)),
        "max_partition_bytes": max(need),
        "memory_budget": config.memory_budget,
    }


def partition(cfg: SnapshotConfig, snapshots: list[str], p: int, *, force: bool = False) -> dict[str, Any]:
    """Step 2 for digest partition ``p`` over ``snapshots`` (as :func:`plan` returned them)."""
    record = exact.dedup_partition(cfg.storage_root, snapshots, p, exact_config(cfg), force=force)
    log.info(
        "exact dedup partition %d: %d rows, duplicates %s, %d files written%s",
        p,
        record["rows"],
        record["duplicates"],
        len(record["written"]),
        " (finished earlier, skipped)" if record.get("skipped") else "",
    )
    return {"partition": p, "rows": record["rows"], "written": len(record["written"]), "skipped": record["skipped"]}


def write(cfg: SnapshotConfig, snapshots: list[str], snapshot: str, *, force: bool = False) -> dict[str, Any]:
    """Step 3: ``snapshot``'s duplicates files (one of ``snapshots``)."""
    record = exact.write_duplicates(cfg.storage_root, snapshot, snapshots, exact_config(cfg), force=force)
    if record.get("skipped"):
        log.info("exact dedup of %s: finished earlier (%d duplicates), skipped", snapshot, record["duplicates"])
    return {
        "snapshot": snapshot,
        "duplicates": record["duplicates"],
        "written": len(record["written"]),
        "skipped": record["skipped"],
    }
