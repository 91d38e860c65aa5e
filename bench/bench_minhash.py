"""Benchmark RPv2 MinHash: datasketch-only path, the numpy batch path, the C path, and the parquet writer.

Generates ~2,000 realistic ~500-word English documents offline (wordfreq vocabulary, Zipf-weighted,
with sentences, punctuation and paragraphs), then prints one JSON object: docs/s for each path
(wall clock and single-process CPU time) and the peak RSS.

    .venv/bin/python bench/bench_minhash.py [--docs 2000] [--words 500]
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from wordfreq import top_n_list, word_frequency

from rpj_tasks.annotate import minhash
from rpj_tasks.annotate.signals.text import normalize


def make_docs(n_docs: int, n_words: int, seed: int = 0) -> list[str]:
    """Deterministic pseudo-English documents of about ``n_words`` words."""
    rng = random.Random(seed)
    vocab = top_n_list("en", 30000)
    weights = [word_frequency(w, "en") for w in vocab]
    docs = []
    for _ in range(n_docs):
        words = rng.choices(vocab, weights, k=n_words)
        paragraphs, sentence, paragraph = [], [], []
        for word in words:
            sentence.append(word)
            if rng.random() < 0.06:
                sentence[-1] += ","
            if len(sentence) >= rng.randint(8, 25):
                paragraph.append(" ".join(sentence).capitalize() + rng.choice(".....!?"))
                sentence = []
                if len(paragraph) >= rng.randint(3, 8):
                    paragraphs.append(" ".join(paragraph))
                    paragraph = []
        paragraph.append(" ".join(sentence))
        paragraphs.append(" ".join(paragraph))
        docs.append("\n".join(paragraphs))
    return docs


def timed(n_docs: int, fn: Callable[[], object]) -> dict[str, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return {"docs_per_s_wall": round(n_docs / wall, 1), "docs_per_s_cpu": round(n_docs / cpu, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--words", type=int, default=500)
    args = parser.parse_args()

    docs = make_docs(args.docs, args.words)
    words = [normalize(d).split() for d in docs]
    batch = minhash.ROW_GROUP_SIZE

    def vectorised() -> None:
        for i in range(0, len(docs), batch):
            minhash.signatures(docs[i : i + batch])

    def datasketch_only() -> None:
        for text in docs:
            minhash.datasketch_signature(normalize(text).split())

    with tempfile.TemporaryDirectory() as tmp:
        url = str(Path(tmp) / "en_head.minhash.parquet")
        results = {
            "docs": len(docs),
            "mean_words": round(sum(map(len, words)) / len(words), 1),
            "normalize_only": timed(len(docs), lambda: [normalize(d).split() for d in docs]),
            "datasketch_only": timed(len(docs), datasketch_only),
            "texts_default_path": timed(len(docs), vectorised),
            "numpy_from_words": timed(len(docs), lambda: minhash.signatures_from_words_numpy(words)),
            "native_from_words": timed(len(docs), lambda: minhash.signatures_from_words_native(words))
            if minhash.native is not None
            else None,
            "parquet_writer": timed(len(docs), lambda: minhash.write_minhash_parquet(url, "2023-06/0000/en_head.json.gz", docs)),
        }
    results["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
