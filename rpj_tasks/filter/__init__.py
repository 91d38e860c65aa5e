"""Filtering recipes over a published snapshot (docs/PIPELINE.md "Filtering"): named rule sets and
user YAML rules over quality-signal names, dedup, language and bucket selection, a token budget;
Parquet / JSONL shards that Hugging Face ``datasets`` loads, with a manifest."""

from __future__ import annotations

import logging
from typing import Any

from rpj_tasks.filter.recipe import Recipe, RecipeError, load_recipe, named_recipes, parse_recipe
from rpj_tasks.filter.stage import (
    allot,
    count_shard,
    decide_fuzzy_after_exact,
    empty_counts,
    filter_shard,
    finalize,
    merge_counts,
    open_release,
    shards_of,
)

__all__ = [
    "Recipe",
    "RecipeError",
    "allot",
    "count_shard",
    "decide_fuzzy_after_exact",
    "filter_shard",
    "finalize",
    "format_counts",
    "load_recipe",
    "merge_counts",
    "named_recipes",
    "open_release",
    "parse_recipe",
    "run_recipe",
    "shards_of",
]

log = logging.getLogger("rpj.filter")


def run_recipe(
    root: str,
    snapshot: str,
    recipe: Recipe,
    *,
    shards: list[int] | None = None,
    dry_run: bool = False,
    formats: tuple[str, ...] = ("parquet",),
    force: bool = False,
) -> dict[str, Any]:
    """The whole filter of a snapshot, one shard after the other (what the DAG maps): the
    ``dedup: both`` decision (:func:`decide_fuzzy_after_exact`), the first
    pass when there is a budget or a dry run, then each shard, then the manifest.  A dry run returns
    ``{"dry_run": True, "recipe", "recipe_hash", "counts", "shards", "allowances"}`` and writes nothing."""
    release = open_release(root, snapshot, recipe)
    selected = shards_of(release, shards)
    if recipe.dedup == "both":  # once, before the shards (a dry run writes nothing: computed in memory if new)
        decide_fuzzy_after_exact(release, write=not dry_run)
    counted = [count_shard(release, recipe, s) for s in selected] if (dry_run or recipe.token_budget is not None) else []
    allowances = allot(recipe, counted) if counted else {s: None for s in selected}
    if dry_run:
        total = empty_counts(recipe)
        for c in counted:
            merge_counts(total, c["counts"])
        return {
            "dry_run": True,
            "recipe": recipe.name,
            "recipe_hash": recipe.hash,
            "counts": total,
            "shards": selected,
            "allowances": allowances,
        }
    records = [filter_shard(release, recipe, s, allowance=allowances[s], formats=formats, force=force) for s in selected]
    done = finalize(release, recipe, selected, allowances, formats=formats, force=force)
    return {
        "dry_run": False,
        "records": records,
        "manifest": done["manifest"],
        "skipped": [r["shard"] for r in records if r["skipped"]],
    }


def format_counts(counts: dict[str, Any], recipe: Recipe, budget_tokens: int | None = None) -> str:
    """A text table: per rule, the documents it fails alone and those it drops (first failing rule)."""
    rows = [("step", "fails", "drops")]
    rows.append((f"(rules applied to {counts['evaluated']} documents)", "", ""))
    for reason in ("bad_line", "no_signals", "exact_duplicate", "fuzzy_duplicate"):
        if counts["dropped"].get(reason):
            rows.append((reason, "", str(counts["dropped"][reason])))
    for rule in recipe.rules:
        c = counts["rules"][rule.name]
        rows.append((f"rule {rule.name}", str(c["fails"]), str(c["dropped"])))
    for rule in recipe.line_rules:
        c = counts["line_rules"][rule.name]
        rows.append((f"line rule {rule.name} (lines)", str(c["lines_failing"]), str(c["lines_removed"])))
    for reason in ("empty_after_line_rules", "budget"):
        if counts["dropped"].get(reason):
            rows.append((reason, "", str(counts["dropped"][reason])))
    width = max(len(r[0]) for r in rows)
    lines = [f"{a.ljust(width)}  {b.rjust(8)}  {c.rjust(8)}" for a, b, c in rows]
    lines.append(
        f"kept {counts['kept']} of {counts['documents']} documents, {counts['tokens']['kept']} of {counts['tokens']['input']} tokens"
        + (f" (budget {budget_tokens})" if budget_tokens is not None else "")
    )
    return "\n".join(lines)
