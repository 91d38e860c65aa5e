"""Annotation side by side with the reference: the same shard and artifacts, both as whole processes.

The reference is RedPajama-Data's ``app/src`` (``--reference-src``, a checkout; the figures in the
README are at ``6d2cee9``), run unmodified in a throwaway venv (``--venv``, default under the temp
dir) with its packages from the package registry (:data:`REFERENCE_PACKAGES`: nltk 3.8.1 and numpy
1.26.4, the versions the spec's vectors were computed with).  Its ``core.worker.Worker`` is built for
English as its ``pipeline.py`` builds it (seed 42, 13-grams, 128 permutations, thresholds
1.0/0.9/0.8/0.7, 10,000 DSIR buckets, the artifacts found by ``pipeline.py``'s file patterns) by a
small driver (:data:`_REFERENCE`, ours) and its ``run()`` annotates the shard's ``en_head`` and
``en_middle`` files; it writes the signals and MinHash files next to each other.  Our side is
:func:`rpj_tasks.annotate.stage.annotate_shard` on the same shard (:data:`_OURS`).  Both run with
``PYTHONHASHSEED=42`` (the reference's DSIR hashing needs it; rpj then hashes in-process).

Inputs: ``bench/bench_annotate.py --generate-only`` writes the shard and the signal artifacts (real
stop-word and LDNOOBW lists, a UT1 map, DSIR counts for 3 targets, the ``palm`` and ``wikiref``
fastText models trained on generated text): with generated documents (``--count``, ``--words``), or
with the documents of a JSONL of real pages (``--docs FILE``, objects with ``raw_content`` or
``text``).  The artifacts are linked into the reference's ``artifacts_dir`` layout
(``bad_words/``, ``bad_urls/``, ``classifiers/``, ``dsir/``).

``--pairs`` pairs are run, reference then rpj, alternated, so that a drift of the machine's speed
hits both sides alike.  rpj's cache directory (``RPJ_CACHE_DIR``: the classifiers' checks, a
Unicode bitmap, the DSIR ``gammaln`` table) is a fresh folder of the work directory, so rpj's first run fills it ("cold") and the
later runs use it ("warm"), as a worker's later shards do.  Warm runs still hash each classifier
model (the key of its check and the check against the artifacts' manifest, ~0.8-0.9 ms of CPU per MB)
and fastText's compiled module (13-17 ms, once per process).  Each run is a whole process (interpreter start-up, imports, artifact
loading, reading, annotating, writing): wall seconds, CPU seconds (user + system from ``wait4``),
peak RSS (the parent stays small: a child's peak RSS starts from its parent's).  After every run the outputs are compared: every decompressed ``quality_signals`` line
byte for byte, and every MinHash parquet row (and the schema).  The gzip bytes themselves are not
compared: the reference's writer uses ``gzip.open`` (level 9, the file name and time in the
header), so its own ``.gz`` bytes differ from run to run.

Prints each pair as a JSON line on stderr, then one JSON object (``--json FILE`` also writes it to
a file) and a table: CPU seconds, documents per CPU second (per core), peak RSS and the ratio
reference / rpj of each pair with the range over the pairs.  Exit status 1 if any output differs.

    .venv/bin/python bench/compare_reference.py --reference-src /path/to/RedPajama-Data [--count 4000] [--pairs 3]
    .venv/bin/python bench/compare_reference.py --reference-src DIR --docs pages.jsonl [--count 2120]
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import paired  # bench/paired.py
from paired import cpu_model, ratio_range, timed

REFERENCE_PACKAGES = [
    "nltk==3.8.1",
    "numpy==1.26.4",
    "scipy==1.13.1",
    "msgspec",
    "fasttext-wheel==0.9.2",
    "pyarrow<18",
    "xopen",
    "boto3",
    "urllib3",
    "typing_extensions",
]
PROBE = "import nltk, numpy, scipy, msgspec, fasttext, pyarrow, xopen, boto3; assert nltk.__version__ == '3.8.1'"
SNAPSHOT = "2023-06"
FILES = ("en_head", "en_middle")


def reference_artifacts(ours: Path, out: Path) -> None:
    """Link the artifacts of ``ours`` (rpj's layout) into the reference's ``artifacts_dir`` layout."""
    links = {
        out / "bad_words" / "en.txt": ours / "ldnoobw" / "en.txt",
        out / "bad_urls" / "domain_to_category_id.json": ours / "ut1" / "domain_to_category_id.json",
    }
    for sub in ("classifiers/en", "dsir/en"):
        for path in sorted((ours / sub).glob("*")):
            links[out / sub / path.name] = path
    for link, target in links.items():
        if not target.is_file():
            raise SystemExit(f"artifact {target} missing")
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(target)


def signals_lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def compare(reference: Path, ours: Path) -> dict:
    """The two sides' outputs for :data:`FILES`: lines and rows compared, the first differences.

    Run in a child (:func:`compare_in_child`): this process stays small, and the timed processes,
    which start as its forks, do not inherit a large peak RSS from it."""
    import pyarrow.parquet as pq

    result = {"signals_lines": 0, "signals_lines_equal": 0, "minhash_rows": 0, "minhash_rows_equal": 0, "differences": []}
    for name in FILES:
        theirs = reference / SNAPSHOT / "0000" / f"{name}.signals.json.gz"
        mine = ours / "quality_signals" / SNAPSHOT / "0000" / f"{name}.signals.json.gz"
        a, b = signals_lines(theirs), signals_lines(mine)
        equal = sum(x == y for x, y in zip(a, b))
        result["signals_lines"] += len(a)
        result["signals_lines_equal"] += equal
        if equal != len(a) or len(a) != len(b):
            first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            result["differences"].append(f"{name}.signals.json.gz: {len(a)} vs {len(b)} lines, first difference at {first}")
        t = pq.read_table(reference / SNAPSHOT / "0000" / f"{name}.minhash.parquet")
        m = pq.read_table(ours / "minhash" / SNAPSHOT / "0000" / f"{name}.minhash.parquet")
        if not t.schema.equals(m.schema):
            result["differences"].append(f"{name}.minhash.parquet: schemas differ ({t.schema} vs {m.schema})")
        rows_t, rows_m = t.to_pylist(), m.to_pylist()
        equal = sum(x == y for x, y in zip(rows_t, rows_m))
        result["minhash_rows"] += len(rows_t)
        result["minhash_rows_equal"] += equal
        if equal != len(rows_t) or len(rows_t) != len(rows_m):
            result["differences"].append(f"{name}.minhash.parquet: {equal} of {len(rows_t)} rows equal ({len(rows_m)} ours)")
    result["equal"] = not result["differences"] and result["signals_lines"] > 0
    return result


def compare_in_child(reference: Path, ours: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--compare-outputs", str(reference), str(ours)], check=True, capture_output=True, text=True
    )
    return json.loads(proc.stdout)


def table(result: dict) -> str:
    """The pairs as a readable table."""
    docs = result["docs"]
    rows = [
        "| pair | reference CPU s | rpj CPU s | reference docs/s per core | rpj docs/s per core | "
        "reference peak RSS MB | rpj peak RSS MB | CPU ratio | equal |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for i, p in enumerate(result["pairs"], 1):
        r, o = p["reference"], p["rpj"]
        rows.append(
            f"| {i} | {r['cpu_seconds']:.2f} | {o['cpu_seconds']:.2f} | {docs / r['cpu_seconds']:,.0f} | "
            f"{docs / o['cpu_seconds']:,.0f} | {r['peak_rss_mb']:.0f} | {o['peak_rss_mb']:.0f} | "
            f"{p['cpu_ratio']:.2f}x | {'yes' if p['equal'] else 'NO'} |"
        )
    rows.append(f"\nCPU ratio (reference / rpj) over {len(result['pairs'])} pairs: {result['cpu_ratio_range']}x")
    return "\n".join(rows)


def main() -> None:
    if sys.argv[1:2] == ["--compare-outputs"]:
        print(json.dumps(compare(Path(sys.argv[2]), Path(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--reference-src", required=True, help="a RedPajama-Data checkout (its app/src is run)")
    parser.add_argument("--docs", metavar="JSONL", help="real pages (raw_content or text per line) instead of generated ones")
    parser.add_argument("--count", type=int, default=4000, help="documents (generated, or the first of --docs)")
    parser.add_argument("--words", type=int, default=500, help="mean words of a generated document")
    parser.add_argument("--pairs", type=int, default=3, help="alternated runs of each side (reference, rpj, ...)")
    parser.add_argument("--venv", default=str(Path(tempfile.gettempdir()) / "rpj-annotate-reference-venv"))
    parser.add_argument("--keep", help="keep the work here (default: a temporary directory, removed)")
    parser.add_argument("--json", metavar="FILE", help="also write the result JSON here")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be at least 1")
    src = Path(args.reference_src).resolve() / "app" / "src"
    if not (src / "core" / "worker.py").is_file():
        raise SystemExit(f"{src / 'core' / 'worker.py'} not found: --reference-src must be a RedPajama-Data checkout")
    python = paired.ensure_venv(Path(args.venv), REFERENCE_PACKAGES, PROBE)
    commit = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    work = Path(args.keep or tempfile.mkdtemp(prefix="rpj-annotate-reference-"))
    try:
        inputs = work / "inputs"
        gen = [sys.executable, str(Path(__file__).with_name("bench_annotate.py")), "--keep", str(inputs), "--generate-only"]
        gen += ["--docs", str(args.count), "--words", str(args.words)]
        if args.docs:
            gen += ["--pages", str(Path(args.docs).resolve())]
        described = json.loads(subprocess.run(gen, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1])
        release, artifacts = inputs / "release", inputs / "artifacts"
        ref_artifacts = work / "reference-artifacts"
        reference_artifacts(artifacts, ref_artifacts)
        ref_out = work / "reference-out"
        spec = {
            "documents": (release / "documents").as_uri(),
            "listings": [f"{SNAPSHOT}/0000/{name}.json.gz" for name in FILES],
            "output": ref_out.as_uri(),
            "logs": str(work / "reference-logs"),
            "artifacts": str(ref_artifacts),
            "snapshot": SNAPSHOT,
        }
        env = {**os.environ, "PYTHONHASHSEED": "42"}
        ref_cmd = [str(python), "-c", _REFERENCE, str(src), json.dumps(spec)]
        ours_root = work / "ours"
        ours_cmd = [sys.executable, "-c", _OURS, ours_root.as_uri(), artifacts.as_uri(), described["hash_mode"], SNAPSHOT]
        pairs, differences = [], []
        for i in range(args.pairs):
            shutil.rmtree(ref_out, ignore_errors=True)
            shutil.rmtree(work / "reference-logs", ignore_errors=True)
            (work / "reference-logs").mkdir()
            shutil.rmtree(ours_root, ignore_errors=True)
            for component in ("documents", "stats/ccnet"):
                shutil.copytree(release / component, ours_root / component)
            reference = timed(ref_cmd, env=env, cwd=str(src), log=work / "reference.log")
            ours = timed(ours_cmd, env={**env, "RPJ_CACHE_DIR": str(work / "rpj-cache")}, log=work / "rpj.log")
            check = compare_in_child(ref_out, ours_root)
            differences.extend(d for d in check["differences"] if d not in differences)
            pairs.append(
                {
                    "reference": reference,
                    "rpj": ours,
                    "equal": check["equal"],
                    "signals_lines_equal": f"{check['signals_lines_equal']}/{check['signals_lines']}",
                    "minhash_rows_equal": f"{check['minhash_rows_equal']}/{check['minhash_rows']}",
                    "rpj_cache": "cold" if i == 0 else "warm",
                    "cpu_ratio": round(reference["cpu_seconds"] / ours["cpu_seconds"], 2),
                    "wall_ratio": round(reference["seconds"] / ours["seconds"], 2),
                }
            )
            print(json.dumps({"pair": i + 1, **pairs[-1]}), file=sys.stderr)
        docs = described["docs"]
        result = {
            "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "cpu_model": cpu_model(),
            "cpus": os.cpu_count(),
            "reference_commit": commit or None,
            "inputs": f"--docs {args.docs}" if args.docs else "generated (bench_annotate.py)",
            "docs": docs,
            "mean_words": described["mean_words"],
            "mean_chars": described["mean_chars"],
            "method": (
                "whole processes (start-up, imports, artifacts, reading, writing), alternated reference/rpj, "
                "CPU = user + system from wait4, PYTHONHASHSEED=42 on both sides"
            ),
            "equal": not differences and all(p["equal"] for p in pairs),
            "pairs": pairs,
            "cpu_ratio_range": ratio_range([p["cpu_ratio"] for p in pairs]),
            "wall_ratio_range": ratio_range([p["wall_ratio"] for p in pairs]),
            "reference_docs_per_cpu_s_range": ratio_range([docs / p["reference"]["cpu_seconds"] for p in pairs]),
            "rpj_docs_per_cpu_s_range": ratio_range([docs / p["rpj"]["cpu_seconds"] for p in pairs]),
            "reference_peak_rss_mb_max": max(p["reference"]["peak_rss_mb"] for p in pairs),
            "rpj_peak_rss_mb_max": max(p["rpj"]["peak_rss_mb"] for p in pairs),
            "differences": differences[:20],
        }
        text = json.dumps(result, indent=1)
        print(text)
        if args.json:
            Path(args.json).write_text(text + "\n")
        print(table(result), file=sys.stderr)
        if not result["equal"]:
            raise SystemExit(1)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


# The reference's side, run in its venv with its app/src (argv[1]) first on the path: the Worker
# pipeline.py would build for English, over the listed files; fails unless every document came out.
_REFERENCE = """
import json, queue, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from core.worker import Worker
spec = json.loads(sys.argv[2])
art = Path(spec["artifacts"])
classifiers = {p.stem.split(".")[0]: str(p) for p in (art / "classifiers" / "en").glob("*.bin")}
dsir = {}
for p in sorted((art / "dsir" / "en").glob("*.counts.npy")):
    dsir[p.stem.split(".")[0]] = [str(p)]
for p in sorted((art / "dsir" / "en").glob("*.lambda.npy")):
    dsir[p.stem.split(".")[0]].append(str(p))
worker = Worker(
    language="en", snapshot_id=spec["snapshot"], input_listings=spec["listings"],
    input_base_uri=spec["documents"], output_base_uri=spec["output"], log_dir=spec["logs"],
    classifier_files=classifiers, dsir_files=dsir, dsir_bucket=10000,
    ldnoobw_dir=art / "bad_words", ut1_dir=art / "bad_urls",
    minhash_similarities=[1.0, 0.9, 0.8, 0.7], minhash_ngram_size=13, minhash_num_permutations=128,
    monitor_queue=queue.SimpleQueue(), logging_queue=queue.SimpleQueue(), seed=42,
)
total, _ = worker.run()
failed = list(Path(spec["logs"]).glob("*.FAIL"))
if failed or total == 0:
    sys.exit(f"reference run failed: {total} documents, failed inputs {[f.read_text() for f in failed]}")
print(json.dumps({"documents": total, "classifiers": sorted(classifiers), "dsir": sorted(dsir)}))
"""

# rpj's side, in a fresh process: annotate shard 0 of the root argv[1] with the artifacts argv[2].
_OURS = """
import sys
from rpj_tasks.annotate.stage import annotate_shard
from rpj_tasks.core.config import SnapshotConfig
cfg = SnapshotConfig(id=sys.argv[4], storage_root=sys.argv[1], source_base="file:///unused")
record = annotate_shard(cfg, 0, artifacts_url=sys.argv[2], hash_mode=sys.argv[3])
print(record["counts"]["annotate.lines"])
"""


if __name__ == "__main__":
    main()
