"""``rpj plan | download | hashes | mine | ccnet``: the download and CCNet stages of a snapshot.

Each stage runs over every selected shard before the next one starts; a shard that fails is
reported and the others go on (:class:`rpj_tasks.cli.common.ShardSteps`)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpj_tasks.cli.common import ShardSteps, add_snapshot_args, snapshot_config
from rpj_tasks.core import layout, plan
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


def run(args: argparse.Namespace) -> int:
    cfg = snapshot_config(args)
    units, segments = units_for(cfg, args)
    if args.cmd == "plan":
        print(json.dumps(units, indent=1))
        return 0
    if args.cmd in ("mine", "ccnet"):
        check_models(cfg)  # not a shard's failure: stop before any work
    steps = ShardSteps()
    for stage, step in STEPS.items():
        if args.cmd not in (stage, "ccnet"):
            continue
        for shard, segs in _shards(cfg, units, segments, "mine" if stage == "mine" else "hashes"):
            group = layout.hash_group(shard, cfg.hash_group_size, cfg.num_shards) if stage == "mine" else ()
            steps.run(stage, shard, step, cfg, shard, segs, args.force, needs=group)
    return steps.exit_code()


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


def check_models(cfg: SnapshotConfig) -> None:
    """Raise ``ModelsError`` if the snapshot's CCNet models are missing (every shard's mine needs them)."""
    from rpj_tasks.ccnet.models import CCNetModels

    CCNetModels.load(layout.models_url(cfg.storage_root, cfg.models_version), cfg.languages)


def download(cfg: SnapshotConfig, shard: int, segments: list[str], force: bool) -> None:
    from rpj_tasks.download.fetch import download_unit

    rec = download_unit(cfg, shard, segments, force=force)
    state = "skipped (staged)" if rec["skipped"] else f"{len(rec['outputs'])} segments staged"
    damaged = sum(1 for meta in rec["outputs"].values() if meta.get("damage"))
    note = f", {damaged} damaged at the source (staged as they are; rpj summary lists them)" if damaged else ""
    print(f"download shard {shard:04d}: {state}{note}")


def hashes(cfg: SnapshotConfig, shard: int, segments: list[str], force: bool) -> None:
    from rpj_tasks.ccnet import stage

    stage.compute_hashes(cfg, shard, segments, force=force)


def mine(cfg: SnapshotConfig, shard: int, segments: list[str], force: bool) -> None:
    from rpj_tasks.ccnet import stage

    rec = stage.mine_shard(cfg, shard, segments, force=force)
    state = "skipped (finished)" if rec["skipped"] else f"{rec['wall_seconds']}s"
    broken = {k.removeprefix("wet.skipped."): n for k, n in sorted(rec["counts"].items()) if k.startswith("wet.skipped.")}
    note = ", broken records: " + ", ".join(f"{k} {n}" for k, n in broken.items()) if broken else ""
    print(f"mine shard {shard:04d}: kept {rec['counts'].get('kept', 0)} docs, {state}{note}")


STEPS = {"download": download, "hashes": hashes, "mine": mine}  # one shard each, in this order
