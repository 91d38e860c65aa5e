"""Validate a shard, then a snapshot, with the Great Expectations suites of ``expectations/``.

:func:`validate_shard` reads every file of the shard (documents, quality signals, MinHash,
duplicates, clusters, token counts when the tokens stage has written them) into one table per
suite (:mod:`rpj_tasks.validate.frames`), runs each suite in one ephemeral GX context
(:mod:`rpj_tasks.validate.gxrun`), and commits through the commit protocol:

* ``validation/{snapshot}/{shard:04d}/data_docs/...`` the GX Data Docs site (``index.html``);
* ``stats/validate/{snapshot}/{shard:04d}.json`` the record: per suite, expectation and file
  whether it passed, the observed values of the first failures, the row counts; its ``inputs``
  are the sha256 of every file read and of the suites, so a changed file is validated again.

A failed expectation raises :class:`ValidationFailedError` (a :class:`PermanentError`) naming
suite, expectation, file and observed value, after the record and the Data Docs are committed.
:func:`validate_snapshot` checks the snapshot as a whole (every shard validated for its current
files, totals against the CCNet and tokens records, no duplicates or clusters file without its
documents file) with the ``snapshot`` suite, written the same way under ``validation/{snapshot}/
snapshot/`` and ``stats/validate/{snapshot}/snapshot.json``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from typing import Any

import pandas as pd

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.errors import MissingInputError, PermanentError
from rpj_tasks.core.logctx import log_context, shard_label
from rpj_tasks.validate import frames
from rpj_tasks.validate.gxrun import SHARD_SUITES, SNAPSHOT_SUITE, Runner, describe, expectations_dir, load_suite, rule_meta

log = logging.getLogger("rpj.validate")

#: Failures named in the error message; the record keeps up to :data:`KEEP_OBSERVED` per expectation.
SHOWN_FAILURES = 5
KEEP_OBSERVED = 20


class ValidationFailedError(PermanentError):
    """An expectation failed: the message names suite, expectation, file and observed value."""

    def __init__(self, message: str, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.result = result


def validation_dir(root: str, snapshot: str, unit: str) -> str:
    """``validation/{snapshot}/{unit}`` (unit: ``0003`` or ``snapshot``): the Data Docs of a unit."""
    return storage.join(root, "validation", layout.validate_snapshot(snapshot), unit)


def record_url(root: str, snapshot: str, unit: str) -> str:
    return storage.join(root, "stats", "validate", layout.validate_snapshot(snapshot), f"{unit}.json")


def _suites_digest(names: tuple[str, ...]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update((expectations_dir() / f"{name}.json").read_bytes())
    return h.hexdigest()


def _observed(exp: dict[str, Any]) -> list[dict[str, Any]]:
    """The first failing rows of an expectation: ``{file, line, value}`` (``value``: the checked
    column's, or ``{column: value}`` for a pair), or the table's observed value."""
    result = exp["result"]
    kwargs = exp["kwargs"]
    rows = result.get("unexpected_index_list") or result.get("partial_unexpected_index_list")
    out: list[dict[str, Any]] = []
    if rows:
        checked = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
        for row in rows[:KEEP_OBSERVED]:
            where = {k: row.get(k) for k in ("file", "line", "shard") if k in row}
            if len(checked) == 1:
                value: Any = row.get(checked[0])
            else:
                value = {c: row.get(c) for c in checked}
            out.append({**where, "value": value})
    elif "observed_value" in result:
        out.append({"value": result["observed_value"]})
    elif result.get("partial_unexpected_list"):
        out.extend({"value": v} for v in result["partial_unexpected_list"][:KEEP_OBSERVED])
    if exp.get("exception"):
        out.append({"value": f"error: {exp['exception']}"})
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and value != value:  # NaN
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value if isinstance(value, str | int | float | bool | type(None)) else str(value)


def _summarise(suite: str, expectations: list[dict[str, Any]], frame: pd.DataFrame) -> dict[str, Any]:
    """A suite's JSON-able result: per expectation its success, per file its success, observed values."""
    all_files = sorted(set(frame["file"].dropna())) if "file" in frame.columns else []
    out = []
    for exp in expectations:
        observed = _observed(exp) if not exp["success"] else []
        rows = exp["result"].get("unexpected_index_list") or []
        failed_files = {r.get("file") for r in rows if r.get("file") is not None}
        files = {f: f not in failed_files for f in all_files} if all_files else {}
        if not exp["success"] and not failed_files:  # a table-level failure or an error
            files = {f: False for f in all_files}
        out.append(
            _jsonable(
                {
                    "expectation": exp["type"],
                    "columns": describe(exp["kwargs"]),
                    "rule": exp["meta"].get("rule", ""),
                    "success": exp["success"],
                    "unexpected": exp["result"].get("unexpected_count", 0 if exp["success"] else None),
                    "files": files,
                    "observed": observed,
                }
            )
        )
    return {"success": all(e["success"] for e in out), "rows": len(frame), "expectations": out}


def failure_lines(result: dict[str, Any]) -> list[str]:
    """One line per failing expectation, the per-file row counts (suite ``files``) first:
    ``suite: expectation(columns): file line N: observed value (+K more rows)``."""
    lines = []
    order = sorted(result["suites"], key=lambda name: name != "files")
    for suite in order:
        for exp in result["suites"][suite].get("expectations", []):
            if exp["success"]:
                continue
            observed = exp["observed"] or [{"value": "?"}]
            obs = observed[0]
            where = obs.get("file") or (f"shard {obs['shard']}" if obs.get("shard") else None) or result.get("unit", "")
            line = f" line {obs['line']}" if obs.get("line") is not None else ""
            count = exp.get("unexpected") or len(observed)
            more = f" (+{count - 1} more rows)" if isinstance(count, int) and count > 1 else ""
            lines.append(
                f"{suite}: {exp['expectation']}({exp['columns']}): {where}{line}: observed {str(obs.get('value'))[:200]}{more}"
            )
    return lines


def _message(what: str, result: dict[str, Any]) -> str:
    lines = failure_lines(result)
    more = len(lines) - SHOWN_FAILURES
    text = f"validation of {what} failed ({len(lines)} expectations): " + "; ".join(lines[:SHOWN_FAILURES])
    if more > 0:
        text += f"; and {more} more failing expectations"
    return text + f" (Data Docs: {result['data_docs']})"


def _commit(
    root: str, snapshot: str, unit: str, inputs: dict[str, Any], result: dict[str, Any], runner: Runner, local_docs: str
) -> None:
    """Build the Data Docs, then commit them and the record (commit protocol)."""
    runner.build_docs()
    out_dir = validation_dir(root, snapshot, unit)
    with commit.UnitCommit(record_url(root, snapshot, unit), inputs, [out_dir], recursive=True) as unit_commit:
        for dirpath, _, names in sorted(os.walk(local_docs)):
            for name in sorted(names):
                path = os.path.join(dirpath, name)
                rel = os.path.relpath(path, local_docs).replace(os.sep, "/")
                with open(path, "rb") as f:
                    unit_commit.write_bytes(storage.join(out_dir, "data_docs", rel), f.read())
        unit_commit.commit({"result": result})


def _finished(url: str, inputs: dict[str, Any]) -> dict[str, Any] | None:
    record = commit.finished(url, inputs)
    return record.get("result") if record else None


def validate_shard(cfg: SnapshotConfig, shard: int, *, force: bool = False, require_tokens: bool = True) -> dict[str, Any]:
    """Run every suite over the shard's files; commit the record and the Data Docs; return the result.

    The result: ``{"snapshot", "shard", "success", "data_docs", "record", "counts", "suites":
    {suite: {"success", "skipped", "rows", "expectations": [{"expectation", "columns", "rule",
    "success", "unexpected", "files": {file: success}, "observed": [{"file", "line", "value"}]}]}}}``.
    A shard validated earlier for the same files and suites is not validated again (unless
    ``force``).  Raises :class:`ValidationFailedError` when an expectation failed (after the commit),
    :class:`MissingInputError` when the shard has no CCNet record, or no token counts while
    ``require_tokens`` (the default; the tokens suite is then skipped without it).
    """
    root, unit = cfg.storage_root, f"{shard:04d}"
    with log_context(shard=shard_label(cfg.id, shard)):
        if commit.load_record(layout.ccnet_stats_url(root, cfg.id, shard)) is None:
            raise MissingInputError(f"shard {shard_label(cfg.id, shard)} has no CCNet record: mine it before validating")
        files, _ = frames._documents_files(cfg, shard)
        suites = {name: load_suite(name) for name in SHARD_SUITES}
        read: list[str] = []
        documents = frames.documents_frame(cfg, shard, files, read)
        bounds = {
            c: rule_meta(suites["quality_signals"], c).get("bounds", {}) for c in ("bounded_fractions", "classifier_scores")
        }
        signals, signal_counts = frames.signals_frame(cfg, shard, files, bounds, read)
        minhash, minhash_counts, minhash_schemas = frames.minhash_frame(cfg, shard, files, read)
        duplicates, duplicates_schemas = frames.duplicates_frame(cfg, shard, files, read)
        clusters, clusters_schemas = frames.clusters_frame(cfg, shard, files, read)
        tokens = frames.tokens_frame(cfg, shard, files, read)
        if tokens is None and require_tokens:
            raise MissingInputError(
                f"shard {shard_label(cfg.id, shard)} has no token counts ({frames.tokens_record_url(root, cfg.id, shard)}): "
                f"count them first (`rpj tokens --snapshot {cfg.id} --shards {shard}`, or the DAG's tokens task)"
            )
        for record in (
            layout.ccnet_stats_url(root, cfg.id, shard),
            layout.annotate_stats_url(root, cfg.id, shard),
            frames.tokens_record_url(root, cfg.id, shard),
        ):
            if storage.exists(record):
                read.append(record)
        per_file = frames.files_frame(
            files,
            frames.annotated_files(cfg, shard),
            signal_counts,
            minhash_counts,
            minhash_schemas,
            duplicates_schemas,
            clusters_schemas,
            tokens[1] if tokens else None,
        )
        tables = {
            "documents": documents,
            "quality_signals": signals,
            "minhash": minhash,
            "duplicates": duplicates,
            "clusters": clusters,
            "tokens": tokens[0] if tokens else None,
            "files": per_file,
        }
        inputs = {
            "files": {frames._rel(root, url): storage.digest(url)["sha256"] for url in sorted(set(read))},
            "suites_sha256": _suites_digest(SHARD_SUITES),
            "languages": list(cfg.languages),
        }
        url = record_url(root, cfg.id, unit)
        if not force:
            earlier = _finished(url, inputs)
            if earlier is not None and earlier.get("success"):
                log.info("validated earlier for the same files: %s (Data Docs %s)", url, earlier.get("data_docs"))
                return {**earlier, "skipped": True}
        result = _run(cfg, unit, suites, tables, {"languages": list(cfg.languages)})
        result.update(
            shard=shard,
            counts={
                "files": len(files),
                "documents": int(per_file["documents_lines"].clip(lower=0).sum()) if len(per_file) else 0,
                "tokens": int(sum((t.get("tokens_total") or 0) for t in tokens[1].values())) if tokens else None,
            },
        )
        return _finish(cfg, unit, inputs, result, f"shard {shard_label(cfg.id, shard)}")


def _run(
    cfg: SnapshotConfig, unit: str, suites: dict[str, dict[str, Any]], tables: dict[str, Any], parameters: dict[str, Any]
) -> dict[str, Any]:
    local = tempfile.mkdtemp(prefix="rpj-gx-docs-")
    runner = Runner(local, parameters)
    result: dict[str, Any] = {"snapshot": cfg.id, "unit": unit, "suites": {}}
    for name, suite in suites.items():
        table = tables.get(name)
        if table is None:
            result["suites"][name] = {
                "success": True,
                "skipped": "no token files for this shard (the tokens stage has not run)",
                "expectations": [],
            }
            log.info("suite %s skipped: no token files", name)
            continue
        expectations = runner.run(suite, table, unit)
        result["suites"][name] = {"skipped": None, **_summarise(name, expectations, table)}
    result["success"] = all(s["success"] for s in result["suites"].values())
    result["_runner"], result["_local"] = runner, local
    return result


def _finish(cfg: SnapshotConfig, unit: str, inputs: dict[str, Any], result: dict[str, Any], what: str) -> dict[str, Any]:
    import shutil

    runner, local = result.pop("_runner"), result.pop("_local")
    root = cfg.storage_root
    result["data_docs"] = storage.join(validation_dir(root, cfg.id, unit), "data_docs", "index.html")
    result["record"] = record_url(root, cfg.id, unit)
    try:
        _commit(root, cfg.id, unit, inputs, result, runner, local)
    finally:
        shutil.rmtree(local, ignore_errors=True)
    if not result["success"]:
        log.error("validation of %s failed; Data Docs: %s", what, result["data_docs"])
        raise ValidationFailedError(_message(what, result), result)
    log.info("validation of %s passed; Data Docs: %s", what, result["data_docs"])
    return result


def _shard_dirs(root: str, component: str, snapshot: str) -> set[int]:
    out = set()
    for name in storage.listdir(storage.join(root, component, layout.validate_snapshot(snapshot))):
        if len(name) == 4 and name.isascii() and name.isdigit():
            out.add(int(name))
    return out


def _orphans(cfg: SnapshotConfig, shard: int) -> str:
    """``ok`` if every duplicates and clusters file of the shard has its documents file."""
    root = cfg.storage_root
    docs = set(storage.listdir(layout.shard_dir(root, "documents", cfg.id, shard)))
    for component, suffix in (("duplicates", layout.DUPLICATES_SUFFIX), ("clusters", layout.CLUSTERS_SUFFIX)):
        for name in storage.listdir(layout.shard_dir(root, component, cfg.id, shard)):
            if name.endswith(suffix) and name[: -len(suffix)] + layout.DOCUMENTS_SUFFIX not in docs:
                return f"{component}/{cfg.id}/{shard:04d}/{name} has no documents file"
    return frames.OK


def validate_snapshot(cfg: SnapshotConfig, shards: list[int] | range) -> dict[str, Any]:
    """The snapshot-level checks (suite ``snapshot``) over ``shards``, committed like a shard's.

    Every shard must have a successful validation record whose inputs are still the files on
    storage (checked by the record's digests of the files the shard validation read); documents
    validated per shard must equal the CCNet record's documents; tokens validated must equal the
    tokens record's total (when the shard has one); every duplicates and clusters file of the
    snapshot (any shard folder) must have its documents file.
    """
    root, unit = cfg.storage_root, "snapshot"
    suites = {SNAPSHOT_SUITE: load_suite(SNAPSHOT_SUITE)}
    wanted = sorted(set(shards))
    found = _shard_dirs(root, "duplicates", cfg.id) | _shard_dirs(root, "clusters", cfg.id)
    rows = []
    digests: dict[str, str] = {}
    totals = {"documents": 0, "tokens": 0}
    for shard in sorted(set(wanted) | found):
        row: dict[str, Any] = {"shard": f"{shard:04d}", "orphans": _orphans(cfg, shard)}
        if shard in wanted:
            url = record_url(root, cfg.id, f"{shard:04d}")
            record = commit.load_record(url)
            res = (record or {}).get("result") or {}
            if record is None:
                row["shard_validated"] = "no validation record"
            elif not res.get("success"):
                row["shard_validated"] = "its validation failed"
            else:
                changed = [rel for rel, sha in record["inputs"]["files"].items() if _sha(root, rel) != sha]
                row["shard_validated"] = frames.OK if not changed else f"{len(changed)} files changed since, e.g. {changed[0]}"
                digests[f"{shard:04d}"] = storage.digest(url)["sha256"]
            ccnet = commit.load_record(layout.ccnet_stats_url(root, cfg.id, shard)) or {}
            row["documents_validated"] = (res.get("counts") or {}).get("documents")
            row["documents_ccnet"] = _ccnet_documents(ccnet)
            tokens_record = commit.load_record(frames.tokens_record_url(root, cfg.id, shard))
            row["tokens_validated"] = (res.get("counts") or {}).get("tokens") if tokens_record else None
            row["tokens_recorded"] = _record_tokens(tokens_record) if tokens_record else None
            totals["documents"] += row["documents_validated"] or 0
            totals["tokens"] += row["tokens_validated"] or 0
        rows.append(row)
    table = frames._frame(rows, ["shard"])
    inputs = {"shards": digests, "suites_sha256": _suites_digest((SNAPSHOT_SUITE,)), "requested": [f"{s:04d}" for s in wanted]}
    result = _run(cfg, unit, suites, {SNAPSHOT_SUITE: table}, {"languages": list(cfg.languages)})
    result.update(shards=len(wanted), counts=totals)
    return _finish(cfg, unit, inputs, result, f"snapshot {cfg.id}")


def _sha(root: str, rel: str) -> str | None:
    url = commit.resolve(root.rstrip("/") + "/", rel)
    try:
        return str(storage.digest(url)["sha256"])
    except FileNotFoundError:
        return None


def _ccnet_documents(record: dict[str, Any]) -> int | None:
    """Documents the CCNet stage kept for the shard (its record's ``counts.kept``)."""
    kept = (record.get("counts") or {}).get("kept")
    return kept if isinstance(kept, int) else None


def _record_tokens(record: dict[str, Any]) -> int | None:
    files = record.get("files")
    if isinstance(files, dict):
        values = [v.get("tokens") for v in files.values() if isinstance(v, dict)]
        ints = [v for v in values if isinstance(v, int)]
        if values and len(ints) == len(values):
            return sum(ints)
    totals = record.get("totals")
    if isinstance(totals, dict) and isinstance(totals.get("tokens"), int):
        return totals["tokens"]
    return None
