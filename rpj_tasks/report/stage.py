"""Write a snapshot's report and the cross-snapshot index under the storage root::

    reports/{snapshot}/index.html    the page (rpj_tasks/report/render.py)
    reports/{snapshot}/report.json   its numbers (rpj_tasks/report/data.py)
    stats/report/{snapshot}.json     commit record
    reports/index.html, index.json   every published snapshot (from listings/*.manifest.json)
    stats/report/index.json          commit record

Both are units of the commit protocol (rpj_tasks/core/commit.py) whose input is the digest of
the JSON they write: the same records and files give the same bytes, and a rewrite with the same
numbers is skipped unless forced.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.report import data, render

log = logging.getLogger("rpj.report")

MANIFEST = re.compile(r"([0-9]{4}-[0-9]{2})\.manifest\.json")
OWNED = {"index.html", "report.json"}
INDEX_OWNED = {"index.html", "index.json"}


def reports_dir(root: str) -> str:
    return storage.join(root, "reports")


def report_dir(root: str, snapshot: str) -> str:
    return storage.join(root, "reports", layout.validate_snapshot(snapshot))


def record_url(root: str, name: str) -> str:
    return storage.join(root, "stats", "report", f"{name}.json")


def _json(obj: Any) -> bytes:
    return json.dumps(obj, indent=1, sort_keys=True).encode() + b"\n"


def _write(record: str, out_dir: str, files: dict[str, bytes], owned: set[str], force: bool) -> dict[str, Any]:
    inputs = {"format": data.FORMAT, "files": {name: hashlib.sha256(body).hexdigest() for name, body in sorted(files.items())}}
    if not force and (done := commit.finished(record, inputs)) is not None:
        return {**done, "skipped": True}
    with commit.UnitCommit(record, inputs, [out_dir], owned=lambda name: name in owned) as unit:
        for name, body in files.items():
            unit.write_bytes(storage.join(out_dir, name), body)
        return {**unit.commit(), "skipped": False}


def write_report(
    cfg: SnapshotConfig,
    shards: list[int] | None = None,
    *,
    run: dict[str, Any] | None = None,
    sample_cap: int = data.DEFAULT_SAMPLE,
    force: bool = False,
    index: bool = True,
    summary: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build and write the snapshot's report (then the index, unless ``index=False``; ``summary``:
    the shards' snapshot summary if already read); returns
    ``{"report": data, "html": URL, "json": URL, "index": URL or None, "skipped": bool}``."""
    report = data.build_report(cfg, shards, run=run, sample_cap=sample_cap, summary=summary)
    out_dir = report_dir(cfg.storage_root, cfg.id)
    files = {"report.json": _json(report), "index.html": render.render_report(report).encode()}
    done = _write(record_url(cfg.storage_root, cfg.id), out_dir, files, OWNED, force)
    html_url = storage.join(out_dir, "index.html")
    log.info("report of %s %s: %s", cfg.id, "unchanged" if done["skipped"] else "written", html_url)
    index_url = write_index(cfg.storage_root, force=force)["html"] if index else None
    return {
        "report": report,
        "html": html_url,
        "json": storage.join(out_dir, "report.json"),
        "index": index_url,
        "skipped": done["skipped"],
    }


def build_index(root: str) -> dict[str, Any]:
    """Every published snapshot (a manifest in ``listings/``) with its headline numbers."""
    snapshots = []
    listings = storage.join(root, "listings")
    for name in storage.listdir(listings):
        m = MANIFEST.fullmatch(name)
        if not m:
            continue
        manifest = json.loads(storage.read_bytes(storage.join(listings, name)))
        tokens = (manifest.get("tokens") or {}).get("total")
        snapshots.append(
            {
                "snapshot": m.group(1),
                "crawl": manifest.get("crawl"),
                "shards": len(manifest.get("shards") or []),
                "languages": sorted((manifest.get("documents") or {}).keys()),
                "documents": sum(n for per in (manifest.get("documents") or {}).values() for n in per.values()),
                "tokens": None if tokens is None else {s: tokens[s] for s in ("all", "after_both") if s in tokens},
                "files": len(manifest.get("files") or {}),
                "report": storage.exists(storage.join(report_dir(root, m.group(1)), "index.html")),
            }
        )
    return {
        "format": data.FORMAT,
        "snapshots": snapshots,
        "total": {
            "documents": sum(e["documents"] for e in snapshots),
            "tokens_after_both": sum(((e["tokens"] or {}).get("after_both") or {}).get("tokens", 0) for e in snapshots),
        },
    }


def write_index(root: str, *, force: bool = False) -> dict[str, Any]:
    index = build_index(root)
    out_dir = reports_dir(root)
    files = {"index.json": _json(index), "index.html": render.render_index(index).encode()}
    done = _write(record_url(root, "index"), out_dir, files, INDEX_OWNED, force)
    return {"index": index, "html": storage.join(out_dir, "index.html"), "skipped": done["skipped"]}
