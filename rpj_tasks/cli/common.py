"""What every ``rpj`` command that works on a snapshot shares: its arguments and its config."""

from __future__ import annotations

import argparse

from rpj_tasks.core.config import ConfigError, SnapshotConfig, load_registry, validate_languages


def ascii_int(text: str) -> int:
    """An argparse type: a non-negative integer in ASCII digits (``int()`` would take ``"٣"`` or ``"3\\n"``)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def add_snapshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", required=True, help="YYYY-WW")
    p.add_argument("--shards", default="", help='e.g. "0-9,15" (default: all)')
    p.add_argument("--limit", type=ascii_int, help="at most this many shards")
    p.add_argument("--force", action="store_true", help="recompute finished shards")
    p.add_argument("--storage-root")
    p.add_argument("--source-base")
    p.add_argument("--num-shards", type=ascii_int)
    p.add_argument("--languages", help="e.g. en,de")


def snapshot_config(args: argparse.Namespace) -> SnapshotConfig:
    """The registry's config of ``--snapshot`` (registry defaults for any other valid id), with the
    command line's overrides."""
    registry = load_registry(args.registry)
    if args.snapshot in registry:
        cfg = registry[args.snapshot]
    else:
        any_cfg = next(iter(registry.values()))
        cfg = SnapshotConfig(
            **{**any_cfg.to_dict(), "id": args.snapshot, "dag_id": "", "sample": False, "generate_source": False}
        )
    return cfg.with_overrides(
        storage_root=args.storage_root,
        source_base=args.source_base,
        num_shards=args.num_shards,
        languages=validate_languages(args.languages) if args.languages else None,
        dsir_hash_mode=getattr(args, "hash_mode", None),
    )


def storage_root(args: argparse.Namespace) -> str:
    """``--storage-root``, else the registry's (one root for every snapshot)."""
    return args.storage_root or next(iter(load_registry(args.registry).values())).storage_root


def key_values(items: list[str] | None) -> dict[str, str]:
    """``["en=URL", ...]`` -> ``{"en": URL}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected LANG=URL, got {item!r}")
        out[key] = value
    return out
