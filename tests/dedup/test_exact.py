"""Exact dedup (rpj_tasks/dedup/exact.py): the duplicates files against a brute-force oracle of the
RPv2 semantics (docs/spec/rpv2_format.md §6, D7/D8 fixed), arrival-order independence, incremental
rewrites, reruns, killed runs and the memory budget.

The documents files are hand-made (only ``url`` and ``digest`` matter) and published through the
commit protocol with a CCNet stats record, as the mine stage does, at the paths of the layout.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from rpj_tasks.core import commit, layout
from rpj_tasks.core.errors import ConfigError, MissingInputError
from rpj_tasks.core.schema import DUPLICATES_SCHEMA
from rpj_tasks.dedup import exact
from rpj_tasks.dedup.exact import ExactDedupConfig, index_snapshot, run_exact_dedup

REPO = Path(__file__).resolve().parents[2]
BAD = "<bad line>"  # a line that is not JSON
NO_DIGEST = "<no digest>"  # a JSON document without a usable digest

# {snapshot: {shard: {(lang, bucket): [digest or BAD / NO_DIGEST per line]}}}
Data = dict[str, dict[int, dict[tuple[str, str], list[str]]]]


def dg(name: object) -> str:
    return "sha1:" + base64.b32encode(hashlib.sha1(str(name).encode()).digest()).decode()


def write_shard(root: str, snapshot: str, shard: int, files: dict[tuple[str, str], list[str]]) -> None:
    """The documents files of one shard and its CCNet record, as the mine stage publishes them."""
    out_dir = layout.shard_dir(root, "documents", snapshot, shard)
    with commit.UnitCommit(layout.ccnet_stats_url(root, snapshot, shard), {"test": 1}, [out_dir]) as unit:
        for (lang, bucket), lines in files.items():
            with unit.gzip_writer(layout.documents_url(root, snapshot, shard, lang, bucket)) as f:
                for i, digest in enumerate(lines):
                    if digest == BAD:
                        f.write(b'{"url": "broken\n')
                        continue
                    doc: dict[str, Any] = {"url": f"https://example.com/{snapshot}/{shard}/{lang}/{i}", "date_download": "x"}
                    if digest != NO_DIGEST:
                        doc["digest"] = digest
                    doc.update({"raw_content": f"text {i}", "language": lang, "bucket": bucket})
                    f.write(json.dumps(doc, ensure_ascii=False).encode() + b"\n")
        unit.commit({})


def write_data(root: str, data: Data, snapshots: list[str] | None = None) -> None:
    for snap in snapshots or list(data):
        for shard, files in data[snap].items():
            write_shard(root, snap, shard, files)


def oracle(data: Data, snapshots: list[str], scope: str = "release") -> dict[str, list[tuple[str, str, str]]]:
    """The duplicates of every head/middle file, by the definition: scan newest snapshot first, then
    shard, language, bucket (head before middle), line; list every digest already seen."""
    seen: set[str] = set()
    out: dict[str, list[tuple[str, str, str]]] = {}
    for snap in sorted(snapshots, reverse=True):
        if scope == "snapshot":
            seen = set()
        for shard in sorted(data[snap]):
            for lang, bucket in sorted(data[snap][shard], key=lambda f: (f[0], layout.BUCKETS.index(f[1]))):
                if bucket == "tail":
                    continue
                key = layout.shard_key(snap, shard, lang, bucket)
                rows = out.setdefault(layout.base_tag(snap, shard, lang, bucket), [])
                for i, digest in enumerate(data[snap][shard][(lang, bucket)]):
                    if digest in (BAD, NO_DIGEST):
                        continue
                    if digest in seen:
                        rows.append((key, f"{key}/{i}", digest.removeprefix("sha1:")))
                    seen.add(digest)
    return out


def read_outputs(root: str) -> dict[str, list[tuple[str, str, str]]]:
    """Every duplicates file under ``root`` as rows, by base tag (schema checked)."""
    out = {}
    for path in sorted(Path(root, "duplicates").rglob(f"*{layout.DUPLICATES_SUFFIX}")):
        table = pq.read_table(path)
        assert table.schema.equals(DUPLICATES_SCHEMA, check_metadata=False)
        tag = str(path.relative_to(Path(root, "duplicates")))[: -len(layout.DUPLICATES_SUFFIX)]
        out[tag] = list(zip(*(table.column(c).to_pylist() for c in DUPLICATES_SCHEMA.names)))
    return out


def file_bytes(root: str, sub: str = "duplicates") -> dict[str, bytes]:
    """Every data file below ``root/sub`` (records excluded: they hold timings)."""
    files = sorted(Path(root, sub).rglob("*"))
    return {str(p.relative_to(root)): p.read_bytes() for p in files if p.is_file() and p.suffix != ".json"}


def file_stamps(root: str, sub: str) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in Path(root, sub).rglob("*") if p.is_file()}


def process(root: str, data: Data, order: list[str], config: ExactDedupConfig, *, every_arrival: bool = True) -> None:
    """Snapshots arrive in ``order``: each is written and indexed, then dedup runs over the set so far."""
    for i, snap in enumerate(order):
        write_data(root, data, [snap])
        index_snapshot(root, snap, data[snap], config)
        if every_arrival or i == len(order) - 1:
            run_exact_dedup(root, order[: i + 1], config)


# ---------------------------------------------------------------- planted data

A, B, C, D, E, U = dg("A"), dg("B"), dg("C"), dg("D"), dg("E"), dg("unique")
PLANTED: Data = {
    "2023-14": {  # newest: its first occurrences win
        1: {("en", "head"): [dg("u1"), A, B], ("en", "tail"): [C, D]},
        0: {("fr", "middle"): [A], ("de", "head"): [dg("u2")], ("en", "middle"): [E, E]},
    },
    "2023-06": {
        0: {("en", "head"): [A, dg("u3"), C], ("en", "middle"): [C, BAD, D], ("de", "middle"): [D, NO_DIGEST, B]},
        3: {("it", "head"): [E, D, dg("u4")], ("es", "tail"): [dg("u4"), A]},
    },
    "2022-49": {0: {("en", "head"): [B, C, D, U]}, 2: {("en", "middle"): [U]}},
}


CFG = ExactDedupConfig(partitions=4)


def test_planted_duplicates_give_the_expected_files(tmp_path: Path) -> None:
    root = str(tmp_path)
    process(root, PLANTED, ["2023-14", "2023-06", "2022-49"], CFG, every_arrival=False)
    out = read_outputs(root)
    assert out == oracle(PLANTED, list(PLANTED))

    def ids(tag: str) -> list[str]:
        return [doc_id.split(".json.gz/")[1] for _, doc_id, _ in out[tag]]

    # 2023-14: shard 0 before shard 1; de < en < fr; the second E of the same file is a duplicate
    assert ids("2023-14/0000/en_middle") == ["1"]
    assert ids("2023-14/0000/fr_middle") == []  # the first A of the release
    assert ids("2023-14/0001/en_head") == ["1"]  # A seen in shard 0; B is first here
    # 2023-06: A and B are newer-snapshot duplicates; C first at en_head line 2, so en_middle line 0 is
    # a duplicate (head before middle); D first in de_middle (de < en); the tail's C and D count for nothing
    assert ids("2023-06/0000/en_head") == ["0"]
    assert ids("2023-06/0000/en_middle") == ["0", "2"]
    assert ids("2023-06/0000/de_middle") == ["2"]
    assert ids("2023-06/0003/it_head") == ["0", "1"]
    assert ids("2022-49/0000/en_head") == ["0", "1", "2"]  # U is first here, listed again in shard 2
    assert ids("2022-49/0002/en_middle") == ["0"]
    assert out["2022-49/0002/en_middle"] == [
        ("2022-49/0002/en_middle.json.gz", "2022-49/0002/en_middle.json.gz/0", U.removeprefix("sha1:"))
    ]
    assert not any(tag.endswith("_tail") for tag in out)  # tail files are never read nor written
    assert set(out) == {tag for tag in oracle(PLANTED, list(PLANTED))}  # one file per head/middle file, empty or not
    record = commit.load_record(exact.index_record_url(root, "2023-06"))
    assert record is not None and record["counts"]["dedup.bad_line"] == 2 and record["counts"]["dedup.bad_digest"] == 1


def test_scope_snapshot_dedups_each_snapshot_alone(tmp_path: Path) -> None:
    root = str(tmp_path)
    config = ExactDedupConfig(partitions=4, scope="snapshot")
    process(root, PLANTED, list(PLANTED), config, every_arrival=False)
    assert read_outputs(root) == oracle(PLANTED, list(PLANTED), scope="snapshot")


def random_data(seed: int, snapshots: list[str], shards: int = 3, lines: int = 40, pool: int = 400) -> Data:
    """Random files whose digests come from a pool: many duplicates, within and across snapshots."""
    rng = random.Random(seed)
    files = [(lang, bucket) for lang in ("de", "en", "fr") for bucket in layout.BUCKETS]
    data: Data = {}
    for snap in snapshots:
        data[snap] = {}
        for shard in rng.sample(range(6), shards):
            chosen = rng.sample(files, 3)
            data[snap][shard] = {f: [dg(rng.randrange(pool)) for _ in range(rng.randint(0, lines))] for f in chosen}
    return data


SNAPS3 = ["2021-04", "2022-05", "2023-06"]


@pytest.mark.parametrize("order", [SNAPS3, SNAPS3[::-1], ["2022-05", "2023-06", "2021-04"]], ids=["oldest", "newest", "mixed"])
def test_arrival_order_does_not_change_the_bytes(tmp_path: Path, order: list[str]) -> None:
    data = random_data(1, SNAPS3)
    scratch = str(tmp_path / "scratch")
    process(scratch, data, SNAPS3, CFG, every_arrival=False)
    assert read_outputs(scratch) == oracle(data, SNAPS3)
    incremental = str(tmp_path / "incremental")
    process(incremental, data, order, CFG)  # dedup after every arrival
    assert file_bytes(incremental) == file_bytes(scratch)


@pytest.mark.parametrize("partitions", [1, 3, 16])
def test_the_partition_count_does_not_change_the_bytes(tmp_path: Path, partitions: int) -> None:
    data = random_data(2, SNAPS3)
    reference = str(tmp_path / "p4")
    process(reference, data, SNAPS3, CFG, every_arrival=False)
    other = str(tmp_path / f"p{partitions}")
    process(other, data, SNAPS3[::-1], ExactDedupConfig(partitions=partitions), every_arrival=False)
    assert file_bytes(other) == file_bytes(reference)


def test_rerun_gives_the_same_bytes_and_rewrites_nothing(tmp_path: Path) -> None:
    root = str(tmp_path)
    data = random_data(3, SNAPS3)
    process(root, data, SNAPS3, CFG)
    before, stamps = (
        file_bytes(root),
        {**file_stamps(root, "duplicates"), **file_stamps(root, "staging/dedup/exact/release/dups")},
    )
    for snap in SNAPS3:
        assert index_snapshot(root, snap, data[snap], CFG)["skipped"]
    assert run_exact_dedup(root, SNAPS3, CFG) == {
        "snapshots": SNAPS3[::-1],
        "max_partition_bytes": max(exact.memory_plan(root, SNAPS3, CFG)),
        "partitions_written": 0,
        "files_written": {},
    }
    # forced: every step runs again, compares and writes nothing (and a re-indexed snapshot never
    # becomes a duplicate of itself)
    for snap in SNAPS3:
        index_snapshot(root, snap, data[snap], CFG, force=True)
    for p in range(CFG.partitions):
        assert exact.dedup_partition(root, SNAPS3, p, CFG, force=True)["written"] == []
    for snap in SNAPS3:
        assert exact.write_duplicates(root, snap, SNAPS3, CFG, force=True)["written"] == []
    assert file_bytes(root) == before
    assert {**file_stamps(root, "duplicates"), **file_stamps(root, "staging/dedup/exact/release/dups")} == stamps


def test_exact_against_a_brute_force_set(tmp_path: Path) -> None:
    """A few thousand random digests, a third of them repeated: exactly the repeats are listed."""
    root = str(tmp_path)
    snaps = ["2020-05", "2021-10", "2022-21", "2023-14"]
    data = random_data(4, snaps, shards=4, lines=120, pool=3000)
    process(root, data, snaps, ExactDedupConfig(partitions=8), every_arrival=False)
    out = read_outputs(root)
    assert out == oracle(data, snaps)
    counts: dict[str, int] = {}
    total = 0
    for snap in snaps:
        for files in data[snap].values():
            for (_, bucket), lines in files.items():
                if bucket != "tail":
                    total += len(lines)
                    for digest in lines:
                        counts[digest] = counts.get(digest, 0) + 1
    listed = [digest for rows in out.values() for _, _, digest in rows]
    assert total > 2000 and len(listed) == sum(n - 1 for n in counts.values())
    assert all(counts["sha1:" + digest] > 1 for digest in listed)  # a unique document is never listed


def test_an_eleventh_newest_snapshot_rewrites_only_the_affected_files(tmp_path: Path) -> None:
    snaps = [f"20{13 + i // 2}-{10 + 20 * (i % 2)}" for i in range(11)]  # 2013-10 ... 2018-10
    data = random_data(5, snaps, shards=2, lines=12, pool=2000)
    newest = snaps[-1]
    root = str(tmp_path / "incremental")
    process(root, data, snaps[:10], CFG, every_arrival=False)
    before, stamps = file_bytes(root), file_stamps(root, "duplicates")
    write_data(root, data, [newest])
    index_snapshot(root, newest, data[newest], CFG)  # index it ...
    result = run_exact_dedup(root, snaps, CFG)  # ... and dedup the eleven
    after = file_bytes(root)
    changed = {name for name in before if after[name] != before[name]}
    assert changed  # the newest snapshot took some first occurrences
    written = {f"duplicates/{tag}{layout.DUPLICATES_SUFFIX}" for tags in result["files_written"].values() for tag in tags}
    new_files = {name for name in after if name.startswith(f"duplicates/{newest}/")}
    assert written == changed | new_files
    stamps_after = file_stamps(root, "duplicates")
    assert {n for n in stamps if stamps_after[n] != stamps[n]} == changed  # the others were not touched
    scratch = str(tmp_path / "scratch")
    process(scratch, data, snaps, CFG, every_arrival=False)
    assert after == file_bytes(scratch)
    assert read_outputs(root) == oracle(data, snaps)


def run_in_subprocess(root: str, fault: str, partitions: int) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys; from rpj_tasks.dedup.exact import ExactDedupConfig, run_exact_dedup; "
        f"run_exact_dedup(sys.argv[1], None, ExactDedupConfig(partitions={partitions}))"
    )
    env = {**os.environ, "RPJ_FAULT": fault}
    return subprocess.run([sys.executable, "-c", code, root], env=env, capture_output=True, text=True, cwd=REPO, timeout=120)


@pytest.mark.parametrize(
    "fault",
    ["output:3:kill", "output:20:kill", "stale:2:kill", "record:5:enospc"],
    ids=["killed-in-partitions", "killed-in-files", "killed-before-stale", "disk-full"],
)
def test_a_killed_dedup_leaves_the_earlier_state_and_a_rerun_finishes_it(tmp_path: Path, fault: str) -> None:
    data = random_data(6, SNAPS3 + ["2023-40"])
    root = str(tmp_path / "run")
    process(root, data, SNAPS3, CFG)
    earlier = file_bytes(root)
    write_data(root, data, ["2023-40"])
    index_snapshot(root, "2023-40", data["2023-40"], CFG)
    failed = run_in_subprocess(root, fault, CFG.partitions)
    assert failed.returncode == (-9 if fault.endswith("kill") else 1), failed.stderr[-2000:]
    middle = file_bytes(root)
    scratch = str(tmp_path / "scratch")
    process(scratch, data, SNAPS3 + ["2023-40"], CFG, every_arrival=False)
    final = file_bytes(scratch)
    for name, data_bytes in middle.items():  # every visible file is whole: the earlier one or the final one
        assert data_bytes in (earlier.get(name), final.get(name)), name
    if fault == "output:3:kill":  # died among the partitions: no duplicates file changed
        assert middle == earlier
    run_exact_dedup(root, None, CFG)
    assert file_bytes(root) == final


def test_the_memory_budget_refuses_naming_the_setting(tmp_path: Path) -> None:
    root = str(tmp_path)
    process(root, PLANTED, list(PLANTED), CFG, every_arrival=False)
    plan = exact.memory_plan(root, list(PLANTED), CFG)
    rows = [sum(commit.load_record(exact.index_record_url(root, s))["rows"][p] for s in PLANTED) for p in range(4)]  # type: ignore[index]
    assert plan == [r * exact.MERGE_BYTES_PER_ROW for r in rows]
    small = ExactDedupConfig(partitions=4, memory_budget=max(plan) - 1)
    before = file_bytes(root, "staging")
    with pytest.raises(ConfigError, match=r"memory budget .*memory_budget.*partitions"):
        run_exact_dedup(root, list(PLANTED), small)
    with pytest.raises(ConfigError, match=r"partition 00\d needs .* rows x 112 bytes"):
        exact.dedup_partition(root, list(PLANTED), int(np.argmax(plan)), small, force=True)
    with pytest.raises(ConfigError, match=r"the index of 2023-06, partition \d needs .*memory_budget"):
        index_snapshot(root, "2023-06", PLANTED["2023-06"], ExactDedupConfig(partitions=4, memory_budget=100), force=True)
    with pytest.raises(ConfigError, match=r"the duplicates files of 2022-49 needs .* rows x 72 bytes"):
        exact.write_duplicates(root, "2022-49", list(PLANTED), ExactDedupConfig(partitions=4, memory_budget=1), force=True)
    assert file_bytes(root, "staging") == before


def test_the_merge_stays_within_the_memory_formula() -> None:
    rng = np.random.default_rng(0)
    arrays = []
    for k in range(5):
        rows = np.zeros(40_000, dtype=exact.ROW)
        rows["d0"] = rng.integers(0, 3000, len(rows), dtype=np.uint64)  # many duplicates
        rows["d1"], rows["d2"] = rng.integers(0, 2, len(rows)), 7
        rows["pos"] = np.arange(len(rows)) + k
        arrays.append(rows)
    n = sum(len(a) for a in arrays)
    distinct = len({(int(a), int(b)) for rows in arrays for a, b in zip(rows["d0"], rows["d1"])})
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    found = exact.find_duplicates(arrays)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    held = n * exact.ROW.itemsize  # the loaded rows, held by the caller before the call
    assert held + peak <= n * exact.MERGE_BYTES_PER_ROW, (held + peak) / n
    assert sum(len(f) for f in found) == n - distinct


def test_positions_sort_as_shard_language_bucket_line() -> None:
    keys = [
        (s, lang, b, line)
        for s in (0, 1, 4999)
        for lang in ("de", "en", "enx", "eo", "it", "zzz")
        for b in ("head", "middle")
        for line in (0, 5, 2**31 - 1)
    ]
    packed = [exact.position(*k) for k in keys]
    assert packed == sorted(packed) and len(set(packed)) == len(packed)
    assert all(exact.unpack(p) == k for p, k in zip(packed, keys))
    assert exact.digest_bytes(A) == hashlib.sha1(b"A").digest()
    for bad in ("sha1:" + "a" * 32, "sha1:" + "A" * 31, "md5:" + "A" * 32, None, 5, "sha1:" + "1" * 32):
        assert exact.digest_bytes(bad) is None


def test_missing_inputs_and_mismatched_settings(tmp_path: Path) -> None:
    root = str(tmp_path)
    with pytest.raises(MissingInputError, match="CCNet stats record"):
        index_snapshot(root, "2023-06", [0], CFG)
    process(root, PLANTED, ["2023-14"], CFG)
    with pytest.raises(MissingInputError, match="no index"):
        run_exact_dedup(root, ["2023-14", "2023-06"], CFG)
    with pytest.raises(ConfigError, match="4 partitions, not 8"):
        run_exact_dedup(root, ["2023-14"], ExactDedupConfig(partitions=8))
    write_data(root, PLANTED, ["2023-06"])
    index_snapshot(root, "2023-06", PLANTED["2023-06"], CFG)
    with pytest.raises(MissingInputError, match="dedup_partition"):  # its partitions ran for 2023-14 alone
        exact.write_duplicates(root, "2023-14", ["2023-14", "2023-06"], CFG)
    with pytest.raises(ConfigError):
        ExactDedupConfig(scope="global")
    with pytest.raises(ConfigError):
        ExactDedupConfig(partitions=0)


def test_the_index_spools_in_chunks_with_the_same_result(tmp_path: Path) -> None:
    """A budget of a few KB makes chunks of 8 rows (many appends per partition): same index, same files."""
    data = random_data(7, SNAPS3, lines=10, pool=60)
    big, small = str(tmp_path / "big"), str(tmp_path / "small")
    process(big, data, SNAPS3, CFG, every_arrival=False)
    tiny = ExactDedupConfig(partitions=4, memory_budget=8 * 4 * exact.CHUNK_BYTES_PER_ROW)
    with exact.IndexSpool("2023-06", tiny) as spool:
        assert spool.chunk_rows == 8
    write_data(small, data, SNAPS3)
    for snap in SNAPS3:
        index_snapshot(small, snap, data[snap], tiny)
    run_exact_dedup(small, SNAPS3, CFG)  # the budget is not part of the inputs
    assert file_bytes(small) == file_bytes(big)
    assert file_bytes(small, "staging/dedup/exact/index") == file_bytes(big, "staging/dedup/exact/index")


def test_a_killed_index_builds_spool_is_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exact.tempfile, "tempdir", str(tmp_path))
    dead = tmp_path / f"{exact.SPOOL_PREFIX}{commit.HOST}.{2**22 + 12345}.deadbeef-abc"  # no such process
    dead.mkdir()
    (dead / "0.rows").write_bytes(b"x" * 28)
    alive = tmp_path / f"{exact.SPOOL_PREFIX}{commit.HOST}.{os.getppid()}.cafe0000-abc"  # a live process
    alive.mkdir()
    with exact.IndexSpool("2023-06", CFG) as spool:
        assert spool._dir is not None and Path(spool._dir.name).parent == tmp_path
    assert not dead.exists() and alive.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == [alive.name]


@pytest.mark.parametrize("scope", exact.SCOPES)
def test_the_merge_equals_the_full_sort_with_colliding_prefixes(scope: str) -> None:
    """Digests that share their first 8 bytes (or 16) but differ after: only equal 20 bytes match."""
    rng = np.random.default_rng(1)
    arrays = []
    for k in range(4):
        rows = np.zeros(3000, dtype=exact.ROW)
        rows["d0"] = rng.integers(0, 40, len(rows), dtype=np.uint64)
        rows["d1"] = rng.integers(0, 3, len(rows), dtype=np.uint64)
        rows["d2"] = rng.integers(0, 3, len(rows), dtype=np.uint32)
        rows["pos"] = rng.permutation(len(rows)).astype(np.uint64) * np.uint64(7) + np.uint64(k)
        arrays.append(rows[np.lexsort((rows["pos"], rows["d2"], rows["d1"], rows["d0"]))])  # as an index file
    fast = exact.find_duplicates([a.copy() for a in arrays], scope)
    reference = exact.find_duplicates_reference([a.copy() for a in arrays], scope)
    assert [f.tobytes() for f in fast] == [r.tobytes() for r in reference]
    seen: set[tuple[int, int, int]] = set()
    expected = []
    for rows in arrays:  # newest first, then by position
        if scope == "snapshot":
            seen = set()
        mine = []
        for row in rows[np.argsort(rows["pos"])]:
            key = (int(row["d0"]), int(row["d1"]), int(row["d2"]))
            if key in seen:
                mine.append(int(row["pos"]))
            seen.add(key)
        expected.append(mine)
    assert [f["pos"].tolist() for f in fast] == expected
