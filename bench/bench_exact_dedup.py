"""Benchmark exact dedup (rpj_tasks/dedup/exact.py) on synthetic digests with planted duplicates.

Each phase runs in a fresh process (so its peak RSS is its own), ``--runs`` times; the JSON gives
the wall and CPU seconds (whole process, children none) and the peak RSS of every run, and rows/s:

* ``index``: the synthetic digests of ``--snapshots`` snapshots committed as their indexes
  (:func:`write_index`: sort, split into ``--partitions`` files; generation not timed);
* ``dedup``: from scratch, every partition merged over the snapshots, then every duplicates file
  written (:func:`run_exact_dedup`);
* ``incremental``: an extra, newest snapshot of ``--new-digests`` digests indexed, then
  :func:`run_exact_dedup` over all of them (only the changed files are written);
* ``read`` (``--read-docs N``): :func:`index_snapshot` on real gzip JSON Lines documents files of
  ~2 KB documents: the digest-reading rate of step 1.

A fraction ``--dup-rate`` of each snapshot's digests is drawn from a pool shared by all snapshots
(so both within- and cross-snapshot duplicates occur).

    .venv/bin/python bench/bench_exact_dedup.py [--snapshots 10] [--digests 500000] [--runs 3]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from rpj_tasks.core import commit, layout
from rpj_tasks.dedup import exact

FILES = [("en", "head"), ("en", "middle"), ("de", "head"), ("de", "middle")]


def snapshot_ids(n: int) -> list[str]:
    """``n`` snapshot ids, oldest first (2010-01, 2010-03, ...; week 52 at most)."""
    return [f"{2010 + i // 26}-{1 + 2 * (i % 26):02d}" for i in range(n)]


def synthetic_rows(k: int, n: int, shards: int, dup_rate: float, pool: int) -> tuple[np.ndarray, list[tuple[int, str, str]]]:
    """``n`` rows of snapshot number ``k``: random digests, ``dup_rate`` of them from a shared pool."""
    rng = np.random.default_rng(1000 + k)
    rows = np.empty(n, dtype=exact.ROW)
    rows["d0"] = rng.integers(0, 2**64, n, dtype=np.uint64)
    rows["d1"] = rng.integers(0, 2**64, n, dtype=np.uint64)
    rows["d2"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    planted = rng.random(n) < dup_rate
    pick = rng.integers(0, pool, int(planted.sum()))
    pool_rng = np.random.default_rng(7)
    pool_rows = np.empty(pool, dtype=exact.ROW)
    for name, high, dtype in (("d0", 2**64, np.uint64), ("d1", 2**64, np.uint64), ("d2", 2**32, np.uint32)):
        pool_rows[name] = pool_rng.integers(0, high, pool, dtype=dtype)
        rows[name][planted] = pool_rows[name][pick]
    files = [(shard, lang, bucket) for shard in range(shards) for lang, bucket in FILES]
    per_file = -(-n // len(files))
    starts = np.array([exact.position(*f) for f in files], dtype=np.uint64)
    line = np.arange(n, dtype=np.uint64)
    rows["pos"] = starts[line // np.uint64(per_file)] + line % np.uint64(per_file)
    return rows, files


def write_documents(root: str, snapshot: str, docs: int, shards: int = 4) -> None:
    """``docs`` ~2 KB documents (10 % repeated digests) in head/middle files with CCNet records."""
    rng = np.random.default_rng(3)
    words = [f"w{i}" for i in range(5000)]
    per_shard = -(-docs // shards)
    for shard in range(shards):
        out_dir = layout.shard_dir(root, "documents", snapshot, shard)
        with commit.UnitCommit(layout.ccnet_stats_url(root, snapshot, shard), {"bench": 1}, [out_dir]) as unit:
            for f, (lang, bucket) in enumerate(FILES):
                with unit.gzip_writer(layout.documents_url(root, snapshot, shard, lang, bucket)) as out:
                    for i in range(per_shard // len(FILES)):
                        n = int(rng.integers(0, docs)) if rng.random() < 0.1 else (shard * 10 + f) * docs + i
                        digest = "sha1:" + base64.b32encode(hashlib.sha1(str(n).encode()).digest()).decode()
                        text = " ".join(rng.choice(words, 350).tolist())
                        doc = {"url": f"https://example.com/{n}", "date_download": "2023-01-26T21:25:04Z", "digest": digest}
                        doc.update({"length": len(text), "nlines": 1, "source_domain": "example.com", "title": "t"})
                        doc.update({"raw_content": text, "language": lang, "bucket": bucket, "perplexity": 100.0})
                        out.write(json.dumps(doc, ensure_ascii=False).encode() + b"\n")
            unit.commit({})


def phase(args: argparse.Namespace) -> dict[str, Any]:
    """One phase in this process; its timings, rows and peak RSS."""
    config = exact.ExactDedupConfig(partitions=args.partitions, memory_budget=args.memory_budget)
    snaps = snapshot_ids(args.snapshots + 1)
    extra: dict[str, Any] = {}
    wall = cpu = 0.0
    rows = 0
    if args.phase == "index":
        for k, snap in enumerate(snaps[:-1]):
            data, files = synthetic_rows(k, args.digests, args.shards, args.dup_rate, args.pool)
            started, cpu0 = time.perf_counter(), time.process_time()
            exact.write_index(args.root, snap, data, files, {"synthetic": k}, config)
            wall, cpu, rows = wall + time.perf_counter() - started, cpu + time.process_time() - cpu0, rows + len(data)
    elif args.phase in ("dedup", "incremental"):
        rows = args.snapshots * args.digests
        started, cpu0 = time.perf_counter(), time.process_time()
        if args.phase == "incremental":
            data, files = synthetic_rows(args.snapshots, args.new_digests, args.shards, args.dup_rate, args.pool)
            started, cpu0 = time.perf_counter(), time.process_time()
            exact.write_index(args.root, snaps[-1], data, files, {"synthetic": args.snapshots}, config)
            rows += len(data)
        result = exact.run_exact_dedup(args.root, snaps if args.phase == "incremental" else snaps[:-1], config)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu0
        extra = {
            "files_written": sum(len(v) for v in result["files_written"].values()),
            "max_partition_mb": round(result["max_partition_bytes"] / 2**20, 1),
        }
    else:  # read
        write_documents(args.root, "2030-01", args.read_docs)
        started, cpu0 = time.perf_counter(), time.process_time()
        record = exact.index_snapshot(args.root, "2030-01", range(4), config)
        wall, cpu, rows = time.perf_counter() - started, time.process_time() - cpu0, record["counts"]["dedup.documents"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "rows": rows, "peak_rss_mb": round(peak, 1), **extra}


def run_phase(args: argparse.Namespace, name: str, root: str) -> dict[str, Any]:
    argv = [sys.executable, __file__, "--phase", name, "--root", root]
    for key in ("snapshots", "digests", "new_digests", "shards", "partitions", "dup_rate", "pool", "memory_budget", "read_docs"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"runs": runs}
    for key in ("wall_s", "cpu_s", "peak_rss_mb"):
        values = [r[key] for r in runs]
        out[key] = [min(values), max(values)]
    rows = runs[0]["rows"]
    out["rows"] = rows
    out["rows_per_s_wall"] = [round(rows / max(r["wall_s"] for r in runs)), round(rows / min(r["wall_s"] for r in runs))]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=10)
    parser.add_argument("--digests", type=int, default=500_000, help="digests per snapshot")
    parser.add_argument("--new-digests", type=int, default=None, help="digests of the newest snapshot (default: --digests)")
    parser.add_argument("--shards", type=int, default=50, help="shards per snapshot (4 files each)")
    parser.add_argument("--partitions", type=int, default=exact.DEFAULT_PARTITIONS)
    parser.add_argument("--dup-rate", type=float, default=0.1)
    parser.add_argument("--pool", type=int, default=None, help="shared digest pool (default: digests / 20)")
    parser.add_argument("--memory-budget", type=int, default=exact.DEFAULT_MEMORY_BUDGET)
    parser.add_argument("--read-docs", type=int, default=20_000, help="documents for the read phase (0: skip it)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--phase", choices=["index", "dedup", "incremental", "read"], help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.new_digests = args.new_digests or args.digests
    args.pool = args.pool or max(1, args.digests // 20)
    if args.phase:
        print(json.dumps(phase(args)))
        return
    results: dict[str, list[dict[str, Any]]] = {"index": [], "dedup": [], "incremental": [], "read": []}
    for _ in range(args.runs):
        root = tempfile.mkdtemp(prefix="rpj-bench-exact-")
        try:
            for name in ("index", "dedup", "incremental") + (("read",) if args.read_docs else ()):
                results[name].append(run_phase(args, name, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    report = {
        "config": {
            k: getattr(args, k)
            for k in ("snapshots", "digests", "new_digests", "shards", "partitions", "dup_rate", "pool", "runs")
        },
        "merge_bytes_per_row": exact.MERGE_BYTES_PER_ROW,
        "index_sort_bytes_per_row": exact.SORT_BYTES_PER_ROW,
        **{name: summarise(runs) for name, runs in results.items() if runs},
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
