"""The crawl's segment listing (``crawl-data/CC-MAIN-YYYY-WW/wet.paths.gz``) and the shards it splits into.

The plan reads the listing from the source once and commits a copy under the storage root
(:func:`stage_listing`); tasks resolve their segments from that copy (:func:`read_listing`),
checked against its digest.  Shard ``i`` of ``S`` gets ``segments[i*n//S : (i+1)*n//S]``
(:func:`shard_segments`, cc_net's split).

A listing comes from outside and its entries become paths under the storage root, so every entry
must be a WET segment path of the crawl being processed (:data:`SEGMENT_RE`), listed once; any
other entry fails the run naming its line (:func:`parse_listing`).
"""

from __future__ import annotations

import hashlib
import logging
import re
import zlib
from typing import Any

from rpj_tasks.core import layout, storage
from rpj_tasks.core.errors import MissingInputError, UnsafePathError
from rpj_tasks.download.fetch import PermanentDownloadError, RetryPolicy, read_small

log = logging.getLogger("rpj.download")


def listing_source_url(source_base: str, crawl_id: str) -> str:
    return storage.join(source_base, "crawl-data", crawl_id, "wet.paths.gz")


#: A WET segment path as Common Crawl lists them since 2013, e.g.
#: ``crawl-data/CC-MAIN-2023-06/segments/1674764494826.88/wet/CC-MAIN-20230126210844-20230127000844-00000.warc.wet.gz``
#: (2013-2016 names end ``-00000-ip-10-147-4-33.ec2.internal.warc.wet.gz``; early segment ids have no dot).
SEGMENT_RE = re.compile(
    r"crawl-data/(CC-MAIN-[0-9]{4}-[0-9]{2})/segments/[0-9]{1,20}(?:\.[0-9]{1,6})?/wet/[A-Za-z0-9][A-Za-z0-9._-]{0,200}\.warc\.wet\.gz"
)


#: A crawl's listing (about 90,000 paths of ~140 bytes: ~15 MiB) is refused past this size.
MAX_LISTING_BYTES = 256 << 20


def parse_listing(data: bytes, url: str, crawl_id: str) -> list[str]:
    """The segment paths of ``crawl_id``'s ``wet.paths.gz`` (lines stripped, blanks skipped), in
    listing order.  Raises :class:`UnsafePathError` naming the line of the first entry that is not
    one of the crawl's WET segment paths (:data:`SEGMENT_RE`) or is listed twice."""
    try:
        inflater = zlib.decompressobj(31)
        raw = inflater.decompress(data, MAX_LISTING_BYTES + 1)
        if len(raw) > MAX_LISTING_BYTES:
            raise PermanentDownloadError(
                f"{storage.redact(url)}: the listing inflates to more than {MAX_LISTING_BYTES >> 20} MiB "
                "(a real one is about 15 MiB): refused"
            )
        text = raw.decode("utf-8")
    except (OSError, EOFError, zlib.error, UnicodeDecodeError) as exc:
        raise PermanentDownloadError(f"{storage.redact(url)}: not a readable gzip listing ({type(exc).__name__}: {exc})") from exc
    segments: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), 1):
        entry = line.strip()
        if not entry:
            continue
        match = SEGMENT_RE.fullmatch(entry)
        problem = None
        if match is None:
            problem = f"is not a WET segment path (crawl-data/{crawl_id}/segments/<id>/wet/<name>.warc.wet.gz)"
        elif match.group(1) != crawl_id:
            problem = f"belongs to {match.group(1)}, not {crawl_id}"
        elif entry in seen:
            problem = "is listed twice"
        if problem:
            raise UnsafePathError(f"{storage.redact(url)}: line {number}: {entry[:300]!r} {problem}; the listing is refused")
        seen.add(entry)
        segments.append(entry)
    return segments


def list_segments(source_base: str, crawl_id: str, *, retry: RetryPolicy = RetryPolicy()) -> list[str]:
    """The WET segment paths of ``crawl_id``, in ``wet.paths.gz`` order (lines stripped, blanks skipped)."""
    url = listing_source_url(source_base, crawl_id)
    return parse_listing(read_small(url, retry), url, crawl_id)


def stage_listing(source_base: str, crawl_id: str, storage_root: str, *, retry: RetryPolicy = RetryPolicy()) -> dict[str, Any]:
    """Fetch the crawl's listing once and commit a copy under the storage root.

    Returns the descriptor ``{"url", "crawl", "sha256", "segments"}`` that a plan hands to its tasks
    instead of the segment paths; :func:`read_listing` resolves it (and checks the digest).
    """
    src = listing_source_url(source_base, crawl_id)
    data = read_small(src, retry)
    segments = parse_listing(data, src, crawl_id)
    if not segments:
        raise PermanentDownloadError(f"{storage.redact(src)}: the listing has no segments")
    url = layout.listing_url(storage_root, crawl_id)
    digest = hashlib.sha256(data).hexdigest()
    if not storage.exists(url) or hashlib.sha256(storage.read_bytes(url)).hexdigest() != digest:
        storage.write_bytes(url, data)
    log.info("%s: %d segments, staged at %s", storage.redact(src), len(segments), url)
    _LISTINGS[(url, digest)] = segments
    return {"url": url, "crawl": crawl_id, "sha256": digest, "segments": len(segments)}


_LISTINGS: dict[tuple[str, str], list[str]] = {}


def read_listing(listing: dict[str, Any]) -> list[str]:
    """The segment paths of a staged listing descriptor (cached per process, digest checked)."""
    key = (listing["url"], listing["sha256"])
    if key not in _LISTINGS:
        try:
            data = storage.read_bytes(listing["url"])
        except FileNotFoundError:
            raise MissingInputError(f"staged listing {listing['url']} is missing: rerun the plan") from None
        if hashlib.sha256(data).hexdigest() != listing["sha256"]:
            raise MissingInputError(f"staged listing {listing['url']} changed since the plan: rerun the plan")
        _LISTINGS.clear()  # one crawl per process at a time
        _LISTINGS[key] = parse_listing(data, listing["url"], listing["crawl"])
    return _LISTINGS[key]


def shard_segments(segments: list[str], shard: int, num_shards: int) -> list[str]:
    """Shard ``shard`` of ``num_shards`` gets ``segments[i*n//S : (i+1)*n//S]`` (cc_net's split)."""
    if not 0 <= shard < num_shards:
        raise ValueError(f"shard {shard} outside [0, {num_shards})")
    n = len(segments)
    return segments[shard * n // num_shards : (shard + 1) * n // num_shards]
