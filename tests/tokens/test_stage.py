"""``count_shard``: one token file per documents file of a mined shard (head, middle, tail), with the
schema, ids and counts; skipped when finished, redone on force or new documents; a killed run leaves
no record and the next run finishes the shard; ``rpj tokens`` counts the mined shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from rpj_tasks import cli
from rpj_tasks.core import commit, layout
from rpj_tasks.core.config import SnapshotConfig
from rpj_tasks.core.schema import TOKEN_COUNTS_SCHEMA
from rpj_tasks.tokens import count_shard
from rpj_tasks.tokens.tokenizer import load_counter

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = "2023-06"
BAD_JSON, NO_TEXT, BAD_UTF8 = b'{"url": "broken', b'{"url": "x", "raw_content": 7}', b'{"raw_content": "\xff"}'


def texts(lang: str, bucket: str, n: int) -> list[str]:
    return [f"{lang} {bucket} document {i}: " + "word " * i for i in range(n)]


def write_shard(root: Path, shard: int, files: dict[tuple[str, str], list[Any]]) -> None:
    """Documents files and the CCNet record, as the mine stage publishes them; a ``bytes`` item is
    written as the line itself."""
    url = root.as_uri()
    out_dir = layout.shard_dir(url, "documents", SNAPSHOT, shard)
    with commit.UnitCommit(layout.ccnet_stats_url(url, SNAPSHOT, shard), {"test": 1}, [out_dir]) as unit:
        for (lang, bucket), items in files.items():
            with unit.gzip_writer(layout.documents_url(url, SNAPSHOT, shard, lang, bucket)) as f:
                for item in items:
                    line = item if isinstance(item, bytes) else json.dumps({"raw_content": item, "language": lang}).encode()
                    f.write(line + b"\n")
        unit.commit({})


def shard_files() -> dict[tuple[str, str], list[Any]]:
    return {
        ("en", "head"): [*texts("en", "head", 5), BAD_JSON, "tail <s> marker"],
        ("en", "middle"): texts("en", "middle", 3),
        ("en", "tail"): [NO_TEXT, *texts("en", "tail", 2), BAD_UTF8],
        ("de", "head"): ["Grüße aus Zürich", ""],
    }


def config(root: Path) -> SnapshotConfig:
    return SnapshotConfig(id=SNAPSHOT, storage_root=root.as_uri(), source_base="file:///unused", num_shards=4)


def read(root: Path, shard: int, lang: str, bucket: str) -> Any:
    return pq.read_table(root / "tokens" / SNAPSHOT / f"{shard:04d}" / f"{lang}_{bucket}.tokens.parquet")


def test_one_token_file_per_documents_file_with_ids_and_counts(tmp_path: Path) -> None:
    write_shard(tmp_path, 2, shard_files())
    rec = count_shard(config(tmp_path), 2)
    counter = load_counter()
    assert not rec["skipped"]
    for (lang, bucket), items in shard_files().items():
        table = read(tmp_path, 2, lang, bucket)
        assert table.schema.equals(TOKEN_COUNTS_SCHEMA)
        assert table.column("id").to_pylist() == [f"{SNAPSHOT}/0002/{lang}_{bucket}.json.gz/{i}" for i in range(len(items))]
        want = [None if isinstance(t, bytes) else counter.count([t])[0] for t in items]
        assert table.column("tokens").to_pylist() == want
        name = f"{lang}_{bucket}.json.gz"
        good = [t for t in items if isinstance(t, str)]
        assert rec["files"][name] == {
            "documents": len(items),
            "bad_lines": len(items) - len(good),
            "tokens": sum(w for w in want if w is not None),
            "characters": sum(map(len, good)),
        }
    assert read(tmp_path, 2, "de", "head").column("tokens").to_pylist()[1] == 1  # empty text: the BOS
    assert rec["counts"]["tokens.bad_line.invalid_json"] == 1 and rec["counts"]["tokens.bad_line.invalid_utf8"] == 1
    assert rec["counts"]["tokens.bad_line.no_raw_content"] == 1
    stored = json.loads((tmp_path / "stats" / "tokens" / SNAPSHOT / "0002.json").read_text())
    assert stored["inputs"]["tokenizer"] == counter.identity and len(stored["inputs"]["documents"]) == 4
    assert sorted(stored["outputs"]) == sorted(
        f"../../../tokens/{SNAPSHOT}/0002/{lang}_{bucket}.tokens.parquet" for lang, bucket in shard_files()
    )
    assert stored["totals"]["documents"] == 16 and stored["totals"]["bad_lines"] == 3


def test_skipped_when_finished_redone_on_force_or_new_documents(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    write_shard(tmp_path, 0, shard_files())
    first = count_shard(cfg, 0)
    path = tmp_path / "tokens" / SNAPSHOT / "0000" / "en_head.tokens.parquet"
    stamp = path.stat().st_mtime_ns, path.read_bytes()
    again = count_shard(cfg, 0)
    assert again["skipped"] and path.stat().st_mtime_ns == stamp[0]
    forced = count_shard(cfg, 0, force=True)
    assert not forced["skipped"] and path.read_bytes() == stamp[1]  # same bytes
    assert forced["outputs"] == first["outputs"]
    files = shard_files()
    del files[("en", "tail")]
    files[("en", "head")] = texts("en", "head", 2)
    write_shard(tmp_path, 0, files)  # re-mined: fewer files
    redone = count_shard(cfg, 0)
    assert not redone["skipped"] and redone["files"]["en_head.json.gz"]["documents"] == 2
    assert not (tmp_path / "tokens" / SNAPSHOT / "0000" / "en_tail.tokens.parquet").exists()  # stale, removed


def test_another_tokenizer_redoes_the_shard(tmp_path: Path) -> None:
    from rpj_tasks.tokens.tokenizer import mistral_model_path, tokenizers_from_sentencepiece

    cfg = config(tmp_path)
    write_shard(tmp_path, 1, shard_files())
    default = count_shard(cfg, 1)
    tokenizers_from_sentencepiece(mistral_model_path()).save(str(tmp_path / "tokenizer.json"))
    other = count_shard(cfg, 1, tokenizer_json=str(tmp_path / "tokenizer.json"))
    assert not other["skipped"] and other["inputs"]["tokenizer"]["kind"] == "tokenizers"
    assert other["files"] == default["files"]  # same model, same counts


def test_a_shard_without_ccnet_record_is_missing_input(tmp_path: Path) -> None:
    from rpj_tasks.core.errors import MissingInputError

    with pytest.raises(MissingInputError, match="no CCNet stats record"):
        count_shard(config(tmp_path), 3)


def run_in_subprocess(root: Path, fault: str) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from rpj_tasks.core.config import SnapshotConfig; from rpj_tasks.tokens import count_shard; "
        f"count_shard(SnapshotConfig(id='{SNAPSHOT}', storage_root=sys.argv[1], source_base='file:///unused', num_shards=4), 2)"
    )
    env = {**os.environ, "RPJ_FAULT": fault}
    return subprocess.run(
        [sys.executable, "-c", code, root.as_uri()], env=env, capture_output=True, text=True, cwd=REPO, timeout=120
    )


@pytest.mark.parametrize("fault", ["output:2:kill", "record:1:kill"])
def test_a_killed_run_leaves_no_record_and_the_next_run_finishes(tmp_path: Path, fault: str) -> None:
    write_shard(tmp_path, 2, shard_files())
    failed = run_in_subprocess(tmp_path, fault)
    assert failed.returncode == -9, failed.stderr[-2000:]
    assert not (tmp_path / "stats" / "tokens" / SNAPSHOT / "0002.json").exists()
    rec = count_shard(config(tmp_path), 2)
    assert not rec["skipped"] and len(rec["outputs"]) == 4
    assert not [p for p in (tmp_path / "tokens").rglob("*") if ".tmp-" in p.name]


def rpj_tokens(root: Path, *extra: str) -> list[str]:
    return [
        "--registry",
        "config/snapshots.yaml",
        "tokens",
        "--snapshot",
        SNAPSHOT,
        "--storage-root",
        root.as_uri(),
        "--num-shards",
        "4",
        *extra,
    ]


def test_cli_counts_the_mined_shards_and_prints_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    for shard in (1, 3):
        write_shard(tmp_path, shard, shard_files())
    assert cli.main(rpj_tokens(tmp_path)) == 0
    out = capsys.readouterr().out
    assert "tokens shard 0001: done: 16 documents" in out and "tokens shard 0003: done" in out
    assert cli.main(rpj_tokens(tmp_path, "--shards", "1")) == 0
    assert "tokens shard 0001: skipped (finished)" in capsys.readouterr().out
    assert cli.main(rpj_tokens(tmp_path, "--totals", "--json")) == 0
    totals = json.loads(capsys.readouterr().out)
    assert totals["shards"] == 2 and totals["files"] == 8 and totals["total"]["all"]["documents"] == 32
    assert cli.main(rpj_tokens(tmp_path, "--totals")) == 0
    table = capsys.readouterr().out
    assert "snapshot 2023-06: 2 shards, 8 token files" in table and "\nen    tail" in table
    assert cli.main(rpj_tokens(tmp_path, "--shards", "2")) == 2  # not mined: that shard fails
    assert "tokens shard 0002 failed: MissingInputError" in capsys.readouterr().err
