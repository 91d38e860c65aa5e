"""End to end: the sample snapshot DAG on a real Airflow (SQLite metadata DB), checked against the spec."""

import gzip
import json
import subprocess
from pathlib import Path

import pytest
from airflow_env import BIN, REPO, airflow, airflow_env

from rpj_tasks.ccnet.lm import bucket, load_cutoffs
from rpj_tasks.core.layout import BUCKETS, LANGUAGES
from rpj_tasks.core.schema import DOCUMENT_FIELD_TYPES, DOCUMENT_FIELDS  # checked against the spec: test_schema.py

SNAPSHOT = "2000-01"
NO_DEDUP = json.dumps({"dedup": False})
FIELDS = list(DOCUMENT_FIELDS)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("e2e")
    env = airflow_env(tmp)
    for args in (("db", "migrate"), ("pools", "set", "rpj_commoncrawl", "4", "test pool")):
        proc = airflow(env, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    # `dags test` runs tasks in-process without a scheduler: nothing would start the rpv2_dedup run
    # that exact_dedup waits for, so dedup (exact and fuzzy) is tested under a real scheduler
    # (test_deploy_*.py) and off here.
    proc = airflow(env, "dags", "test", "rpv2_sample", "-c", NO_DEDUP)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
    return tmp, env, proc.stdout + proc.stderr


def doc_files(root: Path, component: str = "documents") -> dict[str, bytes]:
    base = root / component / SNAPSHOT
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.glob("*/*")) if p.is_file()}


def dag_run_states(env) -> list[str]:
    proc = airflow(env, "dags", "list-runs", "rpv2_sample", "-o", "json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    runs = json.loads(proc.stdout.strip().splitlines()[-1])  # earlier lines are log noise
    return [r["state"] for r in runs]


def test_dag_run_succeeded(run):
    _, env, _ = run
    assert dag_run_states(env) == ["success"]


def test_documents_follow_the_rpv2_contract(run):
    tmp, _, _ = run
    data = tmp / "data"
    files = doc_files(data)
    assert files, "no documents written"
    cutoffs = load_cutoffs((data / "artifacts" / "ccnet" / "sample-v1" / "cutoff.csv").as_uri())
    langs_seen, buckets_seen = set(), set()
    for rel, raw in files.items():
        shard, name = rel.split("/")
        assert len(shard) == 4 and shard.isdigit() and 0 <= int(shard) < 4
        lang, bucket_name = name[: -len(".json.gz")].split("_")
        assert lang in LANGUAGES and bucket_name in BUCKETS
        assert raw[:2] == b"\x1f\x8b" and raw[4:8] == b"\0\0\0\0"  # gzip, mtime 0: reproducible bytes
        for line in gzip.decompress(raw).decode("utf-8").splitlines():
            assert '": ' in line and ', "' in line  # json.dumps default separators
            doc = json.loads(line)
            assert list(doc) == FIELDS
            assert all(type(doc[k]) is t for k, t in DOCUMENT_FIELD_TYPES.items()), doc
            assert doc["language"] == lang and doc["bucket"] == bucket_name
            assert doc["length"] == len(doc["raw_content"])
            assert doc["nlines"] == len(doc["line_ids"]) == doc["raw_content"].count("\n") + 1
            assert doc["line_ids"] == sorted(set(doc["line_ids"]))
            assert all(0 <= i < doc["original_nlines"] for i in doc["line_ids"])
            assert doc["language_score"] >= 0.5 and round(doc["language_score"], 2) == doc["language_score"]
            assert round(doc["perplexity"], 1) == doc["perplexity"]
            assert bucket(doc["perplexity"], cutoffs[lang]) == bucket_name
            assert doc["digest"].startswith("sha1:") and len(doc["digest"]) == 37
            assert doc["cc_segment"].startswith(f"crawl-data/CC-MAIN-{SNAPSHOT}/segments/")
            assert doc["original_length"] >= len(doc["raw_content"].encode()) - 1
            langs_seen.add(lang)
            buckets_seen.add(bucket_name)
    assert langs_seen == set(LANGUAGES)
    assert buckets_seen == set(BUCKETS)


def test_stats_records_per_shard(run):
    tmp, _, _ = run
    total_kept = 0
    for shard in range(4):
        rec = json.loads((tmp / "data" / "stats" / "ccnet" / SNAPSHOT / f"{shard:04d}.json").read_text())
        counts = rec["counts"]
        assert counts["wet.docs"] > 0 and counts["kept"] > 0
        assert set(rec["seconds"]) >= {"dedup", "lid", "perplexity"}
        kept = sum(v for k, v in counts.items() if k.startswith("kept.") and k.count(".") == 2)
        assert kept == counts["kept"]
        total_kept += kept
    assert total_kept > 500


def test_broken_records_are_counted_not_fatal(run):
    tmp, _, _ = run
    skipped = 0
    for shard in range(4):
        rec = json.loads((tmp / "data" / "stats" / "ccnet" / SNAPSHOT / f"{shard:04d}.json").read_text())
        skipped += sum(v for k, v in rec["counts"].items() if k.startswith("wet.skipped") or k == "wet.invalid_utf8")
    assert skipped > 0


def test_head_and_middle_are_annotated_line_by_line(run):
    import pyarrow.parquet as pq

    tmp, _, _ = run
    data = tmp / "data"
    annotated = 0
    for rel, raw in doc_files(data).items():
        shard, name = rel.split("/")
        tag = name[: -len(".json.gz")]
        signals = data / "quality_signals" / SNAPSHOT / shard / f"{tag}.signals.json.gz"
        minhash = data / "minhash" / SNAPSHOT / shard / f"{tag}.minhash.parquet"
        if tag.endswith("_tail"):
            assert not signals.exists() and not minhash.exists()
            continue
        docs = gzip.decompress(raw).decode().splitlines()
        records = [json.loads(x) for x in gzip.decompress(signals.read_bytes()).decode().splitlines()]
        table = pq.read_table(minhash)
        shard_key = f"{SNAPSHOT}/{shard}/{name}"
        assert len(records) == len(docs) == table.num_rows
        assert [r["id"] for r in records] == [f"{shard_key}/{i}" for i in range(len(docs))]
        assert table.column("id").to_pylist() == [r["id"] for r in records]
        assert table.column("id_int").to_pylist() == [r["id_int"] for r in records]
        for r, line in zip(records, docs):
            doc = json.loads(line)
            assert len(r["quality_signals"]) == 45
            assert r["quality_signals"]["ccnet_length"] == [[0, len(doc["raw_content"]), float(doc["length"])]]
            assert r["metadata"]["url"] == doc["url"] and r["metadata"]["snapshot_id"] == SNAPSHOT
        annotated += len(records)
    assert annotated > 300


def test_rerun_skips_and_force_reproduces_bytes(run):
    tmp, env, _ = run
    components = ("documents", "quality_signals", "minhash")
    before = {c: doc_files(tmp / "data", c) for c in components}
    proc = airflow(env, "dags", "test", "rpv2_sample", "2024-01-02", "-c", NO_DEDUP)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert "finished earlier" in proc.stdout + proc.stderr
    proc = airflow(env, "dags", "test", "rpv2_sample", "2024-01-03", "-c", json.dumps({"force": True, "dedup": False}))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    assert {c: doc_files(tmp / "data", c) for c in components} == before
    assert dag_run_states(env) == ["success"] * 3


def test_cli_run_gives_identical_bytes(run, tmp_path):
    """Another storage root, processed shard by shard by the CLI instead of Airflow: same bytes."""
    tmp, env, _ = run
    env = {**env, "RPJ_STORAGE_ROOT": (tmp_path / "data").as_uri()}
    # reuse the models: copy the artifacts, so the comparison is about the stage, not training
    import shutil

    shutil.copytree(tmp / "data" / "artifacts", tmp_path / "data" / "artifacts")
    for shards in ("3", "0-2"):
        proc = subprocess.run(
            [str(BIN / "rpj"), "ccnet", "--snapshot", SNAPSHOT, "--shards", shards],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert doc_files(tmp_path / "data") == doc_files(tmp / "data")

    def rpj(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "rpj"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)

    proc = rpj("annotate", "--snapshot", SNAPSHOT, "--shards", "0-3")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count(": done") == 4
    for component in ("quality_signals", "minhash"):
        assert doc_files(tmp_path / "data", component) == doc_files(tmp / "data", component), component
    # --tail annotates the tail files too (a finished shard is redone because the buckets changed)
    proc = rpj("annotate", "--snapshot", SNAPSHOT, "--shards", "0", "--tail")
    assert proc.returncode == 0 and "annotate shard 0000: done" in proc.stdout, proc.stderr[-3000:]
    tails = sorted(p.name for p in (tmp_path / "data" / "quality_signals" / SNAPSHOT / "0000").glob("*_tail.*"))
    assert tails and len(tails) == len(list((tmp_path / "data" / "documents" / SNAPSHOT / "0000").glob("*_tail.*")))
    # artifacts of the reference hash mode, annotation asked to run in the stable one: a clear refusal
    proc = rpj("annotate", "--snapshot", SNAPSHOT, "--shards", "1", "--force", "--hash-mode", "stable")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "built with DSIR hash_mode 'cpython-seed42', but the annotation runs in 'stable'" in proc.stderr
