"""The clusters as three separately runnable steps (clusters_scatter, clusters_group,
clusters_write: one task process each in the DAG) and ``rpj clusters``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_lsh import SNAPSHOT, brute_force, file_bytes, make_root, outputs, write_file

from rpj_tasks import cli
from rpj_tasks.core import commit, layout
from rpj_tasks.core.errors import MissingInputError
from rpj_tasks.dedup import lsh

P = 3


def inputs(urls: list[str]) -> list[lsh.MinHashInput]:
    return [lsh.minhash_input(u) for u in urls]


def steps(root: str, urls: list[str], partitions: int = P, order: list[int] | None = None, **kw) -> dict:
    """The three steps as the DAG runs them (groups in any order); returns the write step's result."""
    first = lsh.clusters_scatter(root, [SNAPSHOT], 0.8, partitions=partitions, batch_files=2, inputs=inputs(urls), **kw)
    json.dumps(first)  # an XCom
    for p in order if order is not None else first["partitions"]:
        json.dumps(lsh.clusters_group(root, [SNAPSHOT], 0.8, p, partitions=partitions, inputs=inputs(urls), **kw))
    last = lsh.clusters_write(root, [SNAPSHOT], 0.8, partitions=partitions, inputs=inputs(urls), **kw)
    json.dumps(last)
    return last


def record(root: str) -> dict:
    found = json.loads(Path(layout.clusters_record_url(root, [SNAPSHOT], 0.8)).read_text())
    return {k: v for k, v in found.items() if k not in ("seconds", "wall_seconds")}


def reset(root: str) -> None:
    shutil.rmtree(Path(root, "clusters"))
    shutil.rmtree(Path(root, "stats", "clusters"))


def work_root(root: str) -> Path:
    return Path(layout.lsh_work_url(root, [SNAPSHOT], 0.8))


@pytest.fixture
def tree(tmp_path: Path) -> tuple[str, list[str], dict[str, bytes], dict]:
    """A small tree, and run_clusters' files and record (timings aside) on it."""
    root, urls = make_root(tmp_path, per_file=150)
    lsh.run_clusters(root, [SNAPSHOT], 0.8, inputs=inputs(urls), partitions=P)
    expected, rec = file_bytes(root), record(root)
    assert expected and rec["counts"]["lsh.clusters"] > 0
    return root, urls, expected, rec


def test_steps_run_separately_give_run_clusters_bytes_and_record(tree) -> None:
    root, urls, expected, rec = tree
    reset(root)
    done = steps(root, urls, order=[2, 0, 1])
    assert file_bytes(root) == expected and record(root) == rec
    assert not done["skipped"] and done["files_with_clusters"] == rec["files_with_clusters"]
    assert done["clusters"] == rec["counts"]["lsh.clusters"]
    assert not work_root(root).exists() or not any(work_root(root).iterdir())


def test_scatter_result_and_content_addressed_work_dir(tree) -> None:
    root, urls, _, _ = tree
    reset(root)
    out = lsh.clusters_scatter(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    unit = lsh.clusters_unit(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    assert out["partitions"] == [0, 1, 2] and out["work"] == unit.work and out["docs"] > 0
    assert Path(unit.work).parent == work_root(root) and len(Path(unit.work).name) == 16
    marker = json.loads(Path(unit.work, lsh.MARKER).read_text())
    assert marker["fingerprint"] == unit.fingerprint and marker["partitions"] == P
    other = lsh.clusters_unit(root, [SNAPSHOT], 0.8, partitions=P + 1, inputs=inputs(urls))
    assert other.work != unit.work  # the partitioning is part of the name
    with pytest.raises(MissingInputError, match="clusters_scatter"):
        lsh.clusters_group(root, [SNAPSHOT], 0.8, 0, partitions=P + 1, inputs=inputs(urls))


def test_group_before_scatter_and_write_before_groups_fail(tree) -> None:
    root, urls, expected, _ = tree
    reset(root)
    with pytest.raises(MissingInputError, match="run clusters_scatter first"):
        lsh.clusters_group(root, [SNAPSHOT], 0.8, 0, partitions=P, inputs=inputs(urls))
    with pytest.raises(MissingInputError, match="run clusters_scatter first"):
        lsh.clusters_write(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    lsh.clusters_scatter(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    lsh.clusters_group(root, [SNAPSHOT], 0.8, 1, partitions=P, inputs=inputs(urls))
    with pytest.raises(MissingInputError, match=r"partition\(s\) 0,2 of 3 .*run clusters_group"):
        lsh.clusters_write(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    again = lsh.clusters_group(root, [SNAPSHOT], 0.8, 1, partitions=P, inputs=inputs(urls))
    assert again["kept"] and again["edges"] > 0  # its edges file (same inputs, by name) is kept
    for p in (0, 2):
        assert not lsh.clusters_group(root, [SNAPSHOT], 0.8, p, partitions=P, inputs=inputs(urls))["kept"]
    lsh.clusters_write(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    assert file_bytes(root) == expected


def test_killed_scatter_leaves_no_marker_and_a_rerun_gives_the_same_bytes(tree, monkeypatch: pytest.MonkeyPatch) -> None:
    root, urls, expected, rec = tree
    real = lsh.scatter

    def dies_on_batch_1(items: list[lsh.MinHashInput], threshold: float, work: str, partitions: int, batch: int) -> dict:
        if batch == 1:
            raise RuntimeError("killed")
        return real(items, threshold, work, partitions, batch)

    monkeypatch.setattr(lsh, "scatter", dies_on_batch_1)
    with pytest.raises(RuntimeError, match="killed"):
        lsh.clusters_scatter(root, [SNAPSHOT], 0.8, partitions=P, batch_files=2, inputs=inputs(urls), force=True)
    assert not Path(layout.clusters_record_url(root, [SNAPSHOT], 0.8)).exists()  # the redo started: unfinished
    unit = lsh.clusters_unit(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    assert Path(unit.work, "bands").exists() and not Path(unit.work, lsh.MARKER).exists()
    for p in range(P):
        with pytest.raises(MissingInputError):
            lsh.clusters_group(root, [SNAPSHOT], 0.8, p, partitions=P, inputs=inputs(urls))
    monkeypatch.setattr(lsh, "scatter", real)
    steps(root, urls)
    assert file_bytes(root) == expected and record(root) == rec


def test_a_missing_or_truncated_batch_file_is_detected(tree) -> None:
    root, urls, _, _ = tree
    lsh.clusters_scatter(root, [SNAPSHOT], 0.8, partitions=P, batch_files=2, inputs=inputs(urls), force=True)
    unit = lsh.clusters_unit(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    Path(lsh.bands_dir(unit.work, 0), "000001.npy").unlink()
    with pytest.raises(MissingInputError, match="2 of 3 batch files"):
        lsh.clusters_group(root, [SNAPSHOT], 0.8, 0, partitions=P, inputs=inputs(urls))
    Path(lsh.bands_dir(unit.work, 1), "000001.npy").write_bytes(b"\x93NUMPY")  # truncated (not fsynced)
    with pytest.raises(MissingInputError, match="unreadable batch file .*run the scatter step again"):
        lsh.clusters_group(root, [SNAPSHOT], 0.8, 1, partitions=P, inputs=inputs(urls))


def test_intermediates_of_other_inputs_are_never_used(tree) -> None:
    root, urls, _, _ = tree
    reset(root)
    lsh.clusters_scatter(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    for p in range(P):
        lsh.clusters_group(root, [SNAPSHOT], 0.8, p, partitions=P, inputs=inputs(urls))
    old = lsh.clusters_unit(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls)).work
    # old-layout intermediates (before work dirs were named by their inputs) must not be read either
    Path(work_root(root), "edges").mkdir()
    shutil.copy(Path(old, "edges", "0000.npy"), Path(work_root(root), "edges", "0000.npy"))
    rng = np.random.default_rng(11)
    write_file(Path(root), 0, "en", "head", [rng.integers(0, 2**32, 128, dtype=np.uint32) for _ in range(10)])
    new = lsh.clusters_unit(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls)).work
    assert new != old and Path(old, "edges", "0000.npy").exists()
    with pytest.raises(MissingInputError):  # the complete state of the old inputs is not this one's
        lsh.clusters_group(root, [SNAPSHOT], 0.8, 0, partitions=P, inputs=inputs(urls))
    with pytest.raises(MissingInputError):
        lsh.clusters_write(root, [SNAPSHOT], 0.8, partitions=P, inputs=inputs(urls))
    steps(root, urls)
    assert outputs(root) == brute_force(urls, 0.8)
    assert not Path(old).exists() and not Path(work_root(root), "edges").exists()  # stale work dirs removed


def test_finished_unit_skips_every_step_and_force_redoes(tree) -> None:
    root, urls, expected, rec = tree
    kw = {"partitions": P, "inputs": inputs(urls)}
    skipped = lsh.clusters_scatter(root, [SNAPSHOT], 0.8, **kw)
    assert skipped["skipped"] and skipped["partitions"] == [0, 1, 2]
    assert all(lsh.clusters_group(root, [SNAPSHOT], 0.8, p, **kw)["skipped"] for p in range(P))
    written = lsh.clusters_write(root, [SNAPSHOT], 0.8, **kw)
    assert written["skipped"] and written["clusters"] == rec["counts"]["lsh.clusters"]
    assert not work_root(root).exists() or not any(work_root(root).iterdir())
    mtimes = {p: p.stat().st_mtime_ns for p in Path(root, "clusters").rglob("*.parquet")}
    done = steps(root, urls, force=True)
    assert not done["skipped"] and file_bytes(root) == expected and record(root) == rec
    assert any(p.stat().st_mtime_ns != t for p, t in mtimes.items())  # rewritten


# ---------------------------------------------------------------- rpj clusters


def annotated(root: str, urls: list[str]) -> None:
    """Annotation records listing the MinHash files (what snapshot_inputs reads)."""
    stats_dir = Path(layout.annotate_stats_dir(root, SNAPSHOT))
    stats_dir.mkdir(parents=True, exist_ok=True)
    for shard in (0, 1):
        listed = {
            commit.relative(str(stats_dir), u): {
                "sha256": hashlib.sha256(Path(u).read_bytes()).hexdigest(),
                "bytes": Path(u).stat().st_size,
            }
            for u in urls
            if f"/{shard:04d}/" in u
        }
        (stats_dir / f"{shard:04d}.json").write_text(json.dumps({"inputs": {}, "outputs": listed}))


def test_cli_clusters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root, urls = make_root(tmp_path, per_file=150)
    annotated(root, urls)
    lsh.run_clusters(root, [SNAPSHOT], 0.8, partitions=P)
    expected, rec = file_bytes(root), record(root)
    reset(root)
    argv = ["clusters", "--snapshot", SNAPSHOT, "--storage-root", root, "--partitions", "5", "--workers", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out.strip().splitlines()
    c = rec["counts"]
    assert out == [
        f"clusters {SNAPSHOT} sim0.8: {c['lsh.docs']} docs, {c['lsh.clustered_docs']} clustered docs in "
        f"{c['lsh.clusters']} clusters, {rec['files_with_clusters']} files written, {out[0].rsplit(', ', 1)[1]}"
    ]
    assert out[0].endswith(" s")
    assert file_bytes(root) == expected and record(root) == rec
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.strip() == f"clusters {SNAPSHOT} sim0.8: finished earlier, skipped (--force recomputes)"
    assert cli.main([*argv, "--force", "--threshold", "0.80"]) == 0
    assert "files written" in capsys.readouterr().out and file_bytes(root) == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threshold", "0.85"], "--threshold '0.85': expected one of 1.0, 0.9, 0.8, 0.7"),
        (["--threshold", "high"], "--threshold 'high'"),
        (["--snapshot", "2023-6"], "invalid snapshot id '2023-6'"),
    ],
)
def test_cli_clusters_bad_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    assert cli.main(["clusters", "--snapshot", SNAPSHOT, "--storage-root", str(tmp_path), *args]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
    assert captured.err.startswith("rpj: error: ") and message in captured.err


def test_cli_clusters_without_annotation_records(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["clusters", "--snapshot", SNAPSHOT, "--storage-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no annotation records" in err[0]
