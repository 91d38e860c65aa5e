"""The commit protocol (rpj_tasks.core.commit): records written last, inputs fingerprinted, stale and dead
temp files removed, concurrent runs safe, and a fault at any commit point never leaves a unit that a
rerun would skip."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from rpj_tasks.core import commit, storage

WRITER = textwrap.dedent("""
    import sys, time
    from rpj_tasks.core import commit, storage
    root, inputs, n, delay = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    out = storage.join(root, "out")
    with commit.UnitCommit(storage.join(root, "record.json"), {"in": inputs}, [out]) as unit:
        for i in range(n):
            with unit.gzip_writer(storage.join(out, f"part{i}.json.gz")) as f:
                f.write((inputs + str(i)).encode() * 1000)
                time.sleep(delay)
        unit.commit({"n": n})
""")


def write_unit(
    root: Path, inputs: str = "v1", n: int = 3, *, fault: str | None = None, delay: float = 0.0, background: bool = False
):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("RPJ_FAULT", None)
    if fault:
        env["RPJ_FAULT"] = fault
    args = [sys.executable, "-c", WRITER, root.as_uri(), inputs, str(n), str(delay)]
    if background:
        return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def test_record_lists_inputs_and_outputs_and_is_written_last(tmp_path):
    assert write_unit(tmp_path).returncode == 0
    record = json.loads((tmp_path / "record.json").read_text())
    assert record["inputs"] == {"in": "v1"} and record["n"] == 3
    assert sorted(record["outputs"]) == ["out/part0.json.gz", "out/part1.json.gz", "out/part2.json.gz"]
    for rel, meta in record["outputs"].items():
        data = (tmp_path / rel).read_bytes()
        assert meta == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    url = (tmp_path / "record.json").as_uri()
    assert commit.finished(url, {"in": "v1"}) == record
    assert commit.finished(url, {"in": "v2"}) is None  # other inputs: redo
    assert list(commit.listed_outputs(url, record)) == sorted(record["outputs"])


def test_missing_or_resized_output_means_unfinished(tmp_path):
    assert write_unit(tmp_path).returncode == 0
    url = (tmp_path / "record.json").as_uri()
    (tmp_path / "out" / "part1.json.gz").write_bytes(b"short")
    assert commit.finished(url, {"in": "v1"}) is None
    (tmp_path / "out" / "part1.json.gz").unlink()
    assert commit.finished(url, {"in": "v1"}) is None


def test_redo_removes_stale_outputs_but_not_foreign_names(tmp_path):
    assert write_unit(tmp_path, n=3).returncode == 0
    (tmp_path / "out" / "keep.txt").write_text("not the unit's")
    out = (tmp_path / "out").as_uri()
    with commit.UnitCommit(
        (tmp_path / "record.json").as_uri(), {"in": "v2"}, [out], owned=lambda name: name.endswith(".json.gz")
    ) as unit:
        unit.write_bytes(storage.join(out, "part0.json.gz"), b"new")
        unit.commit()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt", "part0.json.gz"]


def test_a_failed_redo_leaves_no_record(tmp_path):
    assert write_unit(tmp_path).returncode == 0
    url = (tmp_path / "record.json").as_uri()
    with pytest.raises(RuntimeError, match="boom"):
        with commit.UnitCommit(url, {"in": "v2"}, [(tmp_path / "out").as_uri()]) as unit:
            unit.write_bytes((tmp_path / "out" / "part0.json.gz").as_uri(), b"half of a redo")
            raise RuntimeError("boom")
    assert not (tmp_path / "record.json").exists()
    assert commit.finished(url, {"in": "v1"}) is None


@pytest.mark.parametrize("point,count", [("output", 1), ("output", 2), ("output", 3), ("stale", 1), ("record", 1)])
@pytest.mark.parametrize("action", ["kill", "enospc"])
def test_a_fault_at_any_commit_point_is_redone_to_identical_bytes(tmp_path, point, count, action):
    clean = tmp_path / "clean"
    assert write_unit(clean, "v2").returncode == 0
    root = tmp_path / "faulty"
    assert write_unit(root, "v1").returncode == 0  # an earlier, finished version of the unit
    proc = write_unit(root, "v2", fault=f"{point}:{count}:{action}")
    assert proc.returncode != 0
    if action == "enospc":
        assert "No space left on device" in proc.stderr
    url = (root / "record.json").as_uri()
    assert commit.finished(url, {"in": "v2"}) is None and commit.finished(url, {"in": "v1"}) is None
    assert write_unit(root, "v2").returncode == 0  # the next run redoes it
    assert files(root) == files(clean)


def test_temp_files_of_dead_runs_are_removed_live_ones_kept(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)
    (out / f".part0.json.gz.tmp-{commit.HOST}.{dead_pid}.abcd1234").write_bytes(b"x")
    (out / f".part1.json.gz.tmp-{commit.HOST}.{os.getppid()}.abcd1234").write_bytes(b"y")  # a live process
    (out / ".part2.json.gz.tmp-otherhost.123.abcd1234").write_bytes(b"z")  # unknown: kept until it is old
    with commit.UnitCommit((tmp_path / "r.json").as_uri(), {}, [out.as_uri()]) as unit:
        unit.commit()
    assert sorted(p.name for p in out.iterdir()) == [
        f".part1.json.gz.tmp-{commit.HOST}.{os.getppid()}.abcd1234",
        ".part2.json.gz.tmp-otherhost.123.abcd1234",
    ]


def test_dead_spool_files_are_removed(tmp_path):
    dead = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout)
    spool = Path(tempfile.gettempdir()) / f"{commit.SPOOL_PREFIX}{commit.HOST}.{dead}.abcd1234-xyz"
    spool.write_bytes(b"upload of a killed run")
    commit.remove_dead_spools()
    assert not spool.exists()


def test_two_runs_of_one_unit_at_once_never_break_each_other(tmp_path):
    first = write_unit(tmp_path, n=4, delay=0.05, background=True)
    second = write_unit(tmp_path, n=4, delay=0.05, background=True)
    out1, err1 = first.communicate(timeout=120)
    out2, err2 = second.communicate(timeout=120)
    assert first.returncode == 0, err1
    assert second.returncode == 0, err2
    url = (tmp_path / "record.json").as_uri()
    record = commit.finished(url, {"in": "v1"})
    assert record is not None
    for rel, meta in record["outputs"].items():
        assert hashlib.sha256((tmp_path / rel).read_bytes()).hexdigest() == meta["sha256"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]


def test_relative_names():
    assert commit.relative("s3://b/root/stats/ccnet/2023-06", "s3://b/root/documents/2023-06/0001/en_head.json.gz") == (
        "../../../documents/2023-06/0001/en_head.json.gz"
    )
    assert commit.relative("file:///a/b", "file:///a/b/c/d") == "c/d"


@pytest.mark.parametrize(
    "base,url",
    [
        ("file:///tmp/a/stats/x", "file:///tmp/a/docs/y/z.json.gz"),
        ("s3://b/root/stats/ccnet/2023-06", "s3://b/root/documents/2023-06/0001/en_head.json.gz"),
        ("s3://b/root/stats", "s3://b/root/stats/sub/file"),
    ],
)
def test_relative_and_resolve_round_trip(base, url):
    assert commit.resolve(base, commit.relative(base, url)) == url
