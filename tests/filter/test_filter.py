"""Filtering a published snapshot (rpj_tasks/filter/stage.py, ``rpj filter``): the sample snapshot as the
CLI builds it, validated and published once per session (tests/helpers/deploy_harness.py ``published_sample``), then
copied per test."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from deploy_harness import BIN, PUBLISHED_PARTS, REPO, SNAPSHOT, published_sample
from test_recipes import card_gopher_rules_pass
from trees import digests, temp_files

from rpj_tasks.filter import (
    RecipeError,
    count_shard,
    filter_shard,
    finalize,
    load_recipe,
    open_release,
    parse_recipe,
    run_recipe,
)
from rpj_tasks.filter.stage import NotPublishedError, allot, evaluate


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return published_sample(tmp_path_factory.getbasetemp())


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


def fuzzy_losers_after_exact(root: Path, dups: set[str]) -> set[str]:
    """``dedup: both``: clustered documents that survive exact dedup, except each cluster's smallest id_int."""
    survivors = [r for r in listed(root, "clusters") if r["id"] not in dups]
    keeper: dict[int, int] = {}
    for r in survivors:
        keeper[r["cluster_id"]] = min(keeper.get(r["cluster_id"], r["id_int"]), r["id_int"])
    return {r["id"] for r in survivors if r["id_int"] != keeper[r["cluster_id"]]}


def test_only_a_published_snapshot_is_filtered(published: Path, tmp_path: Path) -> None:
    unpublished = tmp_path / "data"
    for part in PUBLISHED_PARTS:
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
    # both: per cluster, the smallest id_int among the members that survive exact dedup is kept
    clusters: dict[int, list[dict[str, Any]]] = {}
    for r in clustered:
        clusters.setdefault(r["cluster_id"], []).append(r)
    survivors = {c: [r for r in members if r["id"] not in dups] for c, members in clusters.items()}
    both_losers = fuzzy_losers_after_exact(root, dups)
    assert got["both"] == everything - dups - both_losers
    assert both_losers != losers - dups  # the sample has a cluster whose representative is an exact duplicate
    for c, members in survivors.items():
        kept = [r["id"] for r in clusters[c] if r["id"] in got["both"]]
        assert len(kept) == (1 if members else 0), (c, kept)
    # the reviewer's case: one copy of this digest is a fuzzy loser, the other an exact duplicate
    pair = {f"{SNAPSHOT}/0001/es_middle.json.gz/5", f"{SNAPSHOT}/0003/es_head.json.gz/1"}
    assert pair <= everything and len(pair & got["both"]) == 1
    manifest = json.loads((root / "filtered" / "d-both" / SNAPSHOT / "manifest.json").read_text())
    fuzzy = {"fuzzy_duplicate": len(both_losers)} if both_losers else {}  # the sample's fuzzy losers are all exact ones
    assert manifest["counts"]["dropped"] == {"exact_duplicate": len(dups), **fuzzy}


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
    losers = fuzzy_losers_after_exact(root, dups)
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
    # a named set's name with other rules is refused (its outputs would mix with the named set's)
    path = tmp_path / "gopher.yaml"
    path.write_text((REPO / "config" / "recipes" / "gopher.yaml").read_text().replace("value: 50,", "value: 60,"))
    with pytest.raises(RecipeError, match="name 'gopher' is a named set"):
        load_recipe(str(path))
    # a user recipe's next version: nothing reused; finalize refuses a mix of versions
    path.write_text((REPO / "config" / "recipes" / "gopher.yaml").read_text().replace("name: gopher", "name: mine"))
    run_recipe(uri, SNAPSHOT, load_recipe(str(path)), formats=("parquet", "jsonl"))
    path.write_text(path.read_text().replace("value: 50,", "value: 60,"))
    changed = load_recipe(str(path))
    release = open_release(uri, SNAPSHOT, changed)
    assert not filter_shard(release, changed, 0, formats=("parquet", "jsonl"))["skipped"]
    with pytest.raises(Exception, match="shard 0001 is not filtered under recipe mine version"):
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

    from rpj_tasks.filter import decide_fuzzy_after_exact

    decide_fuzzy_after_exact(open_release(root.as_uri(), SNAPSHOT, load_recipe("c4")))  # its own kill test: below
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


def patch_release(root: Path, rel: str, data: bytes | None = None, **changes: Any) -> None:
    """Rewrite a published file (``data``) and/or top-level keys of the release manifest, so that the
    filter's size check passes: a hand-made release with one property the real pipeline does not make."""
    url = root / "listings" / f"{SNAPSHOT}.manifest.json"
    manifest = json.loads(url.read_text())
    if data is not None:
        (root / rel).write_bytes(data)
        import hashlib

        manifest["files"][rel] = {**manifest["files"][rel], "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest.update(changes)
    url.write_text(json.dumps(manifest, indent=1, sort_keys=True))


def test_a_rerun_with_fewer_shards_leaves_only_the_manifests_files(root: Path) -> None:
    """Shards of an earlier run that the new manifest does not list are removed (files and records),
    so the documented glob reads exactly the manifest's files."""
    uri = root.as_uri()
    run_recipe(uri, SNAPSHOT, load_recipe("gopher"), formats=("parquet", "jsonl"))
    base = root / "filtered" / "gopher" / SNAPSHOT
    assert {p.parent.name for p in base.glob("*/*.parquet")} == {"0000", "0001", "0002", "0003"}
    result = run_recipe(uri, SNAPSHOT, load_recipe("gopher"), shards=[0, 1])
    manifest = json.loads((base / "manifest.json").read_text())
    assert manifest["shards"] == [0, 1] and result["manifest"] == manifest
    on_disk = {str(p.relative_to(base)) for p in base.rglob("*") if p.is_file() and p.name != "manifest.json"}
    assert on_disk == set(manifest["files"]) and all(f.endswith(".parquet") for f in on_disk)
    assert {str(p.relative_to(base)) for p in base.glob("*/*.parquet")} == set(manifest["files"])
    assert sorted(p.name for p in base.iterdir()) == ["0000", "0001", "manifest.json"]  # no empty shard folder left
    records = {p.name for p in (root / "stats" / "filter" / "gopher" / SNAPSHOT).iterdir()}
    assert records == {"0000.json", "0001.json", "snapshot.json"}
    # the full run again: the removed shards are filtered again, same bytes as a clean run
    run_recipe(uri, SNAPSHOT, load_recipe("gopher"))
    assert {p.parent.name for p in base.glob("*/*.parquet")} == {"0000", "0001", "0002", "0003"}


def test_lone_surrogates_are_written_as_replacement_characters(root: Path) -> None:
    """A JSON "\\ud800" escape decodes to a lone surrogate, which UTF-8 cannot hold: the row is
    written with U+FFFD instead (Parquet and JSON lines) and counted, not a crashed shard."""
    rel = f"documents/{SNAPSHOT}/0000/en_head.json.gz"
    lines = gzip.decompress((root / rel).read_bytes()).splitlines()
    doc = json.loads(lines[0])
    doc["raw_content"] = "bad \ud800 text\n" + doc["raw_content"]
    doc["title"] = "title \udfff"
    lines[0] = json.dumps(doc).encode()  # ensure_ascii: the surrogates as \\ud800 escapes
    assert b"\\ud800" in lines[0]
    patch_release(root, rel, gzip.compress(b"\n".join(lines) + b"\n", mtime=0))
    recipe = parse_recipe({"name": "sur", "dedup": "none", "languages": ["en"], "buckets": ["head"]})
    run_recipe(root.as_uri(), SNAPSHOT, recipe, shards=[0], formats=("parquet", "jsonl"))
    out = root / "filtered" / "sur" / SNAPSHOT / "0000"
    first = pq.read_table(out / "en_head.parquet").to_pylist()[0]
    assert first["id"] == f"{SNAPSHOT}/0000/en_head.json.gz/0"
    assert first["text"].startswith("bad \ufffd text\n") and first["title"] == "title \ufffd"
    assert gzip.decompress((out / "en_head.jsonl.gz").read_bytes()).splitlines()[0].decode().count("\ufffd") == 2
    record = json.loads((root / "stats" / "filter" / "sur" / SNAPSHOT / "0000.json").read_text())
    assert record["stats"]["filter.lone_surrogates_replaced"] == 1


def test_misaligned_tokens_or_signals_are_refused_naming_the_file(root: Path) -> None:
    import io

    rel = f"tokens/{SNAPSHOT}/0000/en_head.tokens.parquet"
    table = pq.read_table(root / rel)
    swapped = table.take([1, 0, *range(2, table.num_rows)])
    buf = io.BytesIO()
    pq.write_table(swapped, buf)
    patch_release(root, rel, buf.getvalue())
    recipe = parse_recipe({"name": "al", "dedup": "none", "languages": ["en"], "buckets": ["head"]})
    with pytest.raises(Exception, match=rf"{re.escape(rel)} row 0 has id .*misaligned"):
        run_recipe(root.as_uri(), SNAPSHOT, recipe, shards=[0])
    pq.write_table(table, buf := io.BytesIO())
    patch_release(root, rel, buf.getvalue())
    srel = f"quality_signals/{SNAPSHOT}/0000/en_head.signals.json.gz"
    lines = gzip.decompress((root / srel).read_bytes()).splitlines()
    patch_release(root, srel, gzip.compress(b"\n".join([lines[1], lines[0], *lines[2:]]) + b"\n", mtime=0))
    with pytest.raises(Exception, match=rf"{re.escape(srel)} line 1 has id .*misaligned"):
        run_recipe(root.as_uri(), SNAPSHOT, load_recipe("gopher"), shards=[0])


def test_no_requested_language_published_is_an_error(root: Path) -> None:
    manifest = json.loads((root / "listings" / f"{SNAPSHOT}.manifest.json").read_text())
    listings = {k: v for k, v in manifest["listings"].items() if k != "de"}
    patch_release(root, f"listings/{SNAPSHOT}.manifest.json", None, listings=listings)
    with pytest.raises(NotPublishedError, match=r"none of the languages \['de'\] of recipe de-only is published"):
        run_recipe(root.as_uri(), SNAPSHOT, parse_recipe({"name": "de-only", "languages": ["de"]}))
    assert not (root / "filtered").exists()


def decision(root: Path) -> dict[str, tuple[float, set[str]]]:
    """The committed dedup-both decisions: ``{key: (record mtime, ids to drop)}``."""
    base = root / "staging" / "filter" / SNAPSHOT / "fuzzy_after_exact"
    out = {}
    for record in sorted(base.glob("*.json")) if base.exists() else []:
        ids = {i for f in sorted((base / record.stem).glob("*.parquet")) for i in pq.read_table(f).column("id").to_pylist()}
        out[record.stem] = (record.stat().st_mtime_ns, ids)
    return out


def test_dedup_both_decision_is_committed_once_reused_and_recomputed_when_the_release_changes(root: Path) -> None:
    """The snapshot-wide keep decision is one committed unit per release version: its ids are the
    in-memory rule's (every duplicates and clusters file), a second recipe reuses it, a mapped task
    without it is refused, and a changed duplicates file gives a new decision."""
    from rpj_tasks.filter import decide_fuzzy_after_exact
    from rpj_tasks.filter.stage import fuzzy_key

    uri = root.as_uri()
    both = parse_recipe({"name": "b1", "dedup": "both"})
    release = open_release(uri, SNAPSHOT, both)
    with pytest.raises(Exception, match="dedup-both decision of this release is not computed"):
        filter_shard(release, both, 0)  # a mapped task never computes it
    run_recipe(uri, SNAPSHOT, both)
    dups = {r["doc_id"] for r in listed(root, "duplicates")}
    first = decision(root)
    assert len(first) == 1
    [(key, (mtime, ids))] = first.items()
    assert key == fuzzy_key(release)
    assert ids == fuzzy_losers_after_exact(root, dups)  # empty: the sample's fuzzy losers are all exact duplicates
    files = sorted(p.name for p in (root / "staging" / "filter" / SNAPSHOT / "fuzzy_after_exact" / key).iterdir())
    assert files == [f"{s:04d}.parquet" for s in range(4)]
    record = json.loads((root / "staging" / "filter" / SNAPSHOT / "fuzzy_after_exact" / f"{key}.json").read_text())
    clustered = listed(root, "clusters")
    assert record["counts"]["clustered"] == len(clustered) and record["counts"]["losers"] == len(ids)
    assert record["counts"]["clustered_exact_duplicates"] == len(dups & {r["id"] for r in clustered}) > 0
    # another recipe (other languages too) reuses it: not recomputed
    run_recipe(uri, SNAPSHOT, parse_recipe({"name": "b2", "dedup": "both", "languages": ["en", "de"]}))
    assert decision(root) == first
    assert decide_fuzzy_after_exact(open_release(uri, SNAPSHOT, both))["skipped"]
    # changed duplicates files (no clustered document listed any more): a new key, recomputed, and
    # now every cluster's representative survives, so the decision is the plain fuzzy rule
    import io

    unlisted = dups & {r["id"] for r in clustered}
    for rel in sorted({f"duplicates/{i.rsplit('/', 1)[0].removesuffix('.json.gz')}.duplicates.parquet" for i in unlisted}):
        table = pq.read_table(root / rel)
        table = table.filter(pc.invert(pc.is_in(table["doc_id"], value_set=pa_strings(unlisted))))
        pq.write_table(table, buf := io.BytesIO())
        patch_release(root, rel, buf.getvalue())
    run_recipe(uri, SNAPSHOT, both)
    second = decision(root)
    assert len(second) == 2 and second[key] == first[key]
    [(new_key, (_, new_ids))] = [(k, v) for k, v in second.items() if k != key]
    new_dups = dups - unlisted
    assert new_ids == fuzzy_losers_after_exact(root, new_dups) == {r["id"] for r in clustered if r["id_int"] != r["cluster_id"]}
    assert new_ids and new_key == fuzzy_key(open_release(uri, SNAPSHOT, both))
    kept = {r["id"] for r in rows(root, "b1")}
    assert kept == set(all_ids(root)) - new_dups - new_ids
    manifest = json.loads((root / "filtered" / "b1" / SNAPSHOT / "manifest.json").read_text())
    assert manifest["counts"]["dropped"]["fuzzy_duplicate"] == len(new_ids)


def pa_strings(values: set[str]) -> Any:
    import pyarrow as pa

    return pa.array(sorted(values), pa.string())


def test_a_killed_dedup_both_decision_is_computed_again(root: Path) -> None:
    """A real ``rpj filter`` killed after the decision's 2nd committed file leaves no record, so the
    next run computes it again (not skipped), to the bytes of an undisturbed computation."""
    import os

    args = [str(BIN / "rpj"), "filter", "--snapshot", SNAPSHOT, "--recipe", "gopher", "--storage-root", root.as_uri()]
    base = root / "staging" / "filter" / SNAPSHOT / "fuzzy_after_exact"
    env = {**os.environ, "RPJ_FAULT": "output:2:kill"}
    killed = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert killed.returncode != 0
    assert not list(base.glob("*.json")) and len(list(base.glob("*/*.parquet"))) == 2
    assert not (root / "filtered").exists()
    env.pop("RPJ_FAULT")
    again = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "dedup both: decision" in again.stderr and "committed" in again.stderr
    resumed = digests(root, "staging/filter")
    assert not temp_files(root, "staging/filter") and len(resumed) == 5
    shutil.rmtree(base)
    clean = subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert clean.returncode == 0 and digests(root, "staging/filter") == resumed


def test_dedup_both_decision_equals_the_in_memory_rule_on_a_larger_release(tmp_path: Path) -> None:
    """Clusters spanning files and shards, a third of each file's clustered documents exact
    duplicates: the streamed decision equals the rule computed over everything in memory."""
    import hashlib

    import numpy as np
    import pyarrow as pa

    from rpj_tasks.core.ids import id_int
    from rpj_tasks.filter.stage import Release, compute_fuzzy_losers

    rng = np.random.default_rng(7)
    files: dict[str, Any] = {}
    clustered: list[tuple[str, int, int]] = []
    dups: set[str] = set()

    def put(rel: str, table: Any) -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, tmp_path / rel)
        data = (tmp_path / rel).read_bytes()
        files[rel] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    for shard in range(10):
        for name in ("de_middle", "en_head"):
            ids = [f"{SNAPSHOT}/{shard:04d}/{name}.json.gz/{i}" for i in sorted(rng.choice(5000, 300, replace=False))]
            ints = [id_int(i) for i in ids]
            cids = rng.integers(0, 1500, len(ids)).tolist()
            put(
                f"clusters/{SNAPSHOT}/{shard:04d}/{name}.clusters.parquet",
                pa.table({"id": ids, "id_int": pa.array(ints, pa.uint64()), "cluster_id": pa.array(cids, pa.uint64())}),
            )
            listed_dups = [ids[j] for j in rng.choice(len(ids), 100, replace=False)]
            put(f"duplicates/{SNAPSHOT}/{shard:04d}/{name}.duplicates.parquet", pa.table({"doc_id": listed_dups}))
            clustered += zip(ids, ints, cids)
            dups |= set(listed_dups)
    survivors = [r for r in clustered if r[0] not in dups]
    keeper: dict[int, int] = {}
    for _, a, c in survivors:
        keeper[c] = min(keeper.get(c, a), a)
    expected = {i for i, a, c in survivors if keeper[c] != a}
    shards, counts = compute_fuzzy_losers(Release(tmp_path.as_uri(), SNAPSHOT, {"files": files}, "", {}))
    got = {shard: ids.to_pylist() for shard, ids in shards}
    assert sorted(got) == list(range(10))
    assert {i for ids in got.values() for i in ids} == expected and sum(map(len, got.values())) == len(expected)
    assert all(i.split("/")[1] == f"{shard:04d}" for shard, ids in got.items() for i in ids)
    assert counts["clustered"] == 6000 and counts["clustered_exact_duplicates"] == 2000
    assert counts["survivors"] == 4000 and counts["losers"] == len(expected) > 1000
    assert counts["clusters_kept"] == len(keeper)
