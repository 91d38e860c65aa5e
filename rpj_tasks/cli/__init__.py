"""``rpj``: run any stage of the pipeline without Airflow.

Examples::

    rpj snapshots
    rpj sample-mirror file:///tmp/mirror --docs-per-segment 500
    rpj ccnet --snapshot 2000-01 --shards 0-3            # download + hashes + mine
    rpj mine --snapshot 2023-06 --shards 17 --force
    rpj annotate --snapshot 2000-01 --shards 0-3        # quality signals + MinHash of mined shards
    rpj models install --version ccnet-official --from https://example.org/cc_net/lm/
    rpj summary --snapshot 2000-01
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any

from rpj_tasks.ccnet import stage as ccnet, models

from rpj_tasks.core import layout, plan, storage
from rpj_tasks.core.config import DSIR_HASH_MODES, ConfigError, SnapshotConfig, load_registry, validate_languages
from rpj_tasks.core.errors import PermanentError, RpjError
from rpj_tasks.core.stats import Stats


def _kv(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected LANG=URL, got {item!r}")
        out[key] = value
    return out


def snapshot_config(args: argparse.Namespace) -> SnapshotConfig:
    registry = load_registry(args.registry)
    if args.snapshot not in registry:
        # Any valid id works; registry defaults apply (validated by SnapshotConfig).
        any_cfg = next(iter(registry.values()))
        cfg = SnapshotConfig(**{**any_cfg.to_dict(), "id": args.snapshot, "dag_id": "", "sample": False})
    else:
        cfg = registry[args.snapshot]
    return cfg.with_overrides(
        storage_root=args.storage_root,
        source_base=args.source_base,
        num_shards=args.num_shards,
        languages=validate_languages(args.languages) if args.languages else None,
        dsir_hash_mode=getattr(args, "hash_mode", None),
    )


def units_for(cfg: SnapshotConfig, args: argparse.Namespace) -> tuple[list[dict[str, Any]], list[str]]:
    """The run's work units and the crawl's segment paths (listing staged under the storage root)."""
    from rpj_tasks.download.fetch import read_listing, stage_listing

    plan.parse_shards(args.shards, cfg.num_shards)
    if cfg.sample:
        from rpj_tasks.sample.setup import ensure_sample

        ensure_sample(cfg)
    listing = stage_listing(cfg.source_base, cfg.crawl, cfg.storage_root)
    return plan.plan_units(cfg, shards=args.shards, limit=args.limit), read_listing(listing)


def _shards(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], key: str) -> list[tuple[int, list[str]]]:
    from rpj_tasks.download.fetch import shard_segments

    return [(s, shard_segments(segments, s, cfg.num_shards)) for u in units for s in plan.unit_shards(u, key)]


def cmd_download(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], force: bool) -> None:
    from rpj_tasks.download.fetch import download_shard

    for shard, segs in _shards(cfg, units, segments, "hashes"):
        stats = Stats()
        download_shard(cfg.source_base, segs, layout.staging_wet_root(cfg.storage_root), stats, force=force)
        print(f"download shard {shard:04d}: {stats.summary()}")


def cmd_hashes(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], force: bool) -> None:
    for shard, segs in _shards(cfg, units, segments, "hashes"):
        ccnet.compute_hashes(cfg, shard, segs, force=force)


def cmd_mine(cfg: SnapshotConfig, units: list[dict[str, Any]], segments: list[str], force: bool) -> None:
    for shard, segs in _shards(cfg, units, segments, "mine"):
        rec = ccnet.mine_shard(cfg, shard, segs, force=force)
        state = "skipped (finished)" if rec["skipped"] else f"{rec['wall_seconds']}s"
        print(f"mine shard {shard:04d}: kept {rec['counts'].get('kept', 0)} docs, {state}")


def mined_shards(cfg: SnapshotConfig, args: argparse.Namespace) -> list[int]:
    """Shards to annotate: those asked for (``--shards``), else every shard whose CCNet stats record
    exists; ``--limit`` applies after.  Reads only the storage root: annotation needs no Common Crawl
    listing, so it runs where the WET files are no longer reachable."""
    asked = plan.parse_shards(args.shards, cfg.num_shards)
    if not args.shards:
        stats_dir = layout.ccnet_stats_dir(cfg.storage_root, cfg.id)
        finished = {int(name[:-5]) for name in storage.listdir(stats_dir) if name[:-5].isdigit() and name.endswith(".json")}
        asked = [shard for shard in asked if shard in finished]
        if not asked:
            raise ConfigError(f"no mined shards of {cfg.id} under {stats_dir}: run `rpj ccnet --snapshot {cfg.id}` first")
    return asked[: args.limit]


def cmd_annotate(cfg: SnapshotConfig, shards: list[int], args: argparse.Namespace) -> None:
    from rpj_tasks.annotate.stage import annotate_shard

    if cfg.sample:
        from rpj_tasks.sample.setup import ensure_signal_artifacts

        artifacts = ensure_signal_artifacts(cfg)
    else:
        artifacts = layout.signal_artifacts_url(cfg.storage_root, cfg.signals_version)
    for shard in shards:
        rec = annotate_shard(cfg, shard, artifacts_url=artifacts, annotate_tail=args.tail, force=args.force,
                             hash_mode=cfg.dsir_hash_mode)
        state = "skipped (finished)" if rec["skipped"] else "done"
        print(f"annotate shard {shard:04d}: {state}")


def run_signal_artifacts(args: argparse.Namespace) -> None:
    from rpj_tasks.annotate.artifacts.build import build_signal_artifacts, install_signal_artifacts

    registry = load_registry(args.registry)
    root = args.storage_root or next(iter(registry.values())).storage_root
    out = layout.signal_artifacts_url(root, args.version)
    if storage.exists(storage.join(out, "MANIFEST.json")) and not args.force:
        print(f"signal artifacts already exist at {out} (use --force to rebuild)")
        return
    if args.install_from:
        extra = {"stopwords_url_template": args.stopwords_url_template} if args.stopwords_url_template else {}
        manifest = install_signal_artifacts(args.install_from, out, validate_languages(args.languages), **extra)
    else:
        with open(args.config) as f:
            manifest = build_signal_artifacts(json.load(f), out)
    print(json.dumps(manifest, indent=1, sort_keys=True))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rpj", description="RedPajama-V2 pipeline stages (no Airflow needed)")
    p.add_argument("--registry", help="snapshot registry YAML (default: config/snapshots.yaml or $RPJ_REGISTRY)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("snapshots", help="list the registry")

    s = sub.add_parser("sample-mirror", help="write the offline sample Common Crawl mirror")
    s.add_argument("out", help="URL of the mirror root")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--segments", type=int, default=4)
    s.add_argument("--docs-per-segment", type=int, default=250)
    s.add_argument("--no-broken", action="store_true", help="omit the deliberately broken records")

    for name, help_ in [
        ("plan", "print the work units"),
        ("download", "stage the WET segments of shards"),
        ("hashes", "CCNet hashes stage"),
        ("mine", "CCNet mine stage (needs the hashes of each shard's hash group)"),
        ("ccnet", "download + hashes + mine"),
        ("annotate", "quality signals + MinHash of mined shards"),
        ("summary", "totals of the per-shard stats"),
    ]:
        s = sub.add_parser(name, help=help_)
        s.add_argument("--snapshot", required=True, help="YYYY-WW")
        s.add_argument("--shards", default="", help='e.g. "0-9,15" (default: all)')
        s.add_argument("--limit", type=int, help="at most this many shards")
        s.add_argument("--force", action="store_true", help="recompute finished shards")
        s.add_argument("--storage-root")
        s.add_argument("--source-base")
        s.add_argument("--num-shards", type=int)
        s.add_argument("--languages", help="e.g. en,de")
        if name == "summary":
            s.add_argument("--json", action="store_true", help="the totals as JSON")
        if name == "annotate":
            s.add_argument("--tail", action="store_true", help="annotate the tail bucket too")
            s.add_argument("--hash-mode", choices=DSIR_HASH_MODES,
                           help="DSIR hash mode (default: the registry's dsir_hash_mode); must match the artifacts")

    a = sub.add_parser("signal-artifacts", help="build or install quality-signal artifacts (word lists, UT1, classifiers, DSIR)")
    a.add_argument("--version", required=True, help="written to artifacts/signals/<version>/ (snapshots: signals_version)")
    a.add_argument("--storage-root")
    a.add_argument("--force", action="store_true", help="rebuild if this version exists")
    how = a.add_mutually_exclusive_group(required=True)
    how.add_argument("--config", help="build: JSON file, see rpj_tasks.annotate.artifacts.build.build_signal_artifacts")
    how.add_argument("--install-from", help="install: URL of published RPv2 artifacts (the reference's artifacts_dir)")
    a.add_argument("--languages", default="en,de,fr,es,it", help="install: languages to copy")
    a.add_argument("--stopwords-url-template", help="install: stop-word lists URL with {lang} (default: upstream)")

    m = sub.add_parser("models", help="CCNet perplexity models")
    msub = m.add_subparsers(dest="models_cmd", required=True)
    for name in ("install", "build", "sample"):
        s = msub.add_parser(name)
        s.add_argument("--version", required=name != "sample", default="sample-v1" if name == "sample" else None)
        s.add_argument("--storage-root")
        s.add_argument("--languages", default="en,de,fr,es,it")
        s.add_argument("--force", action="store_true")
        if name == "install":
            s.add_argument("--from", dest="source", required=True, help="URL with {lang}.sp.model and {lang}.arpa.bin")
            s.add_argument("--cutoffs", help="cutoff.csv URL (default: cc_net's)")
        if name == "build":
            s.add_argument("--corpus", action="append", required=True, help="LANG=URL (repeat)")
            s.add_argument("--calibration", action="append", help="LANG=URL of web documents for the cutoffs")
            s.add_argument("--cutoffs", help="cutoff.csv URL when no calibration corpus is given")
            s.add_argument("--vocab-size", type=int, default=65536)
    return p


def run_models(args: argparse.Namespace) -> None:
    registry = load_registry(args.registry)
    root = args.storage_root or next(iter(registry.values())).storage_root
    langs = validate_languages(args.languages)
    out = layout.models_url(root, args.version)
    if models.exists(out) and not args.force:
        print(f"models already exist at {out} (use --force to rebuild)")
        return
    if args.models_cmd == "install":
        manifest = models.install_models(args.source, langs, out, cutoffs_url=args.cutoffs)
    else:
        if args.models_cmd == "sample":
            from rpj_tasks.sample.setup import sample_corpora

            sample = next((c for c in registry.values() if c.sample), None)
            if sample is None:
                raise ConfigError(f"{args.registry or 'the registry'} has no sample snapshot (an entry with sample: true)")
            corpora, calibration = sample_corpora(sample.with_overrides(storage_root=root, languages=langs))
            vocab, cutoffs = models.SAMPLE_VOCAB_SIZE, None
        else:
            corpora, calibration = _kv(args.corpus), _kv(args.calibration)
            vocab, cutoffs = args.vocab_size, args.cutoffs
        entries = [
            models.build_language(lang, corpora[lang], out, vocab_size=vocab, calibration_url=calibration.get(lang))
            for lang in langs
        ]
        manifest = models.finalize_built(out, entries, cutoffs_url=cutoffs)
    print(json.dumps(manifest, indent=1, sort_keys=True))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("rpj").setLevel(logging.INFO)
    try:
        if args.cmd == "snapshots":
            for cfg in load_registry(args.registry).values():
                print(f"{cfg.id}\t{cfg.crawl}\t{cfg.dag_id}\tshards={cfg.num_shards}\t{cfg.source_base}")
        elif args.cmd == "sample-mirror":
            from rpj_tasks.sample.mirror import generate_mirror

            manifest = generate_mirror(
                args.out, seed=args.seed, segments=args.segments, docs_per_segment=args.docs_per_segment, broken=not args.no_broken
            )
            print(json.dumps(manifest, indent=1, sort_keys=True))
        elif args.cmd == "models":
            run_models(args)
        elif args.cmd == "signal-artifacts":
            run_signal_artifacts(args)
        else:
            cfg = snapshot_config(args)
            if args.cmd == "summary":
                from rpj_tasks.core.summary import format_summary, snapshot_summary

                summary = snapshot_summary(cfg, plan.parse_shards(args.shards, cfg.num_shards)[: args.limit])
                print(json.dumps(summary, indent=1, sort_keys=True) if args.json else format_summary(summary))
                return 0
            if args.cmd == "annotate":
                cmd_annotate(cfg, mined_shards(cfg, args), args)
                return 0
            units, segments = units_for(cfg, args)
            if args.cmd == "plan":
                print(json.dumps(units, indent=1))
            if args.cmd in ("download", "ccnet"):
                cmd_download(cfg, units, segments, args.force)
            if args.cmd in ("hashes", "ccnet"):
                cmd_hashes(cfg, units, segments, args.force)
            if args.cmd in ("mine", "ccnet"):
                cmd_mine(cfg, units, segments, args.force)
    except RpjError as exc:
        # An expected failure: one line, no traceback; 2 = retrying cannot help, 1 = try again later.
        kind = "error" if isinstance(exc, PermanentError) else "transient error (try again later)"
        print(f"rpj: {kind}: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, PermanentError) else 1
    except KeyboardInterrupt:
        print("rpj: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
