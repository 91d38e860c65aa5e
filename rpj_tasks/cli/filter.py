"""``rpj filter``: a recipe (named rule set or YAML file) over a published snapshot, into Parquet /
JSONL training shards with a manifest (``filtered/{recipe}/{snapshot}/``); ``--dry-run`` prints what
each rule would drop and writes nothing."""

from __future__ import annotations

import argparse
import json
from typing import Any

from rpj_tasks.cli.common import storage_root
from rpj_tasks.core import plan


def register(sub: Any) -> None:
    p = sub.add_parser(
        "filter",
        help="apply a filtering recipe to a published snapshot (Parquet/JSONL shards + manifest)",
        description="Apply a recipe: a named set (gopher, c4, refinedweb, classifier, perplexity: config/recipes/) "
        "or a YAML file of rules over quality-signal names, with dedup, languages, buckets and a token budget. "
        "Writes filtered/{recipe}/{snapshot}/{shard}/{lang}_{bucket}.parquet and manifest.json; finished shards "
        "are skipped unless --force.",
    )
    p.add_argument("--snapshot", required=True, help="YYYY-WW (must be published)")
    p.add_argument("--recipe", required=True, help="a named set (e.g. gopher) or a path to a recipe YAML")
    p.add_argument("--shards", default="", help='e.g. "0-9,15" (default: every published shard)')
    p.add_argument("--storage-root")
    p.add_argument("--dry-run", action="store_true", help="print what each rule would drop; write nothing")
    p.add_argument("--force", action="store_true", help="filter finished shards again")
    p.add_argument("--format", choices=("parquet", "jsonl", "both"), default="parquet", help="output files (default parquet)")
    p.add_argument("--json", action="store_true", help="print the result (dry run: the counts) as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rpj_tasks.core.layout import validate_snapshot
    from rpj_tasks.filter import format_counts, load_recipe, run_recipe
    from rpj_tasks.filter.stage import manifest_url

    snapshot = validate_snapshot(args.snapshot)
    recipe = load_recipe(args.recipe)
    root = storage_root(args)
    shards = plan.parse_shards(args.shards, 100_000) if args.shards else None
    formats = ("parquet", "jsonl") if args.format == "both" else (args.format,)
    result = run_recipe(root, snapshot, recipe, shards=shards, dry_run=args.dry_run, formats=formats, force=args.force)
    if args.dry_run:
        if args.json:
            print(json.dumps(result, indent=1, sort_keys=True))
            return 0
        print(
            f"{snapshot}: recipe {recipe.name} ({recipe.hash[:16]}), dry run over {len(result['shards'])} shards; nothing written"
        )
        print(format_counts(result["counts"], recipe))
        if recipe.token_budget is not None:
            kept = result["counts"]["tokens"]["kept"]
            print(f"token budget {recipe.token_budget}: would keep {min(kept, recipe.token_budget)} tokens at most (of {kept})")
        return 0
    manifest = result["manifest"]
    if args.json:
        print(json.dumps(manifest, indent=1, sort_keys=True))
        return 0
    print(format_counts(manifest["counts"], recipe, recipe.token_budget))
    skipped = len(result["skipped"])
    print(
        f"{snapshot}: recipe {recipe.name} ({recipe.hash[:16]}): {len(manifest['shards'])} shards "
        f"({skipped} unchanged), {len(manifest['files'])} files; manifest {manifest_url(root, recipe.name, snapshot)}"
    )
    return 0
