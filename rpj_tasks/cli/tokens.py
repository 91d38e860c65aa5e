"""``rpj tokens``: token counts of mined shards, or a snapshot's totals (``--totals``)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpj_tasks.cli.annotate import mined_shards
from rpj_tasks.cli.common import ShardSteps, add_snapshot_args, snapshot_config
from rpj_tasks.core.config import SnapshotConfig


def register(sub: Any) -> None:
    p = sub.add_parser("tokens", help="token counts (Mistral-7B-v0.1) of mined shards, or a snapshot's totals")
    add_snapshot_args(p)
    p.add_argument(
        "--tokenizer-json",
        help="count with Hugging Face tokenizers and this local tokenizer.json (default: the registry's "
        "tokenizer_json, else Mistral-7B-v0.1 from the mistral-common wheel)",
    )
    p.add_argument("--totals", action="store_true", help="print the snapshot's totals before and after dedup; count nothing")
    p.add_argument("--json", action="store_true", help="with --totals: print the totals as JSON")
    p.set_defaults(run=run_tokens)


def run_tokens(args: argparse.Namespace) -> int:
    cfg = snapshot_config(args)
    if args.tokenizer_json is not None:
        cfg = cfg.with_overrides(tokenizer_json=args.tokenizer_json)
    if args.totals:
        from rpj_tasks.tokens.totals import token_totals

        totals = token_totals(cfg.storage_root, cfg.id)
        print(json.dumps(totals, indent=1) if args.json else format_totals(totals))
        return 0
    from rpj_tasks.tokens.tokenizer import load_counter

    load_counter(cfg.tokenizer_json)  # a missing or wrong tokenizer fails the run at once
    steps = ShardSteps()
    for shard in mined_shards(cfg, args):
        steps.run("tokens", shard, count, cfg, shard, args)
    return steps.exit_code()


def count(cfg: SnapshotConfig, shard: int, args: argparse.Namespace) -> None:
    from rpj_tasks.tokens.stage import count_shard

    rec = count_shard(cfg, shard, force=args.force)
    state = "skipped (finished)" if rec["skipped"] else "done"
    print(f"tokens shard {shard:04d}: {state}: {rec['totals']['documents']} documents, {rec['totals']['tokens']} tokens")


def format_totals(totals: dict[str, Any]) -> str:
    """The totals as a text table: one row per language and bucket, then the snapshot's."""
    from rpj_tasks.tokens.totals import SETS

    head = ["lang", "bucket"] + [f"{name} {what}" for name in SETS for what in ("docs", "tokens")]
    rows = []
    for lang, buckets in totals["languages"].items():
        for bucket, t in buckets.items():
            rows.append([lang, bucket] + [f"{t[name][what]:,}" for name in SETS for what in ("documents", "tokens")])
    t = totals["total"]
    rows.append(["all", ""] + [f"{t[name][what]:,}" for name in SETS for what in ("documents", "tokens")])
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = [f"snapshot {totals['snapshot']}: {totals['shards']} shards, {totals['files']} token files"]
    lines += [
        "  ".join(str(c).rjust(w) if i > 1 else str(c).ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in [head, *rows]
    ]
    dedup = totals["dedup"]
    lines.append(
        f"dedup: {dedup['duplicates_files']} duplicates files, {len(dedup['duplicates_missing'])} head/middle files "
        f"without one (nothing dropped there), {dedup['clusters_files']} clusters files; {t['null_counts']} bad lines (null counts)"
    )
    return "\n".join(lines)
