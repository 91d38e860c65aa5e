"""``rpj dedup`` (exact dedup: the release's ``duplicates/``) and ``rpj clusters`` (fuzzy-dedup
clusters: ``clusters/``), as the DAGs run them."""

from __future__ import annotations

import argparse
import re
import time
from typing import Any

from rpj_tasks.cli.common import positive_int, snapshot_config, storage_root
from rpj_tasks.core import layout, plan
from rpj_tasks.core.config import load_registry
from rpj_tasks.core.errors import ConfigError


def register(sub: Any) -> None:
    d = sub.add_parser(
        "dedup",
        help="exact dedup: index a snapshot, then deduplicate it with the release (duplicates/)",
        description="Index the digests of a snapshot's mined shards, then deduplicate the set it belongs to "
        "(dedup_scope release: every indexed release snapshot under the storage root; snapshot: itself) and "
        "write every snapshot's duplicates files that change. Do not run it beside the rpv2_dedup DAG on the "
        "same storage root.",
    )
    d.add_argument("--snapshot", required=True, help="YYYY-WW")
    d.add_argument("--shards", default="", help="shards to index (default: every mined shard)")
    d.add_argument("--storage-root")
    d.add_argument("--force", action="store_true", help="redo every step, even finished ones")
    d.add_argument("--index-only", action="store_true", help="only index the snapshot (step 1)")
    d.set_defaults(run=run_dedup, limit=None, num_shards=None, source_base=None, languages=None)

    p = sub.add_parser("clusters", help="fuzzy-dedup clusters (LSH on the MinHash files) of one or more snapshots")
    p.add_argument("--snapshot", action="append", required=True, help="YYYY-WW; repeat for a set of snapshots clustered together")
    p.add_argument("--threshold", help="0.7, 0.8, 0.9 or 1.0 (default: the registry's clusters_threshold)")
    p.add_argument("--partitions", type=positive_int, help="band partitions (default: the registry's clusters_partitions)")
    p.add_argument("--workers", type=positive_int, default=1, help="threads (memory grows with them)")
    p.add_argument("--force", action="store_true", help="recompute a finished unit")
    p.add_argument("--storage-root")
    p.add_argument(
        "--component",
        default="clusters",
        help="output folder under the storage root (default clusters, where the DAG writes each snapshot's clusters); "
        "use another one, e.g. clusters_sim0.9, to keep both",
    )
    p.set_defaults(run=run_clusters)


def run_dedup(args: argparse.Namespace) -> int:
    from rpj_tasks.dedup import stage

    started = time.perf_counter()
    cfg = snapshot_config(args)
    shards = plan.parse_shards(args.shards, cfg.num_shards) if args.shards else None
    record = stage.index(cfg, shards, force=args.force)
    print(
        f"{cfg.id}: indexed {sum(record['rows'])} documents of {len(record['files'])} files"
        + (" (finished earlier)" if record.get("skipped") else "")
    )
    if args.index_only:
        return 0
    registry = load_registry(args.registry)
    if args.storage_root:  # the release under another root: the registry's release snapshots, moved there
        registry = {k: c.with_overrides(storage_root=args.storage_root) for k, c in registry.items()}
    if cfg.id not in registry:
        registry[cfg.id] = cfg
    todo = stage.plan(cfg, registry)
    print(
        f"dedup set (scope {cfg.dedup_scope}): {', '.join(todo['snapshots'])}; {len(todo['partitions'])} partitions, "
        f"largest needs {todo['max_partition_bytes'] / 2**20:.1f} MiB of {todo['memory_budget'] / 2**20:.1f} MiB"
    )
    parts = [stage.partition(cfg, todo["snapshots"], p, force=args.force) for p in todo["partitions"]]
    changed = []
    for snapshot in todo["snapshots"]:
        out = stage.write(cfg, todo["snapshots"], snapshot, force=args.force)
        state = "unchanged" if out["skipped"] else f"{out['written']} files written"
        print(f"{snapshot}: {out['duplicates']} duplicates ({state})")
        if out["written"] and not out["skipped"] and snapshot != cfg.id and snapshot in registry:
            changed.append(snapshot)
    from rpj_tasks.publish.stage import republish_if_published

    for snapshot in changed:  # published older snapshots whose duplicates changed: their listings follow
        if republish_if_published(registry[snapshot]):
            print(f"{snapshot}: published earlier, its duplicates changed: validated and published again")
    done = sum(1 for p in parts if not p["skipped"])
    print(f"exact dedup: {done} of {len(parts)} partitions merged, {time.perf_counter() - started:.1f} s")
    return 0


def threshold_arg(text: str) -> float:
    """``--threshold``: one of the MinHash thresholds (a ConfigError otherwise: one line, exit 2)."""
    from rpj_tasks.core.schema import MINHASH_THRESHOLDS

    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if value not in MINHASH_THRESHOLDS:
        raise ConfigError(f"--threshold {text!r}: expected one of {', '.join(map(str, MINHASH_THRESHOLDS))}")
    return value


def run_clusters(args: argparse.Namespace) -> None:
    from rpj_tasks.dedup import lsh

    snapshots = sorted({layout.validate_snapshot(s) for s in args.snapshot})
    cfg = load_registry(args.registry).get(snapshots[-1])  # the newest snapshot's settings, if registered
    threshold = threshold_arg(args.threshold) if args.threshold else cfg.clusters_threshold if cfg else lsh.DEFAULT_THRESHOLD
    partitions = args.partitions or (cfg.clusters_partitions if cfg else lsh.DEFAULT_PARTITIONS)
    if not re.fullmatch(r"clusters[a-z0-9_.-]{0,40}", args.component):
        raise ConfigError(f"--component {args.component!r}: expected clusters followed by [a-z0-9_.-], e.g. clusters_sim0.9")
    record = lsh.run_clusters(
        storage_root(args),
        snapshots,
        threshold,
        partitions=partitions,
        workers=args.workers,
        force=args.force,
        component=args.component,
    )
    name = f"clusters {'+'.join(snapshots)} sim{threshold}"
    if record["skipped"]:
        print(f"{name}: finished earlier, skipped (--force recomputes)")
        return
    summary = lsh.record_summary(record)
    print(
        f"{name}: {summary['docs']} docs, {summary['clustered_docs']} clustered docs in {summary['clusters']} clusters, "
        f"{summary['files_with_clusters']} files written, {summary['wall_seconds']:.1f} s"
    )
