"""``rpj summary``: a few human lines from the per-shard stats records, whatever the shard count."""

import json

from rpj_tasks import cli


def write_records(root, snapshot="2023-06"):
    ccnet = root / "stats" / "ccnet" / snapshot
    annotate = root / "stats" / "annotate" / snapshot
    ccnet.mkdir(parents=True)
    annotate.mkdir(parents=True)
    (ccnet / "0003.json").write_text(
        json.dumps(
            {
                "counts": {
                    "wet.docs": 100,
                    "kept": 60,
                    "kept.en.head": 20,
                    "kept.en.tail": 10,
                    "kept.de.middle": 30,
                    "wet.too_short": 25,
                    "wet.too_large": 2,
                    "lid.dropped.other_language": 15,
                    "wet.skipped.corrupt_gzip": 1,
                },
                "seconds": {},
            }
        )
    )
    (annotate / "0003.json").write_text(json.dumps({"counts": {"files.annotated": 2, "annotate.lines": 50}, "seconds": {}}))


def test_summary_lines_of_a_partly_run_snapshot(tmp_path, capsys):
    write_records(tmp_path)
    assert cli.main(["summary", "--snapshot", "2023-06", "--storage-root", tmp_path.as_uri()]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "snapshot 2023-06: 1/5000 shards mined, 1 annotated"
    assert out[1] == "  not mined yet: shards 0-2,4-4999"
    assert out[2] == "  documents read 100, kept 60 (dropped: 25 too short, 2 too large (max_record_bytes), 15 other language)"
    assert "    de: 30 kept (head 0, middle 30, tail 0)" in out
    assert "    en: 30 kept (head 20, middle 0, tail 10)" in out
    assert "  broken records skipped: corrupt_gzip 1" in out  # wet.too_large is a drop reason, not listed again here
    assert "  quality signals + MinHash: 2 files, 50 documents" in out
    assert len(out) < 15


def test_summary_json(tmp_path, capsys):
    write_records(tmp_path)
    assert cli.main(["summary", "--snapshot", "2023-06", "--storage-root", tmp_path.as_uri(), "--json", "--shards", "0-9"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["not_mined"] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert data["kept_by_language"] == {"de": {"middle": 30}, "en": {"head": 20, "tail": 10}}


def test_summary_names_files_damaged_at_the_source(tmp_path, capsys):
    """Truncation that is in the source is in the download record, and the summary shows it."""
    write_records(tmp_path)
    downloads = tmp_path / "stats" / "download" / "2023-06"
    downloads.mkdir(parents=True)
    seg = "crawl-data/CC-MAIN-2023-06/segments/1.1/wet/CC-MAIN-1-00007.warc.wet.gz"
    (downloads / "0003.json").write_text(
        json.dumps(
            {
                "inputs": {"segments": [seg]},
                "outputs": {f"../../../staging/wet/{seg}": {"sha256": "0" * 64, "bytes": 10, "damage": "truncated: cut"}},
            }
        )
    )
    assert cli.main(["summary", "--snapshot", "2023-06", "--storage-root", tmp_path.as_uri(), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["damaged_sources"] == [{"shard": 3, "file": f"{tmp_path.as_uri()}/staging/wet/{seg}", "damage": "truncated: cut"}]
    assert cli.main(["summary", "--snapshot", "2023-06", "--storage-root", tmp_path.as_uri()]) == 0
    assert "    shard 0003 CC-MAIN-1-00007.warc.wet.gz: truncated: cut" in capsys.readouterr().out


def test_summary_shows_dedup_from_its_records(tmp_path, capsys):
    write_records(tmp_path)
    args = ["summary", "--snapshot", "2023-06", "--storage-root", tmp_path.as_uri()]
    assert cli.main(args) == 0
    assert "  exact dedup: not run; fuzzy: not run" in capsys.readouterr().out.splitlines()
    exact = tmp_path / "staging" / "dedup" / "exact" / "duplicates"
    exact.mkdir(parents=True)
    (exact / "2023-06.json").write_text(json.dumps({"duplicates": 7}))
    fuzzy = tmp_path / "stats" / "clusters" / "2023-06"
    fuzzy.mkdir(parents=True)
    (fuzzy / "sim0.8.json").write_text(json.dumps({"counts": {"lsh.clustered_docs": 9, "lsh.clusters": 4}}))
    assert cli.main(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert "  exact dedup: 7 documents listed as duplicates; fuzzy: 9 documents in 4 clusters at 0.8" in out
    assert cli.main([*args, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["dedup"] == {
        "exact_duplicates": 7,
        "clusters_threshold": 0.8,
        "clustered_documents": 9,
        "clusters": 4,
    }


def test_summary_names_shards_that_failed_validation(tmp_path, capsys):
    write_records(tmp_path)
    validate = tmp_path / "stats" / "validate" / "2023-06"
    validate.mkdir(parents=True)
    (validate / "0003.json").write_text(json.dumps({"result": {"success": False}}))
    assert cli.main(["summary", "--snapshot", "2023-06", "--storage-root", tmp_path.as_uri()]) == 0
    out = capsys.readouterr().out
    assert "  validation FAILED for shards 3: see " in out and "/validation/2023-06/<shard>/data_docs/index.html" in out
    assert cli.main(["summary", "--snapshot", "2023-06", "--storage-root", tmp_path.as_uri(), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["release"]["validation_failed"] == [3]
