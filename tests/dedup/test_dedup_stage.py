"""Exact dedup as the pipeline runs it (rpj_tasks/dedup/stage.py, ``rpj dedup``): the set comes from
the registry (release-scope snapshots under one storage root, or a snapshot alone), snapshots
arrive in any order, a per-snapshot dedup never touches the release's state, the memory budget is
checked first, and release settings must agree."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_exact import PLANTED, file_bytes, file_stamps, oracle, read_outputs, write_data

from rpj_tasks.cli import main
from rpj_tasks.core.config import ConfigError, load_registry

ALONE = "2021-49"  # deduplicated alone (dedup_scope: snapshot), same storage root


def registry(tmp_path: Path, root: str, *, budget: int = 2 << 30, alone_partitions: int = 2, release_partitions: int = 4) -> str:
    path = tmp_path / "snapshots.yaml"
    entries = "\n".join(f'  - {{id: "{s}"}}' for s in PLANTED)
    path.write_text(
        f"""defaults:
  storage_root: {root}
  source_base: https://data.commoncrawl.org/
  num_shards: 4
  dedup_partitions: {release_partitions}
  dedup_memory_budget: {budget}
snapshots:
{entries}
  - {{id: "{ALONE}", dedup_scope: snapshot, dedup_partitions: {alone_partitions}}}
"""
    )
    return str(path)


def rpj_dedup(reg: str, snapshot: str, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["--registry", reg, "dedup", "--snapshot", snapshot, *extra])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("order", [sorted(PLANTED), sorted(PLANTED, reverse=True)], ids=["oldest-first", "newest-first"])
def test_rpj_dedup_builds_the_release_in_any_arrival_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], order: list[str]
) -> None:
    root = (tmp_path / "data").as_uri()
    reg = registry(tmp_path, root)
    for snap in order:
        write_data(root, PLANTED, [snap])
        code, out, err = rpj_dedup(reg, snap, capsys)
        assert code == 0, err
        assert f"dedup set (scope release): {', '.join(sorted(order[: order.index(snap) + 1], reverse=True))}" in out
    assert read_outputs(str(tmp_path / "data")) == oracle(PLANTED, list(PLANTED))
    # a rerun changes nothing and says so
    before = file_bytes(str(tmp_path / "data"))
    code, out, _ = rpj_dedup(reg, order[0], capsys)
    assert code == 0 and "(finished earlier)" in out and "0 of 4 partitions merged" in out
    assert file_bytes(str(tmp_path / "data")) == before


def test_a_snapshot_deduplicated_alone_leaves_the_release_untouched(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = (tmp_path / "data").as_uri()
    reg = registry(tmp_path, root)
    write_data(root, PLANTED)
    for snap in PLANTED:
        assert rpj_dedup(reg, snap, capsys)[0] == 0
    release = read_outputs(str(tmp_path / "data"))
    stamps = {
        **file_stamps(str(tmp_path / "data"), "duplicates"),
        **file_stamps(str(tmp_path / "data"), "staging/dedup/exact/release"),
    }
    # ALONE holds a copy of the newest snapshot's data: alone, only its own repeats are duplicates
    alone = {ALONE: PLANTED["2023-14"]}
    write_data(root, alone)
    code, out, err = rpj_dedup(reg, ALONE, capsys)
    assert code == 0, err
    assert f"dedup set (scope snapshot): {ALONE};" in out
    outputs = read_outputs(str(tmp_path / "data"))
    assert {k: v for k, v in outputs.items() if k.startswith(ALONE)} == oracle(alone, [ALONE])
    assert {k: v for k, v in outputs.items() if not k.startswith(ALONE)} == release
    assert {
        **file_stamps(str(tmp_path / "data"), "duplicates"),
        **file_stamps(str(tmp_path / "data"), "staging/dedup/exact/release"),
    } == {
        **stamps,
        **{k: v for k, v in file_stamps(str(tmp_path / "data"), "duplicates").items() if f"/{ALONE}/" in k},
    }
    # and the next release run does not take it in
    code, out, _ = rpj_dedup(reg, "2023-14", capsys)
    assert code == 0 and ALONE not in out.split("dedup set")[1].split("\n")[0]


def test_over_the_memory_budget_nothing_runs_and_the_setting_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = (tmp_path / "data").as_uri()
    reg = registry(tmp_path, root, budget=1 << 20)
    write_data(root, PLANTED)
    code, _, err = rpj_dedup(reg, "2023-14", capsys, "--index-only")
    assert code == 0, err
    # the index fits; the merge is checked against a budget below what one partition needs
    reg = registry(tmp_path, root, budget=1 << 20)
    from rpj_tasks.dedup import exact

    exact_rows = exact.MERGE_BYTES_PER_ROW
    assert exact_rows * 10 < 1 << 20  # the planted data is small: shrink the budget through the bytes per row
    exact.MERGE_BYTES_PER_ROW, saved = 1 << 20, exact.MERGE_BYTES_PER_ROW
    try:
        code, out, err = rpj_dedup(reg, "2023-14", capsys)
    finally:
        exact.MERGE_BYTES_PER_ROW = saved
    assert code == 2
    assert "memory_budget" in err and "partitions" in err and err.count("\n") == 1
    assert not (tmp_path / "data" / "duplicates").exists()


def test_release_snapshots_must_agree_on_their_dedup_settings(tmp_path: Path) -> None:
    path = tmp_path / "snapshots.yaml"
    path.write_text(
        """defaults:
  storage_root: file:///tmp/x
  source_base: https://data.commoncrawl.org/
snapshots:
  - {id: "2023-06"}
  - {id: "2023-14", dedup_partitions: 128}
  - {id: "2023-23", dedup_partitions: 64, dedup_scope: snapshot}
"""
    )
    with pytest.raises(ConfigError, match="2023-06 and 2023-14 .* dedup_partitions"):
        load_registry(path)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("dedup_scope", "global"),
        ("dedup_partitions", 0),
        ("dedup_memory_budget", "2G"),
        ("dedup_queue", "a b"),
        ("clusters_threshold", 0.75),
    ],
)
def test_bad_dedup_settings_are_refused_naming_the_key(tmp_path: Path, key: str, value: object) -> None:
    path = tmp_path / "snapshots.yaml"
    path.write_text(
        f"""defaults:
  storage_root: file:///tmp/x
  source_base: https://data.commoncrawl.org/
snapshots:
  - {{id: "2023-06", {key}: {value!r}}}
"""
    )
    with pytest.raises(ConfigError, match=key):
        load_registry(path)
