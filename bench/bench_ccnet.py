"""CCNet-stage throughput on one generated shard, whole processes, CPU time; prints JSON.

Generates (untimed) a one-segment mirror of ``--docs`` documents and the sample models, stages the
segment, then runs the shard's two CCNet steps, ``hashes`` and ``mine`` (dedup, LID, perplexity,
bucket, write), in a **fresh interpreter** per run: the figure is that process's CPU time (user +
system, from ``getrusage(RUSAGE_CHILDREN)``), interpreter start-up, imports and model loading
included, as a task process pays them.  ``peak_rss_mb`` is that process's maximum RSS.

* ``--runs N``: N runs; the JSON gives each run and the range.
* ``--baseline DIR``: alternate runs of another source tree (a checkout of an earlier commit with
  its native extension built, e.g. ``git worktree add /tmp/base <commit>``) with this tree's, on
  the same staged shard and models: N pairs, baseline first in each pair.
* ``--step-cpu``: one more run of this tree (and of the baseline's, with ``--baseline``) whose
  per-step seconds are CPU time (the stage's timers switched from ``perf_counter`` to
  ``process_time`` in that process; the timed runs keep the stage's own timers, so they pay what
  production pays).
* ``--floors``: then, in this process, what the steps' libraries cost alone on the same texts
  (CPU time): fastText ``predict`` over the list of texts LID sees, SentencePiece ``encode`` +
  KenLM ``score`` over the normalised texts of the kept documents (per language), ``json.dumps`` +
  one level-6 gzip stream per output file for the kept documents, and zlib inflating the staged
  segment (once; ``hashes`` and ``mine`` each read it).
* ``--batch-docs N``: the ``mine`` batch size of this tree's runs (default: the stage's).
* ``--out FILE``: also write the JSON there.

    .venv/bin/python bench/bench_ccnet.py --docs 20000 [--runs 3] [--baseline /tmp/base] [--step-cpu] [--floors]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

import paired  # bench/paired.py

from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import SnapshotConfig, load_registry
from rpj_tasks.download.fetch import download_unit
from rpj_tasks.download.listing import list_segments
from rpj_tasks.sample.mirror import SAMPLE_CRAWL, generate_mirror
from rpj_tasks.sample.setup import ensure_sample

REPO = Path(__file__).resolve().parents[1]

# What a timed process runs (with the source tree under test first on sys.path): the two steps of
# shard 0, then one JSON line with the stage's record figures.
CHILD = r"""
import json, sys, time
args = json.loads(sys.argv[1])
if args["step_cpu"]:
    import contextlib
    from rpj_tasks.core.stats import Stats

    @contextlib.contextmanager
    def cpu_timer(self, step):
        start = time.process_time()
        try:
            yield
        finally:
            self.add_time(step, time.process_time() - start)

    Stats.timer = cpu_timer
from rpj_tasks.ccnet import stage as ccnet
from rpj_tasks.core.config import SnapshotConfig, load_registry
cfg = SnapshotConfig(**{**load_registry()["2000-01"].to_dict(), **args["overrides"]})
started = time.process_time()
hashes = ccnet.compute_hashes(cfg, 0, args["segments"], force=True)
after_hashes = time.process_time()
extra = {} if args["batch_docs"] is None else {"batch_docs": args["batch_docs"]}
record = ccnet.mine_shard(cfg, 0, args["segments"], force=True, **extra)
ended = time.process_time()
print(json.dumps({
    "startup_cpu": started,
    "hashes_cpu": after_hashes - started,
    "mine_cpu": ended - after_hashes,
    "hashes_seconds": hashes["seconds"],
    "counts": record["counts"],
    "seconds": record["seconds"],
}))
"""


def set_up(cfg: SnapshotConfig, docs: int, work: Path, mirror: str) -> None:
    ensure_sample(cfg.with_overrides(source_base=(work / "sample-mirror").as_uri()))
    if not storage.exists(storage.join(mirror, "crawl-data", SAMPLE_CRAWL, "wet.paths.gz")):
        generate_mirror(mirror, seed=7, segments=1, docs_per_segment=docs, broken=False)
    download_unit(cfg, 0, list_segments(mirror, cfg.crawl))


def run_steps(
    tree: Path, overrides: dict[str, Any], segments: list[str], batch_docs: int | None, step_cpu: bool
) -> dict[str, Any]:
    """One whole process running the two steps from source ``tree``: its CPU time, wall time and peak RSS."""
    args = {"overrides": overrides, "segments": segments, "batch_docs": batch_docs, "step_cpu": step_cpu}
    env = {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(args)], cwd=tree, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run from {tree} failed (exit code {proc.returncode}):\n{err.decode()[-3000:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result = json.loads(out.decode().strip().splitlines()[-1])
    docs = result["counts"]["wet.docs"]
    return {
        "tree": str(tree),
        "documents": docs,
        "documents_kept": result["counts"]["kept"],
        "cpu_seconds": round(cpu, 3),
        "wall_seconds": round(wall, 3),
        "docs_per_s_per_core": round(docs / cpu, 1),
        "startup_cpu_seconds": round(result["startup_cpu"], 3),
        "hashes_cpu_seconds": round(result["hashes_cpu"], 3),
        "mine_cpu_seconds": round(result["mine_cpu"], 3),
        "step_seconds": {k: round(v, 3) for k, v in result["seconds"].items()},
        "step_seconds_are": "CPU" if step_cpu else "wall (the stage's timers)",
        "peak_rss_mb": round(after.ru_maxrss / 1024, 1),
    }


def _inflate_members(data: bytes) -> int:
    """Bytes out of inflating every gzip member of ``data``, fed 16 KiB at a time (the reader's feed)."""
    total, pos, pending = 0, 0, b""
    while pos < len(data) or pending:
        d = zlib.decompressobj(31)
        while not d.eof:
            if not pending:
                if pos >= len(data):
                    return total
                pending, pos = data[pos : pos + (1 << 14)], pos + (1 << 14)
            total += len(d.decompress(pending))
            pending = d.unused_data if d.eof else b""
    return total


def floors(cfg: SnapshotConfig, segments: list[str]) -> dict[str, Any]:
    """CPU seconds of the steps' libraries alone on the shard's texts (see the module docstring)."""
    import gzip

    from rpj_tasks.ccnet import stage as ccnet
    from rpj_tasks.ccnet.dedup import remove_duplicate_lines
    from rpj_tasks.ccnet.lid import LanguageIdentifier
    from rpj_tasks.ccnet.models import CCNetModels
    from rpj_tasks.ccnet.normalize import ccnet_normalize
    from rpj_tasks.core.stats import Stats

    clock = time.process_time
    stats = Stats()
    table = ccnet.load_group_hashes(cfg, 0)
    docs = ccnet.read_shard_documents(ccnet.staged_segments(cfg, segments), stats, cfg.min_len)
    texts = [doc["raw_content"].replace("\n", "") for doc in map(lambda d: remove_duplicate_lines(d, table, stats), docs) if doc]
    lid = LanguageIdentifier(cfg.lid_model or None)
    models = CCNetModels.load(layout.models_url(cfg.storage_root, cfg.models_version), cfg.languages)
    out: dict[str, Any] = {"lid_texts": len(texts)}

    t = clock()
    lid.model.predict(texts, k=1)
    out["fasttext_predict"] = round(clock() - t, 3)

    kept: dict[str, list[dict[str, Any]]] = {}
    files: dict[str, list[dict[str, Any]]] = {}
    shard_dir = Path(layout.shard_dir(cfg.storage_root, "documents", cfg.id, 0).removeprefix("file://"))
    for path in sorted(shard_dir.glob("*.json.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f]
        files[path.name] = rows
        for row in rows:
            kept.setdefault(row["language"], []).append(row)
    normalized = {lang: [ccnet_normalize(row["raw_content"]) for row in rows] for lang, rows in kept.items()}
    t = clock()
    for lang, lines in normalized.items():
        scorer = models.scorer(lang)
        for pieces in scorer.sp.encode(lines, out_type=str, num_threads=1):
            scorer.lm.score(" ".join(pieces))
    out["sentencepiece_kenlm"] = round(clock() - t, 3)
    out["kept_documents"] = sum(map(len, kept.values()))

    t = clock()
    for rows in files.values():
        data = b"".join(json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n" for row in rows)
        gzip.compress(data, compresslevel=6, mtime=0)
    out["json_gzip6_write"] = round(clock() - t, 3)

    staged = [storage.read_bytes(layout.staged_segment_url(cfg.storage_root, seg)) for seg in segments]
    t = clock()
    for data in staged:
        _inflate_members(data)
    out["gunzip_read_once"] = round(clock() - t, 3)
    return out


def _range(values: list[float]) -> list[float]:
    return [min(values), max(values)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--workdir", help="reuse a work directory (models, mirror and staged shard are kept between runs)")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--baseline", type=Path, help="another source tree to alternate with this one")
    ap.add_argument("--batch-docs", type=int, help="mine batch size of this tree's runs")
    ap.add_argument("--step-cpu", action="store_true", help="one more run with per-step CPU seconds")
    ap.add_argument("--floors", action="store_true", help="the libraries' own costs on the same texts")
    ap.add_argument("--out", type=Path, help="also write the JSON here")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rpj-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    root = (work / "data").as_uri()
    mirror = (work / f"mirror-{args.docs}").as_uri()
    overrides = {"storage_root": root, "source_base": mirror, "num_shards": 1, "hash_group_size": 1}
    cfg = SnapshotConfig(**{**load_registry()["2000-01"].to_dict(), **overrides})
    # untimed set-up (models built once per workdir, the one-segment mirror, staging) in a child
    # process, so that the timed processes find everything in place
    child = multiprocessing.get_context("fork").Process(target=set_up, args=(cfg, args.docs, work, mirror))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"set-up failed (exit code {child.exitcode})")
    segments = list_segments(mirror, cfg.crawl)
    mb = sum(storage.size(layout.staged_segment_url(root, s)) for s in segments) / 1e6

    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    runs, baseline_runs = [], []
    for _ in range(args.runs):
        if args.baseline:
            baseline_runs.append(run_steps(args.baseline.resolve(), overrides, segments, None, False))
        runs.append(run_steps(REPO, overrides, segments, args.batch_docs, False))
    result: dict[str, Any] = {
        "benchmark": "ccnet_stage",
        "started_utc": started,
        "method": "whole process per run (fresh interpreter: start-up, imports, model loading, hashes + mine of one "
        "shard), CPU = user + system from getrusage(RUSAGE_CHILDREN)",
        "cpu_model": paired.cpu_model(),
        "documents": runs[0]["documents"],
        "documents_kept": runs[0]["documents_kept"],
        "input_mb_gzip": round(mb, 2),
        "batch_docs": args.batch_docs,
        "docs_per_s_per_core": _range([r["docs_per_s_per_core"] for r in runs]),
        "cpu_seconds": _range([r["cpu_seconds"] for r in runs]),
        "peak_rss_mb": _range([r["peak_rss_mb"] for r in runs]),
        "runs": runs,
    }
    if args.baseline:
        result["baseline"] = {
            "tree": str(args.baseline.resolve()),
            "docs_per_s_per_core": _range([r["docs_per_s_per_core"] for r in baseline_runs]),
            "cpu_seconds": _range([r["cpu_seconds"] for r in baseline_runs]),
            "peak_rss_mb": _range([r["peak_rss_mb"] for r in baseline_runs]),
            "runs": baseline_runs,
        }
        ratios = [b["cpu_seconds"] / r["cpu_seconds"] for b, r in zip(baseline_runs, runs)]
        result["speedup_per_pair"] = [round(x, 2) for x in ratios]
    if args.step_cpu:
        if args.baseline:
            result["baseline"]["step_cpu_run"] = run_steps(args.baseline.resolve(), overrides, segments, None, True)
        result["step_cpu_run"] = run_steps(REPO, overrides, segments, args.batch_docs, True)
    if args.floors:
        result["floors_cpu_seconds"] = floors(cfg, segments)
    result["ended_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
