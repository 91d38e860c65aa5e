"""CCNet-stage throughput on one generated shard; prints JSON.

Generates (untimed) a one-segment mirror of ``--docs`` documents and the sample models, stages
the segment, then times the two CCNet steps of the shard — ``hashes`` and ``mine`` (dedup, LID,
perplexity, bucket, write) — in this one process.  Per-core figures use CPU time; the set-up runs in
a child process and ``peak_rss_mb`` is the peak of the two steps (``VmHWM`` after a reset).

    .venv/bin/python bench/bench_ccnet.py --docs 20000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import shutil
import tempfile
import time
from pathlib import Path

from rpj_tasks.ccnet import stage as ccnet
from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import SnapshotConfig, load_registry
from rpj_tasks.download.fetch import download_unit
from rpj_tasks.download.listing import list_segments
from rpj_tasks.sample.mirror import SAMPLE_CRAWL, generate_mirror
from rpj_tasks.sample.setup import ensure_sample


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (Linux ``clear_refs`` 5) so set-up does not count; False if unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mb() -> float:
    """Peak RSS since the last reset (``VmHWM``), else the process's lifetime maximum (``getrusage``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def set_up(cfg: SnapshotConfig, docs: int, work: Path, mirror: str, root: str) -> None:
    ensure_sample(cfg.with_overrides(source_base=(work / "sample-mirror").as_uri()))
    if not storage.exists(storage.join(mirror, "crawl-data", SAMPLE_CRAWL, "wet.paths.gz")):
        generate_mirror(mirror, seed=7, segments=1, docs_per_segment=docs, broken=False)
    download_unit(cfg, 0, list_segments(mirror, cfg.crawl))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--workdir", help="reuse a work directory (models are kept between runs)")
    args = ap.parse_args()

    work = Path(args.workdir or tempfile.mkdtemp(prefix="rpj-bench-"))
    root = (work / "data").as_uri()
    mirror = (work / f"mirror-{args.docs}").as_uri()
    sample = load_registry()["2000-01"]
    cfg = SnapshotConfig(
        **{**sample.to_dict(), "storage_root": root, "source_base": mirror, "num_shards": 1, "hash_group_size": 1}
    )
    # untimed set-up (models built once per workdir, the one-segment mirror, staging) in a child
    # process, so that the memory it leaves behind does not count in this process's peak RSS
    child = multiprocessing.get_context("fork").Process(target=set_up, args=(cfg, args.docs, work, mirror, root))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"set-up failed (exit code {child.exitcode})")
    segments = list_segments(mirror, cfg.crawl)
    mb = sum(storage.size(layout.staged_segment_url(root, s)) for s in segments) / 1e6

    rss_reset = reset_peak_rss()
    t0, c0 = time.perf_counter(), time.process_time()
    ccnet.compute_hashes(cfg, 0, segments, force=True)
    _, c1 = time.perf_counter(), time.process_time()
    record = ccnet.mine_shard(cfg, 0, segments, force=True)
    t2, c2 = time.perf_counter(), time.process_time()

    docs = record["counts"]["wet.docs"]
    cpu = c2 - c0
    steps = dict(record["seconds"])
    steps["hashes_stage"] = round(c1 - c0, 3)
    print(
        json.dumps(
            {
                "benchmark": "ccnet_stage",
                "documents": docs,
                "documents_kept": record["counts"]["kept"],
                "input_mb_gzip": round(mb, 2),
                "wall_seconds": round(t2 - t0, 2),
                "cpu_seconds": round(cpu, 2),
                "docs_per_s_per_core": round(docs / cpu, 1),
                "mb_per_s_per_core": round(mb / cpu, 2),
                "hashes_docs_per_s": round(docs / (c1 - c0), 1),
                "mine_docs_per_s": round(docs / (c2 - c1), 1),
                "step_seconds": steps,
                "step_docs_per_s": {k: round(docs / v, 1) for k, v in steps.items() if v > 0},
                "peak_rss_mb": peak_rss_mb(),
                "peak_rss_of": "the two steps" if rss_reset else "the whole process, set-up included",
            },
            indent=1,
        )
    )
    if not args.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
