"""Benchmark the token counts: :func:`rpj_tasks.tokens.count_shard` on one generated shard.

Generates ``--docs`` English CCNet documents of about ``--words`` words with ``bench_annotate.py``'s
page generator (wordfreq Zipfian vocabulary, titles, menus, bullets, prose, dates, prices), writes
them as the ``en_head`` and ``en_middle`` files of a shard with its CCNet record (commit protocol),
then runs the stage ``--runs`` times per tokenizer path, **alternated** (sentencepiece, tokenizers,
sentencepiece, ...), each run a fresh child process (``count_shard(..., force=True)``):

* ``sentencepiece``: the default counter (Mistral-7B-v0.1 from the mistral-common wheel);
* ``tokenizers``: the same model's ``tokenizers`` form saved as a ``tokenizer.json`` (the
  ``--tokenizer-json`` path; ``tokenizers`` may use several threads, CPU time counts them all).

Printed JSON, per path, ranges ``[min, max]`` over the runs:

* ``docs_per_s_cpu_process``: documents per CPU second of the whole child (interpreter start,
  imports, loading the tokenizer, the stage);
* ``docs_per_s_cpu_stage``: documents per CPU second of ``count_shard`` alone;
* ``docs_per_s_steps``: documents per CPU second of each step the stage times (``read``: gunzip +
  JSON, ``tokenize``, ``write``: the parquet file);
* ``peak_rss_mb`` of the child (``VmHWM``); plus ``loop_ns`` (CPU ns per plain Python loop iteration, the
  machine's speed yardstick, see bench_annotate.py), ``cpu`` (model name), ``date``, ``tokens``.

    .venv/bin/python bench/bench_tokens.py [--docs 20000] [--words 500] [--runs 3]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import paired  # bench/paired.py

from rpj_tasks.core import commit, layout
from rpj_tasks.core.config import SnapshotConfig

PATHS = ("sentencepiece", "tokenizers")
SNAPSHOT = "2023-06"


def config(root: str) -> SnapshotConfig:
    return SnapshotConfig(id=SNAPSHOT, storage_root=root, source_base="file:///unused", num_shards=1)


def write_shard(root: str, docs: int, words: int) -> None:
    from bench_annotate import PageGenerator, ccnet_document  # not in the timed children: wordfreq, fastText

    gen = PageGenerator(seed=7)
    out_dir = layout.shard_dir(root, "documents", SNAPSHOT, 0)
    with commit.UnitCommit(layout.ccnet_stats_url(root, SNAPSHOT, 0), {"bench": docs}, [out_dir]) as unit:
        for bucket, n in (("head", docs // 2), ("middle", docs - docs // 2)):
            with unit.gzip_writer(layout.documents_url(root, SNAPSHOT, 0, "en", bucket)) as f:
                for i in range(n):
                    f.write(json.dumps(ccnet_document(gen.page(words), i, bucket), ensure_ascii=False).encode() + b"\n")
        unit.commit({})


def child(path: str, root: str, tokenizer_json: str) -> None:
    """One timed run in this fresh process; prints its JSON.  The stage's step timers
    (:class:`rpj_tasks.core.stats.Stats`) are made to read CPU time, so the steps are CPU seconds too."""
    import types

    import rpj_tasks.core.stats
    from rpj_tasks.tokens import count_shard

    rpj_tasks.core.stats.time = types.SimpleNamespace(perf_counter=time.process_time)  # type: ignore[assignment]

    cpu0 = time.process_time()
    rec = count_shard(config(root), 0, force=True, tokenizer_json=tokenizer_json if path == "tokenizers" else "")
    cpu = time.process_time() - cpu0
    usage = resource.getrusage(resource.RUSAGE_SELF)
    docs = rec["totals"]["documents"]
    print(
        json.dumps(
            {
                "docs": docs,
                "tokens": rec["totals"]["tokens"],
                "kind": rec["tokenizer"]["kind"],
                "cpu_stage": cpu,
                "cpu_process": usage.ru_utime + usage.ru_stime,
                "steps": rec["seconds"],
                "peak_rss_mb": peak_rss_mb(),
            }
        )
    )


def peak_rss_mb() -> float:
    """This process's peak RSS (``VmHWM``: ``ru_maxrss`` would carry the forking parent's over ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def span(values: list[float], digits: int = 0) -> list[float]:
    return [round(min(values), digits), round(max(values), digits)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--words", type=int, default=500)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--child", nargs=3, metavar=("PATH", "ROOT", "TOKENIZER_JSON"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-tokens-") as tmp:
        root = Path(tmp).as_uri()
        write_shard(root, args.docs, args.words)
        from rpj_tasks.tokens.tokenizer import mistral_model_path, tokenizers_from_sentencepiece

        tokenizer_json = os.path.join(tmp, "tokenizer.json")
        tokenizers_from_sentencepiece(mistral_model_path()).save(tokenizer_json)
        runs: dict[str, list[dict]] = {p: [] for p in PATHS}
        for _ in range(args.runs):
            for path in PATHS:
                out = subprocess.run(
                    [sys.executable, __file__, "--child", path, root, tokenizer_json],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                runs[path].append(json.loads(out.stdout.strip().splitlines()[-1]))
    from bench_annotate import loop_ns

    result: dict = {
        "date": datetime.date.today().isoformat(),
        "cpu": paired.cpu_model(),
        "cores": os.cpu_count(),
        "loop_ns": round(loop_ns(), 1),
        "docs": args.docs,
        "words": args.words,
        "runs": args.runs,
    }
    for path, rs in runs.items():
        docs = rs[0]["docs"]
        steps = sorted({s for r in rs for s in r["steps"]})
        result[path] = {
            "tokens": rs[0]["tokens"],
            "same_tokens_every_run": len({r["tokens"] for r in rs}) == 1,
            "docs_per_s_cpu_process": span([docs / r["cpu_process"] for r in rs]),
            "docs_per_s_cpu_stage": span([docs / r["cpu_stage"] for r in rs]),
            "docs_per_s_steps": {s: span([docs / r["steps"][s] for r in rs if r["steps"].get(s)]) for s in steps},
            "peak_rss_mb": span([r["peak_rss_mb"] for r in rs]),
        }
    result["same_tokens_both_paths"] = runs["sentencepiece"][0]["tokens"] == runs["tokenizers"][0]["tokens"]
    text = json.dumps(result, indent=1)
    print(re.sub(r"\[\n\s+([0-9.]+),\n\s+([0-9.]+)\n\s+\]", r"[\1, \2]", text))  # ranges on one line


if __name__ == "__main__":
    main()
