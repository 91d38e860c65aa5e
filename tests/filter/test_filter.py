"""Filtering a published snapshot (rpj_tasks/filter/stage.py, ``rpj filter``): the sample snapshot as the
CLI builds it (tests/helpers/deploy_harness.py ``cli_reference``), validated and published once, then
copied per test."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from deploy_harness import BIN, REPO, SNAPSHOT, cli_reference
from test_recipes import card_gopher_rules_pass
from trees import digests, temp_files

from rpj_tasks.core.config import load_registry
from rpj_tasks.filter import count_shard, filter_shard, finalize, load_recipe, open_release, parse_recipe, run_recipe
from rpj_tasks.filter.stage import NotPublishedError, allot, evaluate

COPY = ("documents", "quality_signals", "minhash", "duplicates", "clusters", "tokens", "stats", "staging/dedup", "artifacts")


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rpj_tasks.publish import stage

    reference = cli_reference(tmp_path_factory.getbasetemp())
    root = tmp_path_factory.mktemp("published") / "data"
    for part in COPY:
        shutil.copytree(reference / part, root / part)
    cfg = load_registry()[SNAPSHOT].with_overrides(storage_root=root.as_uri())
    stage.validate_and_publish(cfg, list(range(4)))
    return root


@pytest.fixture
def root(published: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(published, copy)
    return copy


def rows(root: Path, recipe: str) -> list[dict[str, Any]]:
    files = sorted((root / "filtered" / recipe / SNAPSHOT).rglob("*.parquet"))
    return [r for f in files for r in pq.read_table(f).to_pylist()]


def listed(root: Path, component: str) -> list[dict[str, Any]]:
    return [r for f in sorted((root / component / SNAPSHOT).rglob("*.parquet")) for r in pq.read_table(f).to_pylist()]


def all_ids(root: Path, buckets: tuple[str, ...] = ("head", "middle")) -> list[str]:
    out = []
    for f in sorted((root / "documents" / SNAPSHOT).rglob("*.json.gz")):
        if f.name.split(".")[0].split("_")[1] in buckets:
            n = len(gzip.decompress(f.read_bytes()).splitlines())
            out += [f"{SNAPSHOT}/{f.parent.name}/{f.name}/{i}" for i in range(n)]
    return out


def test_only_a_published_snapshot_is_filtered(published: Path, tmp_path: Path) -> None:
    unpublished = tmp_path / "data"
    for part in COPY:
        shutil.copytree(published / part, unpublished / part)
    shutil.rmtree(unpublished / "stats" / "publish")
    with pytest.raises(NotPublishedError, match="2000-01 is not published"):
        run_recipe(unpublished.as_uri(), SNAPSHOT, load_recipe("gopher"))


def test_dedup_keep_rules(root: Path) -> None:
    """exact: drop every doc_id of the duplicates files; fuzzy: a clustered document is kept only if
    id_int == cluster_id (rpv2_format.md §6, §7); no rules: everything else is kept."""
    uri = root.as_uri()
    for dedup in ("none", "exact", "fuzzy", "both"):
        run_recipe(uri, SNAPSHOT, parse_recipe({"name": f"d-{dedup}", "dedup": dedup}))
    everything = set(all_ids(root))
    dups = {r["doc_id"] for r in listed(root, "duplicates")}
    clustered = listed(root, "clusters")
    losers = {r["id"] for r in clustered if r["id_int"] != r["cluster_id"]}
    winners = {r["id"] for r in clustered if r["id_int"] == r["cluster_id"]}
    assert dups and losers and winners  # the sample has both kinds
    got = {d: {r["id"] for r in rows(root, f"d-{d}")} for d in ("none", "exact", "fuzzy", "both")}
    assert got["none"] == everything
    assert got["exact"] == everything - dups
    assert got["fuzzy"] == everything - losers and winners <= got["fuzzy"]
    assert got["both"] == everything - dups - losers
    manifest = json.loads((root / "filtered" / "d-both" / SNAPSHOT / "manifest.json").read_text())
    assert manifest["counts"]["dropped"] == {"exact_duplicate": len(dups), "fuzzy_duplicate": len(losers - dups)}


def test_language_and_bucket_selection(root: Path) -> None:
    run_recipe(
        root.as_uri(), SNAPSHOT, parse_recipe({"name": "en-mid", "languages": ["en"], "buckets": ["middle"], "dedup": "none"})
    )
    names = {p.name for p in (root / "filtered" / "en-mid" / SNAPSHOT).rglob("*.parquet")}
    assert names == {"en_middle.parquet"}
    got = rows(root, "en-mid")
    assert got and {(r["language"], r["bucket"]) for r in got} == {("en", "middle")}
    assert len(got) == len([i for i in all_ids(root, ("middle",)) if "/en_middle" in i])
    # tail (no signals): selectable without rules
    run_recipe(root.as_uri(), SNAPSHOT, parse_recipe({"name": "tails", "buckets": ["tail"], "dedup": "none"}))
    assert {r["bucket"] for r in rows(root, "tails")} == {"tail"}


def test_gopher_output_matches_the_rules_on_the_release(root: Path) -> None:
    """Every kept document passes the recipe on its published signals; every dropped one that is no
    duplicate fails it; the text is the document's raw_content and the token count its tokens/ row."""
    run_recipe(root.as_uri(), SNAPSHOT, load_recipe("gopher"))
    kept = {r["id"]: r for r in rows(root, "gopher")}
    recipe = load_recipe("gopher")
    dups = {r["doc_id"] for r in listed(root, "duplicates")}
    losers = {r["id"] for r in listed(root, "clusters") if r["id_int"] != r["cluster_id"]}
    tokens = {r["id"]: r["tokens"] for r in listed(root, "tokens")}
    checked = failed = 0
    for f in sorted((root / "quality_signals" / SNAPSHOT).rglob("*.signals.json.gz")):
        docs = gzip.decompress(
            (root / "documents" / SNAPSHOT / f.parent.name / f.name.replace(".signals", "")).read_bytes()
        ).splitlines()
        for line, doc_line in zip(gzip.decompress(f.read_bytes()).splitlines(), docs):
            record, doc = json.loads(line), json.loads(doc_line)
            passes = evaluate(recipe, record["quality_signals"], doc["raw_content"]).dropped_by is None
            assert passes == card_gopher_rules_pass(record["quality_signals"]), record["id"]  # the card's own function
            if record["id"] in dups or record["id"] in losers:
                assert record["id"] not in kept
                continue
            assert (record["id"] in kept) == passes, record["id"]
            if passes:
                row = kept[record["id"]]
                assert row["text"] == doc["raw_content"] and row["url"] == doc["url"] and row["tokens"] == tokens[record["id"]]
            checked += 1
            failed += not passes
    assert checked == len(kept) + failed and failed > 0


def test_c4_cuts_lines_and_recounts_tokens(root: Path) -> None:
    from rpj_tasks.tokens.tokenizer import load_counter

    run_recipe(root.as_uri(), SNAPSHOT, load_recipe("c4"))
    cut = [r for r in rows(root, "c4") if r["lines_removed"]]
    assert cut
    counter = load_counter("")
    docs = {}
    for f in sorted((root / "documents" / SNAPSHOT).rglob("*_head.json.gz")) + sorted(
        (root / "documents" / SNAPSHOT).rglob("*_middle.json.gz")
    ):
        for i, line in enumerate(gzip.decompress(f.read_bytes()).splitlines()):
            docs[f"{SNAPSHOT}/{f.parent.name}/{f.name}/{i}"] = json.loads(line)["raw_content"]
    for r in cut[:20]:
        raw = docs[r["id"]]
        assert len(r["text"]) < len(raw) and all(line in raw for line in r["text"].split("\n"))
        assert r["tokens"] == counter.count([r["text"]])[0]


def test_token_budget_is_the_sequential_rule_whatever_the_shard_order(root: Path) -> None:
    uri = root.as_uri()
    run_recipe(uri, SNAPSHOT, parse_recipe({"name": "nobudget", "dedup": "both"}))
    order = rows(root, "nobudget")  # shard, then language, then bucket, then line
    order.sort(
        key=lambda r: (
            r["id"].split("/")[1],
            r["language"],
            ("head", "middle").index(r["bucket"]),
            int(r["id"].rsplit("/", 1)[1]),
        )
    )
    budget = sum(r["tokens"] for r in order) // 2
    expected, total = [], 0
    for r in order:  # the sequential rule: keep while the next document fits, then stop
        if total + r["tokens"] > budget:
            break
        expected.append(r["id"])
        total += r["tokens"]
    recipe = parse_recipe({"name": "half", "dedup": "both", "token_budget": budget})
    release = open_release(uri, SNAPSHOT, recipe)
    counted = [count_shard(release, recipe, s) for s in (3, 1, 0, 2)]  # the mapped tasks, in any order
    allowances = allot(recipe, counted)
    for s in (2, 0, 3, 1):
        filter_shard(release, recipe, s, allowance=allowances[s])
    finalize(release, recipe, [0, 1, 2, 3], allowances)
    got = rows(root, "half")
    got.sort(
        key=lambda r: (
            r["id"].split("/")[1],
            r["language"],
            ("head", "middle").index(r["bucket"]),
            int(r["id"].rsplit("/", 1)[1]),
        )
    )
    assert [r["id"] for r in got] == expected and 0 < len(expected) < len(order)
    manifest = json.loads((root / "filtered" / "half" / SNAPSHOT / "manifest.json").read_text())
    assert manifest["tokens"]["kept"] == total <= budget and manifest["counts"]["dropped"]["budget"] == len(order) - len(expected)
    # the CLI (one process, shards in order) gives the same bytes
    before = digests(root, "filtered/half")
    shutil.rmtree(root / "filtered" / "half")
    shutil.rmtree(root / "stats" / "filter" / "half")
    run_recipe(uri, SNAPSHOT, recipe)
    assert digests(root, "filtered/half") == before


def test_dry_run_writes_nothing(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rpj_tasks.cli import main

    before = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert main(["filter", "--snapshot", SNAPSHOT, "--recipe", "c4", "--storage-root", root.as_uri(), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run over 4 shards; nothing written" in out
    assert re.search(r"rule num_sentences\s+\d+\s+\d+", out) and re.search(
        r"line rule terminal_punctuation \(lines\)\s+\d+\s+\d+", out
    )
    assert sorted(str(p.relative_to(root)) for p in root.rglob("*")) == before
    # the dry run's counts are the real run's
    dry = run_recipe(root.as_uri(), SNAPSHOT, load_recipe("c4"), dry_run=True)
    real = run_recipe(root.as_uri(), SNAPSHOT, load_recipe("c4"))
    assert dry["counts"] == real["manifest"]["counts"]


def test_rerun_skips_and_gives_the_same_bytes_and_a_recipe_change_redoes(root: Path, tmp_path: Path) -> None:
    uri = root.as_uri()
    first = run_recipe(uri, SNAPSHOT, load_recipe("gopher"), formats=("parquet", "jsonl"))
    assert first["skipped"] == []
    before = digests(root, "filtered")
    again = run_recipe(uri, SNAPSHOT, load_recipe("gopher"), formats=("parquet", "jsonl"))
    assert again["skipped"] == [0, 1, 2, 3] and digests(root, "filtered") == before
    run_recipe(uri, SNAPSHOT, load_recipe("gopher"), formats=("parquet", "jsonl"), force=True)
    assert digests(root, "filtered") == before
    # the same name, another version: nothing reused; finalize refuses a mix of versions
    path = tmp_path / "gopher.yaml"
    path.write_text((REPO / "config" / "recipes" / "gopher.yaml").read_text().replace("value: 50,", "value: 60,"))
    changed = load_recipe(str(path))
    assert changed.hash != load_recipe("gopher").hash
    release = open_release(uri, SNAPSHOT, changed)
    assert not filter_shard(release, changed, 0, formats=("parquet", "jsonl"))["skipped"]
    with pytest.raises(Exception, match="shard 0001 is not filtered under recipe gopher version"):
        finalize(release, changed, [0, 1, 2, 3], {s: None for s in range(4)}, formats=("parquet", "jsonl"))


def test_killed_run_is_redone_to_the_same_bytes(root: Path, tmp_path: Path) -> None:
    """A real ``rpj filter`` killed after its 3rd committed output, then run again: the same files as
    an undisturbed run, no temp files (the commit protocol)."""
    args = [
        str(BIN / "rpj"),
        "filter",
        "--snapshot",
        SNAPSHOT,
        "--recipe",
        "c4",
        "--storage-root",
        root.as_uri(),
        "--format",
        "both",
    ]
    import os

    env = {**os.environ, "RPJ_FAULT": "output:3:kill"}
    killed = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0
    assert not (root / "filtered" / "c4" / SNAPSHOT / "manifest.json").exists()
    env.pop("RPJ_FAULT")
    again = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = digests(root, "filtered")
    assert not temp_files(root, "filtered")
    shutil.rmtree(root / "filtered")
    shutil.rmtree(root / "stats" / "filter")
    clean = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0 and digests(root, "filtered") == resumed


def test_hugging_face_datasets_loads_the_output(root: Path) -> None:
    import datasets

    result = run_recipe(root.as_uri(), SNAPSHOT, load_recipe("gopher"), formats=("parquet", "jsonl"))
    base = root / "filtered" / "gopher" / SNAPSHOT
    parquet = datasets.load_dataset("parquet", data_files=sorted(str(p) for p in base.rglob("*.parquet")), split="train")
    jsonl = datasets.load_dataset("json", data_files=sorted(str(p) for p in base.rglob("*.jsonl.gz")), split="train")
    kept = result["manifest"]["counts"]["kept"]
    assert len(parquet) == len(jsonl) == kept > 0
    assert {"id", "text", "language", "bucket", "tokens", "url"} <= set(parquet.column_names)
    assert sum(parquet["tokens"]) == result["manifest"]["tokens"]["kept"]
    assert sorted(parquet["id"]) == sorted(jsonl["id"])


def test_cli_rejects_a_bad_recipe(root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rpj_tasks.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nrules:\n  - {name: q, signal: rps_doc_word_count, op: '~', value: 3}\n")
    assert main(["filter", "--snapshot", SNAPSHOT, "--recipe", str(bad), "--storage-root", root.as_uri()]) == 2
    err = capsys.readouterr().err
    assert f"recipe {bad}: rules[0] (q): bad operator '~'" in err
    assert not (root / "filtered").exists()


def test_on_an_object_store_the_bytes_are_the_local_ones(root: Path) -> None:
    """The release on S3 (a moto server; the engine reads and writes through storage's options)."""
    from moto_s3 import moto_s3

    from rpj_tasks.core import storage

    with moto_s3("k", "s") as (endpoint, client):
        client.create_bucket(Bucket="rpj")
        saved = dict(storage._OPTIONS)
        storage.register_options("s3", {"endpoint_url": endpoint, "key": "k", "secret": "s"})
        try:
            for part in (
                "listings",
                "stats/publish",
                "stats/tokens",
                "documents",
                "quality_signals",
                "duplicates",
                "clusters",
                "tokens",
            ):
                for p in sorted((root / part).rglob("*")):
                    if p.is_file():
                        client.put_object(Bucket="rpj", Key=f"release/{p.relative_to(root)}", Body=p.read_bytes())
            remote = run_recipe("s3://rpj/release", SNAPSHOT, load_recipe("c4"), formats=("parquet", "jsonl"))
            assert remote["skipped"] == []
            keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="rpj", Prefix="release/filtered/")["Contents"])
            got = {k.removeprefix("release/"): client.get_object(Bucket="rpj", Key=k)["Body"].read() for k in keys}
        finally:
            storage._OPTIONS.clear()
            storage._OPTIONS.update(saved)
    run_recipe(root.as_uri(), SNAPSHOT, load_recipe("c4"), formats=("parquet", "jsonl"))
    local = {str(p.relative_to(root)): p.read_bytes() for p in sorted((root / "filtered").rglob("*")) if p.is_file()}
    assert got.keys() == local.keys() and len(local) > 10 and not any(".tmp-" in k for k in got)
    assert got == local
