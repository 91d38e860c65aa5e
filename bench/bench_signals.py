"""Benchmark the 45 RPv2 quality signals (records encoded as the reference writer does).

Generates ~2,000 realistic web-like English documents offline (wordfreq Zipf vocabulary; a title,
short menu/heading lines, bullet lists, long paragraphs, numbers and dates, some curly quotes and
accents, a repeated call-to-action line) and prints one JSON object:

* ``docs_per_s`` / ``docs_per_s_cpu``: ``make_record`` + ``encode_record`` per document, one process,
  with the real stop-word and LDNOOBW lists (no classifier or DSIR artifacts);
* ``with_minhash_docs_per_s``: the same plus :func:`rpj_tasks.annotate.minhash.signatures_from_words` on the
  shared normalised words (what the annotation stage does per document);
* ``dsir_docs_per_s``: signals plus a synthetic ``cpython-seed42`` DSIR scorer with three targets
  (run only when this interpreter has ``PYTHONHASHSEED=42``);
* ``mean_words`` / ``mean_chars`` of the generated documents, and ``peak_rss_mb``.

    PYTHONHASHSEED=42 .venv/bin/python bench/bench_signals.py [--docs 2000] [--words 500]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from wordfreq import top_n_list, word_frequency

from rpj_tasks.annotate import minhash
from rpj_tasks.annotate.artifacts.load import ldnoobw_entries
from rpj_tasks.annotate.signals import SignalArtifacts, dsir_hash_selfcheck, encode_record, make_record, prepare
from rpj_tasks.annotate.signals.models import DSIR_TARGETS, DsirScorer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SHARD_KEY = "2023-06/0000/en_head.json.gz"


class DocGenerator:
    """Deterministic pseudo web pages of about ``n_words`` words."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.vocab = top_n_list("en", 30000)
        self.weights = [word_frequency(w, "en") for w in self.vocab]

    def words(self, k: int) -> list[str]:
        return self.rng.choices(self.vocab, self.weights, k=k)

    def sentence(self) -> str:
        words = self.words(self.rng.randint(6, 24))
        for i in range(len(words)):
            roll = self.rng.random()
            if roll < 0.05:
                words[i] += ","
            elif roll < 0.07:
                words[i] = words[i].capitalize()
            elif roll < 0.08:
                words[i] = str(self.rng.randint(1, 2024))
            elif roll < 0.085:
                words[i] = f"\u201c{words[i]}\u201d"
            elif roll < 0.088:
                words[i] = words[i] + "\u2019s"
        return " ".join(words).capitalize() + self.rng.choice(".........!?:")

    def document(self, n_words: int) -> str:
        lines = [" ".join(self.words(self.rng.randint(3, 8))).title()]
        lines += [" | ".join(w.title() for w in self.words(5))]
        total = sum(len(line.split()) for line in lines)
        while total < n_words:
            kind = self.rng.random()
            if kind < 0.15:
                line = " ".join(self.words(self.rng.randint(2, 6))).title()
            elif kind < 0.3:
                line = self.rng.choice(["\u2022 ", "- ", "* ", ""]) + self.sentence()
            elif kind < 0.35:
                author = self.words(1)[0].title()
                line = f"Posted on {self.rng.randint(1, 28)} March 2023 by {author} \u2013 Read more..."
            else:
                line = " ".join(self.sentence() for _ in range(self.rng.randint(2, 7)))
            lines.append(line)
            total += len(line.split())
        lines.append("Click here to subscribe to our newsletter. Caf\u00e9 \u00e9t\u00e9 na\u00efve.")
        return "\n".join(lines)


def ccnet_doc(raw: str, i: int) -> dict:
    return {
        "url": f"https://www.example{i % 97}.com/p/{i}",
        "date_download": "2023-01-26T21:25:04Z",
        "digest": "sha1:AAAA",
        "length": len(raw),
        "nlines": raw.count("\n") + 1,
        "source_domain": f"www.example{i % 97}.com",
        "title": "t",
        "raw_content": raw,
        "cc_segment": "crawl-data/CC-MAIN-2023-06/segments/x/wet/y.warc.wet.gz",
        "original_nlines": 40,
        "original_length": 9000,
        "line_ids": [],
        "language": "en",
        "language_score": 0.93,
        "perplexity": 301.5,
        "bucket": "head",
    }


def base_artifacts() -> SignalArtifacts:
    stop = frozenset(json.loads((SHARED / "stopwords" / "en.json").read_text()))
    bad = ldnoobw_entries((SHARED / "ldnoobw" / "en.txt").read_text())
    return SignalArtifacts(lang="en", stop_words=stop, ldnoobw=bad, ut1={"www.example3.com": 11})


def timed(n: int, fn: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return round(n / wall, 1), round(n / cpu, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--words", type=int, default=500)
    args = parser.parse_args()
    gen = DocGenerator(seed=0)
    docs = [ccnet_doc(gen.document(args.words), i) for i in range(args.docs)]
    artifacts = base_artifacts()

    def signals_only() -> None:
        for i, doc in enumerate(docs):
            encode_record(make_record(doc, SHARD_KEY, i, artifacts))

    def with_minhash() -> None:
        for i, doc in enumerate(docs):
            text = prepare(doc["raw_content"])
            encode_record(make_record(doc, SHARD_KEY, i, artifacts, text))
            minhash.signatures_from_words([text.words])

    result: dict[str, object] = {
        "docs": args.docs,
        "mean_words": round(sum(len(d["raw_content"].split()) for d in docs) / len(docs), 1),
        "mean_chars": round(sum(len(d["raw_content"]) for d in docs) / len(docs), 1),
    }
    result["docs_per_s"], result["docs_per_s_cpu"] = timed(len(docs), signals_only)
    result["with_minhash_docs_per_s"], result["with_minhash_docs_per_s_cpu"] = timed(len(docs), with_minhash)
    if dsir_hash_selfcheck():
        rng = np.random.default_rng(0)
        pair = lambda: (rng.integers(1, 1000, 10000), np.asarray(500.0))  # noqa: E731
        scorer = DsirScorer(pair(), {t: pair() for t in DSIR_TARGETS}, "cpython-seed42")
        artifacts = SignalArtifacts(**{**artifacts.__dict__, "dsir": scorer})
        result["dsir_docs_per_s"], result["dsir_docs_per_s_cpu"] = timed(len(docs), signals_only)
    result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
