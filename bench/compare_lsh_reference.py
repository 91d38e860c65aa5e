"""Parity with the reference ``run_lsh.py``: the same MinHash files, the reference's clusters and ours.

The reference (RedPajama-Data ``app/src/run_lsh.py``) needs polars < 1 and networkit, which are not
rpj dependencies: this script creates a separate throwaway venv (``--venv``, default under the temp
dir) with ``polars<1 networkit numpy pyarrow s3fs scipy`` from the package registry, runs the
reference there on synthetic MinHash files with planted clusters (``bench/bench_lsh.py``'s
generator; or ``--inputs ROOT`` with ``minhash/…`` files), runs
:func:`rpj_tasks.dedup.lsh.run_clusters` on the same files, each in its own process, side by side:
``--pairs`` pairs, reference then rpj, alternated, so that a drift of the machine's speed hits both
sides alike.  Each run is timed as a whole process (wall seconds; CPU seconds = user + system of
the process and its threads, from ``wait4``; peak RSS).  Prints one JSON object: files and rows on
each side, whether the clusters are equal in every pair (per file, as sets of ``(id, id_int,
cluster_id, shard_id)`` rows: the reference's row order is its join's order, ours is the input's
line order), the differences if any, every pair's figures and the ratio reference / rpj of each
pair (CPU, wall, and wall without the reference's built-in 2 s sleep) with their ranges over the
pairs.  Exit status 1 when they differ.

    .venv/bin/python bench/compare_lsh_reference.py --reference-src /path/to/RedPajama-Data [--docs 100000] [--pairs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import paired  # bench/paired.py
import pyarrow.parquet as pq
from paired import ratio_range, timed

REFERENCE_PACKAGES = ["polars<1", "networkit", "numpy", "pyarrow", "s3fs", "scipy"]


def ensure_venv(venv: Path) -> Path:
    """The venv's python, created and filled with the reference's packages if needed."""
    probe = "import polars, networkit, s3fs, scipy; assert polars.__version__ < '1'"
    return paired.ensure_venv(venv, REFERENCE_PACKAGES, probe)


def read_clusters(directory: Path) -> dict[str, set[tuple[str, int, int, str]]]:
    """``{base tag: rows}`` of every ``*.clusters.parquet`` below ``directory``."""
    out = {}
    for path in sorted(directory.rglob("*.clusters.parquet")):
        table = pq.read_table(path)
        tag = str(path.relative_to(directory))[: -len(".clusters.parquet")]
        out[tag] = {(r["id"], int(r["id_int"]), int(r["cluster_id"]), r["shard_id"]) for r in table.to_pylist()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reference-src", required=True, help="a RedPajama-Data checkout (its app/src/run_lsh.py is run)")
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--workers", type=int, default=2, help="rpj's threads (run_clusters(workers=))")
    parser.add_argument("--inputs", help="a root with minhash/{snapshot}/… files (default: generated)")
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "rpj-lsh-reference-venv"))
    parser.add_argument("--keep", help="keep the work here (default: a temporary directory, removed)")
    parser.add_argument("--pairs", type=int, default=3, help="alternated runs of each side (reference, rpj, ...)")
    args = parser.parse_args()
    src = Path(args.reference_src).resolve() / "app" / "src"
    if not (src / "run_lsh.py").is_file():
        raise SystemExit(f"{src / 'run_lsh.py'} not found: --reference-src must be a RedPajama-Data checkout")
    python = ensure_venv(Path(args.venv))
    work = Path(args.keep or tempfile.mkdtemp(prefix="rpj-lsh-parity-"))
    try:
        root = Path(args.inputs) if args.inputs else work / "root"
        if not args.inputs:  # in a child: this process stays small (a child's peak RSS includes its parent's)
            gen = ["--docs", str(args.docs), "--files", str(args.files), "--threshold", str(args.threshold)]
            subprocess.run(
                [sys.executable, str(Path(__file__).with_name("bench_lsh.py")), "--generate-only", str(root), *gen], check=True
            )
        files = sorted(p.relative_to(root) for p in (root / "minhash").rglob("*.minhash.parquet"))
        snapshots = sorted({p.parts[1] for p in files})
        listing = work / "listing.txt"
        listing.write_text("".join(f"{p}\n" for p in files))
        ref_out = work / "reference"
        ref_cmd = [str(python), str(src / "run_lsh.py"), "--listings", str(listing), "--input_base_uri", f"file://{root}"]
        ref_cmd += ["--output_dir", str(ref_out), "--similarity", str(args.threshold), "--num_perm", "128"]
        env = {**os.environ, "PYTHONPATH": str(src)}
        ours_root = work / "ours"
        ours_cmd = [sys.executable, "-c", _OURS, str(root), str(ours_root), str(args.threshold), json.dumps(snapshots)]
        ours_cmd.append(str(args.workers))
        pairs, differing, theirs, mine = [], [], {}, {}
        for _ in range(max(1, args.pairs)):
            shutil.rmtree(ref_out, ignore_errors=True)
            shutil.rmtree(ours_root, ignore_errors=True)
            ours_root.mkdir(parents=True)
            reference = timed(ref_cmd, env=env, cwd=str(src), log=work / "reference.log")
            ours = timed(ours_cmd, log=work / "rpj.log")
            theirs, mine = read_clusters(ref_out), read_clusters(ours_root / "clusters")
            differ = sorted(t for t in set(theirs) | set(mine) if theirs.get(t) != mine.get(t))
            differing.extend(d for d in differ if d not in differing)
            pairs.append(
                {
                    "reference": reference,
                    "rpj": ours,
                    "equal": not differ,
                    "cpu_ratio": round(reference["cpu_seconds"] / ours["cpu_seconds"], 2),
                    "wall_ratio": round(reference["seconds"] / ours["seconds"], 2),
                    # run_lsh.py sleeps 2 s before it writes (time.sleep(2) after logging the first rows)
                    "wall_ratio_without_reference_sleep": round((reference["seconds"] - 2) / ours["seconds"], 2),
                }
            )
            print(json.dumps(pairs[-1]), file=sys.stderr)
        result = {
            "docs": args.docs if not args.inputs else None,
            "input_files": len(files),
            "threshold": args.threshold,
            "rpj_workers": args.workers,
            "cpu": os.cpu_count(),
            "equal": not differing,
            "reference": {"files": len(theirs), "rows": sum(map(len, theirs.values()))},
            "rpj": {"files": len(mine), "rows": sum(map(len, mine.values()))},
            "pairs": pairs,
            "cpu_ratio_range": ratio_range([p["cpu_ratio"] for p in pairs]),
            "wall_ratio_range": ratio_range([p["wall_ratio"] for p in pairs]),
            "wall_ratio_without_reference_sleep_range": ratio_range([p["wall_ratio_without_reference_sleep"] for p in pairs]),
            "differing_files": differing[:20],
        }
        print(json.dumps(result, indent=1))
        if differing:
            raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# rpj's side, run in a fresh process: the MinHash files of ``root`` as inputs, clusters under ``out``.
_OURS = """
import json, sys
from pathlib import Path
from rpj_tasks.dedup import lsh
root, out, threshold, snapshots, workers = sys.argv[1], sys.argv[2], float(sys.argv[3]), json.loads(sys.argv[4]), int(sys.argv[5])
inputs = [lsh.minhash_input(str(p), "-") for p in sorted(Path(root, "minhash").rglob("*.minhash.parquet"))]
lsh.run_clusters(out, snapshots, threshold, inputs=inputs, workers=workers, force=True)
"""


if __name__ == "__main__":
    main()
