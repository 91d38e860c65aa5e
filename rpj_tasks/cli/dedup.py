"""``rpj clusters``: the fuzzy-dedup clusters of a set of snapshots (``rpj_tasks.dedup.lsh``)."""

from __future__ import annotations

import argparse
from typing import Any

from rpj_tasks.cli.common import positive_int, storage_root
from rpj_tasks.core import layout
from rpj_tasks.core.errors import ConfigError


def register(sub: Any) -> None:
    p = sub.add_parser("clusters", help="fuzzy-dedup clusters (LSH on the MinHash files) of one or more snapshots")
    p.add_argument("--snapshot", action="append", required=True, help="YYYY-WW; repeat for a set of snapshots clustered together")
    p.add_argument("--threshold", default="0.8", help="0.7, 0.8 (default), 0.9 or 1.0")
    p.add_argument("--partitions", type=positive_int, help="band partitions (default 8; more: less memory per partition)")
    p.add_argument("--workers", type=positive_int, default=1, help="threads (memory grows with them)")
    p.add_argument("--force", action="store_true", help="recompute a finished unit")
    p.add_argument("--storage-root")
    p.set_defaults(run=run_clusters)


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

    threshold = threshold_arg(args.threshold)
    snapshots = sorted({layout.validate_snapshot(s) for s in args.snapshot})
    partitions = args.partitions or lsh.DEFAULT_PARTITIONS
    record = lsh.run_clusters(
        storage_root(args), snapshots, threshold, partitions=partitions, workers=args.workers, force=args.force
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
