"""``rpj snapshots`` (the registry), ``rpj summary`` (a snapshot's totals), ``rpj sample-mirror``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpj_tasks.cli.common import add_snapshot_args, snapshot_config
from rpj_tasks.core import plan
from rpj_tasks.core.config import load_registry
from rpj_tasks.core.redact import redact


def register(sub: Any) -> None:
    sub.add_parser("snapshots", help="list the registry").set_defaults(run=run_snapshots)

    s = sub.add_parser("summary", help="totals of the per-shard stats")
    add_snapshot_args(s)
    s.add_argument("--json", action="store_true", help="the totals as JSON")
    s.set_defaults(run=run_summary)

    m = sub.add_parser("sample-mirror", help="write the offline sample Common Crawl mirror")
    m.add_argument("out", help="URL of the mirror root")
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--segments", type=int, default=4)
    m.add_argument("--docs-per-segment", type=int, default=250)
    m.add_argument("--no-broken", action="store_true", help="omit the deliberately broken records")
    m.set_defaults(run=run_sample_mirror)


def run_snapshots(args: argparse.Namespace) -> None:
    for cfg in load_registry(args.registry).values():
        print(f"{cfg.id}\t{cfg.crawl}\t{cfg.dag_id}\tshards={cfg.num_shards}\t{redact(cfg.source_base)}")


def run_summary(args: argparse.Namespace) -> None:
    from rpj_tasks.core.summary import format_summary, snapshot_summary

    cfg = snapshot_config(args)
    summary = snapshot_summary(cfg, plan.parse_shards(args.shards, cfg.num_shards)[: args.limit])
    print(json.dumps(summary, indent=1, sort_keys=True) if args.json else format_summary(summary))


def run_sample_mirror(args: argparse.Namespace) -> None:
    from rpj_tasks.sample.mirror import generate_mirror

    manifest = generate_mirror(
        args.out, seed=args.seed, segments=args.segments, docs_per_segment=args.docs_per_segment, broken=not args.no_broken
    )
    print(json.dumps(manifest, indent=1, sort_keys=True))
