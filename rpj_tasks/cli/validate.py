"""``rpj validate``: the Great Expectations gates over a snapshot's release files (shards, then the
snapshot); ``rpj publish``: its listings and release manifest, only once those gates passed."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from rpj_tasks.cli.common import snapshot_config
from rpj_tasks.core import plan
from rpj_tasks.core.inputs import mined_shards


def register(sub: Any) -> None:
    p = sub.add_parser(
        "validate",
        help="validate a snapshot's files with the Great Expectations suites of expectations/",
        description="Run every suite over each shard's files (documents, quality signals, MinHash, duplicates, clusters, "
        "token counts when present), then the snapshot-level checks. Results: stats/validate/{snapshot}/, Data Docs: "
        "validation/{snapshot}/. Exit 2 naming suite, expectation, file and observed value when an expectation fails.",
    )
    p.add_argument("--snapshot", required=True, help="YYYY-WW")
    p.add_argument("--shards", default="", help='e.g. "0-9,15" (default: every mined shard)')
    p.add_argument("--storage-root")
    p.add_argument("--force", action="store_true", help="validate shards again even if their files have not changed")
    p.set_defaults(run=run, limit=None, num_shards=None, source_base=None, languages=None)

    q = sub.add_parser(
        "publish",
        help="write a validated snapshot's listings/ and release manifest",
        description="Check the snapshot as a whole (every shard must have passed `rpj validate` for its current "
        "files), then write listings/{lang}-{snapshot}-head_middle.txt and -tail.txt and "
        "listings/{snapshot}.manifest.json. Nothing is written when a gate failed.",
    )
    q.add_argument("--snapshot", required=True, help="YYYY-WW")
    q.add_argument("--shards", default="", help='e.g. "0-9,15" (default: every mined shard)')
    q.add_argument("--storage-root")
    q.add_argument("--force", action="store_true", help="write the listings again even if published for the same files")
    q.set_defaults(run=run_publish, limit=None, num_shards=None, source_base=None, languages=None)


def run_publish(args: argparse.Namespace) -> int:
    from rpj_tasks.publish.stage import manifest_url, publish_snapshot
    from rpj_tasks.validate import stage

    cfg = snapshot_config(args)
    shards = plan.parse_shards(args.shards, cfg.num_shards) if args.shards else mined_shards(cfg)
    result = stage.validate_snapshot(cfg, shards)  # raises, naming what failed
    validation = {**result, "summary": f"{len(shards)} shards valid; Data Docs {result['data_docs']}"}
    record = publish_snapshot(cfg, shards, validation=validation, force=args.force)
    state = "unchanged (published earlier for the same files)" if record["skipped"] else "published"
    print(f"{cfg.id}: {state}; manifest {manifest_url(cfg.storage_root, cfg.id)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from rpj_tasks.validate import stage

    started = time.perf_counter()
    cfg = snapshot_config(args)
    shards = plan.parse_shards(args.shards, cfg.num_shards) if args.shards else mined_shards(cfg)
    if not shards:
        print(f"rpj: error: snapshot {cfg.id} has no mined shard under {cfg.storage_root}", file=sys.stderr)
        return 2
    failed: list[str] = []
    documents = 0
    for shard in shards:
        try:
            result = stage.validate_shard(cfg, shard, force=args.force)
            documents += result["counts"]["documents"]
        except stage.ValidationFailedError as exc:
            print(f"rpj: error: {exc}", file=sys.stderr)
            failed.append(f"{shard:04d}")
    if failed:
        print(f"rpj: error: validation failed for shards {', '.join(failed)}; the snapshot check was not run", file=sys.stderr)
        return 2
    snap = stage.validate_snapshot(cfg, shards)
    tokens = snap["counts"]["tokens"]
    print(
        f"{cfg.id}: {len(shards)} shards valid, {documents} documents"
        + (f", {tokens} tokens" if tokens else "")
        + f", {time.perf_counter() - started:.1f} s; Data Docs: {snap['data_docs']}"
    )
    return 0
