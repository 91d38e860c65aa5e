"""Filter a published snapshot with a recipe (:mod:`rpj_tasks.filter.recipe`) into training shards.

Input: a *published* snapshot only (``listings/{snapshot}.manifest.json`` and its publish record
exist), read as any RPv2 client reads a release: the listings name the base tags, the manifest
gives every file's sha256 and size; a file whose size differs from the manifest (rewritten since
publishing) is refused.  For each selected ``{lang}_{bucket}`` file of a shard, line *i* of the
documents, of the quality signals and row *i* of the token counts describe document *i*; the
duplicates file lists exact duplicates to drop (``doc_id``), the clusters file the fuzzy-dedup
clusters (``dedup: fuzzy``: a clustered document is kept only when ``id_int == cluster_id``;
``dedup: both``: when it survives exact dedup and has the smallest ``id_int`` among its cluster's
members that do, so that each such cluster keeps exactly one copy; this snapshot-wide decision is
computed once per release from every duplicates and clusters file and committed per shard under
``staging/filter/{snapshot}/fuzzy_after_exact/``, see :func:`decide_fuzzy_after_exact`).  Lone surrogates in a
kept row's strings are written as U+FFFD (counted, ``filter.lone_surrogates_replaced``).

Per document, in this order (the first reason that drops it is its reason)::

    bad_line -> exact_duplicate -> fuzzy_duplicate -> each document rule -> line rules
             (lines cut out by span; no line left: empty_after_line_rules) -> token budget

Outputs, one unit of the commit protocol per shard (record ``stats/filter/{recipe}/{snapshot}/{shard:04d}.json``)::

    filtered/{recipe}/{snapshot}/{shard:04d}/{lang}_{bucket}.parquet      FILTERED_SCHEMA (and/or
    filtered/{recipe}/{snapshot}/{shard:04d}/{lang}_{bucket}.jsonl.gz     the same rows as JSON lines)

then :func:`finalize` writes ``filtered/{recipe}/{snapshot}/manifest.json`` (record
``stats/filter/{recipe}/{snapshot}/snapshot.json``): the recipe as resolved and its hash, the
inputs, counts kept and dropped per rule, tokens, and every file with sha256, size and rows; no
timings, so reruns give the same bytes; shards of an earlier run it does not list are removed
(records first, then files, before the manifest).  A shard's fingerprint holds the recipe hash, its input
files' sha256, the output formats, its token allowance and the tokenizer (when line rules recount
tokens): a recipe change redoes every shard, and :func:`finalize` refuses a shard filtered under
another recipe version.  Files with no kept document are not written.

Token budget (``token_budget``): the documents are ordered by shard, then file (language, then
head, middle, tail), then line; documents are kept in that order until the next one would pass the
budget, and every later document is dropped (``budget``).  So that mapped shards agree without
talking to each other, a first pass (:func:`count_shard`, also the dry run) counts each shard's
kept tokens without a budget; :func:`allot` turns those into each shard's allowance (everything
for shards before the one where the budget runs out, the remainder for that shard, 0 after it),
and :func:`filter_shard` applies its allowance.  The result equals the sequential rule.

Tokens: a document's count is its row in ``tokens/`` (the release's tokenizer, BOS included); a
document whose lines were cut is counted again with the same tokenizer (checked against the
tokens record's identity).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.errors import MissingInputError, PermanentError
from rpj_tasks.core.ids import doc_id
from rpj_tasks.core.lines import BadLines, iter_lines, parse_object
from rpj_tasks.core.logctx import log_context, shard_label
from rpj_tasks.core.stats import Stats
from rpj_tasks.filter.recipe import Recipe

log = logging.getLogger("rpj.filter")

FORMAT_VERSION = 1  # bumped when the output changes: every shard is then filtered again
FORMATS = ("parquet", "jsonl")
FILTERED_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("text", pa.string()),
        ("language", pa.string()),
        ("bucket", pa.string()),
        ("snapshot", pa.string()),
        ("tokens", pa.int64()),
        ("lines_removed", pa.int32()),
        ("url", pa.string()),
        ("source_domain", pa.string()),
        ("title", pa.string()),
        ("date_download", pa.string()),
        ("digest", pa.string()),
        ("cc_segment", pa.string()),
        ("language_score", pa.float64()),
        ("perplexity", pa.float64()),
    ]
)
_META = ("url", "source_domain", "title", "date_download", "digest", "cc_segment")


class NotPublishedError(PermanentError):
    """The snapshot has no published release to filter (or it changed since publishing)."""


# ---------------------------------------------------------------- where things are


def output_dir(root: str, recipe: str, snapshot: str) -> str:
    return storage.join(root, "filtered", recipe, layout.validate_snapshot(snapshot))


def shard_output_dir(root: str, recipe: str, snapshot: str, shard: int) -> str:
    return storage.join(output_dir(root, recipe, snapshot), f"{shard:04d}")


def record_dir(root: str, recipe: str, snapshot: str) -> str:
    return storage.join(root, "stats", "filter", recipe, layout.validate_snapshot(snapshot))


def shard_record_url(root: str, recipe: str, snapshot: str, shard: int) -> str:
    return storage.join(record_dir(root, recipe, snapshot), f"{shard:04d}.json")


def manifest_url(root: str, recipe: str, snapshot: str) -> str:
    return storage.join(output_dir(root, recipe, snapshot), "manifest.json")


# ---------------------------------------------------------------- the published release


@dataclass(frozen=True)
class Release:
    """What a published snapshot offers: its manifest and, per shard, the selected base tags."""

    root: str
    snapshot: str
    manifest: dict[str, Any]
    manifest_sha256: str
    tags: dict[int, list[tuple[str, str, str]]]  # shard -> [(tag, lang, bucket)] in filter order
    cache: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the dedup-both decision read

    def file(self, rel: str) -> dict[str, Any] | None:
        return self.manifest["files"].get(rel)

    def dedup_files(self) -> dict[str, str]:
        """``{rel: sha256}`` of every published duplicates and clusters file (``dedup: both`` reads them all)."""
        return {
            rel: meta["sha256"]
            for rel, meta in sorted(self.manifest["files"].items())
            if rel.startswith(("duplicates/", "clusters/"))
        }


def open_release(root: str, snapshot: str, recipe: Recipe) -> Release:
    """The published snapshot, with the files the recipe selects (languages, buckets)."""
    from rpj_tasks.publish import stage as publish

    layout.validate_snapshot(snapshot)
    url = publish.manifest_url(root, snapshot)
    if commit.load_record(publish.publish_record_url(root, snapshot)) is None or not storage.exists(url):
        raise NotPublishedError(
            f"snapshot {snapshot} is not published under {root} (no {url}): run the snapshot's DAG or "
            "`rpj validate` and `rpj publish` first; only a published release is filtered"
        )
    body = storage.read_bytes(url)
    manifest = json.loads(body)
    published = sorted(manifest.get("listings", {}))  # the languages with listings (some documents)
    langs = [lang for lang in sorted(published) if recipe.languages is None or lang in recipe.languages]
    if not langs:
        raise NotPublishedError(
            f"{snapshot}: none of the languages {list(recipe.languages or [])} of recipe {recipe.name} is published "
            f"(published: {', '.join(published) or 'none'})"
        )
    if recipe.languages is not None and (missing := sorted(set(recipe.languages) - set(published))):
        log.warning("%s: languages %s of recipe %s are not published; filtering %s", snapshot, missing, recipe.name, langs)
    tags: dict[int, list[tuple[str, str, str]]] = {}
    for lang in langs:
        for part in ("head_middle", "tail"):
            if part == "tail" and "tail" not in recipe.buckets or part == "head_middle" and recipe.buckets == ("tail",):
                continue
            listing = publish.listing_url(root, lang, snapshot, part)
            try:
                lines = storage.read_bytes(listing).decode().splitlines()
            except FileNotFoundError:
                raise NotPublishedError(f"{snapshot}: published listing {listing} is missing") from None
            for tag in lines:
                parts = tag.split("/")
                match = layout.DOCUMENTS_FILE.match(parts[-1] + layout.DOCUMENTS_SUFFIX) if len(parts) == 3 else None
                if parts[0] != snapshot or match is None or not parts[1].isdigit() or match.group(1) != lang:
                    raise NotPublishedError(f"{listing}: unexpected line {tag!r}")
                bucket = match.group(2)
                if bucket in recipe.buckets:
                    tags.setdefault(int(parts[1]), []).append((tag, lang, bucket))
    order = {b: i for i, b in enumerate(layout.BUCKETS)}
    for shard in tags:
        tags[shard].sort(key=lambda t: (t[1], order[t[2]]))
    release = Release(root, snapshot, manifest, hashlib.sha256(body).hexdigest(), dict(sorted(tags.items())))
    _check_components(release, recipe)
    return release


def _inputs_of(release: Release, recipe: Recipe, tag: str, bucket: str) -> dict[str, str]:
    """``{component: relative path}`` of the files one tag needs under ``recipe``."""
    want = {"documents": f"documents/{tag}{layout.DOCUMENTS_SUFFIX}", "tokens": f"tokens/{tag}{layout.TOKENS_SUFFIX}"}
    if bucket in layout.ANNOTATED_BUCKETS:
        if recipe.needs_signals:
            want["signals"] = f"quality_signals/{tag}{layout.SIGNALS_SUFFIX}"
        if recipe.dedup in ("exact", "both"):
            want["duplicates"] = f"duplicates/{tag}{layout.DUPLICATES_SUFFIX}"
        if recipe.dedup in ("fuzzy", "both"):
            want["clusters"] = f"clusters/{tag}{layout.CLUSTERS_SUFFIX}"
    return want


def _check_components(release: Release, recipe: Recipe) -> None:
    files = release.manifest["files"]
    if not any(rel.startswith("tokens/") for rel in files):
        raise NotPublishedError(
            f"{release.snapshot}: the published release has no token counts (tokens/): run `rpj tokens`, then publish again"
        )
    if recipe.dedup in ("fuzzy", "both") and not any(rel.startswith("clusters/") for rel in files):
        raise NotPublishedError(
            f"{release.snapshot}: recipe {recipe.name} needs fuzzy dedup but the release has no clusters/: "
            "run `rpj clusters` and publish again, or set dedup: exact"
        )
    for shard, tags in release.tags.items():
        for tag, _, bucket in tags:
            for component, rel in _inputs_of(release, recipe, tag, bucket).items():
                if rel not in files and component != "clusters":  # a file without clustered documents may have none
                    raise NotPublishedError(f"{release.snapshot}: shard {shard:04d}: {rel} is not in the published manifest")


def shards_of(release: Release, only: list[int] | None = None) -> list[int]:
    """The release's shards with selected files (``only``: those of them, refusing unknown ones)."""
    shards = sorted(release.tags)
    if only is None:
        return shards
    unknown = sorted(set(only) - set(release.manifest.get("shards", [])))
    if unknown:
        raise PermanentError(f"{release.snapshot}: shards {unknown} are not in the published release")
    return [s for s in shards if s in set(only)]


# ---------------------------------------------------------------- dedup both: the snapshot-wide decision

FUZZY_FORMAT = 1  # bumped when the decision's files change: every release computes it again


def fuzzy_inputs(release: Release) -> dict[str, Any]:
    """The decision's fingerprint: the sha256 of every published duplicates and clusters file."""
    return {"format": FUZZY_FORMAT, "snapshot": release.snapshot, "files": release.dedup_files()}


def fuzzy_key(release: Release) -> str:
    """The content address of the ``dedup: both`` decision of this release (sha256 of its fingerprint)."""
    body = json.dumps(fuzzy_inputs(release), sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(body).hexdigest()


def fuzzy_base(root: str, snapshot: str) -> str:
    return storage.join(root, "staging", "filter", layout.validate_snapshot(snapshot), "fuzzy_after_exact")


def fuzzy_record_url(root: str, snapshot: str, key: str) -> str:
    return storage.join(fuzzy_base(root, snapshot), f"{key}.json")


def fuzzy_output_dir(root: str, snapshot: str, key: str) -> str:
    return storage.join(fuzzy_base(root, snapshot), key)


def _table(release: Release, rel: str, columns: list[str]) -> pa.Table:
    with storage.open_read(_read_url(release, rel)) as f:
        return pq.read_table(f, columns=columns)


def _uint64(table: pa.Table, column: str, rel: str) -> np.ndarray:
    col = table.column(column)
    if col.null_count:
        raise PermanentError(f"{rel}: column {column} has {col.null_count} null values")
    return np.asarray(col.cast(pa.uint64()).to_numpy(), dtype=np.uint64)


def compute_fuzzy_losers(release: Release) -> tuple[Iterator[tuple[int, pa.Array]], dict[str, int]]:
    """``dedup: both``: per shard (in order), the ids of the clustered documents to drop as fuzzy
    duplicates, and counts.

    Per cluster, the one kept is the smallest ``id_int`` among the members that survive exact dedup
    (not listed in their own file's duplicates file, the rule the filter applies); every other
    surviving member is dropped.  Each ``{lang}_{bucket}`` file is read once: its clusters file,
    then its duplicates file (``doc_id`` looked up among the file's clustered ids with ``is_in``).
    Only the survivors' ``id_int``, ``cluster_id`` and position (file, row) are held: 24 bytes per
    clustered document surviving exact dedup, about 52 at the peak while choosing the keepers (a
    sort).  The losers' ids are then read again, shard by shard, from the clusters files that have
    some, so only one shard's ids are held at a time."""
    files = release.manifest["files"]
    clusters = [rel for rel in release.dedup_files() if rel.startswith("clusters/")]  # sorted: by shard
    id_ints: list[np.ndarray] = []
    cluster_ids: list[np.ndarray] = []
    where: list[np.ndarray] = []
    counts = {"clusters_files": len(clusters), "clustered": 0, "clustered_exact_duplicates": 0}
    for k, rel in enumerate(clusters):
        if not rel.endswith(layout.CLUSTERS_SUFFIX) or len(rel.split("/")) != 4 or not rel.split("/")[2].isdigit():
            raise PermanentError(f"{release.snapshot}: unexpected clusters file name {rel!r} in the published manifest")
        table = _table(release, rel, ["id", "id_int", "cluster_id"])
        counts["clustered"] += table.num_rows
        dup_rel = "duplicates/" + rel.removeprefix("clusters/").removesuffix(layout.CLUSTERS_SUFFIX) + layout.DUPLICATES_SUFFIX
        rows = np.arange(table.num_rows, dtype=np.int64)
        if dup_rel in files and table.num_rows:
            dups = _table(release, dup_rel, ["doc_id"]).column("doc_id").combine_chunks()
            exact = pc.is_in(table.column("id"), value_set=dups).to_numpy(zero_copy_only=False)
            counts["clustered_exact_duplicates"] += int(exact.sum())
            rows = rows[~exact]
        id_ints.append(_uint64(table, "id_int", rel)[rows])
        cluster_ids.append(_uint64(table, "cluster_id", rel)[rows])
        where.append((np.int64(k) << 32) | rows)  # (file, row) in one int64
    id_int = np.concatenate(id_ints) if id_ints else np.zeros(0, np.uint64)
    cluster_id = np.concatenate(cluster_ids) if cluster_ids else np.zeros(0, np.uint64)
    position = np.concatenate(where) if where else np.zeros(0, np.int64)
    del id_ints, cluster_ids, where
    order = np.lexsort((id_int, cluster_id))  # by cluster, then id_int: the first of each run is kept
    sorted_clusters = cluster_id[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_clusters[1:] != sorted_clusters[:-1]
    losers = np.sort(position[order[~first]])
    counts["survivors"] = len(order)
    counts["clusters_kept"] = int(first.sum())
    counts["losers"] = len(losers)
    del order, sorted_clusters, first, id_int, cluster_id, position

    def per_shard() -> Iterator[tuple[int, pa.Array]]:
        file_of = losers >> 32
        by_shard: dict[int, list[int]] = {}
        for k, rel in enumerate(clusters):
            by_shard.setdefault(int(rel.split("/")[2]), []).append(k)
        for shard, ks in by_shard.items():
            parts = []
            for k in ks:
                lo, hi = np.searchsorted(file_of, [k, k + 1])  # losers are sorted by (file, row)
                rows = losers[lo:hi] & 0xFFFFFFFF
                if len(rows):
                    parts.append(_table(release, clusters[k], ["id"]).column("id").take(pa.array(rows)).combine_chunks())
            yield shard, pa.concat_arrays(parts) if parts else pa.array([], pa.string())

    return per_shard(), counts


def _ids_parquet(ids: pa.Array) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"id": ids.cast(pa.string())}), buf, compression="snappy")
    return buf.getvalue()


def decide_fuzzy_after_exact(release: Release, *, write: bool = True, force: bool = False) -> dict[str, Any]:
    """Compute the ``dedup: both`` decision of the release once and commit it (commit protocol, one
    unit per release version)::

        staging/filter/{snapshot}/fuzzy_after_exact/{key}/{shard:04d}.parquet   ids to drop (column id)
        staging/filter/{snapshot}/fuzzy_after_exact/{key}.json                  record (inputs, counts)

    ``key`` is :func:`fuzzy_key`: every recipe with ``dedup: both`` reuses it, a changed release
    gets another key.  Finished: skipped (unless ``force``).  ``write=False`` (a dry run): when not
    finished, computed into ``release.cache`` and nothing is written.  Filter tasks then read only
    their shard's file (:func:`fuzzy_losers`)."""
    root, snap = release.root, release.snapshot
    inputs, key = fuzzy_inputs(release), fuzzy_key(release)
    record_url = fuzzy_record_url(root, snap, key)
    if not force and (record := commit.finished(record_url, inputs)) is not None:
        log.info("%s: dedup both: decision %s computed earlier, reused (%s)", snap, key[:16], record.get("counts"))
        release.cache["fuzzy_record"] = record
        return {"key": key, "skipped": True, "counts": record.get("counts")}
    losers, counts = compute_fuzzy_losers(release)
    log.info(
        "%s: dedup both: %d clusters files, %d clustered documents, %d of them exact duplicates, %d surviving "
        "(held: about %d MB), %d clusters kept, %d fuzzy duplicates to drop",
        snap,
        counts["clusters_files"],
        counts["clustered"],
        counts["clustered_exact_duplicates"],
        counts["survivors"],
        counts["survivors"] * 52 // 2**20,
        counts["clusters_kept"],
        counts["losers"],
    )
    if not write:
        release.cache["fuzzy"] = {shard: frozenset(ids.to_pylist()) for shard, ids in losers}
        return {"key": key, "skipped": False, "counts": counts, "written": False}
    out_dir = fuzzy_output_dir(root, snap, key)
    with commit.UnitCommit(record_url, inputs, [out_dir], owned=lambda n: n.endswith(".parquet")) as unit:
        for shard, ids in losers:
            unit.write_bytes(storage.join(out_dir, f"{shard:04d}.parquet"), _ids_parquet(ids))
        record = unit.commit({"snapshot": snap, "key": key, "counts": counts})
    release.cache["fuzzy_record"] = record
    log.info("%s: dedup both: decision %s committed (%s)", snap, key[:16], record_url)
    return {"key": key, "skipped": False, "counts": counts, "written": True}


def fuzzy_losers(release: Release, shard: int) -> frozenset[str]:
    """The ids of one shard to drop as fuzzy duplicates under ``dedup: both``: its file of the
    committed decision (:func:`decide_fuzzy_after_exact` must have run for this release)."""
    if "fuzzy" in release.cache:
        return release.cache["fuzzy"].get(shard, frozenset())
    per_shard = release.cache.setdefault("fuzzy_shards", {})
    if shard in per_shard:
        return per_shard[shard]
    root, snap = release.root, release.snapshot
    key = fuzzy_key(release)
    record_url = fuzzy_record_url(root, snap, key)
    record = release.cache.get("fuzzy_record") or commit.load_record(record_url)
    if record is None or record.get("inputs") != fuzzy_inputs(release):
        raise MissingInputError(
            f"{snap}: the dedup-both decision of this release is not computed ({record_url}): `rpj filter` and the "
            "rpv2_filter DAG's plan compute it before the shards (rpj_tasks.filter.decide_fuzzy_after_exact)"
        )
    release.cache["fuzzy_record"] = record
    rel = f"{key}/{shard:04d}.parquet"
    ids: frozenset[str] = frozenset()
    if rel in record.get("outputs", {}):  # no file: the shard has no clustered document
        url = commit.listed_outputs(record_url, {"outputs": {rel: None}})[rel]
        try:
            size = storage.size(url)
        except FileNotFoundError:
            raise MissingInputError(f"{snap}: {url} of the dedup-both decision is missing: run it again") from None
        if size != record["outputs"][rel]["bytes"]:
            raise MissingInputError(f"{snap}: {url} has {size} bytes, its record says {record['outputs'][rel]['bytes']}")
        with storage.open_read(url) as f:
            ids = frozenset(pq.read_table(f, columns=["id"]).column("id").to_pylist())
    per_shard[shard] = ids
    return ids


# ---------------------------------------------------------------- one shard


def _shard_inputs(release: Release, recipe: Recipe, shard: int) -> dict[str, Any]:
    files = {}
    for tag, _, bucket in release.tags.get(shard, []):
        for rel in _inputs_of(release, recipe, tag, bucket).values():
            meta = release.file(rel)
            if meta is not None:
                files[rel] = meta["sha256"]
    return dict(sorted(files.items()))


def _read_url(release: Release, rel: str) -> str:
    """The URL of a published file, refused when its size differs from the manifest's."""
    url = storage.join(release.root, rel)
    meta = release.file(rel)
    assert meta is not None
    try:
        size = storage.size(url)
    except FileNotFoundError:
        raise MissingInputError(f"{release.snapshot}: published file {url} is missing") from None
    if size != meta["bytes"]:
        raise NotPublishedError(
            f"{release.snapshot}: {rel} has {size} bytes, the published manifest says {meta['bytes']}: it changed "
            "since publishing; validate and publish the snapshot again"
        )
    return url


def _parquet(release: Release, rel: str, columns: list[str]) -> dict[str, list[Any]]:
    """Columns of a published Parquet file, read through :mod:`storage` (an object store's options apply)."""
    with storage.open_read(_read_url(release, rel)) as f:
        return pq.read_table(f, columns=columns).to_pydict()


def _read_signals(release: Release, rel: str, bad: BadLines, shard_key: str) -> Iterator[dict[str, Any] | None]:
    """Line *i*'s ``quality_signals`` (None: unreadable); a line naming another document than
    document *i* is a misaligned release, refused naming the file and line."""
    url = _read_url(release, rel)
    for idx, (_, line) in enumerate(iter_lines(url, bad, compressed=True)):
        record, _ = parse_object(line)
        if record is not None and "id" in record and record["id"] != doc_id(shard_key, idx):
            raise PermanentError(
                f"{release.snapshot}: {rel} line {idx + 1} has id {str(record['id'])[:200]!r}, "
                f"document {idx} of the shard is {doc_id(shard_key, idx)!r}: signals and documents are misaligned"
            )
        signals = record.get("quality_signals") if record is not None else None
        yield signals if isinstance(signals, dict) else None


class _Tokens:
    """Counts tokens of documents whose lines were cut, with the release's tokenizer (loaded once)."""

    def __init__(self, release: Release, shard: int) -> None:
        self.release, self.shard = release, shard
        self._counter: Any = None

    def identity(self) -> dict[str, Any]:
        record = commit.load_record(layout.tokens_stats_url(self.release.root, self.release.snapshot, self.shard))
        if record is None or "tokenizer" not in record:
            raise MissingInputError(f"{self.release.snapshot}: shard {self.shard:04d} has no token-count record")
        return dict(record["tokenizer"])

    def counter(self) -> Any:
        if self._counter is None:
            from rpj_tasks.tokens.tokenizer import load_counter

            wanted = self.identity()
            counter = load_counter(wanted.get("tokenizer_json", ""))
            if any(wanted.get(k) != v for k, v in counter.identity.items()):
                raise PermanentError(
                    f"{self.release.snapshot}: shard {self.shard:04d}: the tokenizer here ({counter.identity}) is not the "
                    f"one that counted the release's tokens ({wanted}); documents with cut lines cannot be recounted"
                )
            self._counter = counter
        return self._counter


def _cut_lines(raw: str, removed: list[tuple[int, int]]) -> str:
    """``raw`` without the spans ``removed`` (sorted); no trailing newline that ``raw`` did not have."""
    out, pos = [], 0
    for start, end in removed:
        if start > pos:
            out.append(raw[pos:start])
        pos = max(pos, end)
    out.append(raw[pos:])
    text = "".join(out)
    if text.endswith("\n") and not raw.endswith("\n"):
        text = text[:-1]
    return text


@dataclass
class Verdict:
    """What a recipe's rules make of one document: ``dropped_by`` (the first failing document rule,
    None if kept), every failing document rule, the cut line spans (``(start, end)`` -> the first
    line rule that failed there), failing lines per line rule, and the text after the cut."""

    dropped_by: str | None
    fails: list[str]
    removed: dict[tuple[int, int], str]
    lines_failing: dict[str, int]
    text: str


def evaluate(recipe: Recipe, signals: dict[str, Any], raw: str) -> Verdict:
    """Apply the recipe's document rules, then (if kept) its line rules, to one document."""
    fails = [rule.name for rule in recipe.rules if not rule.passes(rule.score(signals))]
    if fails:
        return Verdict(fails[0], fails, {}, {}, raw)
    removed: dict[tuple[int, int], str] = {}
    failing: dict[str, int] = {}
    for rule in recipe.line_rules:
        spans = signals.get(rule.signal)
        for span in spans if isinstance(spans, list) else []:
            if not (isinstance(span, list) and len(span) == 3 and type(span[0]) is int and type(span[1]) is int):
                continue
            if span[1] <= span[0]:  # [[0, 0, null]]: a document without lines
                continue
            score = float(span[2]) if isinstance(span[2], int | float) and not isinstance(span[2], bool) else None
            if not rule.passes(score):
                failing[rule.name] = failing.get(rule.name, 0) + 1
                removed.setdefault((span[0], span[1]), rule.name)
    text = _cut_lines(raw, sorted(removed)) if removed else raw
    return Verdict(None, [], removed, failing, text)


def empty_counts(recipe: Recipe) -> dict[str, Any]:
    return {
        "documents": 0,
        "evaluated": 0,  # documents the rules were applied to (after dedup): a rule keeps evaluated - fails
        "kept": 0,
        "dropped": {},
        "rules": {r.name: {"fails": 0, "dropped": 0} for r in recipe.rules},
        "line_rules": {r.name: {"lines_failing": 0, "lines_removed": 0} for r in recipe.line_rules},
        "lines_removed": 0,
        "documents_with_lines_removed": 0,
        "tokens": {"input": 0, "kept": 0},
    }


def merge_counts(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """Add ``other``'s counts (same recipe) to ``into``."""
    for key in ("documents", "evaluated", "kept", "lines_removed", "documents_with_lines_removed"):
        into[key] += other[key]
    for reason, n in other["dropped"].items():
        into["dropped"][reason] = into["dropped"].get(reason, 0) + n
    into["dropped"] = dict(sorted(into["dropped"].items()))
    for group in ("rules", "line_rules"):
        for name, c in other[group].items():
            for k, v in c.items():
                into[group][name][k] += v
    for k in ("input", "kept"):
        into["tokens"][k] += other["tokens"][k]
    return into


def _drop(counts: dict[str, Any], reason: str) -> None:
    counts["dropped"][reason] = counts["dropped"].get(reason, 0) + 1


def _filter_file(
    release: Release,
    recipe: Recipe,
    shard: int,
    tag: str,
    lang: str,
    bucket: str,
    budget: dict[str, Any],
    tokens: _Tokens,
    stats: Stats,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Rows kept and counts of one ``{lang}_{bucket}`` file; ``budget``: ``{"left": int|None, "stopped": bool}``."""
    inputs = _inputs_of(release, recipe, tag, bucket)
    counts = empty_counts(recipe)
    bad = BadLines(stats, "filter", logger=log)
    shard_key = tag + layout.DOCUMENTS_SUFFIX
    tokens_table = _parquet(release, inputs["tokens"], ["id", "tokens"])
    token_counts, token_ids = tokens_table["tokens"], tokens_table["id"]
    exact: set[str] = set()
    if "duplicates" in inputs:
        exact = set(_parquet(release, inputs["duplicates"], ["doc_id"])["doc_id"])
    fuzzy: set[str] | frozenset[str] = set()
    if recipe.dedup == "both" and "clusters" in inputs:
        fuzzy = fuzzy_losers(release, shard)  # snapshot-wide: one copy of each cluster survives
    elif "clusters" in inputs and release.file(inputs["clusters"]) is not None:
        t = _parquet(release, inputs["clusters"], ["id", "id_int", "cluster_id"])
        fuzzy = {i for i, a, c in zip(t["id"], t["id_int"], t["cluster_id"]) if a != c}
    signals_iter = (
        _read_signals(release, inputs["signals"], BadLines(stats, "filter.signals", logger=log), shard_key)
        if "signals" in inputs
        else None
    )
    rows: list[dict[str, Any]] = []
    for idx, (offset, line) in enumerate(iter_lines(_read_url(release, inputs["documents"]), bad, compressed=True)):
        signals = next(signals_iter, None) if signals_iter is not None else None
        counts["documents"] += 1
        ntok = token_counts[idx] if idx < len(token_counts) else None
        did = doc_id(shard_key, idx)
        if ntok is not None and token_ids[idx] != did:
            raise PermanentError(
                f"{release.snapshot}: {inputs['tokens']} row {idx} has id {token_ids[idx]!r}, document {idx} is {did!r}: "
                "token counts and documents are misaligned"
            )
        if ntok is not None:
            counts["tokens"]["input"] += ntok
        doc, reason = parse_object(line)
        if reason is None and doc is not None and not isinstance(doc.get("raw_content"), str):
            reason = "no_raw_content"
        if reason is not None or doc is None or ntok is None:
            bad.line(inputs["documents"], offset, reason or "no_token_count", index=idx, outcome="dropped")
            _drop(counts, "bad_line")
            continue
        if did in exact:
            _drop(counts, "exact_duplicate")
            continue
        if did in fuzzy:
            _drop(counts, "fuzzy_duplicate")
            continue
        if recipe.needs_signals and signals is None:
            _drop(counts, "no_signals")
            continue
        assert signals is not None or not recipe.needs_signals
        verdict = evaluate(recipe, signals or {}, doc["raw_content"])
        counts["evaluated"] += 1
        for name in verdict.fails:
            counts["rules"][name]["fails"] += 1
        if verdict.dropped_by is not None:
            counts["rules"][verdict.dropped_by]["dropped"] += 1
            _drop(counts, f"rule:{verdict.dropped_by}")
            continue
        for name, n in verdict.lines_failing.items():
            counts["line_rules"][name]["lines_failing"] += n
        for name in verdict.removed.values():
            counts["line_rules"][name]["lines_removed"] += 1
        text = verdict.text
        if verdict.removed:
            counts["lines_removed"] += len(verdict.removed)
            counts["documents_with_lines_removed"] += 1
            if not text.strip():
                _drop(counts, "empty_after_line_rules")
                continue
            ntok = tokens.counter().count([text])[0]
        if budget["left"] is not None:
            if budget["stopped"] or ntok > budget["left"]:
                budget["stopped"] = True
                _drop(counts, "budget")
                continue
            budget["left"] -= ntok
        counts["kept"] += 1
        counts["tokens"]["kept"] += ntok
        row = {
            "id": did,
            "text": text,
            "language": lang,
            "bucket": bucket,
            "snapshot": release.snapshot,
            "tokens": ntok,
            "lines_removed": len(verdict.removed),
            **{k: doc.get(k) if isinstance(doc.get(k), str) else None for k in _META},
            "language_score": _float(doc.get("language_score")),
            "perplexity": _float(doc.get("perplexity")),
        }
        if _replace_surrogates(row):
            stats.inc("filter.lone_surrogates_replaced")
            log.warning("%s line %d: lone surrogates in text or metadata, written as U+FFFD", inputs["documents"], idx + 1)
        rows.append(row)
    bad.log_unlogged(inputs["documents"])
    counts["dropped"] = dict(sorted(counts["dropped"].items()))
    return rows, counts


_SURROGATE = re.compile("[\ud800-\udfff]")


def _replace_surrogates(row: dict[str, Any]) -> bool:
    """Replace lone surrogates (a JSON ``"\\ud800"`` escape decodes to one; UTF-8 cannot hold it) in
    the row's strings by U+FFFD, in place; whether there was one."""
    found = False
    for key, value in row.items():
        if isinstance(value, str) and not value.isascii() and _SURROGATE.search(value):
            row[key] = _SURROGATE.sub("\ufffd", value)
            found = True
    return found


def _float(x: Any) -> float | None:
    return float(x) if isinstance(x, int | float) and not isinstance(x, bool) else None


def _run_shard(
    release: Release, recipe: Recipe, shard: int, allowance: int | None, stats: Stats
) -> Iterator[tuple[str, str, list[dict[str, Any]], dict[str, Any]]]:
    budget = {"left": allowance, "stopped": False}
    tokens = _Tokens(release, shard)
    for tag, lang, bucket in release.tags.get(shard, []):
        with log_context(file=tag.rsplit("/", 1)[1]):
            rows, counts = _filter_file(release, recipe, shard, tag, lang, bucket, budget, tokens, stats)
        yield tag, f"{lang}_{bucket}", rows, counts


def count_shard(release: Release, recipe: Recipe, shard: int) -> dict[str, Any]:
    """What the recipe would keep and drop in one shard, without a budget; writes nothing (the dry
    run, and the first pass of a token budget)."""
    with log_context(shard=shard_label(release.snapshot, shard)):
        total = empty_counts(recipe)
        files = {}
        for _, name, _, counts in _run_shard(release, recipe, shard, None, Stats()):
            files[name] = counts
            merge_counts(total, counts)
        log.info(
            "shard %04d: would keep %d of %d documents, %d tokens",
            shard,
            total["kept"],
            total["documents"],
            total["tokens"]["kept"],
        )
        return {"shard": shard, "counts": total, "files": files}


def allot(recipe: Recipe, counted: list[dict[str, Any]]) -> dict[int, int | None]:
    """Each shard's token allowance (None: no limit) from the first pass's kept tokens (module doc)."""
    shards = sorted(c["shard"] for c in counted)
    if recipe.token_budget is None:
        return {s: None for s in shards}
    kept = {c["shard"]: c["counts"]["tokens"]["kept"] for c in counted}
    out: dict[int, int | None] = {}
    used = 0
    for s in shards:
        if used + kept[s] <= recipe.token_budget:
            out[s] = None
            used += kept[s]
        else:
            out[s] = max(recipe.token_budget - used, 0)
            used = recipe.token_budget
    return out


def _parquet_bytes(rows: list[dict[str, Any]]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows, schema=FILTERED_SCHEMA), buf, compression="snappy", row_group_size=10_000)
    return buf.getvalue()


def _jsonl_gz(unit: commit.UnitCommit, url: str, rows: list[dict[str, Any]]) -> None:
    with unit.gzip_writer(url) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, sort_keys=False).encode() + b"\n")


def filter_shard(
    release: Release,
    recipe: Recipe,
    shard: int,
    *,
    allowance: int | None = None,
    formats: tuple[str, ...] = ("parquet",),
    force: bool = False,
) -> dict[str, Any]:
    """Filter one shard through the commit protocol; its record (``skipped``: finished earlier)."""
    bad_formats = [f for f in formats if f not in FORMATS] or ([] if formats else ["(none)"])
    if bad_formats:
        raise PermanentError(f"output formats must be among {', '.join(FORMATS)}, got {bad_formats}")
    formats = tuple(f for f in FORMATS if f in formats)
    root, snap = release.root, release.snapshot
    with log_context(shard=shard_label(snap, shard)):
        tokens = _Tokens(release, shard)
        inputs = {
            "format": FORMAT_VERSION,
            "recipe": recipe.name,
            "recipe_hash": recipe.hash,
            "files": _shard_inputs(release, recipe, shard),
            "allowance": allowance,
            "formats": list(formats),
            "tokenizer": tokens.identity() if recipe.line_rules else None,
        }
        if recipe.dedup == "both":  # the snapshot-wide decision, content-addressed by its input files
            inputs["fuzzy_after_exact"] = fuzzy_key(release)
        record_url = shard_record_url(root, recipe.name, snap, shard)
        if not force and (record := commit.finished(record_url, inputs)) is not None:
            log.info("shard %04d: filtered earlier with recipe %s (%s), skipping", shard, recipe.name, recipe.hash[:16])
            return {**record, "skipped": True}
        out_dir = shard_output_dir(root, recipe.name, snap, shard)
        stats = Stats()
        total = empty_counts(recipe)
        files: dict[str, Any] = {}
        with commit.UnitCommit(record_url, inputs, [out_dir], owned=lambda n: n.endswith((".parquet", ".jsonl.gz"))) as unit:
            for _, name, rows, counts in _run_shard(release, recipe, shard, allowance, stats):
                merge_counts(total, counts)
                files[name] = {"counts": counts, "rows": len(rows)}
                if not rows:
                    continue
                if "parquet" in formats:
                    unit.write_bytes(storage.join(out_dir, f"{name}.parquet"), _parquet_bytes(rows))
                if "jsonl" in formats:
                    _jsonl_gz(unit, storage.join(out_dir, f"{name}.jsonl.gz"), rows)
            record = unit.commit(
                {"snapshot": snap, "shard": shard, "counts": total, "files": files, "stats": stats.to_dict()["counts"]}
            )
        log.info(
            "shard %04d: kept %d of %d documents (%d tokens of %d); dropped %s",
            shard,
            total["kept"],
            total["documents"],
            total["tokens"]["kept"],
            total["tokens"]["input"],
            ", ".join(f"{k}={v}" for k, v in total["dropped"].items()) or "nothing",
        )
        return {**record, "skipped": False}


# ---------------------------------------------------------------- the snapshot


def finalize(
    release: Release,
    recipe: Recipe,
    shards: list[int],
    allowances: dict[int, int | None],
    *,
    formats: tuple[str, ...] = ("parquet",),
    force: bool = False,
) -> dict[str, Any]:
    """Write ``filtered/{recipe}/{snapshot}/manifest.json`` once every shard is filtered under this recipe version."""
    root, snap = release.root, release.snapshot
    formats = tuple(f for f in FORMATS if f in formats)
    total = empty_counts(recipe)
    per_shard: dict[str, Any] = {}
    files: dict[str, Any] = {}
    base = output_dir(root, recipe.name, snap)
    for shard in shards:
        url = shard_record_url(root, recipe.name, snap, shard)
        record = commit.load_record(url)
        if record is None or record.get("inputs", {}).get("recipe_hash") != recipe.hash:
            raise PermanentError(
                f"{snap}: shard {shard:04d} is not filtered under recipe {recipe.name} version {recipe.hash[:16]} "
                f"({url}): filter it first (shards filtered under another recipe version are never reused)"
            )
        if record["inputs"].get("allowance") != allowances.get(shard) or record["inputs"].get("formats") != list(formats):
            raise PermanentError(
                f"{snap}: shard {shard:04d} was filtered with another token allowance or formats: filter it again"
            )
        if commit.finished(url, record["inputs"]) is None:
            raise PermanentError(
                f"{snap}: shard {shard:04d}: an output its record lists is missing or changed ({url}): filter it again"
            )
        merge_counts(total, record["counts"])
        per_shard[f"{shard:04d}"] = {
            "documents": record["counts"]["documents"],
            "kept": record["counts"]["kept"],
            "tokens": record["counts"]["tokens"]["kept"],
        }
        rows_of = {name: f["rows"] for name, f in record["files"].items()}
        for rel, out_url in commit.listed_outputs(url, record).items():
            out_rel = rel_below(base, out_url)
            name = out_url.rsplit("/", 1)[1].split(".", 1)[0]
            files[out_rel] = {**record["outputs"][rel], "rows": rows_of.get(name, 0)}
    manifest = {
        "snapshot": snap,
        "recipe": recipe.to_dict(),
        "recipe_hash": recipe.hash,
        "format": FORMAT_VERSION,
        "formats": list(formats),
        "inputs": {
            "release_manifest": f"listings/{snap}.manifest.json",
            "release_manifest_sha256": release.manifest_sha256,
            "code": release.manifest.get("code"),
        },
        "shards": shards,
        "token_budget": recipe.token_budget,
        "allowances": {f"{s:04d}": a for s, a in sorted(allowances.items()) if a is not None},
        "counts": total,
        "tokens": total["tokens"],
        "by_shard": per_shard,
        "files": dict(sorted(files.items())),
    }
    body = json.dumps(manifest, indent=1, sort_keys=True).encode() + b"\n"
    inputs = {"manifest_sha256": hashlib.sha256(body).hexdigest()}
    record_url = storage.join(record_dir(root, recipe.name, snap), "snapshot.json")
    if not force and (rec := commit.finished(record_url, inputs)) is not None:
        return {**rec, "skipped": True, "manifest": manifest}
    # Shards of an earlier run that this manifest does not list (another selection, or a shard
    # that no longer has selected files) must not stay next to it: their records go first (the
    # shard is then unfinished), then their files, as stale outputs of this unit, before the
    # manifest; a killed finalize leaves no manifest record and is redone.
    listed = {f"{shard:04d}" for shard in shards}
    for name in storage.listdir(record_dir(root, recipe.name, snap)):
        if _SHARD_RECORD.fullmatch(name) and name.removesuffix(".json") not in listed:
            storage.remove(storage.join(record_dir(root, recipe.name, snap), name))
            log.info("%s: removed the record of shard %s, not in this manifest", snap, name.removesuffix(".json"))

    def owned(name: str) -> bool:
        if name == "manifest.json":
            return True
        parts = name.split("/")
        return len(parts) == 2 and _SHARD_DIR.fullmatch(parts[0]) is not None and parts[0] not in listed

    with commit.UnitCommit(record_url, inputs, [base], owned=owned, recursive=True) as unit:
        unit.write_bytes(manifest_url(root, recipe.name, snap), body)
        rec = unit.commit({"snapshot": snap, "recipe": recipe.name, "recipe_hash": recipe.hash})
    _remove_empty_shard_dirs(base, listed)
    log.info(
        "%s: %s manifest %s: kept %d of %d documents, %d tokens",
        snap,
        recipe.name,
        manifest_url(root, recipe.name, snap),
        total["kept"],
        total["documents"],
        total["tokens"]["kept"],
    )
    return {**rec, "skipped": False, "manifest": manifest}


def _remove_empty_shard_dirs(base: str, listed: set[str]) -> None:
    """On a local root, the folders of removed shards (object stores have no folders)."""
    fs, path = storage.fs_and_path(base)
    if not storage._is_local_fs(fs) or not os.path.isdir(path):
        return
    for name in sorted(os.listdir(path)):
        if _SHARD_DIR.fullmatch(name) and name not in listed:
            with contextlib.suppress(OSError):  # not empty (e.g. a live run's temp file): left
                os.rmdir(os.path.join(path, name))


_SHARD_DIR = re.compile(r"[0-9]{4,}")
_SHARD_RECORD = re.compile(r"[0-9]{4,}\.json")


def rel_below(base: str, url: str) -> str:
    prefix = base.rstrip("/") + "/"
    if not url.startswith(prefix):
        raise PermanentError(f"{url} is not below {base}")
    return url[len(prefix) :]


def read_jsonl_gz(data: bytes) -> list[dict[str, Any]]:
    """The rows of a ``.jsonl.gz`` output (tests, tools)."""
    return [json.loads(line) for line in gzip.decompress(data).splitlines()]
