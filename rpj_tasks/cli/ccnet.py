"""``rpj plan | download | hashes | mine | ccnet``: the download and CCNet stages of a snapshot."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpj_tasks.cli.common import add_snapshot_args, snapshot_config
from rpj_tasks.core import plan
from rpj_tasks.core.config import SnapshotConfig

COMMANDS = {
    "plan": "print the work units",
    "download": "stage the WET segments of shards",
    "hashes": "CCNet hashes stage",
    "mine": "CCNet mine stage (needs the hashes of each shard's hash group)",
    "ccnet": "download + hashes + mine",
}


def register(sub: Any) -> None:
    for name, help_ in COMMANDS.items():
        p = sub.add_parser(name, help=help_)
        add_snapshot_args(p)
        p.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    cfg = snapshot_config(args)
    units, segments = units_for(cfg, args)
    if args.cmd == "plan":
        print(json.dumps(units, indent=1))
    if args.cmd in ("download", "ccnet"):
        download(cfg, units, segments, args.force)
    if args.cmd in ("hashes", "ccnet"):
        hashes(cfg, units, segments, args.force)
    if args.cmd in ("mine", "ccnet"):
        mine(cfg, units, segments, args.force)


def units_for(cfg: SnapshotConfig, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """The run's work units and the crawl's segment paths (listing staged under the storage root)."""
    from rpj_tasks.download.listing import read_listing, stage_listing

    plan.parse_shards(args.shards, cfg.num_shards)
    if cfg.sample:
        from rpj_tasks.sample.setup import ensure_sample

        ensure_sample(cfg)
    listing = stage_listing(cfg.source_base, cfg.crawl, cfg.storage_root)
    return plan.plan_units(cfg, shards=args.shards, limit=args.limit), read_listing(listing)


def _shards(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], key: str) -> list[tuple[int, list[str]]]:
    from rpj_tasks.download.listing import shard_segments

    return [(s, shard_segments(segments, s, cfg.num_shards)) for u in units for s in plan.unit_shards(u, key)]


def download(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], force: bool) -> None:
    from rpj_tasks.download.fetch import download_unit

    for shard, segs in _shards(cfg, units, segments, "hashes"):
        rec = download_unit(cfg, shard, segs, force=force)
        state = "skipped (staged)" if rec["skipped"] else f"{len(rec['outputs'])} segments staged"
        print(f"download shard {shard:04d}: {state}")


def hashes(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], force: bool) -> None:
    from rpj_tasks.ccnet import stage

    for shard, segs in _shards(cfg, units, segments, "hashes"):
        stage.compute_hashes(cfg, shard, segs, force=force)


def mine(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], force: bool) -> None:
    from rpj_tasks.ccnet import stage

    for shard, segs in _shards(cfg, units, segments, "mine"):
        rec = stage.mine_shard(cfg, shard, segs, force=force)
        state = "skipped (finished)" if rec["skipped"] else f"{rec['wall_seconds']}s"
        print(f"mine shard {shard:04d}: kept {rec['counts'].get('kept', 0)} docs, {state}")
