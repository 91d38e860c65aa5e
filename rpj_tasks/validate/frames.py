"""The tables the suites run on: one pandas DataFrame per suite and shard, read from the shard's files.

Every row-level table has ``file`` (the path relative to the storage root, e.g.
``documents/2000-01/0000/en_head.json.gz``) and ``line`` (the 0-based line or row), so a failure
names both.  Rules that are not a built-in GX expectation are derived columns here, named after the
rule (e.g. ``spans``, ``line_ids_increasing``): ``"ok"`` (or ``True``) when the rule holds, else a
short description of what was found, which is the observed value a failure reports.  The suites
(``expectations/*.json``) name each rule; :mod:`rpj_tasks.validate.stage` runs them.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from rpj_tasks.core import commit, ids, layout, schema, storage
from rpj_tasks.core.lines import BadLines, iter_lines, parse_object
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.validate")

OK = "ok"
MISSING = -1  # a row count of a file that should exist and does not
#: The JSON type names of the documents fields, as the ``field_types`` column spells them.
_TYPE_NAMES = {str: "string", int: "int", float: "float", list: "list", bool: "bool", dict: "object", type(None): "null"}
TOKENS_SUFFIX = ".tokens.parquet"
SCHEMA_ABSENT = None


def type_name(value: Any) -> str:
    return _TYPE_NAMES.get(type(value), type(value).__name__)


def expected_field_types() -> str:
    return ",".join(_TYPE_NAMES[t] for t in schema.DOCUMENT_FIELD_TYPES.values())


def schema_text(arrow_schema: Any) -> str:
    """A parquet file's schema in one line, ``name:type,...`` (the form the ``files`` suite expects)."""
    return ",".join(f"{f.name}:{_type_text(f.type)}" for f in arrow_schema)


def _type_text(t: Any) -> str:
    """An Arrow type without list item names (``list<binary>``: writers name the item ``item`` or ``element``)."""
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{_type_text(t.value_type)}>"
    return str(t)


def keys_diff(actual: list[str], expected: tuple[str, ...]) -> str:
    """``ok`` if ``actual`` is ``expected`` in order, else what differs."""
    if tuple(actual) == expected:
        return OK
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:5])}" + (f" (+{len(missing) - 5})" if len(missing) > 5 else ""))
    if extra:
        parts.append(f"unexpected {', '.join(extra[:5])}" + (f" (+{len(extra) - 5})" if len(extra) > 5 else ""))
    if not parts:
        parts.append("order differs")
    return "; ".join(parts)


@dataclass
class FileInfo:
    """One documents file of the shard and what the validation learned about it."""

    lang: str
    bucket: str
    rel: str  # documents path relative to the storage root
    shard_key: str
    status: str = OK  # documents_status of the files table
    lines: int = 0
    lengths: list[int] = field(default_factory=list)  # len(raw_content) per line (None-safe: -1)
    digests: list[str | None] = field(default_factory=list)
    languages: list[str | None] = field(default_factory=list)


@dataclass
class ShardData:
    """The tables of one shard, the documents files it found and the files it read (for the record)."""

    frames: dict[str, pd.DataFrame]
    files: dict[str, FileInfo]
    read: list[str]
    skipped: dict[str, str]


def _rel(root: str, url: str) -> str:
    return commit.relative(root.rstrip("/"), url)


def _documents_files(cfg: Any, shard: int) -> tuple[dict[str, FileInfo], dict[str, Any] | None]:
    """The documents files of the shard: those on storage and those the CCNet record lists."""
    root = cfg.storage_root
    record = commit.load_record(layout.ccnet_stats_url(root, cfg.id, shard))
    listed: set[str] = set()
    if record is not None:
        listed = {
            url.rsplit("/", 1)[-1] for url in commit.listed_outputs(layout.ccnet_stats_url(root, cfg.id, shard), record).values()
        }
    on_disk = {n for n in storage.listdir(layout.shard_dir(root, "documents", cfg.id, shard)) if layout.DOCUMENTS_FILE.match(n)}
    files: dict[str, FileInfo] = {}
    for name in sorted(on_disk | listed):
        m = layout.DOCUMENTS_FILE.match(name)
        if m is None:
            continue
        lang, bucket = m.group(1), m.group(2)
        info = FileInfo(
            lang,
            bucket,
            _rel(root, layout.documents_url(root, cfg.id, shard, lang, bucket)),
            layout.shard_key(cfg.id, shard, lang, bucket),
        )
        if record is not None and name not in listed:
            info.status = "not listed in the CCNet record"
        elif name not in on_disk:
            info.status = "missing (listed in the CCNet record)"
        files[name] = info
    return files, record


def documents_frame(cfg: Any, shard: int, files: dict[str, FileInfo], read: list[str]) -> pd.DataFrame:
    rows: list[dict[str, Any]] = []
    root = cfg.storage_root
    for info in files.values():
        if info.status.startswith("missing"):
            continue
        url = storage.join(root, info.rel)
        read.append(url)
        bad = BadLines(Stats(), "validate.documents", limit=5)
        for idx, (_, raw) in enumerate(iter_lines(url, bad)):
            doc, reason = parse_object(raw)
            info.lines = idx + 1
            row: dict[str, Any] = {"file": info.rel, "line": idx, "file_language": info.lang, "file_bucket": info.bucket}
            if doc is None:
                row["fields"] = f"<{reason}>"
                info.lengths.append(-1)
                info.digests.append(None)
                info.languages.append(None)
                rows.append(row)
                continue
            content = doc.get("raw_content")
            raw_ids = doc.get("line_ids")
            line_ids: list[Any] = raw_ids if isinstance(raw_ids, list) else []
            ok_ids = isinstance(raw_ids, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in line_ids)
            row.update(
                fields=",".join(doc),
                field_types=",".join(type_name(doc.get(k)) for k in doc),
                language=doc.get("language"),
                bucket=doc.get("bucket"),
                length=doc.get("length"),
                raw_content_length=len(content) if isinstance(content, str) else None,
                nlines=doc.get("nlines"),
                raw_content_lines=content.count("\n") + 1 if isinstance(content, str) else None,
                line_ids_count=len(line_ids) if isinstance(raw_ids, list) else None,
                line_ids_increasing=bool(ok_ids and all(a < b for a, b in zip(line_ids, line_ids[1:]))),
                line_ids_below_original_nlines=bool(
                    ok_ids
                    and isinstance(doc.get("original_nlines"), int)
                    and all(0 <= i < doc["original_nlines"] for i in line_ids)
                ),
                language_score=doc.get("language_score"),
                perplexity=doc.get("perplexity"),
                digest=doc.get("digest"),
            )
            info.lengths.append(len(content) if isinstance(content, str) else -1)
            digest = doc.get("digest")
            info.digests.append(
                digest[len(schema.DIGEST_PREFIX) :]
                if isinstance(digest, str) and digest.startswith(schema.DIGEST_PREFIX)
                else None
            )
            info.languages.append(doc.get("language"))
            rows.append(row)
        if bad.reported:
            info.status = "unreadable: " + "; ".join(bad.messages[:2])
    return _frame(rows, ["file", "line"])


def _spans(signals: dict[str, Any], length: int) -> str:
    """``ok`` if every ``[start, end, score]`` is inside ``[0, length]``, starts before it ends and
    follows the previous one (line signals cover the lines in order), else the first offence."""
    for key, spans in signals.items():
        if not isinstance(spans, list):
            return f"{key}: not a list of spans"
        prev_end = 0
        for i, span in enumerate(spans):
            if not (
                isinstance(span, list)
                and len(span) == 3
                and all(isinstance(x, int) and not isinstance(x, bool) for x in span[:2])
            ):
                return f"{key}[{i}]: {json.dumps(span)[:60]} is not [start, end, score]"
            start, end = span[0], span[1]
            if not (0 <= start <= end <= max(length, 0)):
                return f"{key}[{i}]: [{start}, {end}] not inside [0, {length}]"
            if start < prev_end:
                return f"{key}[{i}]: [{start}, {end}] starts before the previous span ends ({prev_end})"
            prev_end = end
    return OK


def _bounded(signals: dict[str, Any], bounds: dict[str, list[float]]) -> str:
    """``ok`` if every score of the keys in ``bounds`` is null or within its ``[min, max]``."""
    for key, (low, high) in bounds.items():
        for span in signals.get(key) or []:
            score = span[2] if isinstance(span, list) and len(span) == 3 else None
            if score is None:
                continue
            if not isinstance(score, int | float) or isinstance(score, bool) or not (low <= score <= high) or math.isnan(score):
                return f"{key}: {score!r} outside [{low}, {high}]"
    return OK


def signals_frame(
    cfg: Any, shard: int, files: dict[str, FileInfo], bounds: dict[str, dict[str, list[float]]], read: list[str]
) -> tuple[pd.DataFrame, dict[str, int | None]]:
    """One row per signals record; and per documents file its record count (None: no file)."""
    rows: list[dict[str, Any]] = []
    counts: dict[str, int | None] = {}
    root = cfg.storage_root
    for name, info in files.items():
        url = layout.signals_url(root, cfg.id, shard, info.lang, info.bucket)
        if not storage.exists(url):
            counts[name] = None
            continue
        read.append(url)
        rel = _rel(root, url)
        bad = BadLines(Stats(), "validate.signals", limit=5)
        n = 0
        for idx, (_, raw) in enumerate(iter_lines(url, bad)):
            n = idx + 1
            rec, reason = parse_object(raw)
            expected_id = ids.doc_id(info.shard_key, idx)
            row: dict[str, Any] = {
                "file": rel,
                "line": idx,
                "expected_id": expected_id,
                "expected_id_int": str(ids.id_int(expected_id)),
            }
            if rec is None:
                row["record_keys"] = f"<{reason}>"
                rows.append(row)
                continue
            meta_value, sig_value = rec.get("metadata"), rec.get("quality_signals")
            meta: dict[str, Any] = meta_value if isinstance(meta_value, dict) else {}
            sig: dict[str, Any] = sig_value if isinstance(sig_value, dict) else {}
            length = info.lengths[idx] if idx < len(info.lengths) else -1
            row.update(
                record_keys=",".join(rec),
                metadata_keys=keys_diff(list(meta), schema.SIGNALS_METADATA_KEYS),
                signal_keys=keys_diff(list(sig), schema.SIGNAL_KEYS),
                id=rec.get("id"),
                id_int=str(rec.get("id_int")),
                cc_net_source=meta.get("cc_net_source"),
                shard_key=info.shard_key,
                spans=_spans(sig, length) if length >= 0 else "no documents line to compare with",
                bounded_fractions=_bounded(sig, bounds.get("bounded_fractions", {})),
                classifier_scores=_bounded(sig, bounds.get("classifier_scores", {})),
            )
            rows.append(row)
        if bad.reported:
            rows.append({"file": rel, "line": n, "record_keys": "<unreadable: " + "; ".join(bad.messages[:1]) + ">"})
        counts[name] = n
    return _frame(rows, ["file", "line"]), counts


def _bands(row: dict[str, Any]) -> tuple[str, str]:
    """(band_lengths, nulls_together) of one MinHash row."""
    nulls = [c for c in schema.MINHASH_SIGNATURE_COLUMNS if row.get(c) is None]
    together = OK if len(nulls) in (0, len(schema.MINHASH_SIGNATURE_COLUMNS)) else "null: " + ", ".join(nulls)
    for threshold in schema.MINHASH_THRESHOLDS:
        column = schema.signature_column(threshold)
        bands = row.get(column)
        if bands is None:
            continue
        b, r = schema.MINHASH_BANDS[threshold]
        lengths = [len(x) for x in bands]
        if lengths != [4 * r] * b:
            shown = sorted(set(lengths))
            return f"{column}: {len(lengths)} bands of {shown} bytes, expected {b} of {4 * r}", together
    return OK, together


def minhash_frame(
    cfg: Any, shard: int, files: dict[str, FileInfo], read: list[str]
) -> tuple[pd.DataFrame, dict[str, int | None], dict[str, str | None]]:
    rows: list[dict[str, Any]] = []
    counts: dict[str, int | None] = {}
    schemas: dict[str, str | None] = {}
    root = cfg.storage_root
    for name, info in files.items():
        url = layout.minhash_url(root, cfg.id, shard, info.lang, info.bucket)
        if not storage.exists(url):
            counts[name], schemas[name] = None, SCHEMA_ABSENT
            continue
        read.append(url)
        rel = _rel(root, url)
        with storage.open_read(url) as f:
            table = pq.read_table(f)
        schemas[name] = schema_text(table.schema)
        counts[name] = table.num_rows
        for idx, rec in enumerate(table.to_pylist()):
            expected_id = ids.doc_id(info.shard_key, idx)
            bands, together = _bands(rec)
            rows.append(
                {
                    "file": rel,
                    "line": idx,
                    "shard_id": rec.get("shard_id"),
                    "shard_key": info.shard_key,
                    "id": rec.get("id"),
                    "expected_id": expected_id,
                    "id_int": str(rec.get("id_int")),
                    "expected_id_int": str(ids.id_int(expected_id)),
                    "band_lengths": bands,
                    "nulls_together": together,
                }
            )
    return _frame(rows, ["file", "line"]), counts, schemas


def _id_in_file(doc: Any, info: FileInfo) -> tuple[str, int | None]:
    """(``ok`` or why not, line) of a ``doc_id`` / ``id`` that must name a line of ``info``'s file."""
    if not isinstance(doc, str):
        return f"not a string: {doc!r}", None
    prefix, _, idx = doc.rpartition("/")
    if prefix != info.shard_key:
        return f"{doc} is not an id of {info.shard_key}", None
    if not (idx.isascii() and idx.isdigit()):
        return f"{doc}: line {idx!r} is not a number", None
    line = int(idx)
    if line >= info.lines:
        return f"{doc}: line {line} beyond the file's {info.lines} lines", None
    return OK, line


def duplicates_frame(
    cfg: Any, shard: int, files: dict[str, FileInfo], read: list[str]
) -> tuple[pd.DataFrame, dict[str, str | None]]:
    rows: list[dict[str, Any]] = []
    schemas: dict[str, str | None] = {}
    root = cfg.storage_root
    for name, info in files.items():
        url = layout.duplicates_url(root, cfg.id, shard, info.lang, info.bucket)
        if not storage.exists(url):
            schemas[name] = SCHEMA_ABSENT
            continue
        read.append(url)
        rel = _rel(root, url)
        with storage.open_read(url) as f:
            table = pq.read_table(f)
        schemas[name] = schema_text(table.schema)
        for idx, rec in enumerate(table.to_pylist()):
            exists, line = _id_in_file(rec.get("doc_id"), info)
            rows.append(
                {
                    "file": rel,
                    "line": idx,
                    "shard_id": rec.get("shard_id"),
                    "shard_key": info.shard_key,
                    "doc_id": rec.get("doc_id"),
                    "doc_id_in_file": exists,
                    "digest": rec.get("digest"),
                    "document_digest": info.digests[line] if line is not None and line < len(info.digests) else None,
                }
            )
    return _frame(rows, ["file", "line"]), schemas


def clusters_frame(
    cfg: Any, shard: int, files: dict[str, FileInfo], read: list[str], component: str = "clusters"
) -> tuple[pd.DataFrame, dict[str, str | None]]:
    rows: list[dict[str, Any]] = []
    schemas: dict[str, str | None] = {}
    root = cfg.storage_root
    for name, info in files.items():
        url = layout.clusters_url(root, cfg.id, shard, info.lang, info.bucket, component)
        if not storage.exists(url):
            schemas[name] = SCHEMA_ABSENT
            continue
        read.append(url)
        rel = _rel(root, url)
        with storage.open_read(url) as f:
            table = pq.read_table(f)
        schemas[name] = schema_text(table.schema)
        for idx, rec in enumerate(table.to_pylist()):
            exists, _ = _id_in_file(rec.get("id"), info)
            doc = rec.get("id")
            id_int, cluster_id = rec.get("id_int"), rec.get("cluster_id")
            rows.append(
                {
                    "file": rel,
                    "line": idx,
                    "shard_id": rec.get("shard_id"),
                    "shard_key": info.shard_key,
                    "id": doc,
                    "id_in_file": exists,
                    "id_int": str(id_int),
                    "expected_id_int": str(ids.id_int(doc)) if isinstance(doc, str) else None,
                    "cluster_id_at_most_id_int": bool(
                        isinstance(id_int, int) and isinstance(cluster_id, int) and cluster_id <= id_int
                    ),
                }
            )
    return _frame(rows, ["file", "line"]), schemas


def tokens_url(root: str, snapshot: str, shard: int, lang: str, bucket: str) -> str:
    """``tokens/{snapshot}/{shard:04d}/{lang}_{bucket}.tokens.parquet`` (the tokens stage's layout)."""
    return storage.join(root, "tokens", layout.base_tag(snapshot, shard, lang, bucket) + TOKENS_SUFFIX)


def tokens_record_url(root: str, snapshot: str, shard: int) -> str:
    return storage.join(root, "stats", "tokens", layout.validate_snapshot(snapshot), f"{shard:04d}.json")


def record_totals(record: dict[str, Any] | None, name: str, base_tag: str) -> dict[str, Any]:
    """A tokens record's per-file totals ``{documents, tokens, characters}`` for one file, found
    under ``files`` (or ``totals``) by any key naming it: the file name, its base tag, its path."""
    if not record:
        return {}
    stem = name[: -len(layout.DOCUMENTS_SUFFIX)]
    for section in ("files", "totals"):
        entries = record.get(section)
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            k = str(key)
            if isinstance(value, dict) and (
                k in (name, stem, base_tag)
                or k.endswith(("/" + stem, "/" + name, "/" + stem + TOKENS_SUFFIX))
                or k == stem + TOKENS_SUFFIX
            ):
                return value
    return {}


def tokens_frame(
    cfg: Any, shard: int, files: dict[str, FileInfo], read: list[str]
) -> tuple[pd.DataFrame, dict[str, dict[str, Any]]] | None:
    """One row per token-count row, and per documents file its counts and the record's totals; None
    when the shard has no token files at all (the tokens stage has not run)."""
    root = cfg.storage_root
    record = commit.load_record(tokens_record_url(root, cfg.id, shard))
    found = {name: tokens_url(root, cfg.id, shard, info.lang, info.bucket) for name, info in files.items()}
    present = {name: url for name, url in found.items() if storage.exists(url)}
    if not present and record is None:
        return None
    rows: list[dict[str, Any]] = []
    per_file: dict[str, dict[str, Any]] = {}
    for name, info in files.items():
        totals = record_totals(record, name, layout.base_tag(cfg.id, shard, info.lang, info.bucket))
        entry: dict[str, Any] = {
            "token_rows": None,
            "tokens_schema": SCHEMA_ABSENT,
            "tokens_total": None,
            "characters_total": None,
            "record_documents": totals.get("documents"),
            "record_tokens": totals.get("tokens"),
            "record_characters": totals.get("characters"),
        }
        per_file[name] = entry
        url = present.get(name)
        if url is None:
            if totals:  # the record has totals for a file that is not there
                entry["token_rows"] = MISSING
            continue
        read.append(url)
        rel = _rel(root, url)
        with storage.open_read(url) as f:
            table = pq.read_table(f)
        entry["tokens_schema"] = schema_text(table.schema)
        entry["token_rows"] = table.num_rows
        tokens_sum, chars_sum = 0, 0
        for idx, rec in enumerate(table.to_pylist()):
            tokens = rec.get("tokens")
            chars = info.lengths[idx] if idx < len(info.lengths) else None
            if isinstance(tokens, int):
                tokens_sum += tokens
            if chars is not None and chars >= 0:
                chars_sum += chars
            rows.append(
                {
                    "file": rel,
                    "line": idx,
                    "id": rec.get("id"),
                    "expected_id": ids.doc_id(info.shard_key, idx),
                    "language": info.lang,
                    "tokens": tokens,
                    "characters_per_token": chars / tokens
                    if isinstance(tokens, int) and tokens > 0 and chars is not None and chars >= 0
                    else None,
                }
            )
        entry["tokens_total"], entry["characters_total"] = tokens_sum, chars_sum
    return _frame(rows, ["file", "line", "tokens"]), per_file


def files_frame(
    files: dict[str, FileInfo],
    annotated: set[str],
    signals: dict[str, int | None],
    minhash: dict[str, int | None],
    minhash_schemas: dict[str, str | None],
    duplicates_schemas: dict[str, str | None],
    clusters_schemas: dict[str, str | None],
    tokens: dict[str, dict[str, Any]] | None,
) -> pd.DataFrame:
    """One row per documents file: its status, the row counts of every component (None where the
    component does not apply, :data:`MISSING` where it should exist and does not) and the parquet
    schemas."""
    rows = []
    for name, info in files.items():
        expect_annotated = name in annotated or info.bucket in layout.ANNOTATED_BUCKETS
        sig, mh = signals.get(name), minhash.get(name)
        row: dict[str, Any] = {
            "file": info.rel,
            "documents_status": info.status,
            "documents_lines": info.lines if not info.status.startswith("missing") else MISSING,
            "signals_records": sig if sig is not None else (MISSING if expect_annotated else None),
            "minhash_rows": mh if mh is not None else (MISSING if expect_annotated else None),
            "minhash_schema": minhash_schemas.get(name),
            # every head/middle file has a duplicates file once exact dedup ran (zero rows when it has none)
            "duplicates_schema": duplicates_schemas.get(name)
            if duplicates_schemas.get(name) is not None or info.bucket not in layout.ANNOTATED_BUCKETS
            else "missing",
            "clusters_schema": clusters_schemas.get(name),
        }
        entry = (tokens or {}).get(name, {})
        row.update(
            {
                k: entry.get(k)
                for k in (
                    "token_rows",
                    "tokens_schema",
                    "tokens_total",
                    "characters_total",
                    "record_documents",
                    "record_tokens",
                    "record_characters",
                )
            }
        )
        if tokens is not None and row["token_rows"] is None:
            row["token_rows"] = MISSING
        chars, total = row.get("characters_total"), row.get("tokens_total")
        row["language"] = info.lang
        row["characters_per_token"] = chars / total if isinstance(chars, int) and isinstance(total, int) and total > 0 else None
        rows.append(row)
    return _frame(rows, ["file"])


def _frame(rows: list[dict[str, Any]], first: list[str]) -> pd.DataFrame:
    """A DataFrame of object columns (ints above 2**63, None kept as None)."""
    df = pd.DataFrame(rows, dtype=object)
    for column in first:
        if column not in df.columns:
            df[column] = pd.Series(dtype=object)
    return df


def annotated_files(cfg: Any, shard: int) -> set[str]:
    """The documents file names the annotation record says were annotated (signals and MinHash expected)."""
    url = layout.annotate_stats_url(cfg.storage_root, cfg.id, shard)
    record = commit.load_record(url)
    if record is None:
        return set()
    names = set()
    for out in commit.listed_outputs(url, record).values():
        base = out.rsplit("/", 1)[-1]
        m = re.fullmatch(r"([a-z]{2,3}_[a-z]+)(\.signals\.json\.gz|\.minhash\.parquet)", base)
        if m:
            names.add(m.group(1) + layout.DOCUMENTS_SUFFIX)
    return names
