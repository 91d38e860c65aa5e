"""The annotation stage (rpj_tasks.annotate.stage): reference vectors, line alignment (D18), tail option,
commit protocol, CCNet precondition, and DSIR values independent of the process's hash seed (D11)."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import special

from rpj_tasks.annotate import stage as annotate
from rpj_tasks.annotate.artifacts.build import fetch_word_lists
from rpj_tasks.annotate.hashseed import SEED42, STABLE
from rpj_tasks.annotate.signals import (
    ArtifactsError,
    HashSeedError,
    SignalArtifacts,
    dsir_hash_selfcheck,
    encode_record,
    make_record,
    raw_words,
)
from rpj_tasks.annotate.stage import FileJob, WorkerDiedError, annotate_file, annotate_shard, run_jobs
from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.errors import MissingInputError
from rpj_tasks.core.logctx import log_context

SNAPSHOT = "2023-06"
TARGETS = ("books", "openwebtext", "wikipedia")
LAMBDAS = {"ccnet": 400.0, "books": 150.0, "openwebtext": 70.0, "wikipedia": 1000.0}


# ---------------------------------------------------------------- building inputs offline


def config(root: Path) -> SnapshotConfig:
    return SnapshotConfig(id=SNAPSHOT, storage_root=root.as_uri(), source_base="file:///unused", num_shards=4)


def vector_lines(shared: Path, lang: str) -> list[bytes]:
    return (shared / "testvectors" / f"docs_{lang}.jsonl").read_bytes().splitlines(keepends=True)


def write_shard(root: Path, files: dict[str, list[bytes]], shard: int = 0, marker: bool = True) -> None:
    """CCNet output of a shard: documents files (gzip JSON lines) and, last, its stats record."""
    folder = root / "documents" / SNAPSHOT / f"{shard:04d}"
    folder.mkdir(parents=True, exist_ok=True)
    for name, lines in files.items():
        (folder / name).write_bytes(gzip.compress(b"".join(lines), mtime=0))
    if marker:  # the CCNet record, as the commit protocol writes it: each output's sha256 and size
        path = root / "stats" / "ccnet" / SNAPSHOT / f"{shard:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        outputs = {
            f"../../../documents/{SNAPSHOT}/{shard:04d}/{name}": {
                "sha256": hashlib.sha256((folder / name).read_bytes()).hexdigest(),
                "bytes": (folder / name).stat().st_size,
            }
            for name in sorted(files)
        }
        path.write_text(json.dumps({"shard": shard, "files": sorted(files), "inputs": {}, "outputs": outputs}))


def write_artifacts(root: Path, shared: Path, hash_mode: str, dsir_lang: str | None = None) -> str:
    """Word lists (the real ones) under the signal_artifacts layout, tiny random DSIR counts for
    ``dsir_lang`` and a MANIFEST.json naming ``hash_mode``; returns the root URL."""
    url = root.as_uri()
    entries = fetch_word_lists(
        url,
        ["en", "de", "fr"],
        stopwords_url_template=(shared / "stopwords").as_uri() + "/{lang}.json",
        ldnoobw_url_template=(shared / "ldnoobw").as_uri() + "/{lang}.txt",
    )
    if dsir_lang:
        rng = np.random.default_rng(7)
        folder = root / "dsir" / dsir_lang
        folder.mkdir(parents=True)
        for dataset, lam in LAMBDAS.items():
            np.save(folder / f"{dataset}.{dsir_lang}.10000.counts.npy", rng.integers(0, 60, 10000).astype(np.int64))
            np.save(folder / f"{dataset}.{dsir_lang}.lambda.npy", np.asarray(lam))
        for path in sorted(folder.iterdir()):  # listed in the manifest: loaders read only listed files
            data = path.read_bytes()
            entries[f"dsir/{dsir_lang}/{path.name}"] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    manifest = {"format_version": 1, "hash_mode": hash_mode, "artifacts": entries}
    (root / "MANIFEST.json").write_text(json.dumps(manifest, sort_keys=True))
    return url


def signals_lines(root: Path, name: str, shard: int = 0) -> list[bytes]:
    path = root / "quality_signals" / SNAPSHOT / f"{shard:04d}" / f"{name}.signals.json.gz"
    return gzip.decompress(path.read_bytes()).splitlines(keepends=True)


def minhash_rows(root: Path, name: str, shard: int = 0) -> list[dict]:
    rows = pq.read_table(root / "minhash" / SNAPSHOT / f"{shard:04d}" / f"{name}.minhash.parquet").to_pylist()
    for row in rows:
        for key, value in row.items():
            if key.startswith("signature_sim") and value is not None:
                row[key] = [band.hex() for band in value]
    return rows


def output_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for component in ("quality_signals", "minhash")
        for p in sorted((root / component).rglob("*"))
        if p.is_file()
    }


def expected_file(shared: Path, name: str) -> list[bytes]:
    return (shared / "testvectors" / name).read_bytes().splitlines(keepends=True)


def expected_minhash(shared: Path, lang: str) -> list[dict]:
    return [json.loads(line) for line in expected_file(shared, f"expected_{lang}.minhash.jsonl")]


# ---------------------------------------------------------------- reference vectors, default mode


@pytest.fixture(scope="module")
def vector_shard(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict]:
    """A shard with en_head, de_middle (the vectors), en_tail and fr_head (the en documents again,
    with DSIR artifacts for fr in the reference hash mode), annotated in the default mode."""
    root = tmp_path_factory.mktemp("release")
    artifacts = write_artifacts(tmp_path_factory.mktemp("artifacts"), shared_data, SEED42, dsir_lang="fr")
    en = vector_lines(shared_data, "en")
    write_shard(
        root,
        {
            "en_head.json.gz": en,
            "de_middle.json.gz": vector_lines(shared_data, "de"),
            "en_tail.json.gz": en[:2],
            "fr_head.json.gz": en,
        },
    )
    record = annotate_shard(config(root), 0, artifacts_url=artifacts)
    return root, artifacts, record


def test_signals_files_equal_reference_lines(vector_shard, shared_data: Path) -> None:
    root, _, _ = vector_shard
    assert signals_lines(root, "en_head") == expected_file(shared_data, "expected_en.signals.jsonl")
    assert signals_lines(root, "de_middle") == expected_file(shared_data, "expected_de.signals.jsonl")


def test_minhash_files_equal_reference_rows(vector_shard, shared_data: Path) -> None:
    root, _, _ = vector_shard
    assert minhash_rows(root, "en_head") == expected_minhash(shared_data, "en")
    assert minhash_rows(root, "de_middle") == expected_minhash(shared_data, "de")


def test_tail_is_not_annotated_by_default(vector_shard) -> None:
    root, _, record = vector_shard
    assert sorted(p.name for p in (root / "quality_signals" / SNAPSHOT / "0000").iterdir()) == [
        "de_middle.signals.json.gz",
        "en_head.signals.json.gz",
        "fr_head.signals.json.gz",
    ]
    assert sorted(p.name for p in (root / "minhash" / SNAPSHOT / "0000").iterdir()) == [
        "de_middle.minhash.parquet",
        "en_head.minhash.parquet",
        "fr_head.minhash.parquet",
    ]
    assert record["counts"]["files.not_annotated.tail"] == 1
    assert record["buckets"] == ["head", "middle"]


def test_stats_record_is_the_finished_marker(vector_shard) -> None:
    root, artifacts, record = vector_shard
    stored = json.loads((root / "stats" / "annotate" / SNAPSHOT / "0000.json").read_text())
    assert stored == {k: v for k, v in record.items() if k != "skipped"} and record["skipped"] is False
    manifest = (Path(artifacts.removeprefix("file://")) / "MANIFEST.json").read_bytes()
    assert stored["artifacts"]["url"] == artifacts  # the versioned artifacts directory used
    assert stored["artifacts"]["manifest_sha256"] == hashlib.sha256(manifest).hexdigest()
    assert stored["artifacts"]["hash_mode"] == SEED42
    assert stored["artifacts"]["languages"]["en"]["stop_words"] == 570
    assert stored["artifacts"]["languages"]["en"]["dsir_targets"] == []
    assert stored["artifacts"]["languages"]["fr"]["dsir_targets"] == list(TARGETS)
    # commit protocol: the inputs are the documents files' digests (only those annotated) and the
    # artifacts; every output is listed with its digest and size
    docs = root / "documents" / SNAPSHOT / "0000"
    assert stored["inputs"]["documents"] == {
        name: hashlib.sha256((docs / name).read_bytes()).hexdigest() for name in sorted(stored["files"])
    }
    assert stored["inputs"]["artifacts"]["manifest_sha256"] == stored["artifacts"]["manifest_sha256"]
    for rel, meta in stored["outputs"].items():
        data = (root / "stats" / "annotate" / SNAPSHOT / rel).resolve().read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert len(stored["outputs"]) == 2 * len(stored["files"])
    assert stored["files"]["en_head.json.gz"] == {
        **stored["files"]["en_head.json.gz"],
        "lines": 6,
        "bad_lines": 0,
        "minhash_null": 2,
    }
    assert stored["files"]["de_middle.json.gz"]["lines"] == 1
    assert stored["counts"]["annotate.lines"] == 13 and stored["counts"]["files.annotated"] == 3
    assert {"read", "signals", "minhash", "write"} <= stored["seconds"].keys()


def test_finished_shard_is_skipped(vector_shard) -> None:
    root, artifacts, record = vector_shard
    before = output_bytes(root)
    again = annotate_shard(config(root), 0, artifacts_url=artifacts)
    assert again["skipped"] is True and again["wall_seconds"] == record["wall_seconds"]
    assert output_bytes(root) == before


# ---------------------------------------------------------------- alignment, tail, commit protocol


def test_finished_shard_is_redone_when_buckets_or_artifacts_change(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "rel"
    en = vector_lines(shared_data, "en")
    write_shard(root, {"en_head.json.gz": en, "en_tail.json.gz": en[:2]})
    v1 = write_artifacts(tmp_path / "v1", shared_data, STABLE)
    cfg = config(root)
    assert annotate_shard(cfg, 0, artifacts_url=v1, hash_mode=STABLE)["skipped"] is False
    assert not (root / "quality_signals" / SNAPSHOT / "0000" / "en_tail.signals.json.gz").exists()

    with_tail = annotate_shard(cfg, 0, artifacts_url=v1, annotate_tail=True, hash_mode=STABLE)
    assert with_tail["skipped"] is False and with_tail["buckets"] == ["head", "middle", "tail"]
    assert len(signals_lines(root, "en_tail")) == 2
    assert annotate_shard(cfg, 0, artifacts_url=v1, annotate_tail=True, hash_mode=STABLE)["skipped"] is True

    v2 = write_artifacts(tmp_path / "v2", shared_data, STABLE, dsir_lang="en")
    redone = annotate_shard(cfg, 0, artifacts_url=v2, annotate_tail=True, hash_mode=STABLE)
    assert redone["skipped"] is False and redone["artifacts"]["url"] == v2
    assert annotate_shard(cfg, 0, artifacts_url=v2, annotate_tail=True, hash_mode=STABLE)["skipped"] is True
    # same URL, rebuilt artifacts (another manifest): redone too
    manifest = tmp_path / "v2" / "MANIFEST.json"
    manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "seed": 7}))
    assert annotate_shard(cfg, 0, artifacts_url=v2, annotate_tail=True, hash_mode=STABLE)["skipped"] is False


def test_bad_lines_keep_alignment(shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    en = vector_lines(shared_data, "en")
    lines = [
        en[0],
        b"\xff\xfe not UTF-8\n",
        b'{"raw_content": "cut\n',
        b"[1, 2]\n",
        b'{"url": "http://a.example/", "raw_content": 5}\n',
        b"\n",
        en[2],
    ]
    write_shard(tmp_path / "rel", {"en_middle.json.gz": lines})
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE)
    with caplog.at_level(logging.WARNING, logger="rpj.annotate"):
        record = annotate_shard(config(tmp_path / "rel"), 0, artifacts_url=artifacts, hash_mode=STABLE)

    key = "2023-06/0000/en_middle.json.gz"
    out = [json.loads(line) for line in signals_lines(tmp_path / "rel", "en_middle")]
    assert [r["id"] for r in out] == [f"{key}/{i}" for i in range(7)]
    arts = SignalArtifacts.load(artifacts, "en", STABLE)
    for idx in (0, 6):
        expected = encode_record(make_record(json.loads(lines[idx]), key, idx, arts)) + b"\n"
        assert signals_lines(tmp_path / "rel", "en_middle")[idx] == expected
    for r in out[1:6]:
        assert all(score is None for triples in r["quality_signals"].values() for _, _, score in triples)
    assert out[4]["metadata"]["url"] == "http://a.example/"
    rows = minhash_rows(tmp_path / "rel", "en_middle")
    assert [r["id"] for r in rows] == [f"{key}/{i}" for i in range(7)]
    assert [r["signature_sim0.9"] is None for r in rows] == [False, True, True, True, True, True, False]

    counts = record["counts"]
    assert counts["annotate.bad_line"] == 5 and record["files"]["en_middle.json.gz"]["bad_lines"] == 5
    assert counts["annotate.bad_line.invalid_utf8"] == 1 and counts["annotate.bad_line.invalid_json"] == 2
    assert counts["annotate.bad_line.not_an_object"] == 1 and counts["annotate.bad_line.no_raw_content"] == 1
    assert f"line 1 (byte {len(lines[0])}): invalid utf8" in caplog.text
    assert f"[2023-06/0000 en_middle] {tmp_path.as_uri()}" in caplog.text  # the log context: shard and file


def test_only_the_first_bad_lines_are_logged(shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_shard(tmp_path, {"nl_head.json.gz": [b"{}\n"] * 25})
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE)
    with caplog.at_level(logging.WARNING, logger="rpj.annotate"):
        record = annotate_shard(config(tmp_path), 0, artifacts_url=artifacts, hash_mode=STABLE)
    assert record["files"]["nl_head.json.gz"] == {**record["files"]["nl_head.json.gz"], "lines": 25, "bad_lines": 25}
    assert caplog.text.count("no raw content; null record") == annotate.MAX_LOGGED_BAD_LINES
    assert "nl_head.json.gz: 5 more bad lines not logged" in caplog.text
    assert record["artifacts"]["languages"]["nl"]["stop_words"] == 0  # no word lists for nl (§3.2)


def test_truncated_documents_file_keeps_what_was_read(shared_data: Path, tmp_path: Path) -> None:
    en = vector_lines(shared_data, "en")
    write_shard(tmp_path, {"en_head.json.gz": en})
    path = tmp_path / "documents" / SNAPSHOT / "0000" / "en_head.json.gz"
    path.write_bytes(path.read_bytes()[:-12])  # gzip trailer and some data gone
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE)
    record = annotate_shard(config(tmp_path), 0, artifacts_url=artifacts, hash_mode=STABLE)
    assert record["counts"]["annotate.truncated"] == 1
    lines = signals_lines(tmp_path, "en_head")
    assert len(lines) == len(minhash_rows(tmp_path, "en_head")) == record["counts"]["annotate.lines"]


# ---------------------------------------------------------------- degenerate documents in a shard

BIG_K = 5 * 2**20 // 9  # "the cat. " repeated: one line of 5 242 878 code points, no "\n"
MANY_LINES = 3000  # "A b c.\n" repeated

# (RAW, document-level values by docs/spec/quality_signals.md §3 / §7.5 worked out by hand, the value every line slice
# has for the line signals 31-36 (§3.5), MinHash distinct shingles (§6) or None when NW has < 13 words)
DEGENERATE = [
    (
        "",
        {  # E3 of §7.2: every degenerate value
            "rps_doc_curly_bracket": 0.0,
            "rps_doc_ldnoobw_words": 0.0,
            "rps_doc_lorem_ipsum": 0.0,
            "rps_doc_stop_word_fraction": 0.0,
            "rps_doc_frac_chars_dupe_5grams": 0.0,
            "rps_doc_frac_chars_top_2gram": 0.0,
            "rps_doc_frac_all_caps_words": None,
            "rps_doc_frac_lines_end_with_ellipsis": None,
            "rps_doc_frac_no_alph_words": None,
            "rps_doc_frac_unique_words": None,
            "rps_doc_mean_word_length": None,
            "rps_doc_num_sentences": 0.0,
            "rps_doc_symbol_to_word_ratio": None,
            "rps_doc_unigram_entropy": None,
            "rps_doc_word_count": 0,
        },
        None,
        None,
    ),
    (
        " \t\n\n  ",
        {  # whitespace only: N, NW, RW empty; 3 line slices (§7.5 "   " and "\n\n")
            "rps_doc_curly_bracket": 0.0,
            "rps_doc_ldnoobw_words": 0.0,
            "rps_doc_lorem_ipsum": 0.0,
            "rps_doc_stop_word_fraction": 0.0,
            "rps_doc_frac_chars_dupe_5grams": 0.0,
            "rps_doc_frac_chars_top_2gram": 0.0,
            "rps_doc_frac_all_caps_words": None,
            "rps_doc_frac_lines_end_with_ellipsis": 0.0,
            "rps_doc_frac_no_alph_words": None,
            "rps_doc_frac_unique_words": None,
            "rps_doc_mean_word_length": None,
            "rps_doc_num_sentences": 0.0,
            "rps_doc_symbol_to_word_ratio": None,
            "rps_doc_unigram_entropy": None,
            "rps_doc_word_count": 0,
        },
        {
            "rps_lines_ending_with_terminal_punctution_mark": 0.0,
            "rps_lines_javascript_counts": 0.0,
            "rps_lines_num_words": 0,
            "rps_lines_numerical_chars_fraction": 0.0,
            "rps_lines_start_with_bulletpoint": 0.0,
            "rps_lines_uppercase_letter_fraction": 0.0,
        },
        None,
    ),
    (
        "the cat. " * BIG_K,
        {  # one ~5 MB line; NW = [the, cat] * K, RW = [the, cat, .] * K, T = 6K
            "rps_doc_curly_bracket": 0.0,
            "rps_doc_ldnoobw_words": 0.0,
            "rps_doc_lorem_ipsum": 0.0,
            "rps_doc_stop_word_fraction": 0.33333333,  # K "the" / 3K
            "rps_doc_frac_chars_dupe_10grams": 1.0,
            "rps_doc_frac_chars_dupe_5grams": 1.0,
            "rps_doc_frac_chars_top_2gram": 1.0,  # (the, cat) K times: 6K / 6K
            "rps_doc_frac_chars_top_3gram": round(9 * (BIG_K - 1) / (6 * BIG_K), 8),  # (the, cat, the) K-1 times
            "rps_doc_frac_chars_top_4gram": round(12 * (BIG_K - 1) / (6 * BIG_K), 8),
            "rps_doc_frac_all_caps_words": 0.0,
            "rps_doc_frac_lines_end_with_ellipsis": 0.0,
            "rps_doc_frac_no_alph_words": 0.33333333,  # 1 - 2K/3K
            "rps_doc_frac_unique_words": round(2 / (2 * BIG_K), 8),
            "rps_doc_mean_word_length": 3.0,
            "rps_doc_num_sentences": float(BIG_K),
            "rps_doc_symbol_to_word_ratio": 0.0,
            "rps_doc_unigram_entropy": 0.69314718,
            "rps_doc_word_count": 2 * BIG_K,
        },
        {
            "rps_lines_ending_with_terminal_punctution_mark": 1.0,
            "rps_lines_javascript_counts": 0.0,
            "rps_lines_num_words": 2 * BIG_K,
            "rps_lines_numerical_chars_fraction": 0.0,
            "rps_lines_start_with_bulletpoint": 0.0,
            "rps_lines_uppercase_letter_fraction": 0.0,
        },
        2,
    ),
    (
        "!?! ### (--) ...",
        {  # punctuation only: N, NW empty; RW = [!?!, ###, (--), ...]
            "rps_doc_curly_bracket": 0.0,
            "rps_doc_ldnoobw_words": 0.0,
            "rps_doc_lorem_ipsum": 0.0,
            "rps_doc_stop_word_fraction": 0.0,  # the NW guard
            "rps_doc_frac_chars_dupe_5grams": 0.0,
            "rps_doc_frac_chars_top_2gram": 0.0,
            "rps_doc_frac_all_caps_words": 0.0,
            "rps_doc_frac_lines_end_with_ellipsis": 1.0,
            "rps_doc_frac_no_alph_words": 1.0,
            "rps_doc_frac_unique_words": None,
            "rps_doc_mean_word_length": None,
            "rps_doc_num_sentences": 0.0,  # no \w, so no \b
            "rps_doc_symbol_to_word_ratio": 1.0,  # (3 "#" + 1 "...") / 4 tokens
            "rps_doc_unigram_entropy": None,
            "rps_doc_word_count": 0,
        },
        {
            "rps_lines_ending_with_terminal_punctution_mark": 1.0,
            "rps_lines_javascript_counts": 0.0,
            "rps_lines_num_words": 0,
            "rps_lines_numerical_chars_fraction": 0.0,
            "rps_lines_start_with_bulletpoint": 0.0,
            "rps_lines_uppercase_letter_fraction": 0.0,
        },
        None,
    ),
    (
        "\U0001f600\U0001f389\U0001f44d \U0001f525\U0001f525",
        {  # emoji only: not \w, not ASCII punctuation
            "rps_doc_curly_bracket": 0.0,
            "rps_doc_ldnoobw_words": 0.0,
            "rps_doc_lorem_ipsum": 0.0,
            "rps_doc_stop_word_fraction": 0.0,
            "rps_doc_frac_chars_dupe_5grams": 0.0,
            "rps_doc_frac_chars_top_2gram": 0.0,
            "rps_doc_frac_all_caps_words": 0.0,
            "rps_doc_frac_lines_end_with_ellipsis": 0.0,
            "rps_doc_frac_no_alph_words": 1.0,
            "rps_doc_frac_unique_words": 1.0,
            "rps_doc_mean_word_length": 2.5,  # NW has the two emoji runs: (3 + 2) / 2
            "rps_doc_num_sentences": 0.0,
            "rps_doc_symbol_to_word_ratio": 0.0,
            "rps_doc_unigram_entropy": 0.69314718,
            "rps_doc_word_count": 2,
        },
        {
            "rps_lines_ending_with_terminal_punctution_mark": 0.0,
            "rps_lines_javascript_counts": 0.0,
            "rps_lines_num_words": 2,
            "rps_lines_numerical_chars_fraction": 0.0,
            "rps_lines_start_with_bulletpoint": 0.0,
            "rps_lines_uppercase_letter_fraction": 0.0,
        },
        None,
    ),
    (
        "the \ud800 cat.",
        {  # a lone surrogate (written as the JSON escape): a non-\w token and a word of NW
            "rps_doc_curly_bracket": 0.0,
            "rps_doc_ldnoobw_words": 0.0,
            "rps_doc_lorem_ipsum": 0.0,
            "rps_doc_stop_word_fraction": 0.25,  # RW = [the, \ud800, cat, .]
            "rps_doc_frac_chars_dupe_5grams": 0.0,
            "rps_doc_frac_chars_top_2gram": 0.0,
            "rps_doc_frac_all_caps_words": 0.0,
            "rps_doc_frac_lines_end_with_ellipsis": 0.0,
            "rps_doc_frac_no_alph_words": 0.5,
            "rps_doc_frac_unique_words": 1.0,
            "rps_doc_mean_word_length": 2.33333333,  # NW = [the, \ud800, cat]: 7 / 3
            "rps_doc_num_sentences": 1.0,
            "rps_doc_symbol_to_word_ratio": 0.0,
            "rps_doc_unigram_entropy": 1.09861229,
            "rps_doc_word_count": 3,
        },
        {
            "rps_lines_ending_with_terminal_punctution_mark": 1.0,
            "rps_lines_javascript_counts": 0.0,
            "rps_lines_num_words": 3,
            "rps_lines_numerical_chars_fraction": 0.0,
            "rps_lines_start_with_bulletpoint": 0.0,
            "rps_lines_uppercase_letter_fraction": 0.0,
        },
        None,
    ),
    (
        "A b c.\n" * MANY_LINES,
        {  # RW = [A, b, c, .] * 3000 (b, c are en stop words, "A" is not); NW = [a, b, c] * 3000
            "rps_doc_curly_bracket": 0.0,
            "rps_doc_ldnoobw_words": 0.0,
            "rps_doc_lorem_ipsum": 0.0,
            "rps_doc_stop_word_fraction": 0.5,
            "rps_doc_frac_chars_dupe_10grams": 1.0,
            "rps_doc_frac_chars_dupe_5grams": 1.0,
            "rps_doc_frac_chars_top_2gram": 0.66666667,  # (a, b) 3000 times: 6000 / 9000
            "rps_doc_frac_chars_top_3gram": 1.0,
            "rps_doc_frac_chars_top_4gram": 1.33288889,  # 4 * 2999 / 9000
            "rps_doc_frac_all_caps_words": 0.25,
            "rps_doc_frac_lines_end_with_ellipsis": 0.0,
            "rps_doc_frac_no_alph_words": 0.25,
            "rps_doc_frac_unique_words": 0.00033333,
            "rps_doc_mean_word_length": 1.0,
            "rps_doc_num_sentences": float(MANY_LINES),
            "rps_doc_symbol_to_word_ratio": 0.0,
            "rps_doc_unigram_entropy": 1.09861229,
            "rps_doc_word_count": 9000,
        },
        {
            "rps_lines_ending_with_terminal_punctution_mark": 1.0,
            "rps_lines_javascript_counts": 0.0,
            "rps_lines_num_words": 3,
            "rps_lines_numerical_chars_fraction": 0.0,
            "rps_lines_start_with_bulletpoint": 0.0,
            "rps_lines_uppercase_letter_fraction": 0.14285714,
        },
        3,
    ),  # 1 / 7, the "\n" counted
]


def spec_minhash_bands(shingles: set[str]) -> dict[str, list[str]]:
    """docs/spec/quality_signals.md §6 steps 3-8 written out plainly (Python ints, wrapping at 2^64 by hand)."""
    rng = np.random.RandomState(42)
    perms = []
    for _ in range(128):
        a = int(rng.randint(1, 2**61 - 1, dtype=np.uint64))
        perms.append((a, int(rng.randint(0, 2**61 - 1, dtype=np.uint64))))
    hashes = [int.from_bytes(hashlib.sha1(s.encode("utf-8")).digest()[:4], "little") for s in shingles]
    sig = [min(0xFFFFFFFF, min(((h * a % 2**64 + b) % 2**64) % (2**61 - 1) & 0xFFFFFFFF for h in hashes)) for a, b in perms]
    layout = {"1.0": (1, 128), "0.9": (5, 25), "0.8": (9, 13), "0.7": (14, 9)}
    return {
        f"signature_sim{t}": [b"".join(v.to_bytes(4, "big") for v in sig[k * r : (k + 1) * r]).hex() for k in range(bands)]
        for t, (bands, r) in layout.items()
    }


def test_degenerate_documents_get_the_specified_values(shared_data: Path, tmp_path: Path) -> None:
    e5 = "one two three four five six seven eight nine ten eleven twelve thirteen"  # §6 worked vector
    assert spec_minhash_bands({e5})["signature_sim0.7"][0] == (
        "7400483cbca37e29b8353fab39a4699e00afe6d3c9892331a32a03640a80c15de8ba5156"
    )
    docs = []
    for i, (raw, _, _, _) in enumerate(DEGENERATE):
        nlines = len(re.findall(r"([^\n]*\n|[^\n]+$)", raw))
        docs.append(
            {
                "url": f"http://d{i}.example/",
                "date_download": "2023-01-01T00:00:00Z",
                "digest": "sha1:" + "A" * 32,
                "length": len(raw),
                "nlines": nlines,
                "source_domain": f"d{i}.example",
                "title": f"degenerate {i}",
                "raw_content": raw,
                "cc_segment": "crawl-data/CC-MAIN-2023-06/x",
                "original_nlines": nlines + i,
                "original_length": len(raw) + 10 * i,
                "line_ids": [],
                "language": "en",
                "language_score": 0.5 + i / 100,
                "perplexity": 100.25 + i,
                "bucket": "head",
            }
        )
    lines = [json.dumps(doc).encode() + b"\n" for doc in docs]
    assert b'"the \\ud800 cat."' in lines[5]  # the lone surrogate is in the file as a JSON escape
    write_shard(tmp_path / "rel", {"en_head.json.gz": lines})
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE, dsir_lang="en")
    record = annotate_shard(config(tmp_path / "rel"), 0, artifacts_url=artifacts, hash_mode=STABLE)

    key = "2023-06/0000/en_head.json.gz"
    out = [json.loads(line) for line in signals_lines(tmp_path / "rel", "en_head")]
    rows = minhash_rows(tmp_path / "rel", "en_head")
    ids = [f"{key}/{i}" for i in range(len(DEGENERATE))]
    assert [r["id"] for r in out] == ids and [r["id"] for r in rows] == ids
    assert record["files"]["en_head.json.gz"] == {
        **record["files"]["en_head.json.gz"],
        "lines": len(DEGENERATE),
        "bad_lines": 0,
        "minhash_null": 5,
    }

    def same(got: object, want: object) -> bool:  # equal and of the specified JSON type (2.0 is not 2)
        return got == want and type(got) is type(want)

    for doc, r, row, (raw, doc_values, line_values, shingles) in zip(docs, out, rows, DEGENERATE):
        qs, n = r["quality_signals"], len(raw)
        label = repr(raw[:20])
        for field in ("length", "original_length", "nlines", "original_nlines", "language_score", "perplexity"):
            assert qs[f"ccnet_{field}"] == [[0, n, float(doc[field])]], (label, field)
        assert qs["ccnet_bucket"] == [[0, n, 0.0]]
        assert qs["rps_doc_ut1_blacklist"] == [[0, n, None]]  # no UT1 map
        for name in ("palm", "wikipedia", "wikiref"):
            assert qs[f"rps_doc_ml_{name}_score"] == [[0, n, None]]  # no classifier models
        for name in TARGETS:  # DSIR artifacts for en: a float, null only for an empty RAW (§3.7)
            for suffix in ("", "_length_correction"):
                triple = qs[f"rps_doc_{name}_importance{suffix}"]
                assert triple[0][:2] == [0, n] and (triple[0][2] is None) == (raw == ""), (label, name)
        for signal, want in doc_values.items():
            [[start, end, got]] = qs[signal]
            assert (start, end) == (0, n) and same(got, want), (label, signal, got, want)
        slices = [[m.start(), m.end()] for m in re.finditer(r"([^\n]*\n|[^\n]+$)", raw)]
        for signal in (s for s in qs if s.startswith("rps_lines_")):
            if line_values is None:  # no line slices
                want = [[0, 0, None]] if signal == "rps_lines_start_with_bulletpoint" else []
                assert qs[signal] == want, (label, signal)
                continue
            assert [t[:2] for t in qs[signal]] == slices, (label, signal)
            assert all(same(t[2], line_values[signal]) for t in qs[signal]), (label, signal, qs[signal][:3])
        columns = [c for c in row if c.startswith("signature_sim")]
        assert sorted(columns) == ["signature_sim0.7", "signature_sim0.8", "signature_sim0.9", "signature_sim1.0"]
        if shingles is None:
            assert all(row[c] is None for c in columns), label
        else:
            words = raw.replace(".", "").lower().split()  # N of these two: "." is their only punctuation
            grams = {" ".join(words[i : i + 13]) for i in range(len(words) - 12)}
            assert len(grams) == shingles
            assert {c: row[c] for c in columns} == spec_minhash_bands(grams), label


def test_tail_option_stale_outputs_and_force(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "rel"
    en = vector_lines(shared_data, "en")
    write_shard(root, {"en_head.json.gz": en, "de_middle.json.gz": vector_lines(shared_data, "de"), "en_tail.json.gz": en[3:]})
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE)
    cfg = config(root)

    first = annotate_shard(cfg, 0, artifacts_url=artifacts, annotate_tail=True, hash_mode=STABLE)
    assert first["buckets"] == ["head", "middle", "tail"] and first["files"]["en_tail.json.gz"]["lines"] == 3
    assert [json.loads(x)["id"] for x in signals_lines(root, "en_tail")] == [
        f"2023-06/0000/en_tail.json.gz/{i}" for i in range(3)
    ]
    assert len(minhash_rows(root, "en_tail")) == 3
    assert signals_lines(root, "en_head") == expected_file(shared_data, "expected_en.signals.jsonl")
    with_tail = output_bytes(root)

    leftover = root / "minhash" / SNAPSHOT / "0000" / "fr_head.minhash.parquet"
    leftover.write_bytes(b"from an older run")
    again = annotate_shard(cfg, 0, artifacts_url=artifacts, force=True, hash_mode=STABLE)
    assert again["skipped"] is False and again["counts"]["stale_files_removed"] == 3
    assert output_bytes(root) == {k: v for k, v in with_tail.items() if "en_tail" not in k}

    # re-mined documents (new CCNet record) are annotated again without force
    (root / "stats" / "ccnet" / SNAPSHOT / "0000.json").write_text(json.dumps({"files": [], "rerun": 1}))
    assert annotate_shard(cfg, 0, artifacts_url=artifacts, hash_mode=STABLE)["skipped"] is False


def test_missing_ccnet_marker_is_refused(shared_data: Path, tmp_path: Path) -> None:
    write_shard(tmp_path, {"en_head.json.gz": vector_lines(shared_data, "en")}, shard=2, marker=False)
    artifacts = write_artifacts(tmp_path / "art", shared_data, SEED42)
    with pytest.raises(MissingInputError, match="shard 0002 of 2023-06 has no CCNet stats record"):
        annotate_shard(config(tmp_path), 2, artifacts_url=artifacts)
    assert not (tmp_path / "quality_signals").exists() and not (tmp_path / "stats" / "annotate").exists()


def test_documents_listed_by_ccnet_must_exist(shared_data: Path, tmp_path: Path) -> None:
    write_shard(tmp_path, {"en_head.json.gz": vector_lines(shared_data, "en")})
    (tmp_path / "documents" / SNAPSHOT / "0000" / "en_head.json.gz").unlink()
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE)
    with pytest.raises(MissingInputError, match=r"documents \S*/0000/en_head\.json\.gz listed by CCNet are missing"):
        annotate_shard(config(tmp_path), 0, artifacts_url=artifacts, hash_mode=STABLE)


# ---------------------------------------------------------------- DSIR and the hash seed (D11)


@pytest.mark.parametrize(("built", "run"), [(STABLE, SEED42), (SEED42, STABLE)])
def test_hash_mode_mismatch_is_refused(shared_data: Path, tmp_path: Path, built: str, run: str) -> None:
    write_shard(tmp_path, {"en_head.json.gz": vector_lines(shared_data, "en")})
    artifacts = write_artifacts(tmp_path / "art", shared_data, built)
    message = f"built with DSIR hash_mode '{built}', but the annotation runs in '{run}'"
    with pytest.raises(ArtifactsError, match=message):
        annotate_shard(config(tmp_path), 0, artifacts_url=artifacts, hash_mode=run)
    assert not (tmp_path / "quality_signals").exists()


def en_head_job(root: Path, out: Path, artifacts: str, hash_mode: str) -> FileJob:
    """The annotation job of shard 0's en_head file under ``root``, written to ``out``."""
    return FileJob(
        "en_head.json.gz",
        "en",
        "2023-06/0000/en_head.json.gz",
        layout.documents_url(root.as_uri(), SNAPSHOT, 0, "en", "head"),
        (out / "s.gz").as_uri(),
        (out / "m.parquet").as_uri(),
        artifacts,
        hash_mode,
    )


@pytest.mark.skipif(dsir_hash_selfcheck(), reason="this interpreter already runs with PYTHONHASHSEED=42")
def test_file_worker_checks_the_seed_itself(shared_data: Path, tmp_path: Path) -> None:
    write_shard(tmp_path, {"en_head.json.gz": vector_lines(shared_data, "en")})
    artifacts = write_artifacts(tmp_path / "art", shared_data, SEED42)
    out = tmp_path / "out"
    with pytest.raises(HashSeedError, match="PYTHONHASHSEED=42"):
        annotate_file(en_head_job(tmp_path, out, artifacts, SEED42))
    assert not out.exists()


@pytest.mark.skipif(dsir_hash_selfcheck(), reason="jobs would run in this interpreter")
def test_shard_is_refused_when_the_worker_fails_the_seed_check(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_signal_artifacts import seed7_pool

    monkeypatch.delenv("PYTHONHASHSEED", raising=False)
    monkeypatch.setattr(annotate, "seed42_pool", seed7_pool)
    write_shard(tmp_path, {"en_head.json.gz": vector_lines(shared_data, "en")})
    artifacts = write_artifacts(tmp_path / "art", shared_data, SEED42)
    with pytest.raises(HashSeedError, match="PYTHONHASHSEED='7'"):
        annotate_shard(config(tmp_path), 0, artifacts_url=artifacts)
    assert not (tmp_path / "quality_signals").exists() and not (tmp_path / "stats" / "annotate").exists()


def probe(job: str) -> dict:
    """A worker job for run_jobs: the storage options it sees, or a crash."""
    if job == "crash":
        os._exit(3)
    return storage.registered_options().get(job, {})


@pytest.mark.skipif(dsir_hash_selfcheck(), reason="jobs would run in this interpreter")
def test_worker_gets_storage_options_and_its_death_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"}
    monkeypatch.setitem(storage._OPTIONS, "s3", options)
    results = run_jobs(probe, ["s3", "crash", "s3"], SEED42)
    assert next(results) == options
    with pytest.raises(WorkerDiedError, match=r"annotation of crash: .* exited without finishing \(exit code 3\)"):
        next(results)


def log_job(job: str) -> str:
    """A worker job for run_jobs that logs."""
    logging.getLogger("rpj.annotate").warning("working on %s", job)
    return job


@pytest.mark.skipif(dsir_hash_selfcheck(), reason="jobs would run in this interpreter")
def test_worker_log_lines_carry_the_shard_and_the_jobs_file(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="rpj.annotate"), log_context(shard="2023-06/0000"):
        assert list(run_jobs(log_job, ["a", "b"], SEED42, label=str.upper)) == ["a", "b"]
    lines = [r.getMessage() for r in caplog.records if "working on" in r.getMessage()]
    assert len(lines) == 2 and all(line.startswith("[worker annotate pid ") for line in lines)
    assert lines[0].endswith("] [2023-06/0000 A] working on a") and lines[1].endswith("] [2023-06/0000 B] working on b")


def poisson(k: int, lam: float) -> float:
    """scipy.stats.poisson.pmf's formula (its _pmf), without importing scipy.stats (~1-4 s)."""
    return float(np.exp(special.xlogy(k, lam) - special.gammaln(k + 1) - lam))


def literal_dsir(job: tuple[str, str, list[str]]) -> list[dict[str, float | None]]:
    """docs/spec/quality_signals.md §3.7 word for word for ``(artifacts dir, lang, texts)``; needs seed 42."""
    assert dsir_hash_selfcheck()
    artifacts_dir, lang, texts = job
    load = lambda name: np.load(Path(artifacts_dir) / "dsir" / lang / name)  # noqa: E731
    source, source_lambda = load(f"ccnet.{lang}.10000.counts.npy"), load(f"ccnet.{lang}.lambda.npy")
    out = []
    for text in texts:
        scores: dict[str, float | None] = {}
        tokens = raw_words(text)
        features = np.zeros(10000, dtype=np.int64)
        for item in [*tokens, *zip(tokens, tokens[1:])]:
            features[abs(hash(item)) % 10000] += 1
        for target in TARGETS:
            counts, lam = load(f"{target}.{lang}.10000.counts.npy"), load(f"{target}.{lang}.lambda.npy")
            logdiff = np.log(counts / counts.sum() + 1e-8) - np.log(source / source.sum() + 1e-8)
            score = float(np.inner(features, logdiff))
            k = len(text)
            correction = np.log(poisson(k, lam) + 1e-8) - np.log(poisson(k, source_lambda) + 1e-8)
            base, corrected = (round(score, 8), round(score + float(correction), 8)) if text else (None, None)
            scores[f"rps_doc_{target}_importance"] = base
            scores[f"rps_doc_{target}_importance_length_correction"] = corrected
        out.append(scores)
    return out


def test_dsir_values_do_not_depend_on_the_callers_hash_seed(vector_shard, shared_data: Path) -> None:
    """pytest runs with a random PYTHONHASHSEED: the annotation must still give the seed-42 values."""
    root, artifacts, _ = vector_shard
    texts = [json.loads(line)["raw_content"] for line in vector_lines(shared_data, "en")]
    # run_jobs, unlike call_with_seed42, fails instead of hanging if its worker dies
    [expected] = run_jobs(literal_dsir, [(artifacts.removeprefix("file://"), "fr", texts)], SEED42)
    got = [
        {k: v[0][2] for k, v in json.loads(line)["quality_signals"].items() if "importance" in k}
        for line in signals_lines(root, "fr_head")
    ]
    assert got == expected
    assert got[0]["rps_doc_books_importance"] is not None and got[3]["rps_doc_books_importance"] is None
    # lengths near a lambda give a real length correction (D12)
    assert any(g["rps_doc_books_importance"] != g["rps_doc_books_importance_length_correction"] for g in got[:3])


def test_batches_capped_in_bytes_give_the_same_bytes(shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Memory: a batch ends at BATCH_BYTES of documents (near-limit documents would otherwise make
    256-document batches of gigabytes); where a batch ends never changes the output."""
    from rpj_tasks.annotate import stage

    write_shard(tmp_path, {"en_head.json.gz": vector_lines(shared_data, "en")})
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE)

    def run(out: Path) -> dict[str, bytes]:
        annotate_file(en_head_job(tmp_path, out, artifacts, STABLE))
        return {p.name: p.read_bytes() for p in sorted(out.iterdir())}

    whole = run(tmp_path / "whole")
    monkeypatch.setattr(stage, "BATCH_BYTES", 1)  # one document per batch
    assert run(tmp_path / "one-by-one") == whole
    assert len(vector_lines(shared_data, "en")) > 1
