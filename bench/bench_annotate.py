"""Benchmark the annotation stage: quality signals + MinHash of one shard, in one process.

Generates realistic CCNet documents offline (wordfreq Zipfian English vocabulary: a title, menu and
heading lines, bullet lists, prose paragraphs of 1-8 sentences, dates, prices, curly quotes; about
``--words`` words per document on average), writes them as ``en_head`` and ``en_middle`` files of a
shard with their CCNet stats record, builds signal artifacts (the real stop-word and LDNOOBW lists,
a UT1 map, random DSIR counts for the three en targets in the reference hash mode and, unless
``--no-classifier``, a small fastText ``palm`` model), then runs
:func:`rpj_tasks.annotate.annotate_shard` and prints one JSON object:

* ``docs_per_s_cpu``: documents per CPU second of the annotation (the per-core rate);
* ``docs_per_s_wall``, ``peak_rss_mb`` (``getrusage`` maximum resident set size of the process);
* ``seconds``: the stage's per-step seconds (read, signals, minhash, write, load_artifacts);
* ``native``: whether the compiled loops (``rpj_tasks._speedups``) ran (``--pure-python`` turns them off);
* ``loop_ns``: CPU nanoseconds per iteration of a plain Python ``for``/``+=`` loop, a yardstick for
  comparing figures taken on different machines (about 20-30 ns on a current desktop core).

The script re-executes itself with ``PYTHONHASHSEED=42`` so that the stage runs in this process
(no worker): CPU time and RSS are then those of the annotation itself.  ``--profile N`` prints the
N functions with the most own time (cProfile) to stderr.

    .venv/bin/python bench/bench_annotate.py [--docs 4000] [--words 500] [--profile 30]
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import io
import json
import os
import pstats
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from wordfreq import top_n_list, word_frequency

from rpj_tasks.annotate import annotate_shard
from rpj_tasks.config import SnapshotConfig
from rpj_tasks.signal_artifacts import fetch_word_lists, train_classifier

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
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


def ccnet_document(raw: str, i: int, bucket: str) -> dict:
    """A CCNet documents line (all 16 fields, in order) around ``raw``."""
    nlines = raw.count("\n") + 1
    domain = f"www.site{i % 301}.example.com"
    return {
        "url": f"https://{domain}/page/{i}", "date_download": "2023-01-26T21:25:04Z",
        "digest": f"sha1:{i:032d}", "length": len(raw), "nlines": nlines, "source_domain": domain,
        "title": f"page {i}", "raw_content": raw,
        "cc_segment": SEGMENT,
        "original_nlines": nlines + 7, "original_length": len(raw.encode()) + 400, "line_ids": list(range(nlines)),
        "language": "en", "language_score": 0.93, "perplexity": 245.3 if bucket == "head" else 512.8,
        "bucket": bucket,
    }


def write_shard(root: Path, docs_per_file: dict[str, list[dict]]) -> None:
    folder = root / "documents" / SNAPSHOT / "0000"
    folder.mkdir(parents=True)
    for name, docs in docs_per_file.items():
        text = "".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs)
        (folder / name).write_bytes(gzip.compress(text.encode(), mtime=0))
    marker = root / "stats" / "ccnet" / SNAPSHOT / "0000.json"
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"files": sorted(docs_per_file)}))


def build_artifacts(root: Path, texts: list[str], gen: PageGenerator, classifier: bool) -> str:
    url = root.as_uri()
    fetch_word_lists(url, ["en"], stopwords_url_template=(SHARED / "stopwords").as_uri() + "/{lang}.json",
                     ldnoobw_url_template=(SHARED / "ldnoobw").as_uri() + "/{lang}.txt")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=4000, help="documents in total (half head, half middle)")
    parser.add_argument("--words", type=int, default=500, help="mean words per document")
    parser.add_argument("--no-classifier", action="store_true", help="no fastText model (palm score null)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="print the top N functions by own time")
    parser.add_argument("--pure-python", action="store_true", help="run without the compiled loops (RPJ_PURE_PYTHON=1)")
    args = parser.parse_args()
    pure = "1" if args.pure_python else ""
    if os.environ.get("PYTHONHASHSEED") != "42" or os.environ.get("RPJ_PURE_PYTHON", "") != pure:
        # run the stage here (not in a seed-42 worker), with the chosen implementation
        env = {**os.environ, "PYTHONHASHSEED": "42", "RPJ_PURE_PYTHON": pure}
        os.execve(sys.executable, [sys.executable, *sys.argv], env)
    from rpj_tasks import speedups

    gen = PageGenerator(seed=0)
    texts = [gen.page(args.words) for _ in range(args.docs)]
    half = args.docs // 2
    with tempfile.TemporaryDirectory(prefix="rpj-bench-annotate-") as tmp:
        root = Path(tmp)
        write_shard(root / "release", {
            "en_head.json.gz": [ccnet_document(t, i, "head") for i, t in enumerate(texts[:half])],
            "en_middle.json.gz": [ccnet_document(t, i, "middle") for i, t in enumerate(texts[half:], half)],
        })
        artifacts = build_artifacts(root / "artifacts", texts, gen, not args.no_classifier)
        cfg = SnapshotConfig(id=SNAPSHOT, storage_root=(root / "release").as_uri(), source_base="file:///unused")
        profiler = cProfile.Profile() if args.profile else None
        wall, cpu = time.perf_counter(), time.process_time()
        if profiler:
            profiler.enable()
        record = annotate_shard(cfg, 0, artifacts_url=artifacts)
        if profiler:
            profiler.disable()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    if profiler:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(args.profile)
        print(out.getvalue(), file=sys.stderr)
    lines = record["counts"]["annotate.lines"]
    print(json.dumps({
        "docs": lines,
        "mean_words": round(sum(len(t.split()) for t in texts) / len(texts), 1),
        "mean_chars": round(sum(map(len, texts)) / len(texts), 1),
        "classifier": not args.no_classifier,
        "profiled": bool(profiler),
        "docs_per_s_cpu": round(lines / cpu, 1),
        "docs_per_s_wall": round(lines / wall, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "native": speedups.native is not None,
        "loop_ns": loop_ns(),
        "seconds": record["seconds"],
        "target": {"docs_per_s_cpu": 625, "peak_rss_mb": 1024},
    }))


if __name__ == "__main__":
    main()
