"""Token counts (docs/PIPELINE.md §5): per document with Mistral-7B-v0.1 (:mod:`.tokenizer`), one
``tokens/…tokens.parquet`` per documents file of a shard (:func:`count_shard`) and a snapshot's
totals before and after exact and fuzzy dedup (:func:`token_totals`)."""

from rpj_tasks.tokens.stage import count_shard
from rpj_tasks.tokens.totals import token_totals

__all__ = ["count_shard", "token_totals"]
