"""The annotation stage (rpj_tasks.annotate): reference vectors, line alignment (D18), tail option,
commit protocol, CCNet precondition, and DSIR values independent of the process's hash seed (D11)."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from scipy import special

from rpj_tasks import annotate, layout, storage
from rpj_tasks.annotate import FileJob, MissingInputError, WorkerDiedError, annotate_file, annotate_shard, run_jobs
from rpj_tasks.config import SnapshotConfig
from rpj_tasks.signal_artifacts import fetch_word_lists
from rpj_tasks.signals import (
    ArtifactsError,
    HashSeedError,
    SignalArtifacts,
    dsir_hash_selfcheck,
    encode_record,
    make_record,
    raw_words,
)
from rpj_tasks.signals import hashseed
from rpj_tasks.signals.hashseed import SEED42, STABLE

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
    if marker:
        path = root / "stats" / "ccnet" / SNAPSHOT / f"{shard:04d}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"shard": shard, "files": sorted(files)}))


def write_artifacts(root: Path, shared: Path, hash_mode: str, dsir_lang: str | None = None) -> str:
    """Word lists (the real ones) under the signal_artifacts layout, tiny random DSIR counts for
    ``dsir_lang`` and a MANIFEST.json naming ``hash_mode``; returns the root URL."""
    url = root.as_uri()
    entries = fetch_word_lists(
        url, ["en", "de", "fr"],
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
        for component in ("quality_signals", "minhash") for p in sorted((root / component).rglob("*")) if p.is_file()
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
    write_shard(root, {"en_head.json.gz": en, "de_middle.json.gz": vector_lines(shared_data, "de"),
                       "en_tail.json.gz": en[:2], "fr_head.json.gz": en})
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
        "de_middle.signals.json.gz", "en_head.signals.json.gz", "fr_head.signals.json.gz"]
    assert sorted(p.name for p in (root / "minhash" / SNAPSHOT / "0000").iterdir()) == [
        "de_middle.minhash.parquet", "en_head.minhash.parquet", "fr_head.minhash.parquet"]
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
    ccnet = (root / "stats" / "ccnet" / SNAPSHOT / "0000.json").read_bytes()
    assert stored["ccnet_stats_sha256"] == hashlib.sha256(ccnet).hexdigest()
    assert stored["files"]["en_head.json.gz"] == {**stored["files"]["en_head.json.gz"],
                                                  "lines": 6, "bad_lines": 0, "minhash_null": 2}
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
    lines = [en[0], b"\xff\xfe not UTF-8\n", b'{"raw_content": "cut\n', b"[1, 2]\n",
             b'{"url": "http://a.example/", "raw_content": 5}\n', b"\n", en[2]]
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


def test_only_the_first_bad_lines_are_logged(shared_data: Path, tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
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


def test_tail_option_stale_outputs_and_force(shared_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "rel"
    en = vector_lines(shared_data, "en")
    write_shard(root, {"en_head.json.gz": en, "de_middle.json.gz": vector_lines(shared_data, "de"),
                       "en_tail.json.gz": en[3:]})
    artifacts = write_artifacts(tmp_path / "art", shared_data, STABLE)
    cfg = config(root)

    first = annotate_shard(cfg, 0, artifacts_url=artifacts, annotate_tail=True, hash_mode=STABLE)
    assert first["buckets"] == ["head", "middle", "tail"] and first["files"]["en_tail.json.gz"]["lines"] == 3
    assert [json.loads(x)["id"] for x in signals_lines(root, "en_tail")] == [
        f"2023-06/0000/en_tail.json.gz/{i}" for i in range(3)]
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
    with pytest.raises(MissingInputError, match=r"\['en_head.json.gz'\] listed by CCNet are missing"):
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


@pytest.mark.skipif(dsir_hash_selfcheck(), reason="this interpreter already runs with PYTHONHASHSEED=42")
def test_file_worker_checks_the_seed_itself(shared_data: Path, tmp_path: Path) -> None:
    write_shard(tmp_path, {"en_head.json.gz": vector_lines(shared_data, "en")})
    artifacts = write_artifacts(tmp_path / "art", shared_data, SEED42)
    out = tmp_path / "out"
    job = FileJob("en_head.json.gz", "en", "2023-06/0000/en_head.json.gz",
                  layout.documents_url(tmp_path.as_uri(), SNAPSHOT, 0, "en", "head"),
                  (out / "s.gz").as_uri(), (out / "m.parquet").as_uri(), artifacts, SEED42)
    with pytest.raises(HashSeedError, match="PYTHONHASHSEED=42"):
        annotate_file(job)
    assert not out.exists()


@pytest.mark.skipif(dsir_hash_selfcheck(), reason="jobs would run in this interpreter")
def test_shard_is_refused_when_the_worker_fails_the_seed_check(shared_data: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
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
    monkeypatch.setattr(hashseed, "_POLL_SECONDS", 0.2)
    options = {"endpoint_url": "http://127.0.0.1:9", "key": "k", "secret": "s"}
    monkeypatch.setitem(storage._OPTIONS, "s3", options)
    results = run_jobs(probe, ["s3", "crash", "s3"], SEED42)
    assert next(results) == options
    with pytest.raises(WorkerDiedError, match="exited without finishing"):
        next(results)


def poisson(k: int, lam: float) -> float:
    """scipy.stats.poisson.pmf's formula (its _pmf), without importing scipy.stats (~1-4 s)."""
    return float(np.exp(special.xlogy(k, lam) - special.gammaln(k + 1) - lam))


def literal_dsir(job: tuple[str, str, list[str]]) -> list[dict[str, float | None]]:
    """quality_signals.md §3.7 word for word for ``(artifacts dir, lang, texts)``; needs seed 42."""
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
