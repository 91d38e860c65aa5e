"""The Great Expectations gates (rpj_tasks/validate) on a real small release: the sample snapshot run
through the CLI once per session (``rpj ccnet``, ``annotate``, ``tokens``, ``dedup``, ``clusters``), validated
clean, then copied and corrupted on purpose, one corruption per copy."""

from __future__ import annotations

import gzip
import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deploy_harness import BIN, REPO, SNAPSHOT, cli_reference

from rpj_tasks.core import schema
from rpj_tasks.core.config import load_registry
from rpj_tasks.core.errors import MissingInputError
from rpj_tasks.validate import frames, gxrun, stage

SHARDS = [0, 1, 2, 3]
LANGS = ("en", "de", "fr", "es", "it")


@pytest.fixture(scope="session")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cli_reference(tmp_path_factory.getbasetemp())


@pytest.fixture
def tree(release: Path, tmp_path: Path) -> Path:
    """A private copy of the release tree (validation outputs excluded) to validate or corrupt."""
    dest = tmp_path / "data"
    shutil.copytree(release, dest, ignore=shutil.ignore_patterns("validation", "validate"))
    return dest


def config(root: Path) -> Any:
    return load_registry()[SNAPSHOT].with_overrides(storage_root=root.as_uri())


def read_jsonl(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


def write_jsonl(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(gzip.compress(b"".join(line + b"\n" for line in lines), mtime=0))


def failure(cfg: Any, shard: int) -> stage.ValidationFailedError:
    with pytest.raises(stage.ValidationFailedError) as caught:
        stage.validate_shard(cfg, shard)
    return caught.value


def assert_names(message: str, *parts: str) -> None:
    for part in parts:
        assert part in message, f"{part!r} not in the message:\n{message}"


def docs_exist(root: Path, unit: str) -> None:
    index = root / "validation" / SNAPSHOT / unit / "data_docs" / "index.html"
    assert index.is_file() and b"<html" in index.read_bytes()[:2000].lower()
    record = json.loads((root / "stats" / "validate" / SNAPSHOT / f"{unit}.json").read_text())
    assert "../../../validation/" + SNAPSHOT + f"/{unit}/data_docs/index.html" in record["outputs"]


def test_suites_match_the_schema_module() -> None:
    files = gxrun.load_suite("files")
    sets = {e["kwargs"]["column"]: e["kwargs"]["value_set"] for e in files["expectations"] if "value_set" in e["kwargs"]}
    assert sets["minhash_schema"] == [frames.schema_text(schema.MINHASH_SCHEMA)]
    assert sets["duplicates_schema"] == [frames.schema_text(schema.DUPLICATES_SCHEMA)]
    assert sets["clusters_schema"] == [frames.schema_text(schema.CLUSTERS_SCHEMA)]
    assert sets["tokens_schema"] == [frames.schema_text(schema.TOKEN_COUNTS_SCHEMA)]
    docs = {
        e["kwargs"].get("column"): e["kwargs"]
        for e in gxrun.load_suite("documents")["expectations"]
        if "value_set" in e["kwargs"]
    }
    assert docs["fields"]["value_set"] == [",".join(schema.DOCUMENT_FIELDS)]
    assert docs["field_types"]["value_set"] == [frames.expected_field_types()]
    signals = {e["kwargs"].get("column"): e for e in gxrun.load_suite("quality_signals")["expectations"]}
    assert set(signals["bounded_fractions"]["meta"]["bounds"]) <= set(schema.SIGNAL_KEYS)
    for name in (*gxrun.SHARD_SUITES, gxrun.SNAPSHOT_SUITE):  # GX 1.x form, every expectation buildable
        suite = gxrun.load_suite(name)
        assert set(suite) == {"name", "expectations"} and all(set(e) <= {"type", "kwargs", "meta"} for e in suite["expectations"])


def test_clean_release_validates_offline(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise OSError("network access during validation")

    monkeypatch.setattr(socket.socket, "connect", refuse)  # GX must not call home
    monkeypatch.setattr(socket, "create_connection", refuse)
    cfg = config(tree)
    documents = 0
    for shard in SHARDS:
        result = stage.validate_shard(cfg, shard)
        assert result["success"], stage.failure_lines(result)
        assert not result["suites"]["tokens"]["skipped"] and result["suites"]["tokens"]["rows"] > 0
        for suite in ("documents", "quality_signals", "minhash", "files"):
            assert result["suites"][suite]["rows"] > 0
            assert all(all(e["files"].values()) for e in result["suites"][suite]["expectations"])
        json.dumps(result)  # JSON-able
        documents += result["counts"]["documents"]
        docs_exist(tree, f"{shard:04d}")
    again = stage.validate_shard(cfg, 0)
    assert again.get("skipped")  # same files, same suites: not validated again
    snap = stage.validate_snapshot(cfg, SHARDS)
    assert snap["success"] and snap["counts"]["documents"] == documents
    docs_exist(tree, "snapshot")


def test_dropped_documents_line(tree: Path) -> None:
    path = tree / "documents" / SNAPSHOT / "0001" / "en_head.json.gz"
    lines = read_jsonl(path)
    write_jsonl(path, lines[:2] + lines[3:])
    exc = failure(config(tree), 1)
    assert_names(
        str(exc),
        "files: expect_column_pair_values_to_be_equal(documents_lines, signals_records)",
        "documents/2000-01/0001/en_head.json.gz",
        f"'documents_lines': {len(lines) - 1}, 'signals_records': {len(lines)}",
        "Data Docs: file://",
    )
    docs_exist(tree, "0001")


def test_wrong_span_in_a_signal(tree: Path) -> None:
    path = tree / "quality_signals" / SNAPSHOT / "0002" / "de_middle.signals.json.gz"
    lines = read_jsonl(path)
    record = json.loads(lines[1])
    end = record["quality_signals"]["rps_doc_word_count"][0][1]
    record["quality_signals"]["rps_doc_word_count"][0][1] = end + 7
    lines[1] = json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode()
    write_jsonl(path, lines)
    exc = failure(config(tree), 2)
    assert_names(
        str(exc),
        "quality_signals: expect_column_values_to_be_in_set(spans)",
        "quality_signals/2000-01/0002/de_middle.signals.json.gz line 1",
        f"rps_doc_word_count[0]: [0, {end + 7}] not inside [0, {end}]",
    )
    assert "(1 expectations)" in str(exc)


def test_missing_minhash_row(tree: Path) -> None:
    path = tree / "minhash" / SNAPSHOT / "0000" / "fr_head.minhash.parquet"
    table = pq.read_table(path)
    pq.write_table(pa.concat_tables([table.slice(0, 1), table.slice(2)]), path)
    exc = failure(config(tree), 0)
    assert_names(
        str(exc),
        "files: expect_column_pair_values_to_be_equal(documents_lines, minhash_rows)",
        "documents/2000-01/0000/fr_head.json.gz",
        f"'minhash_rows': {table.num_rows - 1}",
    )
    # the rows after the gap carry the wrong ids
    result = exc.result["suites"]["minhash"]
    bad = [e for e in result["expectations"] if not e["success"]]
    assert bad and bad[0]["files"]["minhash/2000-01/0000/fr_head.minhash.parquet"] is False
    assert bad[0]["observed"][0]["file"] == "minhash/2000-01/0000/fr_head.minhash.parquet"


def test_duplicates_row_with_a_wrong_digest(tree: Path) -> None:
    path = tree / "duplicates" / SNAPSHOT / "0003" / "en_middle.duplicates.parquet"
    key = f"{SNAPSHOT}/0003/en_middle.json.gz"
    wrong = "A" * 32
    table = pa.Table.from_pylist([{"shard_id": key, "doc_id": f"{key}/0", "digest": wrong}], schema=schema.DUPLICATES_SCHEMA)
    pq.write_table(table, path)
    exc = failure(config(tree), 3)
    assert_names(
        str(exc),
        "duplicates: expect_column_pair_values_to_be_equal(digest, document_digest)",
        "duplicates/2000-01/0003/en_middle.duplicates.parquet line 0",
        f"'digest': '{wrong}'",
    )


def write_tokens(root: Path, shard: int, scale: int = 4) -> dict[str, Any]:
    """Token files for every documents file of a shard, made by hand (len(raw_content) // scale
    tokens), and the tokens record with per-file totals."""
    files: dict[str, Any] = {}
    for path in sorted((root / "documents" / SNAPSHOT / f"{shard:04d}").glob("*.json.gz")):
        stem = path.name[: -len(".json.gz")]
        key = f"{SNAPSHOT}/{shard:04d}/{path.name}"
        docs = [json.loads(line) for line in read_jsonl(path)]
        tokens = [max(1, len(d["raw_content"]) // scale) for d in docs]
        out = root / "tokens" / SNAPSHOT / f"{shard:04d}" / f"{stem}.tokens.parquet"
        out.parent.mkdir(parents=True, exist_ok=True)
        rows = [{"id": f"{key}/{i}", "tokens": n} for i, n in enumerate(tokens)]
        pq.write_table(pa.Table.from_pylist(rows, schema=schema.TOKEN_COUNTS_SCHEMA), out)
        files[f"{stem}.tokens.parquet"] = {
            "documents": len(docs),
            "tokens": sum(tokens),
            "characters": sum(len(d["raw_content"]) for d in docs),
        }
    record = {"files": files, "inputs": {}, "outputs": {}}
    rec = root / "stats" / "tokens" / SNAPSHOT / f"{shard:04d}.json"
    rec.parent.mkdir(parents=True, exist_ok=True)
    rec.write_text(json.dumps(record))
    return record


def test_token_counts_checked_when_present(tree: Path) -> None:
    cfg = config(tree)
    record = write_tokens(tree, 0)
    result = stage.validate_shard(cfg, 0)
    assert result["success"] and not result["suites"]["tokens"]["skipped"]
    assert result["counts"]["tokens"] == sum(f["tokens"] for f in record["files"].values())
    # a bad total in the record
    record["files"]["de_head.tokens.parquet"]["tokens"] += 5
    (tree / "stats" / "tokens" / SNAPSHOT / "0000.json").write_text(json.dumps(record))
    exc = failure(cfg, 0)
    assert_names(
        str(exc),
        "files: expect_column_pair_values_to_be_equal(tokens_total, record_tokens)",
        "documents/2000-01/0000/de_head.json.gz",
        f"'record_tokens': {record['files']['de_head.tokens.parquet']['tokens']}",
    )


def test_token_counts_are_required_unless_said_otherwise(tree: Path) -> None:
    cfg = config(tree)
    shutil.rmtree(tree / "tokens" / SNAPSHOT / "0002")
    (tree / "stats" / "tokens" / SNAPSHOT / "0002.json").unlink()
    with pytest.raises(MissingInputError, match=r"no token counts .*`rpj tokens --snapshot 2000-01 --shards 2`"):
        stage.validate_shard(cfg, 2)
    result = stage.validate_shard(cfg, 2, require_tokens=False)
    assert result["success"] and result["suites"]["tokens"]["skipped"]


def test_token_counts_out_of_bounds(tree: Path) -> None:
    write_tokens(tree, 1, scale=40)  # 40 characters per token: not a subword tokenizer's count
    exc = failure(config(tree), 1)
    # each file's characters per token is outside its language's bounds (suite files, shown first) ...
    assert_names(
        str(exc),
        "files: expect_column_values_to_be_between(characters_per_token where language == 'en')",
        "documents/2000-01/0001/en_head.json.gz: observed 40.",
    )
    # ... and every document is outside the sanity range (suite tokens), kept in the result
    failed = [e for e in exc.result["suites"]["tokens"]["expectations"] if not e["success"]]
    expected = {("expect_column_values_to_be_between", f"characters_per_token where language == '{lang}'") for lang in LANGS}
    assert {(e["expectation"], e["columns"]) for e in failed} == expected, failed


def test_cli_exit_codes(tree: Path) -> None:
    path = tree / "documents" / SNAPSHOT / "0001" / "en_head.json.gz"
    write_jsonl(path, read_jsonl(path)[1:])
    proc = subprocess.run(
        [str(BIN / "rpj"), "validate", "--snapshot", SNAPSHOT, "--shards", "1", "--storage-root", tree.as_uri()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "rpj: error: validation of shard 2000-01/0001 failed" in proc.stderr
    assert "documents/2000-01/0001/en_head.json.gz" in proc.stderr and "observed" in proc.stderr
    proc = subprocess.run(
        [str(BIN / "rpj"), "validate", "--snapshot", SNAPSHOT, "--shards", "0", "--storage-root", tree.as_uri()],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count("\n") == 1 and proc.stdout.startswith(f"{SNAPSHOT}: 1 shards valid")


def test_a_missing_duplicates_file_fails(tree: Path) -> None:
    (tree / "duplicates" / SNAPSHOT / "0002" / "fr_middle.duplicates.parquet").unlink()
    exc = failure(config(tree), 2)
    assert_names(
        str(exc), "files: expect_column_values_to_be_in_set(duplicates_schema)", "documents/2000-01/0002/fr_middle.json.gz"
    )
