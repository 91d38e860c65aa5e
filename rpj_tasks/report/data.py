"""The numbers of a snapshot report (the JSON twin of the page), from the records and files alone.

Every figure comes from a file under the storage root, never from a log or a clock, and is of
the shards the report covers, except the dedup counts and rates (see below):

* documents per stage and drop reason, kept per language and bucket, broken records: the CCNet
  records ``stats/ccnet/{snapshot}/*.json`` (:func:`rpj_tasks.core.summary.snapshot_summary`);
* per stage (download, hashes, ccnet, annotate, tokens, validate): shards with a record, shards
  without one (did not finish), documents, the record's ``wall_seconds`` and its busy seconds (the
  sum of its per-step timings, summed over worker processes: a proxy of core-seconds that includes
  I/O waits; rpj does not record CPU time), and the in-task retries the download records count;
* exact and fuzzy duplicates: the dedup and clusters commit records, which are snapshot-wide (dedup
  runs over every shard of the snapshot at once), each rate over the documents that step ran over
  (the exact-dedup index record's digests, the clusters record's ``lsh.docs``), never over the
  reported shards' documents; ``dedup.subset`` says the report covers fewer shards than the
  snapshot has, and the page says these figures are the whole snapshot's;
* tokens: the token totals of the reported shards (:func:`rpj_tasks.tokens.token_totals` with
  ``shards``: documents and tokens per language and bucket before and after exact and fuzzy dedup);
* quality-signal histograms: the ``quality_signals`` files the annotation records list, read in
  sorted order, at most :data:`MAX_FILES` of them (evenly spaced) and :data:`DEFAULT_SAMPLE`
  documents in all (an equal share per file, its first lines: deterministic; the page says when
  it sampled);
* Airflow's view of the run (task states of the run's mapped tasks), when the DAG passes it in
  (``run``): plain data, the engine never asks Airflow.

Same files and the same ``run``, same dict: no timestamp, no storage root (it may name a bucket) in
the result.  A DAG run's ``run`` (its run id and task states) differs from any other run's, so
every DAG run writes a new report even when the files did not change.
"""

from __future__ import annotations

import bisect
import gzip
import json
import math
from collections.abc import Iterable
from typing import Any

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.summary import recorded_shards, snapshot_summary

#: Bumped when the report's fields change meaning.
FORMAT = 1
#: Documents read from the quality-signals files for the histograms, at most.
DEFAULT_SAMPLE = 200_000
#: Quality-signals files opened for the histograms, at most (evenly spaced in sorted order).
MAX_FILES = 2_000
BINS = 20

#: ``signal: (label, scale)``: ``log10`` bins the decimal log of positive values, ``unit`` bins
#: [0, 1], ``linear`` bins [min, max] of the values seen.
SIGNALS: dict[str, tuple[str, str]] = {
    "rps_doc_word_count": ("words per document", "log10"),
    "ccnet_perplexity": ("CCNet perplexity", "log10"),
    "ccnet_language_score": ("LID score", "unit"),
    "rps_doc_stop_word_fraction": ("stop-word fraction", "unit"),
    "rps_doc_frac_chars_dupe_5grams": ("fraction of characters in duplicate 5-grams", "unit"),
    "rps_doc_frac_chars_dupe_10grams": ("fraction of characters in duplicate 10-grams", "unit"),
    "rps_doc_frac_chars_top_2gram": ("fraction of characters in the top 2-gram", "unit"),
    "rps_doc_ml_palm_score": ("classifier score: palm (en)", "linear"),
    "rps_doc_ml_wikiref_score": ("classifier score: wikiref (en)", "linear"),
    "rps_doc_ml_wikipedia_score": ("classifier score: wikipedia", "linear"),
}

#: ``stage: (stats folder, counter of documents it processed or None)``, in pipeline order.
STAGES: dict[str, tuple[str, str | None]] = {
    "download": ("download", None),
    "hashes": ("hashes", "wet.docs"),
    "ccnet": ("ccnet", "wet.docs"),
    "annotate": ("annotate", "annotate.lines"),
    "tokens": ("tokens", "tokens.lines"),
    "validate": ("validate", None),
}


def _records(root: str, folder: str, snapshot: str, shards: set[int]) -> dict[int, dict[str, Any]]:
    stats_dir = storage.join(root, "stats", folder, snapshot)
    out = {}
    for shard in sorted(recorded_shards(stats_dir) & shards):
        record = commit.load_record(storage.join(stats_dir, f"{shard:04d}.json"))
        if record is not None:
            out[shard] = record
    return out


def stage_rows(cfg: SnapshotConfig, shards: list[int]) -> list[dict[str, Any]]:
    """One row per stage: shards recorded and unfinished, documents, seconds, retries."""
    wanted = set(shards)
    rows = []
    for stage, (folder, counter) in STAGES.items():
        records = _records(cfg.storage_root, folder, cfg.id, wanted)
        walls = [float(r["wall_seconds"]) for r in records.values() if r.get("wall_seconds") is not None]
        wall = round(math.fsum(walls), 3) if walls else None  # download and hashes records have none
        busy = sum(float(v) for r in records.values() for v in (r.get("seconds") or {}).values())
        docs = sum(int((r.get("counts") or {}).get(counter, 0)) for r in records.values()) if counter else None
        retries = sum(int((r.get("counts") or {}).get("download.retries", 0)) for r in records.values())
        rows.append(
            {
                "stage": stage,
                "shards": len(records),
                "unfinished": sorted(wanted - set(records)),
                "documents": docs,
                "wall_seconds": wall,
                "busy_seconds": round(busy, 3),
                "documents_per_busy_second": round(docs / busy, 1) if docs and busy else None,
                "retries": retries if stage == "download" else None,
            }
        )
    return rows


def _rate(part: int | None, whole: int | None) -> float | None:
    return round(part / whole, 6) if part is not None and whole else None


def dedup_denominators(cfg: SnapshotConfig) -> dict[str, int | None]:
    """The documents each dedup ran over, snapshot-wide like its counts: ``exact`` the digests of
    the snapshot's exact-dedup index record (one per head and middle document indexed), ``fuzzy``
    the documents of its clusters record (``lsh.docs``); None where that step has not finished."""
    from rpj_tasks.dedup.exact import index_record_url

    index = commit.load_record(index_record_url(cfg.storage_root, cfg.id))
    clusters = commit.load_record(layout.clusters_record_url(cfg.storage_root, [cfg.id], cfg.clusters_threshold))
    return {
        "exact": None if index is None else int(sum(index.get("rows") or [])),
        "fuzzy": None if clusters is None else int((clusters.get("counts") or {}).get("lsh.docs", 0)),
    }


def dedup_section(
    summary: dict[str, Any], tokens: dict[str, Any] | None, denominators: dict[str, int | None], *, subset: bool = False
) -> dict[str, Any]:
    """Exact and fuzzy duplicates.  The counts and rates are the dedup steps' own, over the whole
    snapshot (their records cover every shard they ran over; ``subset`` says the report covers
    fewer shards): each rate is over the documents that step ran over (:func:`dedup_denominators`).
    ``removed_by_tokens_files``: the documents each removes in the reported shards' token files."""
    kept = summary["kept_by_language"]
    annotated = sum(n for buckets in kept.values() for b, n in buckets.items() if b in layout.ANNOTATED_BUCKETS)
    d = summary["dedup"]
    removed_fuzzy = None if d["clusters"] is None else d["clustered_documents"] - d["clusters"]
    out: dict[str, Any] = {
        "annotated_documents": annotated,
        "scope": "snapshot",
        "subset": subset,
        "exact_documents": denominators["exact"],
        "exact_duplicates": d["exact_duplicates"],
        "exact_rate": _rate(d["exact_duplicates"], denominators["exact"]),
        "clusters_threshold": d["clusters_threshold"],
        "fuzzy_documents": denominators["fuzzy"],
        "clusters": d["clusters"],
        "clustered_documents": d["clustered_documents"],
        "fuzzy_removed": removed_fuzzy,
        "fuzzy_rate": _rate(removed_fuzzy, denominators["fuzzy"]),
    }
    if tokens is not None:
        total = tokens["total"]
        out["removed_by_tokens_files"] = {
            name: total["all"]["documents"] - total[name]["documents"] for name in ("after_exact", "after_fuzzy", "after_both")
        }
    return out


def tokens_by_language(tokens: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{lang: {set: {documents, tokens}}}`` summed over buckets, plus ``"total"``."""
    if tokens is None:
        return None
    from rpj_tasks.tokens.totals import SETS

    out: dict[str, Any] = {}
    for lang, buckets in sorted(tokens["languages"].items()):
        out[lang] = {s: {k: sum(b[s][k] for b in buckets.values()) for k in ("documents", "tokens")} for s in SETS}
    out["total"] = {s: dict(tokens["total"][s]) for s in SETS}
    return out


# ---------------------------------------------------------------------------- quality-signal histograms


def signals_files(cfg: SnapshotConfig, shards: list[int]) -> list[str]:
    """The quality-signals files the annotation records of ``shards`` list, sorted."""
    out = []
    for shard, record in _records(cfg.storage_root, "annotate", cfg.id, set(shards)).items():
        record_url = layout.annotate_stats_url(cfg.storage_root, cfg.id, shard)
        out += [u for u in commit.listed_outputs(record_url, record).values() if u.endswith(layout.SIGNALS_SUFFIX)]
    return sorted(out)


def _score(value: Any) -> float | None:
    """A signal's score: a JSON number or null; anything else (a string, a bool, a list) is not."""
    if value is None or (isinstance(value, (int, float)) and not isinstance(value, bool)):
        return value
    raise TypeError(f"not a number: {value!r}")


def read_signals(
    files: list[str], names: Iterable[str], cap: int, max_files: int = MAX_FILES
) -> tuple[dict[str, list[float | None]], dict[str, Any]]:
    """The document-level score of each of ``names`` for the first ``ceil(cap / files read)``
    documents of every file read (all, or ``max_files`` evenly spaced in sorted order); and what
    was read.  A line that is not a JSON object, or whose scores are not numbers or null, is
    counted in ``bad_lines``, not read."""
    names = list(names)
    values: dict[str, list[float | None]] = {n: [] for n in names}
    chosen = files if len(files) <= max_files else [files[i * len(files) // max_files] for i in range(max_files)]
    per_file = max(1, math.ceil(cap / len(chosen))) if chosen else 0
    read = truncated = bad = 0
    for url in chosen:
        with storage.open_read(url) as raw, gzip.open(raw, "rt", encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i == per_file:
                    truncated += 1
                    break
                try:
                    signals = json.loads(line)["quality_signals"]
                    scores = [_score(signals[name][0][2]) if signals.get(name) else None for name in names]
                except (ValueError, KeyError, IndexError, TypeError, AttributeError):
                    bad += 1
                    continue
                for name, score in zip(names, scores):
                    values[name].append(score)
                read += 1
    sample = {"files": len(files), "files_read": len(chosen), "documents": read, "per_file_cap": per_file}
    return values, {**sample, "files_cut": truncated, "bad_lines": bad, "cap": cap}


def _quantile(ordered: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least ``q`` of the values at or below it."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def histogram(values: list[float | None], scale: str, bins: int = BINS) -> dict[str, Any]:
    """Counts per bin (``edges`` has ``bins + 1`` entries; a value on an inner edge goes right, the
    maximum into the last bin) and summary statistics of the non-null values."""
    present = sorted(float(v) for v in values if v is not None and math.isfinite(float(v)))
    out: dict[str, Any] = {"scale": scale, "n": len(present), "nulls": len(values) - len(present), "excluded": 0}
    if not present:
        return {**out, "edges": [], "counts": [], "min": None, "max": None, "mean": None, "p10": None, "p50": None, "p90": None}
    points = present
    if scale == "log10":
        points = [math.log10(v) for v in present if v > 0]
        out["excluded"] = len(present) - len(points)  # zero or negative: no logarithm
    if scale == "unit":
        lo, hi = 0.0, 1.0
        out["excluded"] = sum(1 for v in points if not 0.0 <= v <= 1.0)
        points = [v for v in points if 0.0 <= v <= 1.0]
    elif scale == "log10":
        lo = math.floor(min(points) * 2) / 2 if points else 0.0
        hi = math.ceil(max(points) * 2) / 2 if points else 1.0
    else:
        lo, hi = min(points), max(points)
    if hi <= lo:
        hi = lo + 1.0
    # the edges as reported (lo + (hi - lo) * i / bins, 6 decimals) are the ones binned by: a value
    # equal to an inner edge, e.g. 0.3 with edges 0.05 apart, lands right of it whatever the float
    # error of (v - lo) / width would say
    edges = [round(lo + (hi - lo) * i / bins, 6) for i in range(bins + 1)]
    counts = [0] * bins
    for v in points:
        counts[min(bins - 1, max(0, bisect.bisect_right(edges, v) - 1))] += 1
    out.update(
        edges=edges,
        counts=counts,
        min=present[0],
        max=present[-1],
        mean=round(math.fsum(present) / len(present), 6),
        p10=_quantile(present, 0.1),
        p50=_quantile(present, 0.5),
        p90=_quantile(present, 0.9),
    )
    return out


def signal_histograms(
    cfg: SnapshotConfig, shards: list[int], cap: int = DEFAULT_SAMPLE, max_files: int = MAX_FILES
) -> dict[str, Any]:
    files = signals_files(cfg, shards)
    values, sample = read_signals(files, SIGNALS, cap, max_files)
    sample["sampled"] = sample["files_cut"] > 0 or sample["files_read"] < sample["files"]
    return {
        "sample": sample,
        "histograms": {name: {"label": label, **histogram(values[name], scale)} for name, (label, scale) in SIGNALS.items()},
    }


# ---------------------------------------------------------------------------- the report


def airflow_failures(run: dict[str, Any] | None) -> dict[str, Any] | None:
    """From the DAG's ``run`` (``{"dag_id", "run_id", "task_states": {key: state}}``): task instances
    per state and the keys of those that did not succeed."""
    if not run:
        return None
    states = run.get("task_states") or {}
    by_state: dict[str, int] = {}
    for state in states.values():
        by_state[str(state)] = by_state.get(str(state), 0) + 1
    bad = sorted(k for k, s in states.items() if s in ("failed", "upstream_failed", "up_for_retry", "removed"))
    return {
        "dag_id": run.get("dag_id"),
        "run_id": run.get("run_id"),
        "by_state": dict(sorted(by_state.items())),
        "not_successful": bad,
    }


def build_report(
    cfg: SnapshotConfig,
    shards: list[int] | None = None,
    *,
    run: dict[str, Any] | None = None,
    sample_cap: int = DEFAULT_SAMPLE,
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report's data (module doc) for ``shards`` (default: every shard of the snapshot);
    ``summary``: their :func:`snapshot_summary` if the caller has already read it."""
    shards = sorted(set(range(cfg.num_shards) if shards is None else shards))
    subset = set(shards) != set(range(cfg.num_shards))
    if summary is None:
        summary = snapshot_summary(cfg, shards)
    tokens = None
    if recorded_shards(layout.tokens_stats_dir(cfg.storage_root, cfg.id)):
        from rpj_tasks.tokens import token_totals

        tokens = token_totals(cfg.storage_root, cfg.id, shards=shards)
    kept = summary["kept_by_language"]
    stages = stage_rows(cfg, shards)
    release = summary["release"]
    from rpj_tasks.core.plan import format_shards

    return {
        "format": FORMAT,
        "snapshot": cfg.id,
        "crawl": cfg.crawl,
        "languages": list(cfg.languages),
        "shards": {"planned": len(shards), "list": format_shards(shards), "subset": subset},
        "documents": {
            "read": summary["documents_read"],
            "dropped": summary["dropped"],
            "kept": summary["documents_kept"],
            "bad_records": {k.removeprefix("wet.skipped."): v for k, v in sorted(summary["bad_records"].items())},
            "damaged_sources": len(summary["damaged_sources"]),
        },
        "kept": {lang: {b: buckets.get(b, 0) for b in layout.BUCKETS} for lang, buckets in kept.items()},
        "languages_kept": {lang: sum(buckets.values()) for lang, buckets in kept.items()},
        "buckets_kept": {b: sum(buckets.get(b, 0) for buckets in kept.values()) for b in layout.BUCKETS},
        "annotated": {"files": summary["files_annotated"], "documents": summary["lines_annotated"]},
        "stages": stages,
        "dedup": dedup_section(summary, tokens, dedup_denominators(cfg), subset=subset),
        "tokens": tokens_by_language(tokens),
        "tokens_by_bucket": None if tokens is None else tokens["languages"],
        "validation": {
            "passed": release["validated"],
            "failed_shards": release["validation_failed"],
            "published": release["published"],
        },
        "failures": {
            "unfinished": {row["stage"]: row["unfinished"] for row in stages if row["unfinished"]},
            "validation_failed": release["validation_failed"],
            "download_retries": next(r["retries"] for r in stages if r["stage"] == "download"),
            "airflow": airflow_failures(run),
        },
        "signals": signal_histograms(cfg, shards, sample_cap),
    }
