"""Tests for rpj_tasks.annotate.artifacts.build: word lists, UT1, CCNet sample, fastText, DSIR, manifest."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from rpj_tasks.annotate import hashseed
from rpj_tasks.annotate.artifacts import build as sa
from rpj_tasks.annotate.signals import HashSeedError, SignalArtifacts, call_with_seed42, classifier_text, raw_words
from rpj_tasks.ccnet.lid import default_lid_model_path
from rpj_tasks.core.layout import LANGUAGES
from rpj_tasks.core.stats import Stats
from rpj_tasks.core.storage import ChecksumError
from rpj_tasks.core.workers import WorkerPool

LANGS = LANGUAGES
STABLE_THE = 3331141520948189790  # stable_hash("the")

# Independent DSIR reference, run in a PYTHONHASHSEED=42 interpreter (docs/spec/quality_signals.md §3.7).
_DIRECT_DSIR = r"""
import json, re, sys
import numpy as np
texts = json.load(sys.stdin)
counts = np.zeros(10000, dtype=np.int64)
for text in texts:
    words = re.findall(r"\w+|[^\w\s]+", text)
    for w in words:
        counts[abs(hash(w)) % 10000] += 1
    for pair in zip(words, words[1:]):
        counts[abs(hash(pair)) % 10000] += 1
sys.stdout.write(json.dumps(counts.tolist()))
"""

DSIR_TEXTS = [
    "The cat sat on the mat.",
    "Hello, world... It's 3½ o'clock!",
    "",
    "café Café CAFÉ — «quotes» and e\u0301 decomposed",
    "Zeile eins\nZeile zwei\n\n  Ende.",
    "a b a b a b a b",
]


def run_direct_dsir(texts: list[str], seed: str) -> np.ndarray:
    env = {**os.environ, "PYTHONHASHSEED": seed}
    out = subprocess.run(
        [sys.executable, "-c", _DIRECT_DSIR], input=json.dumps(texts), env=env, capture_output=True, text=True, check=True
    ).stdout
    return np.array(json.loads(out), dtype=np.int64)


def npy(path: Path) -> np.ndarray:
    return np.load(path, allow_pickle=False)


# ---------------------------------------------------------------- UT1


def test_ut1_category_ids_follow_combinations_order():
    index = sa.ut1_category_index()
    assert len(index) == 8191
    expected = {
        ("adult",): 0,
        ("porn",): 11,
        ("violence",): 12,
        ("adult", "agressif"): 13,
        ("adult", "porn"): 23,
        ("mixed_adult", "porn"): 86,
        ("adult", "mixed_adult", "porn"): 152,
        tuple(sorted(sa.UT1_CATEGORIES)): 8190,
    }
    for combo, cid in expected.items():
        assert index[combo] == cid
    assert sorted(index.values()) == list(range(8191))


def _add_file(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _add_symlink(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    tar.addfile(info)


def make_ut1_tarball(path: Path, lists: dict[str, list[str]], symlinks: dict[str, str] | None = None) -> str:
    symlinks = symlinks or {}
    with tarfile.open(path, "w:gz") as tar:
        for category, domains in lists.items():
            _add_file(tar, f"./blacklists/{category}/domains", "".join(f"{d}\n" for d in domains).encode())
            _add_file(tar, f"./blacklists/{category}/urls", b"ignored.example/path\n")
        for name, target in symlinks.items():
            _add_symlink(tar, f"./blacklists/{name}", target)
    return path.as_uri()


def test_build_ut1_maps_domains_to_combination_ids(tmp_path):
    lists = {cat: ["everywhere.example"] for cat in sa.UT1_CATEGORIES if cat != "agressive"}
    lists["adult"] += ["adult.example", "adult-porn.example", "three.example", "aggr.example", "", "  spaced.example  "]
    lists["porn"] += ["porn.example", "adult-porn.example", "mixed-porn.example", "three.example", "porn.example"]
    lists["mixed_adult"] += ["mixed-porn.example", "three.example"]
    lists["violence"] += ["violence.example"]
    lists["agressif"] += ["aggr.example"]
    lists["sports"] = ["not-configured.example"]
    # "agressive" is a symlinked folder, as aliases are in the real tarball
    url = make_ut1_tarball(tmp_path / "blacklists.tar.gz", lists, {"agressive": "agressif"})
    stats = Stats()
    entries = sa.build_ut1((tmp_path / "out").as_uri(), url, stats=stats)

    mapping = json.loads((tmp_path / "out/ut1/domain_to_category_id.json").read_text())
    assert mapping == {
        "adult.example": 0,
        "porn.example": 11,
        "violence.example": 12,
        "spaced.example": 0,
        "aggr.example": sa.ut1_category_index()[("adult", "agressif", "agressive")],
        "adult-porn.example": 23,
        "mixed-porn.example": 86,
        "three.example": 152,
        "everywhere.example": 8190,
    }
    assert list(mapping) == sorted(mapping)
    inverse = json.loads((tmp_path / "out/ut1/category_index.json").read_text())
    assert len(inverse) == 8191 and list(inverse)[:3] == ["0", "1", "2"]
    assert inverse["23"] == ["adult", "porn"] and inverse["86"] == ["mixed_adult", "porn"]
    assert inverse["8190"] == sorted(sa.UT1_CATEGORIES)
    assert stats["ut1.missing_category"] == 0

    entry = entries["ut1/domain_to_category_id.json"]
    assert entry["sources"] == [url] and entry["domains"] == 9
    assert entry["category_domains"]["agressive"] == entry["category_domains"]["agressif"] == 2
    assert entry["source_sha256"] == hashlib.sha256((tmp_path / "blacklists.tar.gz").read_bytes()).hexdigest()
    data = (tmp_path / "out/ut1/domain_to_category_id.json").read_bytes()
    assert entry["sha256"] == hashlib.sha256(data).hexdigest()


def test_build_ut1_counts_missing_categories_and_bad_lines(tmp_path):
    url = make_ut1_tarball(tmp_path / "bl.tar.gz", {"adult": ["ok.example"]})
    with tarfile.open(tmp_path / "bl2.tar.gz", "w:gz") as tar:
        _add_file(tar, "blacklists/porn/domains", b"good.example\n\xff\xfe.example\nalso-good.example\n")
    stats = Stats()
    sa.build_ut1((tmp_path / "a").as_uri(), url, stats=stats)
    assert stats["ut1.missing_category"] == 12
    sa.build_ut1((tmp_path / "b").as_uri(), (tmp_path / "bl2.tar.gz").as_uri(), stats=stats)
    assert stats["ut1.bad_line"] == 1
    mapping = json.loads((tmp_path / "b/ut1/domain_to_category_id.json").read_text())
    assert mapping == {"also-good.example": 11, "good.example": 11}


# ---------------------------------------------------------------- word lists


def serve(directory: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    """A local HTTP server on 127.0.0.1 for ``directory``: its base URL and the server (shut it down)."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(directory))
    handler.log_message = lambda *args: None  # type: ignore[method-assign]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


@pytest.fixture
def http_root(tmp_path, shared_data):
    """A local HTTP server on 127.0.0.1 serving the shared word lists plus a broken one."""
    root = tmp_path / "www"
    for kind, ext in (("stopwords", "json"), ("ldnoobw", "txt")):
        (root / kind).mkdir(parents=True)
        for lang in LANGS:
            (root / kind / f"{lang}.{ext}").write_bytes((shared_data / kind / f"{lang}.{ext}").read_bytes())
    (root / "stopwords" / "xx.json").write_text('{"not": "a list"}')
    url, server = serve(root)
    yield url
    server.shutdown()
    server.server_close()


def test_fetch_word_lists_over_http_equal_the_fixtures(tmp_path, http_root, shared_data):
    out = tmp_path / "artifacts"
    entries = sa.fetch_word_lists(
        out.as_uri(),
        LANGS,
        stopwords_url_template=http_root + "/stopwords/{lang}.json",
        ldnoobw_url_template=http_root + "/ldnoobw/{lang}.txt",
    )
    for lang in LANGS:
        for rel in (f"stopwords/{lang}.json", f"ldnoobw/{lang}.txt"):
            assert (out / rel).read_bytes() == (shared_data / rel).read_bytes()
        assert entries[f"ldnoobw/{lang}.txt"]["sources"] == [f"{http_root}/ldnoobw/{lang}.txt"]
    stop_counts = {lang: entries[f"stopwords/{lang}.json"]["entries"] for lang in LANGS}
    assert stop_counts == {"en": 570, "de": 596, "fr": 606, "es": 577, "it": 619}
    assert entries["ldnoobw/en.txt"]["entries"] == 403
    digest = hashlib.sha256((shared_data / "stopwords/de.json").read_bytes()).hexdigest()
    assert entries["stopwords/de.json"]["sha256"] == digest


def test_fetch_word_lists_rejects_a_malformed_list(tmp_path, http_root):
    with pytest.raises(ValueError, match="not a JSON array"):
        sa.fetch_word_lists(
            tmp_path.as_uri(),
            ["xx"],
            stopwords_url_template=http_root + "/stopwords/{lang}.json",
            ldnoobw_url_template=http_root + "/ldnoobw/{lang}.txt",
        )
    assert not (tmp_path / "stopwords").exists()


def test_default_word_list_urls_are_pinned():
    assert "fca10ee6724fdfae58b9e72e43ac7d4a6ae9cd45" in sa.DEFAULT_STOPWORDS_URL
    assert "5faf2ba42d7b1c0977169ec3611df25a3c08eb13" in sa.DEFAULT_LDNOOBW_URL


# ---------------------------------------------------------------- DSIR


@pytest.mark.skipif(hashseed.dsir_hash_selfcheck(), reason="this interpreter already runs with PYTHONHASHSEED=42")
def test_dsir_seed42_counts_equal_a_direct_seed42_computation(tmp_path):
    entries = sa.build_dsir_counts(
        tmp_path.as_uri(),
        "en",
        "wikipedia",
        iter(DSIR_TEXTS + ["never read"]),
        hash_mode="cpython-seed42",
        max_docs=len(DSIR_TEXTS),
    )
    counts = npy(tmp_path / "dsir/en/wikipedia.en.10000.counts.npy")
    lam = npy(tmp_path / "dsir/en/wikipedia.en.lambda.npy")
    assert counts.dtype == np.int64 and counts.shape == (10000,)
    # this test process was not started with PYTHONHASHSEED=42 (see the skip), yet the counts are seed-42 counts
    np.testing.assert_array_equal(counts, run_direct_dsir(DSIR_TEXTS, "42"))
    assert not np.array_equal(counts, run_direct_dsir(DSIR_TEXTS, "1"))
    n_words = [len(re.findall(r"\w+|[^\w\s]+", t)) for t in DSIR_TEXTS]
    assert lam.dtype == np.float64 and lam.shape == ()
    assert float(lam) == sum(n_words) / len(DSIR_TEXTS)
    assert counts.sum() == sum(n_words) + sum(max(0, n - 1) for n in n_words)
    entry = entries["dsir/en/wikipedia.en.lambda.npy"]
    assert entry["docs"] == len(DSIR_TEXTS) and entry["hash_mode"] == "cpython-seed42"
    assert entry["lambda"] == float(lam)


def seed7_pool(processes: int, **_: object) -> WorkerPool:
    """A worker pool whose workers have the wrong hash seed (and no start-up check)."""
    return WorkerPool(processes, name="seed7", env={"PYTHONHASHSEED": "7"})


def test_dsir_refuses_when_the_worker_fails_the_self_check(monkeypatch):
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    monkeypatch.setattr(sa, "seed42_pool", seed7_pool)
    with pytest.raises(HashSeedError, match="PYTHONHASHSEED='7'"):
        sa.count_dsir(DSIR_TEXTS, "cpython-seed42")


def test_dsir_stable_mode_does_not_depend_on_the_hash_seed(tmp_path):
    # counted by PYTHONHASHSEED=42 workers, recomputed here under this process's random seed
    counts = sa.count_dsir(DSIR_TEXTS, "stable", chunk_docs=2).counts
    expected = np.zeros(10000, dtype=np.int64)
    for text in DSIR_TEXTS:
        words = re.findall(r"\w+|[^\w\s]+", text)
        for item in [*words, *zip(words, words[1:])]:
            expected[abs(hashseed.stable_hash(item)) % 10000] += 1
    np.testing.assert_array_equal(counts, expected)
    assert hashseed.stable_hash("the") == STABLE_THE  # pinned: built artifacts must stay comparable
    with pytest.raises(ValueError, match="hash_mode"):
        sa.build_dsir_counts(tmp_path.as_uri(), "en", "books", DSIR_TEXTS, hash_mode="siphash")
    with pytest.raises(ValueError, match="no documents"):
        sa.build_dsir_counts(tmp_path.as_uri(), "en", "books", [], hash_mode="stable")


# ---------------------------------------------------------------- fastText classifier


def test_classifier_trains_reproducibly_and_predicts_held_out_lines(tmp_path, shared_data):
    import fasttext

    english = (shared_data / "lid/sentences.en.txt").read_text().splitlines()
    french = (shared_data / "lid/sentences.fr.txt").read_text().splitlines()
    # multi-line documents exercise the §3.6 preprocessing (newlines become spaces)
    pos = [f"{a}\n{b}" for a, b in zip(english[:600:2], english[1:600:2])]
    neg = [f"{a}\r\n{b}" for a, b in zip(french[:600:2], french[1:600:2])]
    first = sa.train_classifier((tmp_path / "a/palm.model.bin").as_uri(), pos, neg, label="palm", seed=7)
    second = sa.train_classifier((tmp_path / "b/palm.model.bin").as_uri(), pos, neg, label="palm", seed=7)
    assert first == second  # same bytes (thread=1, fixed seed)
    assert first["positives"] == first["negatives"] == 300 and first["label"] == "__label__palm"
    assert first["sha256"] == hashlib.sha256((tmp_path / "a/palm.model.bin").read_bytes()).hexdigest()

    model = fasttext.load_model(str(tmp_path / "a/palm.model.bin"))
    assert sorted(model.get_labels()) == ["__label__cc", "__label__palm"]
    held_out = [(t, "__label__palm") for t in english[800:900]] + [(t, "__label__cc") for t in french[800:900]]
    right = sum(model.predict(classifier_text(text))[0][0] == label for text, label in held_out)
    assert right >= 0.9 * len(held_out)
    with pytest.raises(ValueError, match="label"):
        sa.train_classifier((tmp_path / "c.bin").as_uri(), pos, neg, label="bad label", seed=7)


# ---------------------------------------------------------------- CCNet sample


def write_documents(root: Path, snapshot: str, lang: str, per_file: dict[str, int], shards: int) -> None:
    for shard in range(shards):
        for bucket, n in per_file.items():
            path = root / snapshot / f"{shard:04d}" / f"{lang}_{bucket}.json.gz"
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [json.dumps({"url": f"u{i}", "raw_content": f"{bucket} {snapshot} {shard} {i}"}) for i in range(n)]
            with gzip.open(path, "wt") as f:
                f.write("\n".join(lines) + "\n")


def test_ccnet_sample_is_seeded_and_respects_the_bucket_proportions(tmp_path):
    docs = tmp_path / "documents"
    write_documents(docs, "2023-06", "en", {"head": 40, "middle": 60, "tail": 150}, shards=3)
    write_documents(docs, "2023-06", "de", {"head": 5, "middle": 5, "tail": 5}, shards=1)
    sample = sa.sample_ccnet_documents(docs.as_uri(), "2023-06", "en", 100, seed=3)
    again = sa.sample_ccnet_documents(docs.as_uri(), "2023-06", "en", 100, seed=3)
    other = sa.sample_ccnet_documents(docs.as_uri(), "2023-06", "en", 100, seed=4)
    assert sample == again and sample != other
    assert Counter(t.split()[0] for t in sample) == {"head": 10, "middle": 20, "tail": 70}
    assert len(set(sample)) == 100
    assert {t.split()[2] for t in sample if t.startswith("tail")} != {"0"}  # spread over files
    assert sa.ccnet_bucket_quotas(70) == {"head": 7, "middle": 14, "tail": 49}
    assert not any("de" in t.split()[0] for t in sample)
    short = Stats()
    small = sa.sample_ccnet_documents(docs.as_uri(), "2023-06", "de", 100, seed=3, stats=short)
    assert Counter(t.split()[0] for t in small) == {"head": 5, "middle": 5, "tail": 5}
    assert short["ccnet_sample.short"] == (10 - 5) + (20 - 5) + (70 - 5)


def test_ccnet_sample_counts_bad_lines_and_keeps_good_ones(tmp_path):
    docs = tmp_path / "documents"
    write_documents(docs, "2023-06", "en", {"tail": 3}, shards=1)
    with gzip.open(docs / "2023-06/0000/en_tail.json.gz", "ab") as f:
        f.write(b'{broken\n{"raw_content": 5}\n{"raw_content": "tail last"}\n')
    stats = Stats()
    sample = sa.sample_ccnet_documents(docs.as_uri(), "2023-06", "en", 10, seed=0, stats=stats)
    assert sorted(sample) == ["tail 2023-06 0 0", "tail 2023-06 0 1", "tail 2023-06 0 2", "tail last"]
    assert stats["ccnet_sample.bad_line"] == 2 and stats["ccnet_sample.short"] == 1 + 2 + 3


def test_corpus_reader_keeps_the_lines_before_a_truncated_gzip(tmp_path):
    texts = [f"document number {i} " * 20 for i in range(200)]
    data = tmp_path / "full.jsonl.gz"
    write_jsonl_gz(data, texts)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    stats = Stats()
    got = list(sa.iter_texts(cut.as_uri(), stats, "c"))
    assert 0 < len(got) < len(texts) and got == texts[: len(got)]
    assert stats["c.truncated"] == 1 and stats["c.docs"] == len(got)


# ---------------------------------------------------------------- orchestration + manifest


def loaded_summary(root: str, langs: list[str]) -> dict[str, dict]:
    """What ``SignalArtifacts.load`` finds under ``root`` per language; scores a document with each part."""
    doc = "The cat sat on the mat.\nDer Hund schläft."
    summary = {}
    for lang in langs:
        arts = SignalArtifacts.load(root, lang)
        assert arts.dsir is not None
        scores = arts.dsir.scores(raw_words(doc), len(doc))
        assert all(np.isfinite(v) for pair in scores.values() for v in pair)
        for model in arts.classifiers.values():
            assert model.predict(classifier_text(doc))[0]
        summary[lang] = {
            "stop_words": len(arts.stop_words),
            "ldnoobw": len(arts.ldnoobw),
            "ut1": arts.ut1,
            "classifiers": sorted(arts.classifiers),
            "dsir": sorted(scores),
        }
    return summary


def write_jsonl_gz(path: Path, texts: list[str]) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts)
    return path.as_uri()


def test_build_signal_artifacts_writes_the_layout_and_manifest(tmp_path, shared_data):
    docs = tmp_path / "release/documents"
    write_documents(docs, "2023-06", "en", {"head": 20, "middle": 20, "tail": 40}, shards=2)
    write_documents(docs, "2023-14", "en", {"head": 20, "middle": 20, "tail": 40}, shards=2)
    write_documents(docs, "2023-06", "de", {"head": 20, "middle": 20, "tail": 40}, shards=1)
    write_documents(docs, "2023-14", "de", {"head": 20, "middle": 20, "tail": 40}, shards=1)
    en = (shared_data / "lid/sentences.en.txt").read_text().splitlines()
    de = (shared_data / "lid/sentences.de.txt").read_text().splitlines()
    corpora = {
        "en": {
            "wikipedia": write_jsonl_gz(tmp_path / "c/en_wiki.jsonl.gz", en[:100]),
            "openwebtext": write_jsonl_gz(tmp_path / "c/owt.jsonl.gz", en[100:200]),
            "books": write_jsonl_gz(tmp_path / "c/books.jsonl.gz", en[200:300]),
        },
        "de": {"wikipedia": (tmp_path / "c/de_wiki.txt").as_uri()},  # one document per line
    }
    (tmp_path / "c/de_wiki.txt").write_text("\n".join(de[:50]) + "\n\n" + "\n".join(de[50:100]) + "\n")
    wikiref = Path(default_lid_model_path())  # any fastText model stands in for the RP-1T one
    config = {
        "langs": ["en", "de"],
        "seed": 5,
        "hash_mode": "cpython-seed42",
        "stopwords_url_template": (shared_data / "stopwords").as_uri() + "/{lang}.json",
        "ldnoobw_url_template": (shared_data / "ldnoobw").as_uri() + "/{lang}.txt",
        "ut1_url": make_ut1_tarball(tmp_path / "ut1.tar.gz", {"adult": ["a.example"], "porn": ["a.example"]}),
        "ccnet": {"documents_root": docs.as_uri(), "snapshots": ["2023-06", "2023-14"]},
        "corpora": corpora,
        "wikiref_model_url": wikiref.as_uri(),
        "dsir_num_samples": 50,
        "classifier_num_samples": 60,
    }
    out = tmp_path / "artifacts"
    manifest = sa.build_signal_artifacts(config, out.as_uri())

    expected = {
        "MANIFEST.json",
        "ut1/domain_to_category_id.json",
        "ut1/category_index.json",
        "classifiers/en/palm.model.bin",
        "classifiers/en/wikiref.model.bin",
        "classifiers/de/wikipedia.model.bin",
        *(f"stopwords/{lang}.json" for lang in ("en", "de")),
        *(f"ldnoobw/{lang}.txt" for lang in ("en", "de")),
        *(
            f"dsir/en/{d}.en.{kind}"
            for d in ("ccnet", "wikipedia", "openwebtext", "books")
            for kind in ("10000.counts.npy", "lambda.npy")
        ),
        *(f"dsir/de/{d}.de.{kind}" for d in ("ccnet", "wikipedia") for kind in ("10000.counts.npy", "lambda.npy")),
    }
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == expected
    assert json.loads((out / "MANIFEST.json").read_text()) == manifest
    assert manifest["hash_mode"] == "cpython-seed42" and manifest["seed"] == 5
    assert set(manifest["artifacts"]) == expected - {"MANIFEST.json"}
    for rel, entry in manifest["artifacts"].items():
        assert entry["sha256"] == hashlib.sha256((out / rel).read_bytes()).hexdigest(), rel
        assert entry["sources"], rel

    arts = manifest["artifacts"]
    # DSIR: 50 of the 2 x 50 sampled CCNet docs; the target corpora hold 100 docs each
    assert arts["dsir/en/ccnet.en.lambda.npy"]["docs"] == 50
    assert arts["dsir/en/books.en.10000.counts.npy"]["sources"] == [corpora["en"]["books"]]
    wiki = en[:50]
    np.testing.assert_array_equal(npy(out / "dsir/en/wikipedia.en.10000.counts.npy"), run_direct_dsir(wiki, "42"))
    assert float(npy(out / "dsir/en/wikipedia.en.lambda.npy")) == (sum(len(re.findall(r"\w+|[^\w\s]+", t)) for t in wiki) / 50)
    np.testing.assert_array_equal(npy(out / "dsir/de/wikipedia.de.10000.counts.npy"), run_direct_dsir(de[:50], "42"))
    assert manifest["counts"]["corpus.de.wikipedia.blank_line"] == 1
    # palm: 60 // 3 docs from each of the three targets, as many CCNet negatives
    palm = arts["classifiers/en/palm.model.bin"]
    assert (palm["positives"], palm["negatives"], palm["seed"]) == (60, 60, 5)
    assert arts["classifiers/de/wikipedia.model.bin"]["label"] == "__label__wikipedia"
    assert arts["classifiers/en/wikiref.model.bin"]["sources"] == [config["wikiref_model_url"]]
    assert (out / "classifiers/en/wikiref.model.bin").read_bytes() == wikiref.read_bytes()
    assert arts["stopwords/en.json"]["entries"] == 570
    assert json.loads((out / "ut1/domain_to_category_id.json").read_text()) == {"a.example": 23}

    # the signals package reads the layout (in a PYTHONHASHSEED=42 worker, as the counts need)
    loaded = call_with_seed42(loaded_summary, out.as_uri(), ["en", "de"])
    assert loaded["en"] == {
        "stop_words": 570,
        "ldnoobw": 403,
        "ut1": {"a.example": 23},
        "classifiers": ["palm", "wikiref"],
        "dsir": ["books", "openwebtext", "wikipedia"],
    }
    assert loaded["de"]["classifiers"] == ["wikipedia"] and loaded["de"]["dsir"] == ["wikipedia"]

    # deterministic: a rebuild gives the same bytes (sha256 of every file)
    again = sa.build_signal_artifacts({**config, "langs": ["de"]}, (tmp_path / "again").as_uri())
    assert again["artifacts"] == {k: v for k, v in arts.items() if "/en" not in k}

    # a model replaced after the build (the manifest unchanged) is refused, not scored with
    (out / "classifiers/de/wikipedia.model.bin").write_bytes((out / "classifiers/en/palm.model.bin").read_bytes())
    with pytest.raises(ChecksumError, match="wikipedia.model.bin: sha256 .* differs from the expected"):
        SignalArtifacts.load(out.as_uri(), "de")


def reference_layout(root: Path, shared_data: Path) -> dict[str, bytes]:
    """A directory laid out as the reference's ``artifacts_dir`` (published RPv2 artifacts): en with a
    palm model and two DSIR datasets, de with its LDNOOBW list only."""
    rng = np.random.default_rng(3)
    files = {
        "bad_words/en.txt": (shared_data / "ldnoobw/en.txt").read_bytes(),
        "bad_words/de.txt": (shared_data / "ldnoobw/de.txt").read_bytes(),
        "bad_urls/domain_to_category_id.json": json.dumps({"a.example": 23, "b.example": 4}).encode(),
        "classifiers/en/palm.model.bin": Path(default_lid_model_path()).read_bytes(),  # any fastText model
    }
    for dataset, lam in (("ccnet", 400.0), ("wikipedia", 900.0)):
        for kind, array in (("10000.counts.npy", rng.integers(1, 50, 10000)), ("lambda.npy", np.asarray(lam))):
            buf = io.BytesIO()
            np.save(buf, array)
            files[f"dsir/en/{dataset}.en.{kind}"] = buf.getvalue()
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_install_published_artifacts_over_http(tmp_path, shared_data):
    files = reference_layout(tmp_path / "published", shared_data)
    source, server = serve(tmp_path / "published")
    try:
        out = tmp_path / "artifacts"
        manifest = sa.install_signal_artifacts(
            source, out.as_uri(), ["en", "de"], stopwords_url_template=(shared_data / "stopwords").as_uri() + "/{lang}.json"
        )
    finally:
        server.shutdown()
        server.server_close()
    renamed = {
        "bad_words/en.txt": "ldnoobw/en.txt",
        "bad_words/de.txt": "ldnoobw/de.txt",
        "bad_urls/domain_to_category_id.json": "ut1/domain_to_category_id.json",
    }
    for rel, data in files.items():
        assert (out / renamed.get(rel, rel)).read_bytes() == data, rel
    assert (out / "stopwords/de.json").read_bytes() == (shared_data / "stopwords/de.json").read_bytes()
    assert manifest["hash_mode"] == "cpython-seed42" and manifest["installed_from"] == source
    assert json.loads((out / "MANIFEST.json").read_text()) == manifest
    assert manifest["artifacts"]["ldnoobw/en.txt"]["sources"] == [f"{source}/bad_words/en.txt"]
    # en: wikipedia/wikiref models, 2 x 2 DSIR files absent; de: 3 models, 8 DSIR files, nothing else
    assert manifest["counts"] == {"copied": 6, "missing": 2 + 4 + 3 + 8}
    loaded = call_with_seed42(loaded_summary, out.as_uri(), ["en"])
    assert loaded["en"] == {
        "stop_words": 570,
        "ldnoobw": 403,
        "ut1": {"a.example": 23, "b.example": 4},
        "classifiers": ["palm"],
        "dsir": ["wikipedia"],
    }


def test_install_refuses_malformed_published_files(tmp_path, shared_data):
    reference_layout(tmp_path / "published", shared_data)
    buf = io.BytesIO()
    np.save(buf, np.zeros(5))
    (tmp_path / "published/dsir/en/wikipedia.en.10000.counts.npy").write_bytes(buf.getvalue())
    with pytest.raises(ValueError, match=r"wikipedia.en.10000.counts.npy: shape \(5,\), expected \(10000,\)"):
        sa.install_signal_artifacts(
            (tmp_path / "published").as_uri(),
            (tmp_path / "out").as_uri(),
            ["en"],
            stopwords_url_template=(shared_data / "stopwords").as_uri() + "/{lang}.json",
        )
    assert not (tmp_path / "out" / "MANIFEST.json").exists()
    (tmp_path / "published/bad_words/en.txt").unlink()
    with pytest.raises(FileNotFoundError):
        sa.install_signal_artifacts(
            (tmp_path / "published").as_uri(),
            (tmp_path / "out2").as_uri(),
            ["en"],
            stopwords_url_template=(shared_data / "stopwords").as_uri() + "/{lang}.json",
        )


def test_cli_installs_once_unless_forced(tmp_path, shared_data, monkeypatch, capsys):
    from rpj_tasks import cli

    monkeypatch.setenv("RPJ_HOME", str(tmp_path))
    reference_layout(tmp_path / "published", shared_data)
    argv = [
        "signal-artifacts",
        "--version",
        "rpv2-official",
        "--storage-root",
        (tmp_path / "data").as_uri(),
        "--install-from",
        (tmp_path / "published").as_uri(),
        "--languages",
        "en",
        "--stopwords-url-template",
        (shared_data / "stopwords").as_uri() + "/{lang}.json",
    ]
    assert cli.main(argv) == 0
    out = tmp_path / "data/artifacts/signals/rpv2-official"
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "MANIFEST.json").read_text()) and printed["langs"] == ["en"]
    assert (out / "classifiers/en/palm.model.bin").exists() and (out / "ut1/domain_to_category_id.json").exists()

    assert cli.main(argv) == 0  # same inputs, every listed file intact: kept
    assert "built earlier for the same inputs: kept" in capsys.readouterr().out
    (out / "ldnoobw/en.txt").write_text("changed by hand\n")  # a listed file damaged: the next run repairs it
    (out / "stale.bin").write_bytes(b"left by an older build")
    assert cli.main(argv) == 0
    assert (out / "ldnoobw/en.txt").read_bytes() == (shared_data / "ldnoobw/en.txt").read_bytes()
    assert not (out / "stale.bin").exists()  # files the manifest does not list are removed
    capsys.readouterr()
    assert cli.main([*argv, "--force"]) == 0
    assert json.loads(capsys.readouterr().out)["langs"] == ["en"]
    with pytest.raises(SystemExit):  # build (--config) or install, exactly one
        cli.main(["signal-artifacts", "--version", "v2"])
