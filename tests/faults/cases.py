"""The fault matrix: each way a run can go wrong, how the tests cause it, what rpj must do and where
it is counted.

``tests/faults/test_matrix.py`` runs every case with the real ``rpj ccnet`` over the 4-shard
sample snapshot and checks, per case: the exit status and one clear message, nothing partial
visible, the other shards finished, the counters in the stats records, and byte-identical outputs
once the input is repaired and the run repeated.  ``docs/FAULTS.md`` is this list as a table;
regenerate it after any change here with::

    .venv/bin/python -m tests.faults.cases > docs/FAULTS.md

Cases whose behaviour is still being built are *pending*: their checks that fail today are
collected, and the test is an ``xfail(strict=True)`` that flips to a failure (remove ``pending``)
as soon as every check passes.  Counter and setting names that pending work defines are kept in
one block below, so that the work can rename them in one place.

This module is plain data (no pytest import; from rpj only the WET writer's helper): ``inject``, ``repair`` and
``verify`` get the test's harness (``tests/faults/fault_harness.py``) as their argument.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rpj_tasks.download.wet import corrupt_gzip_member

SNAPSHOT = "2000-01"
SHARDS = (0, 1, 2, 3)
SHARD = 1  # the shard whose input is damaged (its hash group is 0-1; shards 2-3 are the other group)
GROUPS = ("input damage", "source errors", "process faults", "security", "limits")
CCNET = ("ccnet", "--snapshot", SNAPSHOT)

# --------------------------------------------------------------------------- names the cases use
DAMAGED_SOURCE = "download.damaged_source"  # download record: a staged file whose gzip stream is damaged at the source
REFETCHED_STAGED = "download.refetched_staged"  # download record: a staged file that no longer matched its integrity record
TOO_LARGE = "wet.too_large"  # ccnet record: a WARC record over max_record_bytes, dropped
TOO_LARGE_SETTING = {"max_record_bytes": 100_000}  # registry entry that sets the limit for the case
TOO_LARGE_BYTES = 150_000  # size of the oversized record's block
EVIL_ENTRY = "../../../evil.warc.wet.gz"  # a listing entry that climbs out of staging/wet/ and the storage root
SECRET = "s3cr@t-t0ken"  # the password in the credentials case's source_base (an unencoded "@" in it)

# --------------------------------------------------------------------------- the checks
# Every case runs all of them; a case's ``pending`` names those expected to fail today.
EXIT = "exit status"
MESSAGE = "one clear message"
PARTIAL = "nothing partial visible"
OTHERS = "other shards finished"
COUNTED = "counted"
IDENTICAL = "outputs identical without repair"
REPAIRED = "identical after repair"
# case-specific checks (``verify``)
CONTAINED = "nothing written outside the storage root"
SECRET_HIDDEN = "credentials never shown"
NOT_RETRIED = "not retried"
RETRIED = "retried"
REFETCHED = "staged copy re-fetched"
UNTOUCHED = "nothing written"
SPOOLS_GONE = "no spool file left"
KILLED_MID_SHARD = "killed mid-shard"
CHECKS = (
    *(EXIT, MESSAGE, PARTIAL, OTHERS, COUNTED, IDENTICAL, REPAIRED),
    *(CONTAINED, SECRET_HIDDEN, NOT_RETRIED, RETRIED, REFETCHED, UNTOUCHED, SPOOLS_GONE, KILLED_MID_SHARD),
)

KILLED = -9  # the exit status of a process killed by SIGKILL (subprocess's -signal)


@dataclass(frozen=True)
class Count:
    """A counter in a shard's stats record (``stats/{record}/2000-01/{shard:04d}.json``, ``counts``):
    equal to ``value``, or with ``delta`` to the clean run's value plus ``value``."""

    record: str
    shard: int
    name: str
    value: int
    delta: bool = False

    def text(self) -> str:
        where = f"`stats/{self.record}/…/{self.shard:04d}.json`"
        if self.delta:
            return f"`{self.name}` {'+' if self.value >= 0 else '−'}{abs(self.value)} vs. the clean run ({where})"
        return f"`{self.name}` = {self.value} in {where}"


@dataclass(frozen=True)
class Pending:
    """Work that will make ``checks`` pass (all checks if None); until then the case is an xfail."""

    reason: str
    checks: frozenset[str] | None = None


Hook = Callable[[Any], None]
Verify = Callable[[Any, Callable[[str, bool, str], None]], None]


@dataclass(frozen=True)
class Case:
    id: str
    group: str
    description: str
    injection: str  # how it is caused (the table's words)
    outcome: str  # what rpj does (the table's words)
    counted: str = ""  # where it shows besides the counters below (log, exit status, summary)
    inject: Hook | None = None  # damage the mirror, configure the server, set RPJ_FAULT ... (before the run)
    source: str = "file"  # "file" (a file:// mirror), "http" (MirrorServer), "s3" (file mirror, storage root on S3)
    args: tuple[str, ...] = CCNET
    concurrent: int = 1  # how many copies of the run start at once
    fast_retry: bool = False  # download retry delays of milliseconds (the cases that retry until they give up)
    exit: tuple[int, ...] = (0,)  # accepted exit statuses (KILLED for SIGKILL)
    message: tuple[str, ...] = ()  # substrings of one stderr line: the `rpj:` line of a failure, else a log line
    failed: tuple[int, ...] = ()  # shards that must have no CCNet record after the faulty run
    finished: tuple[int, ...] = SHARDS  # shards whose CCNet record must exist (and list complete outputs)
    counts: tuple[Count, ...] = ()
    summary: bool = False  # the `wet.skipped.*` counters also show in `rpj summary`'s bad records
    killed: bool = False  # temp files may stay until the next run (a killed writer cannot remove them)
    identical: bool = False  # the faulty run's outputs already equal the clean run's
    repair: Hook | None = None  # undo the damage before the rerun; None: no rerun
    rerun: tuple[str, ...] = ()  # extra arguments of the rerun (``--force`` when damaged input was staged)
    verify: Verify | None = None  # case-specific checks after the faulty run
    verify_after: Verify | None = None  # case-specific checks after the rerun
    pending: Pending | None = None
    marks: tuple[str, ...] = ()  # pytest markers (``s3``)
    registry: dict[str, Any] = field(default_factory=dict)  # extra registry settings for the faulty run


# --------------------------------------------------------------------------- damaging WET files


def gzip_members(data: bytes) -> list[bytes]:
    """The gzip members of a file, as stored (the sample has one WARC record per member)."""
    out, pos = [], 0
    while pos < len(data):
        inflater = zlib.decompressobj(31)
        inflater.decompress(data[pos:])
        end = len(data) - len(inflater.unused_data)
        out.append(data[pos:end])
        pos = end
    return out


def _split(record: bytes) -> tuple[list[bytes], bytes]:
    head, _, rest = record.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), rest.removesuffix(b"\r\n\r\n")


def _join(lines: list[bytes], block: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + block + b"\r\n\r\n"


def _with_block(record: bytes, block: bytes) -> bytes:
    lines, _ = _split(record)
    lines = [b"Content-Length: %d" % len(block) if ln.startswith(b"Content-Length:") else ln for ln in lines]
    return _join(lines, block)


def target_member(members: list[bytes]) -> int:
    """The member damaged by a case: the conversion record with the largest block (a document that is
    kept in the clean run, so its loss shows in ``wet.docs``)."""
    sizes = [(len(gzip.decompress(m)), i) for i, m in enumerate(members) if b"WARC-Type: conversion" in gzip.decompress(m)]
    return max(sizes)[1]


def edit_member(data: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """``data`` with the target member replaced by ``edit(member)``."""
    members = gzip_members(data)
    k = target_member(members)
    members[k] = edit(members[k])
    return b"".join(members)


def edit_record(data: bytes, edit: Callable[[bytes], bytes]) -> bytes:
    """``data`` with the target member's WARC record replaced by ``edit(record)`` (re-gzipped)."""
    return edit_member(data, lambda m: gzip.compress(edit(gzip.decompress(m)), mtime=0))


def bad_crc(member: bytes) -> bytes:
    """The CRC-32 of the trailer inverted: every byte inflates, the check at the end fails."""
    return member[:-8] + bytes(b ^ 0xFF for b in member[-8:-4]) + member[-4:]


def invalid_utf8(record: bytes) -> bytes:
    """Two bytes that are not UTF-8 after the block's first line (Content-Length follows)."""
    _, block = _split(record)
    first, nl, rest = block.partition(b"\n")
    return _with_block(record, first + nl + b"Gr\xf6\xdfe " + rest)


def drop_content_length(record: bytes) -> bytes:
    lines, block = _split(record)
    return _join([ln for ln in lines if not ln.startswith(b"Content-Length:")], block)


def reverse_headers(data: bytes) -> bytes:
    """Every record's header lines in reverse order (the ``WARC/1.0`` line stays first)."""
    out = []
    for member in gzip_members(data):
        lines, block = _split(gzip.decompress(member))
        out.append(gzip.compress(_join([lines[0], *reversed(lines[1:])], block), mtime=0))
    return b"".join(out)


def oversized(record: bytes) -> bytes:
    """The block grown past ``TOO_LARGE_BYTES`` with more lines of its own text."""
    _, block = _split(record)
    return _with_block(record, (block * (TOO_LARGE_BYTES // len(block) + 1))[:TOO_LARGE_BYTES])


def flip_middle(data: bytes) -> bytes:
    """8 bytes in the middle inverted; same size."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid : mid + 8]) + data[mid + 8 :]


# --------------------------------------------------------------------------- injections


def _damage(edit: Callable[[bytes], bytes]) -> Hook:
    def inject(h: Any) -> None:
        h.segment_file(SHARD).write_bytes(edit(h.segment_file(SHARD).read_bytes()))

    return inject


def _restore(h: Any) -> None:
    h.restore_mirror()


def _rerun(h: Any) -> None:
    """Nothing to repair: the fault was the process's, the rerun must finish the work."""


def _mine_output_fault(action: str) -> Hook:
    def inject(h: Any) -> None:
        # commit points in `rpj ccnet`: 4 staged segments, 4 hash files, then the documents of shard 0, then shard 1
        h.fault = f"output:{len(SHARDS) * 2 + h.ref.files(0) + 2}:{action}"

    return inject


def _disk_full(h: Any) -> None:
    # records: 4 download, 4 hashes, mine of shard 0, then mine of shard 1 (the 10th)
    h.fault = f"record:{len(SHARDS) * 2 + 2}:enospc"


def _http_not_found(h: Any) -> None:
    h.server.not_found.add(h.segment_path(SHARD))


def _http_not_found_repair(h: Any) -> None:
    h.server.not_found.clear()


def _http_503_once(h: Any) -> None:
    h.server.failures[h.segment_path(SHARD)] = [503]


def _truncate_every_transfer(h: Any) -> None:
    h.truncate_always(h.segment_path(SHARD))


def _truncate_repair(h: Any) -> None:
    h.truncate_always(None)


def _retried(h: Any, check: Callable[[str, bool, str], None]) -> None:
    hits = h.server.hits[h.segment_path(SHARD)]
    check(RETRIED, hits > 1, f"{hits} request(s) for the truncated segment")


def _not_retried(h: Any, check: Callable[[str, bool, str], None]) -> None:
    hits = h.server.hits[h.segment_path(SHARD)]
    check(NOT_RETRIED, hits == 1, f"{hits} requests for shard {SHARD}'s segment")


def _empty_segment(h: Any) -> None:
    h.segment_file(SHARD).write_bytes(b"")


def _staged_corrupt(h: Any) -> None:
    """A clean run, then the staged copy of the shard's segment damaged in place (same size)."""
    h.clean_run()
    staged = h.staged_file(SHARD)
    staged.write_bytes(flip_middle(staged.read_bytes()))


def _refetched(h: Any, check: Callable[[str, bool, str], None]) -> None:
    same = h.staged_file(SHARD).read_bytes() == h.segment_file(SHARD).read_bytes()
    check(REFETCHED, same, "the damaged staged copy is still there")


def _evil_listing(h: Any) -> None:
    """Shard 1's listing entry replaced by EVIL_ENTRY; the server has a valid WET file where the
    entry leads (HTTP clients resolve the dots: ``/evil.warc.wet.gz``)."""
    (h.mirror / EVIL_ENTRY.rsplit("/", 1)[1]).write_bytes(h.segment_file(SHARD).read_bytes())
    h.write_listing([EVIL_ENTRY if i == SHARD else seg for i, seg in enumerate(h.ref.segments)])


def _symlinked_segment(h: Any) -> None:
    """Shard 1's segment in the mirror replaced by a symbolic link to a file outside the mirror."""
    outside = h.dir / "private.warc.wet.gz"
    outside.write_bytes(h.segment_file(SHARD).read_bytes())
    h.segment_file(SHARD).unlink()
    h.segment_file(SHARD).symlink_to(outside)


def _contained(h: Any, check: Callable[[str, bool, str], None]) -> None:
    name = EVIL_ENTRY.rsplit("/", 1)[1]
    escaped = [p for p in h.dir.rglob(name) if h.mirror not in p.parents]
    check(CONTAINED, not escaped, f"written outside the mirror: {escaped}")


def _credentials(h: Any) -> None:
    h.source = h.server.url.replace("http://", f"http://rpj:{SECRET}@")
    h.server.failures[h.segment_path(SHARD)] = [503]  # a retry warning, which names the URL


def _secret_hidden(h: Any, check: Callable[[str, bool, str], None]) -> None:
    for where, text in h.everything_written():
        check(SECRET_HIDDEN, SECRET not in text, f"the password appears in {where}")


def _untouched(h: Any, check: Callable[[str, bool, str], None]) -> None:
    written = h.written_outside_models()
    check(UNTOUCHED, not written, f"the rejected run wrote {written[:5]}")


def _too_large(h: Any) -> None:
    _damage(lambda d: edit_record(d, oversized))(h)


def _killed_mid_shard(h: Any, check: Callable[[str, bool, str], None]) -> None:
    """The kill came after 2 of shard 1's documents files were committed, before the others."""
    committed = [k for k in h.root.keys(f"documents/{SNAPSHOT}/{SHARD:04d}/") if not k.rsplit("/", 1)[1].startswith(".")]
    check(KILLED_MID_SHARD, len(committed) == 2 < h.ref.files(SHARD), f"shard {SHARD} has {committed} committed")


def _spools_gone(h: Any, check: Callable[[str, bool, str], None]) -> None:
    spools = h.spool_files()
    check(SPOOLS_GONE, not spools, f"spool files left: {spools}")


# --------------------------------------------------------------------------- the matrix

KEPT = Count("ccnet", SHARD, "wet.docs", 0, delta=True)
LOST = Count("ccnet", SHARD, "wet.docs", -1, delta=True)

CASES: tuple[Case, ...] = (
    # ---- input damage: bad bytes in a WET file; the record is counted and skipped, the run goes on
    Case(
        "corrupt-gzip-member",
        "input damage",
        "a gzip member whose deflate data is corrupt",
        "8 bytes of one member's deflate stream inverted in the mirror's WET file",
        "member skipped, reading resumes at the next member, the other records are kept",
        "warning with file and byte offset; `rpj summary` bad records",
        inject=_damage(lambda d: edit_member(d, corrupt_gzip_member)),
        message=("corrupt gzip member", "{segment}", "byte offset"),
        counts=(Count("download", SHARD, DAMAGED_SOURCE, 1), Count("ccnet", SHARD, "wet.skipped.corrupt_gzip", 1), LOST),
        summary=True,
        repair=_restore,
        rerun=("--force",),
    ),
    Case(
        "bad-crc",
        "input damage",
        "a gzip member whose CRC-32 does not match",
        "the trailer's CRC-32 of one member inverted",
        "member skipped (its output is held until the CRC checks), the other records are kept",
        "warning with file and byte offset; `rpj summary` bad records",
        inject=_damage(lambda d: edit_member(d, bad_crc)),
        message=("incorrect data check", "{segment}", "byte offset"),
        counts=(Count("download", SHARD, DAMAGED_SOURCE, 1), Count("ccnet", SHARD, "wet.skipped.corrupt_gzip", 1), LOST),
        summary=True,
        repair=_restore,
        rerun=("--force",),
    ),
    Case(
        "invalid-utf8",
        "input damage",
        "a record whose text is not UTF-8",
        "two Latin-1 bytes inserted in one record's block (Content-Length adjusted)",
        "decoded with U+FFFD and kept",
        "warning with file and byte offset",
        inject=_damage(lambda d: edit_record(d, invalid_utf8)),
        message=("invalid UTF-8 replaced", "{segment}", "byte offset"),
        counts=(Count("ccnet", SHARD, "wet.invalid_utf8", 1), KEPT),
        repair=_restore,
        rerun=("--force",),
    ),
    Case(
        "missing-content-length",
        "input damage",
        "a record without Content-Length",
        "the `Content-Length` header line removed from one record",
        "record skipped, reading resumes at the next `WARC/1.0` line",
        "warning with file and byte offset; `rpj summary` bad records",
        inject=_damage(lambda d: edit_record(d, drop_content_length)),
        message=("without a valid Content-Length", "{segment}", "byte offset"),
        counts=(Count("ccnet", SHARD, "wet.skipped.missing_header", 1), LOST),
        summary=True,
        repair=_restore,
        rerun=("--force",),
    ),
    Case(
        "reordered-headers",
        "input damage",
        "WARC headers in another order",
        "every record's header lines reversed in the mirror's WET file",
        "nothing changes: headers are read by name; outputs identical",
        "not counted (no damage)",
        inject=_damage(reverse_headers),
        counts=(Count("ccnet", SHARD, "wet.records", 0, delta=True), KEPT),
        identical=True,
    ),
    Case(
        "staged-corrupt",
        "input damage",
        "a staged segment damaged after its download",
        "a clean run, then 8 bytes inverted in the staged copy under `staging/wet/` (same size)",
        "the rerun sees the digest differ from the download record and fetches the segment again",
        "",
        inject=_staged_corrupt,
        counts=(Count("download", SHARD, REFETCHED_STAGED, 1),),
        identical=True,
        verify=_refetched,
    ),
    # ---- source errors: what the source answers
    Case(
        "http-404",
        "source errors",
        "a segment the source does not have",
        "the HTTP server answers 404 for shard 1's segment",
        "not retried; shard 1 fails naming the file, the other hash group (shards 2-3) finishes",
        "log + exit status",
        inject=_http_not_found,
        source="http",
        exit=(2,),
        message=("rpj: download shard 0001 failed", "{segment}", "404"),
        failed=(SHARD,),
        finished=(2, 3),
        verify=_not_retried,
        repair=_http_not_found_repair,
    ),
    Case(
        "http-503-then-success",
        "source errors",
        "the source fails once, then answers",
        "the HTTP server answers 503 once for shard 1's segment",
        "retried after a jittered backoff, then succeeds; outputs identical",
        "warning per failed attempt",
        inject=_http_503_once,
        source="http",
        message=("attempt 1/", "503", "{segment}", "retrying in"),
        counts=(Count("download", SHARD, "download.retries", 1),),
        identical=True,
    ),
    Case(
        "truncated-transfer",
        "source errors",
        "every transfer of a segment is cut off",
        "the HTTP server closes the connection after half of shard 1's segment, every time",
        "retried until the attempts run out, then shard 1 fails naming the file (transient); shards 2-3 finish",
        "warning per failed attempt; log + exit status",
        inject=_truncate_every_transfer,
        source="http",
        fast_retry=True,
        exit=(1,),
        message=("rpj: download shard 0001 failed: DownloadFailedError", "{segment}", "attempts"),
        failed=(SHARD,),
        finished=(2, 3),
        verify=_retried,
        repair=_truncate_repair,
    ),
    Case(
        "truncated-source",
        "source errors",
        "a segment that is truncated at the source",
        "the mirror's WET file cut at 3/5 of its bytes (served whole, with its Content-Length)",
        "fetched twice, the same bytes: staged with its damage in the download record and counted; the reader skips the cut-off member and keeps the records before it; `rpj ccnet` and `rpj summary` name the file",
        "warning with file and byte offset",
        inject=_damage(lambda d: d[: len(d) * 3 // 5]),
        source="http",
        message=("truncated gzip member", "{segment}"),
        counts=(Count("download", SHARD, DAMAGED_SOURCE, 1), Count("ccnet", SHARD, "wet.skipped.truncated_gzip", 1)),
        repair=_restore,
        rerun=("--force",),
    ),
    Case(
        "empty-segment",
        "source errors",
        "a 0-byte segment",
        "shard 1's WET file emptied in the mirror (the server answers 200 with 0 bytes)",
        "permanent: not retried, shard 1 fails naming the file; shards 2-3 finish",
        "log + exit status",
        inject=_empty_segment,
        source="http",
        fast_retry=True,
        exit=(2,),
        message=("rpj: download shard 0001 failed: PermanentDownloadError", "{segment}", "empty (0 bytes)"),
        failed=(SHARD,),
        finished=(2, 3),
        verify=_not_retried,
        repair=_restore,
    ),
    # ---- process faults: the run itself dies or races
    Case(
        "sigkill-mid-shard",
        "process faults",
        "the process is killed in the middle of a shard",
        "`RPJ_FAULT=output:N:kill`: SIGKILL after the 2nd documents file of shard 1 is committed",
        "shard 1 has no record (its files are not finished); the rerun redoes it and ends identical",
        "exit status (SIGKILL); `RPJ_FAULT` warning",
        inject=_mine_output_fault("kill"),
        exit=(KILLED,),
        message=("RPJ_FAULT: kill",),
        failed=(SHARD,),
        finished=(0,),
        killed=True,
        verify=_killed_mid_shard,
        repair=_rerun,
    ),
    Case(
        "disk-full",
        "process faults",
        "the disk fills up",
        "`RPJ_FAULT=record:10:enospc`: ENOSPC just before shard 1's CCNet record is written",
        "shard 1 has no record; one line, no traceback; the rerun redoes it and ends identical",
        "log + exit status",
        inject=_disk_full,
        exit=(1, 2),
        message=("rpj: mine shard 0001 failed: StorageFullError", "No space left on device"),
        failed=(SHARD,),
        finished=(0,),
        repair=_rerun,
    ),
    Case(
        "concurrent-runs",
        "process faults",
        "two runs of the same shards at once",
        "two `rpj ccnet` processes started together on one storage root",
        "both succeed, or one fails with one line; outputs identical either way",
        "",
        concurrent=2,
        exit=(0, 1, 2),
        repair=_rerun,
    ),
    Case(
        "s3-kill-mid-upload",
        "process faults",
        "the process is killed while uploading a shard to S3",
        "storage root on a local S3 server (moto); `RPJ_FAULT=output:N:kill` after the 2nd documents object of shard 1",
        "no record and no partial object for shard 1; spool files of the dead run removed; the rerun ends identical",
        "exit status (SIGKILL); `RPJ_FAULT` warning",
        inject=_mine_output_fault("kill"),
        source="s3",
        exit=(KILLED,),
        message=("RPJ_FAULT: kill",),
        failed=(SHARD,),
        finished=(0,),
        killed=True,
        verify=_killed_mid_shard,
        repair=_rerun,
        verify_after=_spools_gone,
        marks=("s3",),
    ),
    # ---- security
    Case(
        "path-traversal",
        "security",
        "a listing entry that climbs out of the staging area",
        f"shard 1's entry in `wet.paths.gz` replaced by `{EVIL_ENTRY}` (the server has a WET file there)",
        "the run fails naming the entry; nothing is written outside the storage root",
        "log + exit status",
        inject=_evil_listing,
        source="http",
        exit=(2,),
        message=("rpj: error:", EVIL_ENTRY),
        failed=(SHARD,),
        finished=(),
        verify=_contained,
        repair=_restore,
    ),
    Case(
        "symlink-out-of-mirror",
        "security",
        "a mirror file that is a symbolic link to a file elsewhere",
        "shard 1's WET file in the `file://` mirror replaced by a link to a file outside the mirror",
        "shard 1 fails naming the link (permanent); the other hash group finishes; nothing is read from outside",
        "log + exit status",
        inject=_symlinked_segment,
        exit=(2,),
        message=("rpj: download shard 0001 failed: UnsafePathError", "symbolic link"),
        failed=(SHARD,),
        finished=(2, 3),
        repair=_restore,
    ),
    Case(
        "version-escape",
        "security",
        "a models version that climbs out of the storage root",
        "`rpj models sample --version ../..` (the version names a folder that is rebuilt and cleaned)",
        "refused before anything is read, written or removed",
        "exit status",
        args=("models", "sample", "--version", "../.."),
        exit=(2,),
        message=("rpj: error:", "invalid models version"),
        finished=(),
        verify=_untouched,
    ),
    Case(
        "credentials-in-source",
        "security",
        "a `source_base` with a user and password",
        f"`source_base: http://rpj:{SECRET}@127.0.0.1:…/` and one 503 (a retry warning names the URL)",
        "the run succeeds; the password appears in no output, log line or record",
        "",
        inject=_credentials,
        source="http",
        message=("attempt 1/", "503", "{segment}"),
        identical=True,
        verify=_secret_hidden,
    ),
    Case(
        "snapshot-trailing-newline",
        "security",
        "a snapshot id with a trailing newline",
        "`rpj ccnet --snapshot $'2000-01\\n'`",
        "refused before anything is read or written",
        "exit status",
        args=("ccnet", "--snapshot", f"{SNAPSHOT}\n"),
        exit=(2,),
        message=("rpj: error:", "invalid snapshot id"),
        finished=(),
        verify=_untouched,
    ),
    Case(
        "shards-non-ascii-digit",
        "security",
        "a shard number in non-ASCII digits",
        "`rpj ccnet --shards ٣` (ARABIC-INDIC DIGIT THREE)",
        "refused before anything is read or written",
        "exit status",
        args=(*CCNET, "--shards", "\u0663"),
        exit=(2,),
        message=("rpj: error:", "invalid shard"),
        finished=(),
        verify=_untouched,
    ),
    Case(
        "languages-trailing-newline",
        "security",
        "a language code with a trailing newline",
        "`rpj ccnet --languages $'en\\n'`",
        "refused before anything is read or written",
        "exit status",
        args=(*CCNET, "--languages", "en\n"),
        exit=(2,),
        message=("rpj: error:", "invalid language"),
        finished=(),
        verify=_untouched,
    ),
    # ---- limits
    Case(
        "record-too-large",
        "limits",
        "a WARC record over the size limit",
        f"one record's block grown to {TOO_LARGE_BYTES:,} bytes, with `{next(iter(TOO_LARGE_SETTING))}: "
        f"{next(iter(TOO_LARGE_SETTING.values())):,}` in the registry",
        "record dropped, the other records are kept",
        "warning with file and byte offset; `rpj summary` drop reasons (too large)",
        inject=_too_large,
        message=("{segment}", "byte offset"),
        counts=(Count("ccnet", SHARD, TOO_LARGE, 1), LOST),
        repair=_restore,
        rerun=("--force",),
        registry=TOO_LARGE_SETTING,
    ),
)

CASE_IDS = [case.id for case in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "case ids must be unique"
assert all(case.group in GROUPS for case in CASES)


# --------------------------------------------------------------------------- docs/FAULTS.md

REGENERATE = ".venv/bin/python -m tests.faults.cases > docs/FAULTS.md"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _exit_text(case: Case) -> str:
    codes = ["killed (SIGKILL)" if code == KILLED else str(code) for code in case.exit]
    return "exit " + (f"{', '.join(codes[:-1])} or {codes[-1]}" if len(codes) > 1 else codes[0])


def _outcome(case: Case) -> str:
    parts = [f"**{_exit_text(case)}**", case.outcome]
    if case.message:
        parts.append("message: " + " … ".join(f"`{m.format(segment='<segment>')}`" for m in case.message))
    parts += [c.text() for c in case.counts if c.delta]
    return "; ".join(parts)


def _counted(case: Case) -> str:
    parts = [c.text() for c in case.counts if not c.delta]
    if case.counted:
        parts.append(case.counted)
    return "; ".join(parts) or "—"


def _status(case: Case) -> str:
    if case.pending is None:
        return "passes"
    checks = "all checks" if case.pending.checks is None else ", ".join(sorted(case.pending.checks))
    return f"xfail, pending: {case.pending.reason} (failing today: {checks})"


def render() -> str:
    """docs/FAULTS.md: the matrix as a table."""
    lines = [
        "# Fault matrix",
        "",
        "<!-- Generated from tests/faults/cases.py; do not edit. Regenerate with:",
        f"     {REGENERATE} -->",
        "",
        "What rpj does when its input, its source, its process or its configuration goes wrong. Every row is a",
        "case of `tests/faults/test_matrix.py`, which runs the real `rpj ccnet --snapshot 2000-01` over the",
        "4-shard sample (a generated mirror of 4 WET segments, one per shard; hash groups 0-1 and 2-3), causes",
        "the fault (shard 1's segment, unless said otherwise) and checks, for every case:",
        "",
        f"- **{EXIT}** and **{MESSAGE}**: a failure prints exactly one `rpj:` line on stderr, naming the",
        "  cause and the file, and never a traceback; damage that is skipped is logged in one line with the",
        "  file and the byte offset;",
        f"- **{PARTIAL}**: no temp file (`.*.tmp-*`) under the storage root (those of a killed process are",
        "  removed by the next run), every stats record lists outputs that exist with its sha256, and a",
        "  failed shard has no CCNet record;",
        f"- **{OTHERS}**: the shards the fault does not concern have their CCNet record (a failing shard",
        "  takes its hash group with it: shard 0 needs shard 1's paragraph hashes);",
        f"- **{COUNTED}**: the counters named below, in the shard's stats record;",
        f"- **{REPAIRED}**: once the damage is undone (or the fault removed) and the run repeated (with",
        "  `--force` when damaged input had been staged), every file under `documents/` and",
        "  `staging/hashes/`, and each CCNet record's inputs, outputs and counters, equal the clean run's byte",
        f"  for byte; **{IDENTICAL}**: the same for the outputs, right after the faulty run.",
        "",
        "Counters live in the per-shard stats records, `stats/download/2000-01/0001.json` (staging) and",
        "`stats/ccnet/2000-01/0001.json` (the WET reader, dedup, LID, what was kept); `rpj summary` adds up",
        "the `wet.skipped.*` counters as bad records. Exit statuses: 0 done, 1 transient (try again later),",
        "2 permanent ([docs/PIPELINE.md](PIPELINE.md#failures-permanent-or-transient)). An *xfail* row is",
        "behaviour being built: its test fails today on the checks named, and fails for real (to be unmarked)",
        "once they all pass.",
        "",
        "| Case | Group | Injection | Outcome | Where counted | Status |",
        "|---|---|---|---|---|---|",
    ]
    for group in GROUPS:
        for case in CASES:
            if case.group != group:
                continue
            injection = case.injection.format(segment="<segment>")
            row = [f"`{case.id}`: {case.description}", group, injection, _outcome(case), _counted(case), _status(case)]
            lines.append("| " + " | ".join(_cell(c) for c in row) + " |")
    lines += [
        "",
        "Run it: `.venv/bin/python -m pytest -q tests/faults` (markers: `slow`; the S3 case also `s3`).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(render(), end="")
