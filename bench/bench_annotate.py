"""Benchmark the annotation stage: quality signals + MinHash of one shard, in one process.

Generates realistic CCNet documents offline (wordfreq Zipfian English vocabulary: a title, menu and
heading lines, bullet lists, prose paragraphs of 1-8 sentences, dates, prices, curly quotes; about
``--words`` words per document on average), writes them as ``en_head`` and ``en_middle`` files of a
shard with their CCNet stats record, builds signal artifacts (the real stop-word and LDNOOBW lists
from the test fixtures, ``$RPJ_SHARED_DATA`` or ``tests/fixtures``; a UT1 map; random DSIR
counts for the three en targets in the reference hash mode and, unless ``--no-classifier``, the two
fastText models English RPv2 artifacts have, ``palm`` and ``wikiref``, each trained offline on
generated text), then runs :func:`rpj_tasks.annotate.stage.annotate_shard` and prints one JSON object:

* ``docs_per_s_cpu``: documents per CPU second of the annotation (the per-core rate);
* ``docs_per_s_wall``, ``peak_rss_mb`` (``getrusage`` maximum resident set size of the process,
  taken right after the annotation; ``peak_rss_mb_before_annotate`` is the same before it: the
  generator's vocabulary and the documents);
* ``seconds``: the stage's per-step seconds (read, signals, minhash, write, load_artifacts);
* ``native``: whether the compiled loops (``rpj_tasks.native._speedups``) ran (``--pure-python`` turns them off);
  ``simd``: the SHA-1 lane variant they used (``generic``, ``avx2`` or ``avx512f``, the widest this CPU runs);
* ``loop_ns``: CPU nanoseconds per iteration of a plain Python ``for``/``+=`` loop, a yardstick for
  comparing figures taken on different machines (about 20-30 ns on a current desktop core);
* ``artifacts`` (``"generated"`` or the ``--artifacts`` URL), ``hash_mode``, ``classifiers`` (the
  English models the stage loaded), ``classifier_mb`` (their file sizes), ``dsir_targets``;
* with ``--check-parity``, ``parity`` (below).

``--artifacts URL`` annotates with an existing signal-artifacts folder instead (one built by
``rpj signal-artifacts --config`` or installed from the published RPv2 artifacts with
``--install-from``; a local path is accepted), so the figure can be taken with real models; its
``MANIFEST.json`` (required, as by the stage) gives the DSIR hash mode.  The generated
documents' domains are not in a real UT1 map, so those UT1 lookups all miss.

``--keep DIR`` writes the shard (``DIR/release``: ``documents``, the CCNet stats record and, after
the run, the stage's ``quality_signals`` and ``minhash`` outputs) and the generated artifacts
(``DIR/artifacts``) into ``DIR`` (created; it must not exist or be empty) instead of a temporary
folder, and keeps them, so that other tools can run on exactly the same inputs; the JSON then has
``kept`` (the folder's path).

``--generate-only`` (with ``--keep DIR``) writes the shard and the artifacts, prints their
description (``docs``, ``mean_words``, ``mean_chars``, ``kept``, ``artifacts``, ``hash_mode``) and
stops: ``bench/compare_reference.py`` uses it to give both sides the same inputs.  ``--pages JSONL``
(plain or ``.gz``; one object per line with ``raw_content``, else ``text``) replaces the generated
documents by the first ``--docs`` of those, e.g. real pages; the generated classifiers are still
trained on generated text (positives) against the first 600 of these documents.

``--check-parity`` then, untimed, annotates a copy of the same shard in a child process with the
other implementation (``RPJ_PURE_PYTHON=1`` when the timed run used the compiled loops, else the
compiled loops) and compares every ``quality_signals`` line byte for byte and every MinHash parquet
row; ``parity`` holds the counts (``signals_lines_equal`` of ``signals_lines``,
``minhash_rows_equal`` of ``minhash_rows``, ...), and the script exits with status 1 on any
difference (after printing the JSON).

The script re-executes itself with ``PYTHONHASHSEED=42`` so that the stage runs in this process
(no worker): CPU time and RSS are then those of the annotation itself.  ``--profile N`` prints the
N functions with the most own time (cProfile) to stderr.

    .venv/bin/python bench/bench_annotate.py [--docs 4000] [--words 500] [--profile 30] [--pages JSONL]
        [--no-classifier | --artifacts URL] [--pure-python] [--check-parity] [--keep DIR [--generate-only]]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import gzip
import hashlib
import io
import json
import os
import pstats
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from wordfreq import top_n_list, word_frequency

from rpj_tasks.annotate.artifacts.build import fetch_word_lists, train_classifier
from rpj_tasks.annotate.hashseed import SEED42
from rpj_tasks.annotate.stage import annotate_shard
from rpj_tasks.core import storage
from rpj_tasks.core.config import SnapshotConfig

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = "2023-06"
SEGMENT = "crawl-data/CC-MAIN-2023-06/segments/1674764494826.88/wet/CC-MAIN-20230126210844-00000.warc.wet.gz"
DSIR_LAMBDAS = {"ccnet": 620.0, "books": 900.0, "openwebtext": 700.0, "wikipedia": 450.0}


class PageGenerator:
    """Deterministic pseudo web pages over wordfreq's 30 000 most frequent English words."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab = np.array(top_n_list("en", 30000), dtype=object)
        freq = np.array([word_frequency(w, "en") for w in self.vocab])
        self.cum = np.cumsum(freq / freq.sum())

    def words(self, n: int) -> list[str]:
        return self.vocab[np.searchsorted(self.cum, self.rng.random(n) * self.cum[-1])].tolist()

    def sentence(self) -> str:
        words = self.words(int(self.rng.integers(5, 26)))
        for i, roll in enumerate(self.rng.random(len(words)).tolist()):
            if roll < 0.06:
                words[i] += ","
            elif roll < 0.08:
                words[i] = words[i].capitalize()
            elif roll < 0.09:
                words[i] = str(int(self.rng.integers(1, 2024)))
            elif roll < 0.095:
                words[i] = f"\u201c{words[i]}\u201d"
        return " ".join(words).capitalize() + str(self.rng.choice(list("..........!?:")))

    def line(self) -> str:
        kind = self.rng.random()
        if kind < 0.12:
            return " ".join(self.words(int(self.rng.integers(2, 7)))).title()
        if kind < 0.22:
            return str(self.rng.choice(["\u2022 ", "- ", "* ", ""])) + self.sentence()
        if kind < 0.26:
            return " | ".join(w.title() for w in self.words(int(self.rng.integers(3, 8))))
        if kind < 0.29:
            day, price = int(self.rng.integers(1, 29)), self.rng.integers(100, 99999) / 100
            return f"Posted on {day} March 2023 \u2013 ${price:.2f} \u2026 Read more..."
        return " ".join(self.sentence() for _ in range(int(self.rng.integers(1, 9))))

    def page(self, n_words: int) -> str:
        target = max(20, int(self.rng.normal(n_words, n_words / 2)))
        lines = [" ".join(self.words(int(self.rng.integers(3, 9)))).title()]
        total = len(lines[0].split())
        while total < target:
            lines.append(self.line())
            total += len(lines[-1].split())
        last = len(lines[-1].split())
        if len(lines) > 2 and total - target > target - (total - last):  # closer to target without it
            lines.pop()
        return "\n".join(lines)


def read_pages(path: Path, limit: int) -> list[str]:
    """The first ``limit`` documents' texts of a JSONL (``raw_content``, else ``text``), empty ones skipped."""
    texts: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            obj = json.loads(line)
            text = obj.get("raw_content", obj.get("text")) if isinstance(obj, dict) else None
            if not isinstance(text, str):
                raise SystemExit(f"--pages {path}: line {number} has no raw_content or text string")
            if text.strip():
                texts.append(text)
            if len(texts) >= limit:
                break
    if len(texts) < 2:
        raise SystemExit(f"--pages {path}: fewer than 2 documents")
    return texts


def describe(texts: list[str]) -> dict:
    """Number, mean words and mean characters of the documents."""
    return {
        "docs": len(texts),
        "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
    }


def ccnet_document(raw: str, i: int, bucket: str) -> dict:
    """A CCNet documents line (all 16 fields, in order) around ``raw``."""
    nlines = raw.count("\n") + 1
    domain = f"www.site{i % 301}.example.com"
    return {
        "url": f"https://{domain}/page/{i}",
        "date_download": "2023-01-26T21:25:04Z",
        "digest": f"sha1:{i:032d}",
        "length": len(raw),
        "nlines": nlines,
        "source_domain": domain,
        "title": f"page {i}",
        "raw_content": raw,
        "cc_segment": SEGMENT,
        "original_nlines": nlines + 7,
        "original_length": len(raw.encode()) + 400,
        "line_ids": list(range(nlines)),
        "language": "en",
        "language_score": 0.93,
        "perplexity": 245.3 if bucket == "head" else 512.8,
        "bucket": bucket,
    }


def write_shard(root: Path, docs_per_file: dict[str, list[dict]]) -> None:
    folder = root / "documents" / SNAPSHOT / "0000"
    folder.mkdir(parents=True)
    outputs = {}
    for name, docs in docs_per_file.items():
        text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
        data = gzip.compress(text.encode(), mtime=0)
        (folder / name).write_bytes(data)
        outputs[f"../../../documents/{SNAPSHOT}/0000/{name}"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    # the CCNet record as the commit protocol writes it: later stages read the outputs it lists
    marker = root / "stats" / "ccnet" / SNAPSHOT / "0000.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"shard": 0, "files": sorted(docs_per_file), "inputs": {}, "outputs": outputs}))


def shared_data_dir() -> Path:
    """``$RPJ_SHARED_DATA``, else the repository's ``tests/fixtures`` (as ``tests/conftest.py``)."""
    env = os.environ.get("RPJ_SHARED_DATA")
    path = Path(env) if env else REPO / "tests" / "fixtures"
    if not path.is_dir():
        raise SystemExit(f"test fixtures not found at {path} (RPJ_SHARED_DATA={env!r})")
    return path


def build_artifacts(root: Path, texts: list[str], gen: PageGenerator, classifier: bool) -> str:
    """Generated English signal artifacts under ``root``; returns their URL.

    The classifiers are the two an English RPv2 artifacts folder has: ``palm`` (clean 12-sentence
    paragraphs vs the first 300 documents) and ``wikiref`` (longer 20-sentence "articles" vs the
    next 300 documents), both trained as ``rpj signal-artifacts`` trains its models.
    """
    url = root.as_uri()
    shared = shared_data_dir()
    fetch_word_lists(
        url,
        ["en"],
        stopwords_url_template=(shared / "stopwords").as_uri() + "/{lang}.json",
        ldnoobw_url_template=(shared / "ldnoobw").as_uri() + "/{lang}.txt",
    )
    ut1 = {f"www.site{i}.example.com": i % 13 for i in range(0, 301, 7)}
    (root / "ut1").mkdir()
    (root / "ut1" / "domain_to_category_id.json").write_text(json.dumps(ut1))
    rng = np.random.default_rng(1)
    (root / "dsir" / "en").mkdir(parents=True)
    for dataset, lam in DSIR_LAMBDAS.items():
        np.save(root / "dsir" / "en" / f"{dataset}.en.10000.counts.npy", rng.integers(1, 5000, 10000))
        np.save(root / "dsir" / "en" / f"{dataset}.en.lambda.npy", np.asarray(lam))
    if classifier:
        clean = [" ".join(gen.sentence() for _ in range(12)) for _ in range(300)]
        train_classifier(f"{url}/classifiers/en/palm.model.bin", clean, texts[:300], label="palm", seed=42)
        articles = [" ".join(gen.sentence() for _ in range(20)) for _ in range(300)]
        negatives = texts[300:600] or texts[:300]
        train_classifier(f"{url}/classifiers/en/wikiref.model.bin", articles, negatives, label="wiki", seed=42)
    (root / "MANIFEST.json").write_text(json.dumps({"format_version": 1, "hash_mode": "cpython-seed42"}))
    return url


def loop_ns(iterations: int = 3_000_000) -> float:
    """CPU ns per iteration of ``for i in range(n): total += i`` (best of three)."""
    best = float("inf")
    for _ in range(3):
        start, total = time.process_time(), 0
        for i in range(iterations):
            total += i
        best = min(best, time.process_time() - start)
    return round(best / iterations * 1e9, 1)


# Run in the parity child: annotate shard 0 under argv[1] with the artifacts argv[2] in hash mode argv[3].
PARITY_CHILD = """
import json, sys
from rpj_tasks import native as speedups
from rpj_tasks.annotate.stage import annotate_shard
from rpj_tasks.core.config import SnapshotConfig
cfg = SnapshotConfig(id=sys.argv[4], storage_root=sys.argv[1], source_base="file:///unused")
record = annotate_shard(cfg, 0, artifacts_url=sys.argv[2], hash_mode=sys.argv[3])
print(json.dumps({"native": speedups.native is not None, "lines": record["counts"]["annotate.lines"]}))
"""


def artifacts_url_of(value: str) -> str:
    """``--artifacts``: a URL as given, a local path as a ``file://`` URL."""
    if "://" in value:
        return value.rstrip("/")
    path = Path(value).expanduser().resolve()
    if not path.is_dir():
        raise SystemExit(f"--artifacts {value}: not a directory")
    return path.as_uri()


def recorded_hash_mode(artifacts: str) -> str:
    """The DSIR hash mode ``MANIFEST.json`` records; the stage refuses a folder without one, so does this."""
    url = storage.join(artifacts, "MANIFEST.json")
    if not storage.exists(url):
        raise SystemExit(f"--artifacts {artifacts}: no MANIFEST.json (build or install them with rpj signal-artifacts)")
    return json.loads(storage.read_bytes(url)).get("hash_mode") or SEED42


def output_files(release: Path) -> dict[str, Path]:
    """The shard's signals and MinHash files, by path relative to the storage root."""
    files = {}
    for component in ("quality_signals", "minhash"):
        for path in sorted((release / component).rglob("*")):
            if path.is_file() and not path.name.startswith("."):
                files[str(path.relative_to(release))] = path
    return files


def check_parity(release: Path, reference: Path, artifacts: str, hash_mode: str, timed_native: bool) -> dict:
    """Annotate a copy of the shard in a child with the other implementation; compare the outputs."""
    started = time.perf_counter()
    for component in ("documents", "stats/ccnet"):
        shutil.copytree(release / component, reference / component)
    env = {**os.environ, "PYTHONHASHSEED": "42", "RPJ_PURE_PYTHON": "1" if timed_native else ""}
    proc = subprocess.run(
        [sys.executable, "-c", PARITY_CHILD, reference.as_uri(), artifacts, hash_mode, SNAPSHOT],
        env=env,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(f"parity run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    ours, theirs = output_files(release), output_files(reference)
    result = {
        "timed": "native" if timed_native else "pure-python",
        "reference": "native" if child["native"] else "pure-python",
        "files": len(ours),
        "files_equal": sorted(ours) == sorted(theirs),
        "signals_lines_equal": 0,
        "signals_lines": 0,
        "signals_lines_reference": 0,
        "minhash_rows_equal": 0,
        "minhash_rows": 0,
        "minhash_rows_reference": 0,
        "minhash_schema_equal": True,
        "minhash_files_bytes_equal": 0,
        "minhash_files": 0,
    }
    mismatches = []
    for rel, path in ours.items():
        other = theirs.get(rel)
        if rel.endswith(".signals.json.gz"):
            a = gzip.decompress(path.read_bytes()).split(b"\n")
            b = gzip.decompress(other.read_bytes()).split(b"\n") if other else []
            a, b = a[:-1] if a and a[-1] == b"" else a, b[:-1] if b and b[-1] == b"" else b
            equal = [i for i, (x, y) in enumerate(zip(a, b)) if x == y]
            result["signals_lines"] += len(a)
            result["signals_lines_reference"] += len(b)
            result["signals_lines_equal"] += len(equal)
            if len(equal) != len(a) or len(a) != len(b):
                first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                mismatches.append(f"{rel}: line {first} differs")
        elif rel.endswith(".minhash.parquet"):
            result["minhash_files"] += 1
            table = pq.read_table(path)
            result["minhash_rows"] += table.num_rows
            if other is None:
                mismatches.append(f"{rel}: no reference file")
                continue
            ref_table = pq.read_table(other)
            result["minhash_rows_reference"] += ref_table.num_rows
            result["minhash_schema_equal"] &= table.schema.equals(ref_table.schema, check_metadata=True)
            result["minhash_files_bytes_equal"] += path.read_bytes() == other.read_bytes()
            rows, ref_rows = table.to_pylist(), ref_table.to_pylist()
            equal = [i for i, (x, y) in enumerate(zip(rows, ref_rows)) if x == y]
            result["minhash_rows_equal"] += len(equal)
            if len(equal) != len(rows) or len(rows) != len(ref_rows):
                first = next((i for i, (x, y) in enumerate(zip(rows, ref_rows)) if x != y), min(len(rows), len(ref_rows)))
                mismatches.append(f"{rel}: row {first} differs")
    result["ok"] = (
        result["files_equal"]
        and result["files"] > 0
        and not mismatches
        and result["minhash_schema_equal"]
        and result["signals_lines_equal"] == result["signals_lines"] == result["signals_lines_reference"]
        and result["minhash_rows_equal"] == result["minhash_rows"] == result["minhash_rows_reference"]
    )
    if mismatches:
        result["mismatches"] = mismatches[:20]
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000, help="documents in total (half head, half middle)")
    parser.add_argument("--words", type=int, default=500, help="mean words per document")
    parser.add_argument(
        "--no-classifier", action="store_true", help="generated artifacts without the fastText models (classifier scores null)"
    )
    parser.add_argument(
        "--artifacts", metavar="URL", help="use this signal-artifacts folder (URL or local path) instead of generated ones"
    )
    parser.add_argument(
        "--check-parity",
        action="store_true",
        help="after the timed run, recompute with the other implementation and compare (untimed)",
    )
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions by own time")
    parser.add_argument("--pure-python", action="store_true", help="run without the compiled loops (RPJ_PURE_PYTHON=1)")
    parser.add_argument(
        "--keep", metavar="DIR", help="write the shard and the generated artifacts into DIR (new or empty) and keep them"
    )
    parser.add_argument(
        "--generate-only",
        action="store_true",
        help="with --keep: write the shard and the artifacts, print their description and stop (no annotation)",
    )
    parser.add_argument(
        "--pages",
        metavar="JSONL",
        help="annotate these documents (a JSONL, plain or .gz, one object per line with raw_content or text) "
        "instead of generated ones; --docs then caps their number",
    )
    args = parser.parse_args()
    if args.generate_only and not args.keep:
        parser.error("--generate-only needs --keep DIR")
    if args.keep:
        keep = Path(args.keep).expanduser().resolve()
        if keep.exists() and (not keep.is_dir() or any(keep.iterdir())):
            parser.error(f"--keep {args.keep}: exists and is not an empty directory")
    if args.artifacts and args.no_classifier:
        parser.error("--no-classifier applies to the generated artifacts only, not to --artifacts")
    pure = "1" if args.pure_python else ""
    if os.environ.get("PYTHONHASHSEED") != "42" or os.environ.get("RPJ_PURE_PYTHON", "") != pure:
        # run the stage here (not in a seed-42 worker), with the chosen implementation
        env = {**os.environ, "PYTHONHASHSEED": "42", "RPJ_PURE_PYTHON": pure}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    from rpj_tasks import native as speedups

    gen = PageGenerator(seed=0)
    texts = read_pages(Path(args.pages), args.docs) if args.pages else [gen.page(args.words) for _ in range(args.docs)]
    half = len(texts) // 2
    if args.keep:
        keep.mkdir(parents=True, exist_ok=True)
        workdir = contextlib.nullcontext(str(keep))
    else:
        workdir = tempfile.TemporaryDirectory(prefix="rpj-bench-annotate-")
    with workdir as tmp:
        root = Path(tmp)
        write_shard(
            root / "release",
            {
                "en_head.json.gz": [ccnet_document(t, i, "head") for i, t in enumerate(texts[:half])],
                "en_middle.json.gz": [ccnet_document(t, i, "middle") for i, t in enumerate(texts[half:], half)],
            },
        )
        if args.artifacts:
            artifacts = artifacts_url_of(args.artifacts)
        else:
            artifacts = build_artifacts(root / "artifacts", texts, gen, not args.no_classifier)
        hash_mode = recorded_hash_mode(artifacts)
        if args.generate_only:
            print(json.dumps({**describe(texts), "kept": str(keep), "artifacts": artifacts, "hash_mode": hash_mode}))
            return
        cfg = SnapshotConfig(id=SNAPSHOT, storage_root=(root / "release").as_uri(), source_base="file:///unused")
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        profiler = cProfile.Profile() if args.profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        record = annotate_shard(cfg, 0, artifacts_url=artifacts, hash_mode=hash_mode)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        en = record["artifacts"]["languages"].get("en", {})
        classifier_mb = {
            name: round(storage.size(storage.join(artifacts, "classifiers", "en", f"{name}.model.bin")) / 2**20, 1)
            for name in en.get("classifiers", [])
        }
        parity = None
        if args.check_parity:
            parity = check_parity(root / "release", root / "parity", artifacts, hash_mode, speedups.native is not None)
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue(), file=sys.stderr)
    lines = record["counts"]["annotate.lines"]
    result = {
        "docs": lines,
        **{k: v for k, v in describe(texts).items() if k != "docs"},
        "pages": args.pages,
        "classifier": bool(classifier_mb),
        "profiled": bool(profiler),
        "docs_per_s_cpu": round(lines / cpu, 1),
        "docs_per_s_wall": round(lines / wall, 1),
        "peak_rss_mb": round(rss_peak / 1024, 1),
        "native": speedups.native is not None,
        "simd": speedups.native.simd() if speedups.native is not None else None,
        "loop_ns": loop_ns(),
        "seconds": record["seconds"],
        "target": {"docs_per_s_cpu": 625, "peak_rss_mb": 1024},
        "peak_rss_mb_before_annotate": round(rss_before / 1024, 1),
        "artifacts": artifacts if args.artifacts else "generated",
        "hash_mode": hash_mode,
        "classifiers": sorted(classifier_mb),
        "classifier_mb": classifier_mb,
        "dsir_targets": en.get("dsir_targets", []),
    }
    if parity is not None:
        result["parity"] = parity
    if args.keep:
        result["kept"] = str(keep)
    print(json.dumps(result))
    if parity is not None and not parity["ok"]:
        print("parity check failed: " + "; ".join(parity.get("mismatches", ["counts differ"])), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
