"""Benchmark the fuzzy-dedup clusters (rpj_tasks/dedup/lsh.py): LSH + connected components + writing.

Generates synthetic MinHash files with planted clusters (outside the timing): ``--docs`` documents
in ``--files`` files of one snapshot, real ids and ``id_int``; a fraction ``--dup`` of them in
planted groups of 2-10 near copies (each signature value redrawn with probability 3%; every
third copy exact), ~3% null signatures; only the ``signature_sim{threshold}`` column is
written (the others are not read).  Then runs :func:`rpj_tasks.dedup.lsh.run_clusters` ``--runs``
times, each in a fresh process (whole process: imports, reading, scatter, group, components,
writing, commit), and prints one JSON object: wall and CPU seconds and peak RSS per run, min/max,
the counts, which path ``run_clusters`` took (in memory, or the three steps with their files:
``--memory-budget 0`` forces the steps) and the memory formula's estimate.

    .venv/bin/python bench/bench_lsh.py [--docs 1000000] [--files 100] [--partitions 8] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from rpj_tasks.core import layout
from rpj_tasks.core.ids import id_int
from rpj_tasks.core.schema import MINHASH_BANDS, signature_column
from rpj_tasks.dedup import lsh

SNAPSHOT = "2023-06"
LANG_BUCKETS = [(lang, bucket) for lang in ("en", "de", "fr", "es", "it") for bucket in ("head", "middle")]


def planted_signatures(n: int, dup: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(uint32[n, 128], null mask)``: random signatures, a fraction ``dup`` in planted groups."""
    rng = np.random.default_rng(seed)
    sigs = rng.integers(0, 2**32, (n, 128), dtype=np.uint32)
    planted = int(n * dup)
    sizes = rng.integers(2, 11, planted // 2 + 1)
    group_of = np.repeat(np.arange(len(sizes)), sizes)[:planted]
    first = np.r_[True, group_of[1:] != group_of[:-1]]
    base = np.flatnonzero(first)[group_of]  # row of each group's first member
    rows = rng.permutation(n)[:planted]  # where the planted docs go
    copies = sigs[rows[base]]
    redraw = (rng.random((planted, 128)) < 0.03) & ((np.arange(planted) % 3) != 0)[:, None] & ~first[:, None]
    copies[redraw] = rng.integers(0, 2**32, int(redraw.sum()), dtype=np.uint32)
    sigs[rows] = copies
    nulls = rng.random(n) < 0.03
    return sigs, nulls


def minhash_table(shard_key: str, sigs: np.ndarray, nulls: np.ndarray, threshold: float) -> pa.Table:
    bands, rows = MINHASH_BANDS[float(threshold)]
    n, width = len(sigs), 4 * rows
    data = np.ascontiguousarray(sigs[:, : bands * rows].astype(">u4")).view(np.uint8).reshape(-1)
    values = pa.Array.from_buffers(
        pa.binary(),
        n * bands,
        [None, pa.py_buffer(np.arange(0, n * bands * width + 1, width, dtype=np.int32)), pa.py_buffer(data)],
    )
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, n * bands + 1, bands, dtype=np.int32)), values, mask=pa.array(nulls))
    ids = [f"{shard_key}/{i}" for i in range(n)]
    return pa.table(
        {
            "shard_id": pa.array([shard_key] * n, pa.string()),
            "id": pa.array(ids, pa.string()),
            "id_int": pa.array([id_int(i) for i in ids], pa.uint64()),
            signature_column(threshold): lists,
        }
    )


def make_inputs(root: str, docs: int, files: int, threshold: float = 0.8, dup: float = 0.2, seed: int = 0) -> list[str]:
    """Write the synthetic MinHash files under ``root``; returns their paths (sorted by base tag)."""
    sigs, nulls = planted_signatures(docs, dup, seed)
    urls = []
    for f, part in enumerate(np.array_split(np.arange(docs), files)):
        lang, bucket = LANG_BUCKETS[f % len(LANG_BUCKETS)]
        shard = f // len(LANG_BUCKETS)
        url = layout.minhash_url(root, SNAPSHOT, shard, lang, bucket)
        Path(url).parent.mkdir(parents=True, exist_ok=True)
        table = minhash_table(layout.shard_key(SNAPSHOT, shard, lang, bucket), sigs[part], nulls[part], threshold)
        pq.write_table(table, url, row_group_size=1000, compression="snappy")
        urls.append(url)
    return sorted(urls, key=lambda u: lsh.minhash_input(u, "-").base_tag)


def run_once(root: str, threshold: float, partitions: int, batch_files: int, workers: int, memory_budget: int) -> None:
    """One clusters run over the files under ``root`` (in this process); prints its record's counts."""
    urls = sorted(str(p) for p in Path(root, "minhash").rglob("*.minhash.parquet"))
    inputs = [lsh.minhash_input(u, "-") for u in urls]  # sha256 is not what is measured
    record = lsh.run_clusters(
        root,
        [SNAPSHOT],
        threshold,
        inputs=inputs,
        partitions=partitions,
        batch_files=batch_files,
        workers=workers,
        force=True,
        memory_budget=memory_budget,
    )
    print(json.dumps({"counts": record["counts"], "steps_seconds": record["seconds"]}))


def timed_process(args: list[str]) -> dict[str, object]:
    """Wall seconds, CPU seconds (user + system) and peak RSS (MB) of one child process."""
    start = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"run failed with exit code {proc.returncode}")
    return {
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        **json.loads(out.strip().splitlines()[-1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--batch-files", type=int, default=lsh.DEFAULT_BATCH_FILES)
    parser.add_argument("--workers", type=int, default=1, help="threads (run_clusters(workers=))")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--memory-budget",
        type=int,
        default=lsh.DEFAULT_MEMORY_BUDGET,
        help="run_clusters(memory_budget=): bytes for its in-memory path; 0: the three steps with their files",
    )
    parser.add_argument("--dup", type=float, default=0.2)
    parser.add_argument("--root", help="keep the inputs here (default: a temporary directory)")
    parser.add_argument("--run-only", help=argparse.SUPPRESS)
    parser.add_argument("--generate-only", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run_only:
        run_once(args.run_only, args.threshold, args.partitions, args.batch_files, args.workers, args.memory_budget)
        return
    if args.generate_only:
        make_inputs(args.generate_only, args.docs, args.files, args.threshold, args.dup)
        return
    root = args.root or tempfile.mkdtemp(prefix="rpj-bench-lsh-")
    try:
        # The inputs are generated in a child process: this one stays small, because a child's peak
        # RSS (ru_maxrss) includes the memory of the process it was forked from.
        start = time.perf_counter()
        gen = ["--docs", str(args.docs), "--files", str(args.files), "--threshold", str(args.threshold), "--dup", str(args.dup)]
        subprocess.run([sys.executable, __file__, "--generate-only", root, *gen], check=True)
        generate = time.perf_counter() - start
        cmd = [
            sys.executable,
            __file__,
            "--run-only",
            root,
            "--threshold",
            str(args.threshold),
            "--partitions",
            str(args.partitions),
        ]
        cmd += [
            "--batch-files",
            str(args.batch_files),
            "--workers",
            str(args.workers),
            "--memory-budget",
            str(args.memory_budget),
        ]
        runs = [timed_process(cmd) for _ in range(args.runs)]
        seconds = [r["seconds"] for r in runs]
        cpu = [r["cpu_seconds"] for r in runs]
        in_memory = 0 < lsh.in_memory_bytes(args.docs, args.threshold) <= args.memory_budget
        rss = [r["peak_rss_mb"] for r in runs]
        print(
            json.dumps(
                {
                    "docs": args.docs,
                    "files": args.files,
                    "threshold": args.threshold,
                    "partitions": args.partitions,
                    "batch_files": args.batch_files,
                    "workers": args.workers,
                    "planted_fraction": args.dup,
                    "generate_seconds": round(generate, 1),
                    "path": "in memory" if in_memory else "three steps with files",
                    "seconds_min": min(seconds),  # type: ignore[type-var]
                    "seconds_max": max(seconds),  # type: ignore[type-var]
                    "cpu_seconds_min": min(cpu),  # type: ignore[type-var]
                    "cpu_seconds_max": max(cpu),  # type: ignore[type-var]
                    "peak_rss_mb_min": min(rss),  # type: ignore[type-var]
                    "peak_rss_mb_max": max(rss),  # type: ignore[type-var]
                    "partition_memory_estimate_mb": round(
                        lsh.partition_memory_bytes(args.docs, args.threshold, args.partitions) / 2**20, 1
                    ),
                    "cpu": os.cpu_count(),
                    "runs": runs,
                },
                indent=1,
            )
        )
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
