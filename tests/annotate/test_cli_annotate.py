"""``rpj annotate``: which shards it takes, that it needs no Common Crawl listing, and that it refuses
a signal-artifacts directory without a MANIFEST.json (a mistyped version) with a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_annotate import SNAPSHOT, vector_lines, write_artifacts, write_shard

from rpj_tasks import cli

VERSION = "rpv2-official"  # the registry's signals_version for 2023-06


def rpj_annotate(root: Path, *extra: str) -> list[str]:
    # source_base points nowhere: annotation must not need the WET listing
    return [
        "--registry",
        "config/snapshots.yaml",
        "annotate",
        "--snapshot",
        SNAPSHOT,
        "--storage-root",
        root.as_uri(),
        "--source-base",
        (root / "no-such-mirror").as_uri(),
        "--num-shards",
        "4",
        *extra,
    ]


@pytest.fixture()
def mined(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Shards 1 and 3 of 4 mined (documents + CCNet stats record), shard 2 has documents but no
    record (unfinished), and the signal artifacts of the registry's version under the root."""
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    en = vector_lines(shared_data, "en")
    for shard in (1, 3):
        write_shard(tmp_path, {"en_head.json.gz": en}, shard=shard)
    write_shard(tmp_path, {"en_head.json.gz": en}, shard=2, marker=False)
    write_artifacts(tmp_path / "artifacts" / "signals" / VERSION, shared_data, "cpython-seed42")
    return tmp_path


def annotated(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "stats" / "annotate" / SNAPSHOT).glob("*.json"))


def test_without_shards_it_annotates_every_mined_shard(mined: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(rpj_annotate(mined)) == 0
    assert capsys.readouterr().out.splitlines() == ["annotate shard 0001: done", "annotate shard 0003: done"]
    assert annotated(mined) == ["0001.json", "0003.json"]
    assert (mined / "quality_signals" / SNAPSHOT / "0003" / "en_head.signals.json.gz").is_file()
    # a rerun skips both; --limit takes the first mined shard only
    assert cli.main(rpj_annotate(mined, "--limit", "1")) == 0
    assert capsys.readouterr().out.splitlines() == ["annotate shard 0001: skipped (finished)"]


def test_an_unfinished_shard_asked_for_is_a_clear_error(mined: Path, capsys: pytest.CaptureFixture) -> None:
    assert cli.main(rpj_annotate(mined, "--shards", "2")) == 2
    assert "shard 0002 of 2023-06 has no CCNet stats record" in capsys.readouterr().err
    assert annotated(mined) == []


def test_no_mined_shard_at_all(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(Path(__file__).resolve().parents[2])
    assert cli.main(rpj_annotate(tmp_path)) == 2
    assert "no mined shards of 2023-06 under" in capsys.readouterr().err


def test_artifacts_without_manifest_are_refused(mined: Path, capsys: pytest.CaptureFixture) -> None:
    (mined / "artifacts" / "signals" / VERSION / "MANIFEST.json").unlink()
    assert cli.main(rpj_annotate(mined, "--shards", "1")) == 2
    err = capsys.readouterr().err
    assert f"no signal artifacts at {(mined / 'artifacts' / 'signals' / VERSION).as_uri()} (no MANIFEST.json)" in err
    assert "rpj signal-artifacts" in err
    assert annotated(mined) == [] and not (mined / "quality_signals").exists()
