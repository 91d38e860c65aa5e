"""Where everything lives under a storage root (RPv2 release layout plus rpj's own working areas).

Release (docs/spec/rpv2_format.md §1)::

    documents/{snapshot}/{shard:04d}/{lang}_{bucket}.json.gz
    quality_signals/{snapshot}/{shard:04d}/{lang}_{bucket}.signals.json.gz
    minhash/{snapshot}/{shard:04d}/{lang}_{bucket}.minhash.parquet
    duplicates/{snapshot}/{shard:04d}/{lang}_{bucket}.duplicates.parquet
    listings/{lang}-{snapshot}-{partition}.txt

File names, suffixes, languages and buckets are defined here once (the fields and columns inside
the files are in :mod:`rpj_tasks.core.schema`).

rpj working areas (not part of a release)::

    staging/listings/{crawl}/wet.paths.gz               the crawl's segment listing, staged by the plan
    staging/wet/<segment path as in wet.paths.gz>      downloaded WET segments
    staging/hashes/{snapshot}/{shard:04d}.bin            CCNet paragraph hashes of a shard
    stats/download/{snapshot}/{shard:04d}.json           staged segments of a shard (sha256, size); commit record
    stats/hashes/{snapshot}/{shard:04d}.json             paragraph hashes of a shard; commit record
    stats/ccnet/{snapshot}/{shard:04d}.json              per-shard stats; written last = commit marker
    artifacts/ccnet/{version}/                           SentencePiece + KenLM models, cutoff.csv
    artifacts/signals/{version}/                         word lists, UT1, classifiers, DSIR counts
    stats/annotate/{snapshot}/{shard:04d}.json           per-shard annotation stats; commit marker
    staging/dedup/exact/...                              exact-dedup state (rpj_tasks/dedup/exact.py)
    clusters/{snapshot}/{shard:04d}/{lang}_{bucket}.clusters.parquet   fuzzy-dedup clusters (rpv2_format.md §7)
    staging/lsh/{scope}/sim{threshold}/{key}/            LSH band partitions and edges of one input set (intermediate)
    stats/clusters/{scope}/sim{threshold}.json           the clusters of a scope; commit record
                                                         (stats/{component}/… for another component)
    tokens/{snapshot}/{shard:04d}/{lang}_{bucket}.tokens.parquet   tokens per document (rpj_tasks/tokens)
    stats/tokens/{snapshot}/{shard:04d}.json             per-shard token totals; commit record
    stats/validate/{snapshot}/{shard:04d}.json           validation result of a shard (``snapshot.json``:
                                                         the snapshot-level check); commit record
    validation/{snapshot}/{shard:04d}/data_docs/         its GX Data Docs (rpj_tasks/validate/stage.py)
    filtered/{recipe}/{snapshot}/{shard:04d}/{lang}_{bucket}.parquet   a recipe's training shards, and
    filtered/{recipe}/{snapshot}/manifest.json           its manifest (rpj_tasks/filter/stage.py names them)
    stats/filter/{recipe}/{snapshot}/{shard:04d}.json    a recipe's shard records (``snapshot.json``: the manifest's)
    reports/{snapshot}/index.html, report.json           the snapshot report (rpj_tasks/report/stage.py)
    reports/index.html, index.json                       every published snapshot; records in stats/report/
"""

from __future__ import annotations

import re

from rpj_tasks.core.errors import ConfigError
from rpj_tasks.core.storage import join, join_below

SNAPSHOT_RE = re.compile(r"([0-9]{4})-([0-9]{2})")


def validate_snapshot(snapshot: str) -> str:
    """Return ``snapshot`` if it is an RPv2 snapshot id ``YYYY-WW`` (week 01-53), else raise: it
    becomes a path component, so the match is full and ASCII-only."""
    m = SNAPSHOT_RE.fullmatch(snapshot) if isinstance(snapshot, str) else None
    if not m:
        raise ConfigError(f"invalid snapshot id {snapshot!r}: expected YYYY-WW, e.g. 2023-06")
    if not 1 <= int(m.group(2)) <= 53:
        raise ConfigError(f"invalid snapshot id {snapshot!r}: week {m.group(2)} does not exist (ISO weeks are 01-53)")
    return snapshot


#: The five RPv2 languages (docs/spec/rpv2_format.md §1): the default of every language setting
#: (registry, DAG Params, CLI) and the languages that have word lists (quality_signals.md §3.2).
LANGUAGES: tuple[str, ...] = ("en", "de", "fr", "es", "it")
#: CCNet perplexity buckets, in order (rpv2_format.md §9.7).
BUCKETS: tuple[str, ...] = ("head", "middle", "tail")
#: The buckets the release annotates (signals, MinHash, duplicates; rpv2_format.md §1); tail too
#: with ``annotate_tail``.
ANNOTATED_BUCKETS: tuple[str, ...] = ("head", "middle")

# Every component file is ``{component}/{base_tag}{suffix}`` (rpv2_format.md §1).
DOCUMENTS_SUFFIX = ".json.gz"
SIGNALS_SUFFIX = ".signals.json.gz"
MINHASH_SUFFIX = ".minhash.parquet"
DUPLICATES_SUFFIX = ".duplicates.parquet"
#: Fuzzy-dedup output of ``run_lsh.py`` (rpv2_format.md §7; users run it, not a release component).
CLUSTERS_SUFFIX = ".clusters.parquet"
#: Tokens per document (rpj's own component, :mod:`rpj_tasks.tokens`; not in an RPv2 release).
TOKENS_SUFFIX = ".tokens.parquet"
#: A documents file name in a shard folder, ``{lang}_{bucket}.json.gz``; groups: language, bucket.
DOCUMENTS_FILE = re.compile(r"^([a-z]{2,3})_(" + "|".join(BUCKETS) + ")" + re.escape(DOCUMENTS_SUFFIX) + "$")


def file_name(lang: str, bucket: str, suffix: str = DOCUMENTS_SUFFIX) -> str:
    """A component's file name in a shard folder, e.g. ``en_head.json.gz`` or ``en_head.minhash.parquet``."""
    return f"{lang}_{bucket}{suffix}"


def hash_group(shard: int, size: int, num_shards: int) -> range:
    """The shards whose paragraph hashes are merged for ``shard`` (cc_net ``hash_in_mem``, rpv2_format.md §9.4).

    Consecutive blocks ``[g*size, (g+1)*size)`` with ``g = shard // size``, the last one cut at
    ``num_shards``; a work unit of the plan is always made of whole groups.
    """
    start = (shard // size) * size
    return range(start, min(start + size, num_shards))


def shard_dir(root: str, component: str, snapshot: str, shard: int) -> str:
    return join(root, component, validate_snapshot(snapshot), f"{shard:04d}")


def base_tag(snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return f"{validate_snapshot(snapshot)}/{shard:04d}/{lang}_{bucket}"


def shard_key(snapshot: str, shard: int, lang: str, bucket: str) -> str:
    """The id prefix of every document of a file, e.g. ``2023-06/0000/en_head.json.gz``."""
    return base_tag(snapshot, shard, lang, bucket) + DOCUMENTS_SUFFIX


def documents_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return join(root, "documents", shard_key(snapshot, shard, lang, bucket))


def signals_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return join(root, "quality_signals", base_tag(snapshot, shard, lang, bucket) + SIGNALS_SUFFIX)


def minhash_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return join(root, "minhash", base_tag(snapshot, shard, lang, bucket) + MINHASH_SUFFIX)


def duplicates_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return join(root, "duplicates", base_tag(snapshot, shard, lang, bucket) + DUPLICATES_SUFFIX)


def tokens_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    """A documents file's token counts, e.g. ``tokens/2023-06/0000/en_head.tokens.parquet``."""
    return join(root, "tokens", base_tag(snapshot, shard, lang, bucket) + TOKENS_SUFFIX)


def tokens_stats_dir(root: str, snapshot: str) -> str:
    """The token-count records of a snapshot: one ``{shard:04d}.json`` per finished shard."""
    return join(root, "stats", "tokens", validate_snapshot(snapshot))


def tokens_stats_url(root: str, snapshot: str, shard: int) -> str:
    return join(tokens_stats_dir(root, snapshot), f"{shard:04d}.json")


def exact_dedup_url(root: str, *parts: str) -> str:
    """The exact-dedup state (digest indexes, per-partition results, their records) below
    ``staging/dedup/exact``; :mod:`rpj_tasks.dedup.exact` names what is inside."""
    return join(root, "staging", "dedup", "exact", *parts)


def duplicates_record_url(root: str, snapshot: str) -> str:
    """The commit record of a snapshot's ``duplicates/`` files (exact dedup, step 3)."""
    return exact_dedup_url(root, "duplicates", validate_snapshot(snapshot) + ".json")


def listing_url(root: str, crawl: str) -> str:
    """The staged copy of a crawl's ``wet.paths.gz`` (read by every task of a run)."""
    return join(root, "staging", "listings", crawl, "wet.paths.gz")


def staging_wet_root(root: str) -> str:
    return join(root, "staging", "wet")


def staged_segment_url(root: str, segment: str) -> str:
    """Where a listed segment is staged; refuses a segment path that would leave ``staging/wet``."""
    return join_below(staging_wet_root(root), segment, "segment path")


def hashes_url(root: str, snapshot: str, shard: int) -> str:
    return join(root, "staging", "hashes", validate_snapshot(snapshot), f"{shard:04d}.bin")


def ccnet_stats_dir(root: str, snapshot: str) -> str:
    """The CCNet stats records of a snapshot: one ``{shard:04d}.json`` per finished shard."""
    return join(root, "stats", "ccnet", validate_snapshot(snapshot))


def ccnet_stats_url(root: str, snapshot: str, shard: int) -> str:
    return join(ccnet_stats_dir(root, snapshot), f"{shard:04d}.json")


def download_stats_dir(root: str, snapshot: str) -> str:
    """The download records of a snapshot: one ``{shard:04d}.json`` per staged shard."""
    return join(root, "stats", "download", validate_snapshot(snapshot))


def download_record_url(root: str, snapshot: str, shard: int) -> str:
    """A shard's download record: its staged segments with their integrity records (commit protocol)."""
    return join(download_stats_dir(root, snapshot), f"{shard:04d}.json")


def hashes_record_url(root: str, snapshot: str, shard: int) -> str:
    """A shard's hashes record: the paragraph-hash file with its inputs (commit protocol)."""
    return join(root, "stats", "hashes", validate_snapshot(snapshot), f"{shard:04d}.json")


def annotate_stats_dir(root: str, snapshot: str) -> str:
    """The annotation records of a snapshot: one ``{shard:04d}.json`` per finished shard."""
    return join(root, "stats", "annotate", validate_snapshot(snapshot))


def annotate_stats_url(root: str, snapshot: str, shard: int) -> str:
    return join(annotate_stats_dir(root, snapshot), f"{shard:04d}.json")


#: A models or signal-artifacts version: one path component of letters, digits, ``.``, ``_``, ``-``.
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_version(version: str, what: str = "version") -> str:
    """``version`` if it is a valid version name (full ASCII match of :data:`VERSION_RE`), else ConfigError."""
    if not isinstance(version, str) or not VERSION_RE.fullmatch(version):
        raise ConfigError(
            f"invalid {what} {version!r}: expected 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return version


def models_url(root: str, version: str) -> str:
    return join(root, "artifacts", "ccnet", validate_version(version, "models version"))


def signal_artifacts_url(root: str, version: str) -> str:
    return join(root, "artifacts", "signals", validate_version(version, "signal artifacts version"))


def lsh_scope(snapshots: list[str] | tuple[str, ...]) -> str:
    """The name of a set of snapshots in LSH paths: the snapshot, or the sorted ids joined by ``+``."""
    ids = sorted({validate_snapshot(s) for s in snapshots})
    if not ids:
        raise ConfigError("LSH needs at least one snapshot")
    return "+".join(ids)


def clusters_url(root: str, snapshot: str, shard: int, lang: str, bucket: str, component: str = "clusters") -> str:
    """A file's fuzzy-dedup clusters (rpv2_format.md §7), e.g. ``clusters/2023-06/0000/en_head.clusters.parquet``."""
    return join(root, component, base_tag(snapshot, shard, lang, bucket) + CLUSTERS_SUFFIX)


def clusters_record_url(root: str, snapshots: list[str] | tuple[str, ...], threshold: float, component: str = "clusters") -> str:
    """The commit record of the clusters of a set of snapshots at one threshold, written to ``component``."""
    return join(root, "stats", component, lsh_scope(snapshots), f"sim{float(threshold)}.json")


def lsh_work_url(root: str, snapshots: list[str] | tuple[str, ...], threshold: float) -> str:
    """LSH intermediates (band partitions, edges) of a scope and threshold: one work directory per
    input set and partition count below it (``rpj_tasks.dedup.lsh.work_key``)."""
    return join(root, "staging", "lsh", lsh_scope(snapshots), f"sim{float(threshold)}")
