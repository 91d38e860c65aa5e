"""``rpj annotate`` (quality signals + MinHash of mined shards) and ``rpj signal-artifacts``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpj_tasks.cli.common import ShardSteps, add_snapshot_args, snapshot_config, storage_root
from rpj_tasks.core import layout, plan
from rpj_tasks.core.config import DSIR_HASH_MODES, ConfigError, SnapshotConfig, validate_languages
from rpj_tasks.core.summary import recorded_shards


def register(sub: Any) -> None:
    p = sub.add_parser("annotate", help="quality signals + MinHash of mined shards")
    add_snapshot_args(p)
    p.add_argument("--tail", action="store_true", help="annotate the tail bucket too")
    p.add_argument(
        "--hash-mode",
        choices=DSIR_HASH_MODES,
        help="DSIR hash mode (default: the registry's dsir_hash_mode); must match the artifacts",
    )
    p.set_defaults(run=run_annotate)

    a = sub.add_parser("signal-artifacts", help="build or install quality-signal artifacts (word lists, UT1, classifiers, DSIR)")
    a.add_argument("--version", required=True, help="written to artifacts/signals/<version>/ (snapshots: signals_version)")
    a.add_argument("--storage-root")
    a.add_argument("--force", action="store_true", help="rebuild if this version exists")
    how = a.add_mutually_exclusive_group(required=True)
    how.add_argument("--config", help="build: JSON file, see rpj_tasks.annotate.artifacts.build.build_signal_artifacts")
    how.add_argument("--install-from", help="install: URL of published RPv2 artifacts (the reference's artifacts_dir)")
    a.add_argument("--languages", default=",".join(layout.LANGUAGES), help="install: languages to copy")
    a.add_argument("--stopwords-url-template", help="install: stop-word lists URL with {lang} (default: upstream)")
    a.set_defaults(run=run_signal_artifacts)


def mined_shards(cfg: SnapshotConfig, args: argparse.Namespace) -> list[int]:
    """Shards to annotate: those asked for (``--shards``), else every shard whose CCNet stats record
    exists; ``--limit`` applies after.  Reads only the storage root: annotation needs no Common Crawl
    listing, so it runs where the WET files are no longer reachable."""
    asked = plan.parse_shards(args.shards, cfg.num_shards)
    if not args.shards:
        stats_dir = layout.ccnet_stats_dir(cfg.storage_root, cfg.id)
        finished = recorded_shards(stats_dir)
        asked = [shard for shard in asked if shard in finished]
        if not asked:
            raise ConfigError(f"no mined shards of {cfg.id} under {stats_dir}: run `rpj ccnet --snapshot {cfg.id}` first")
    return asked[: args.limit]


def run_annotate(args: argparse.Namespace) -> int:
    from rpj_tasks.annotate.stage import artifacts_manifest

    cfg = snapshot_config(args)
    shards = mined_shards(cfg, args)
    if cfg.sample:
        from rpj_tasks.sample.setup import ensure_signal_artifacts

        artifacts = ensure_signal_artifacts(cfg)
    else:
        artifacts = layout.signal_artifacts_url(cfg.storage_root, cfg.signals_version)
    artifacts_manifest(artifacts, cfg.dsir_hash_mode)  # missing or mismatched artifacts fail the run at once
    steps = ShardSteps()
    for shard in shards:
        steps.run("annotate", shard, annotate, cfg, shard, artifacts, args)
    return steps.exit_code()


def annotate(cfg: SnapshotConfig, shard: int, artifacts: str, args: argparse.Namespace) -> None:
    from rpj_tasks.annotate.stage import annotate_shard

    rec = annotate_shard(
        cfg, shard, artifacts_url=artifacts, annotate_tail=args.tail, force=args.force, hash_mode=cfg.dsir_hash_mode
    )
    state = "skipped (finished)" if rec["skipped"] else "done"
    print(f"annotate shard {shard:04d}: {state}")


def run_signal_artifacts(args: argparse.Namespace) -> None:
    from rpj_tasks.annotate.artifacts.build import build_signal_artifacts, install_signal_artifacts

    out = layout.signal_artifacts_url(storage_root(args), args.version)
    if args.install_from:
        extra = {"stopwords_url_template": args.stopwords_url_template} if args.stopwords_url_template else {}
        manifest = install_signal_artifacts(args.install_from, out, validate_languages(args.languages), **extra, force=args.force)
    else:
        with open(args.config) as f:
            manifest = build_signal_artifacts(json.load(f), out, force=args.force)
    if manifest.get("skipped"):
        print(f"signal artifacts at {out} were built earlier for the same inputs: kept (--force rebuilds)")
        return
    print(json.dumps(manifest, indent=1, sort_keys=True))
