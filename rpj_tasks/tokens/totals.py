"""Snapshot token totals per language and bucket, before and after dedup (docs/PIPELINE.md §5).

Read from the files alone, no re-tokenizing: the token files the snapshot's token records list
(``stats/tokens/{snapshot}/*.json``), and beside each one the ``duplicates/`` file and the
``clusters/`` file of the same documents file when they exist.  Per language and bucket, four
sets of documents (every row of a token file is a document line):

``all``          every document;
``after_exact``  without the rows listed in the file's duplicates file (``doc_id``; rpv2_format.md §6).
                 Tail files are never deduplicated; a head/middle file without a duplicates file
                 (dedup has not run, or not over this shard) drops nothing and is named in
                 ``dedup.duplicates_missing``;
``after_fuzzy``  without the rows of the file's clusters file whose ``id_int != cluster_id`` (§7: a
                 document absent from the clusters files is a singleton and kept; a file without
                 a clusters file has no clustered document);
``after_both``   without either.

Each set gives ``documents`` (rows) and ``tokens`` (the sum of the non-null counts; a bad line has
a null count, ``null_counts`` says how many of ``all``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.summary import recorded_shards

#: The document sets of a total, in order.
SETS: tuple[str, ...] = ("all", "after_exact", "after_fuzzy", "after_both")
_TOKENS_FILE = re.compile(r"([a-z]{2,3})_(" + "|".join(layout.BUCKETS) + ")" + re.escape(layout.TOKENS_SUFFIX))


def _empty() -> dict[str, Any]:
    return {**{name: {"documents": 0, "tokens": 0} for name in SETS}, "null_counts": 0}


def _add(into: dict[str, Any], other: dict[str, Any]) -> None:
    for name in SETS:
        for key in ("documents", "tokens"):
            into[name][key] += other[name][key]
    into["null_counts"] += other["null_counts"]


def file_totals(tokens: pa.Table, duplicate_ids: pa.Array | None, clusters: pa.Table | None) -> dict[str, Any]:
    """The four sets of one token file (columns ``id``, ``tokens``), given its duplicates' ``doc_id``
    and its clusters table (``id``, ``id_int``, ``cluster_id``), either possibly absent."""
    ids, counts = tokens.column("id").combine_chunks(), tokens.column("tokens").combine_chunks()
    n = len(tokens)
    none = pa.array([False] * n, pa.bool_())
    exact = pc.is_in(ids, value_set=duplicate_ids) if duplicate_ids is not None and len(duplicate_ids) else none
    if clusters is not None and len(clusters):
        clusters = clusters.combine_chunks()
        dropped = pc.filter(clusters.column("id"), pc.not_equal(clusters.column("id_int"), clusters.column("cluster_id")))
        fuzzy = pc.is_in(ids, value_set=dropped.combine_chunks())
    else:
        fuzzy = none
    keeps = {
        "all": None,
        "after_exact": pc.invert(exact),
        "after_fuzzy": pc.invert(fuzzy),
        "after_both": pc.invert(pc.or_(exact, fuzzy)),
    }
    out: dict[str, Any] = {"null_counts": counts.null_count}
    for name, keep in keeps.items():
        kept = counts if keep is None else pc.filter(counts, keep)
        out[name] = {"documents": len(kept), "tokens": int(pc.sum(kept).as_py() or 0)}
    return out


def token_totals(
    root: str, snapshot: str, *, clusters_component: str = "clusters", shards: Iterable[int] | None = None
) -> dict[str, Any]:
    """Token totals of a snapshot (module doc), or of its ``shards`` only, as plain JSON-able data::

    {"snapshot", "shards", "files",
     "languages": {lang: {bucket: {"all" | "after_exact" | "after_fuzzy" | "after_both":
                                   {"documents", "tokens"}, "null_counts"}}},
     "total": {same four sets, "null_counts"},
     "by_shard": {"0003": {same four sets, "null_counts"}},
     "dedup": {"duplicates_files", "duplicates_missing": [base tags], "clusters_files"}}
    """
    stats_dir = layout.tokens_stats_dir(root, snapshot)
    recorded = recorded_shards(stats_dir)
    shards = sorted(recorded if shards is None else recorded & set(shards))
    languages: dict[str, dict[str, Any]] = {}
    total = _empty()
    by_shard: dict[str, dict[str, Any]] = {}
    dedup: dict[str, Any] = {"duplicates_files": 0, "duplicates_missing": [], "clusters_files": 0}
    files = 0
    for shard in shards:
        record_url = layout.tokens_stats_url(root, snapshot, shard)
        record = commit.load_record(record_url)
        if record is None:  # removed meanwhile (a redo started)
            continue
        for url in commit.listed_outputs(record_url, record).values():
            match = _TOKENS_FILE.fullmatch(url.rsplit("/", 1)[1])
            if match is None:
                continue
            lang, bucket = match.groups()
            with storage.open_read(url) as f:
                tokens = pq.read_table(f, columns=["id", "tokens"])
            duplicate_ids = None
            if bucket in layout.ANNOTATED_BUCKETS:
                dup_url = layout.duplicates_url(root, snapshot, shard, lang, bucket)
                if storage.exists(dup_url):
                    with storage.open_read(dup_url) as f:
                        duplicate_ids = pq.read_table(f, columns=["doc_id"]).column("doc_id").combine_chunks()
                    dedup["duplicates_files"] += 1
                else:
                    dedup["duplicates_missing"].append(layout.base_tag(snapshot, shard, lang, bucket))
            clusters = None
            clusters_url = layout.clusters_url(root, snapshot, shard, lang, bucket, clusters_component)
            if storage.exists(clusters_url):
                with storage.open_read(clusters_url) as f:
                    clusters = pq.read_table(f, columns=["id", "id_int", "cluster_id"])
                dedup["clusters_files"] += 1
            one = file_totals(tokens, duplicate_ids, clusters)
            _add(languages.setdefault(lang, {}).setdefault(bucket, _empty()), one)
            _add(total, one)
            _add(by_shard.setdefault(f"{shard:04d}", _empty()), one)
            files += 1
    ordered = {lang: {b: languages[lang][b] for b in layout.BUCKETS if b in languages[lang]} for lang in sorted(languages)}
    return {
        "snapshot": snapshot,
        "shards": len(shards),
        "files": files,
        "languages": ordered,
        "total": total,
        "by_shard": by_shard,
        "dedup": dedup,
    }
