"""Where everything lives under a storage root (RPv2 release layout plus rpj's own working areas).

Release (docs/spec/rpv2_format.md §1)::

    documents/{snapshot}/{shard:04d}/{lang}_{bucket}.json.gz
    quality_signals/{snapshot}/{shard:04d}/{lang}_{bucket}.signals.json.gz
    minhash/{snapshot}/{shard:04d}/{lang}_{bucket}.minhash.parquet
    duplicates/{snapshot}/{shard:04d}/{lang}_{bucket}.duplicates.parquet
    listings/{lang}-{snapshot}-{partition}.txt

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
"""

from __future__ import annotations

from rpj_tasks.core.config import validate_snapshot
from rpj_tasks.core.storage import join

BUCKETS = ("head", "middle", "tail")


def shard_dir(root: str, component: str, snapshot: str, shard: int) -> str:
    return join(root, component, validate_snapshot(snapshot), f"{shard:04d}")


def base_tag(snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return f"{validate_snapshot(snapshot)}/{shard:04d}/{lang}_{bucket}"


def shard_key(snapshot: str, shard: int, lang: str, bucket: str) -> str:
    """The id prefix of every document of a file, e.g. ``2023-06/0000/en_head.json.gz``."""
    return base_tag(snapshot, shard, lang, bucket) + ".json.gz"


def documents_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return join(root, "documents", shard_key(snapshot, shard, lang, bucket))


def signals_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return join(root, "quality_signals", base_tag(snapshot, shard, lang, bucket) + ".signals.json.gz")


def minhash_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    return join(root, "minhash", base_tag(snapshot, shard, lang, bucket) + ".minhash.parquet")


def listing_url(root: str, crawl: str) -> str:
    """The staged copy of a crawl's ``wet.paths.gz`` (read by every task of a run)."""
    return join(root, "staging", "listings", crawl, "wet.paths.gz")


def staging_wet_root(root: str) -> str:
    return join(root, "staging", "wet")


def staged_segment_url(root: str, segment: str) -> str:
    return join(staging_wet_root(root), segment)


def hashes_url(root: str, snapshot: str, shard: int) -> str:
    return join(root, "staging", "hashes", validate_snapshot(snapshot), f"{shard:04d}.bin")


def ccnet_stats_dir(root: str, snapshot: str) -> str:
    """The CCNet stats records of a snapshot: one ``{shard:04d}.json`` per finished shard."""
    return join(root, "stats", "ccnet", validate_snapshot(snapshot))


def ccnet_stats_url(root: str, snapshot: str, shard: int) -> str:
    return join(ccnet_stats_dir(root, snapshot), f"{shard:04d}.json")


def download_record_url(root: str, snapshot: str, shard: int) -> str:
    """A shard's download record: its staged segments with sha256 and size (commit protocol)."""
    return join(root, "stats", "download", validate_snapshot(snapshot), f"{shard:04d}.json")


def hashes_record_url(root: str, snapshot: str, shard: int) -> str:
    """A shard's hashes record: the paragraph-hash file with its inputs (commit protocol)."""
    return join(root, "stats", "hashes", validate_snapshot(snapshot), f"{shard:04d}.json")


def annotate_stats_url(root: str, snapshot: str, shard: int) -> str:
    return join(root, "stats", "annotate", validate_snapshot(snapshot), f"{shard:04d}.json")


def models_url(root: str, version: str) -> str:
    return join(root, "artifacts", "ccnet", version)


def signal_artifacts_url(root: str, version: str) -> str:
    return join(root, "artifacts", "signals", version)
