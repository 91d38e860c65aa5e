"""Fuzzy-dedup clusters (rpj_tasks/dedup/lsh.py) against docs/spec/rpv2_format.md §7.

The oracle is a brute-force pure-Python §7 written here: a dict ``(band_index, band_bytes) -> ids``,
edges to each group's minimum, union-find, cluster = minimum of the component.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from rpj_tasks.annotate import minhash
from rpj_tasks.core import commit, layout
from rpj_tasks.core.schema import CLUSTERS_SCHEMA, MINHASH_BANDS, signature_column
from rpj_tasks.dedup import lsh

SNAPSHOT = "2023-06"
FILES = [(0, "en", "head"), (0, "en", "middle"), (0, "de", "head"), (1, "en", "head"), (1, "fr", "middle")]


# ---------------------------------------------------------------- helpers


def write_file(root: Path, shard: int, lang: str, bucket: str, sigs: list[np.ndarray | None], snapshot: str = SNAPSHOT) -> str:
    url = layout.minhash_url(str(root), snapshot, shard, lang, bucket)
    minhash.write_minhash_parquet(url, layout.shard_key(snapshot, shard, lang, bucket), sigs)
    return url


def planted(rng: np.random.Generator, n: int, groups: int, copies: int, mutate: float) -> list[np.ndarray | None]:
    """``n`` signatures: random ones, ``groups`` bases with ``copies`` near copies (each value
    redrawn with probability ``mutate``), exact copies, and ~3% nulls, shuffled."""
    sigs: list[np.ndarray | None] = []
    for _ in range(groups):
        base = rng.integers(0, 2**32, 128, dtype=np.uint32)
        sigs.append(base)
        for c in range(copies):
            copy = base.copy()
            if c % 3:  # every third copy is exact
                redraw = rng.random(128) < mutate
                copy[redraw] = rng.integers(0, 2**32, int(redraw.sum()), dtype=np.uint32)
            sigs.append(copy)
    while len(sigs) < n:
        sigs.append(None if rng.random() < 0.03 else rng.integers(0, 2**32, 128, dtype=np.uint32))
    order = rng.permutation(len(sigs))
    return [sigs[i] for i in order]


def make_root(tmp_path: Path, seed: int = 1, per_file: int = 400) -> tuple[str, list[str]]:
    """Files of one snapshot whose planted groups span files (signatures dealt round-robin)."""
    rng = np.random.default_rng(seed)
    sigs = planted(rng, per_file * len(FILES), groups=60, copies=4, mutate=0.03)
    urls = [write_file(tmp_path, s, lang, b, sigs[i :: len(FILES)]) for i, (s, lang, b) in enumerate(FILES)]
    return str(tmp_path), urls


def brute_force(urls: list[str], threshold: float) -> dict[str, list[tuple[str, int, int, str]]]:
    """§7 in plain Python: {base tag: [(id, id_int, cluster_id, shard_id) in row order]}."""
    column = signature_column(threshold)
    rows = []
    for url in urls:
        t = pq.read_table(url).to_pylist()
        rows.append((url, t))
    groups: dict[tuple[int, bytes], list[int]] = {}
    for _, table in rows:
        for row in table:
            if row[column] is None:
                continue
            for k, band in enumerate(row[column]):
                groups.setdefault((k, band), []).append(row["id_int"])
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for members in groups.values():
        if len(members) >= 2:
            low = min(members)
            for m in members:
                if m != low:
                    a, b = find(m), find(low)
                    parent[max(a, b)] = min(a, b)  # the root is always the component minimum
    out: dict[str, list[tuple[str, int, int, str]]] = {}
    for url, table in rows:
        listed = [(r["id"], r["id_int"], find(r["id_int"]), r["shard_id"]) for r in table if r["id_int"] in parent]
        if listed:
            out[lsh.minhash_input(url, "-").base_tag] = listed
    return out


def outputs(root: str, component: str = "clusters") -> dict[str, list[tuple[str, int, int, str]]]:
    found = {}
    for path in sorted(Path(root, component).rglob(f"*{layout.CLUSTERS_SUFFIX}")):
        table = pq.read_table(path)
        assert table.schema.equals(CLUSTERS_SCHEMA)
        tag = str(path.relative_to(Path(root, component)))[: -len(layout.CLUSTERS_SUFFIX)]
        found[tag] = [(r["id"], r["id_int"], r["cluster_id"], r["shard_id"]) for r in table.to_pylist()]
    return found


def file_bytes(root: str, component: str = "clusters") -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(Path(root, component).rglob("*.parquet"))}


def run(root: str, urls: list[str], threshold: float = 0.8, **kw) -> dict:
    """``run_clusters`` through its file steps (scatter, group per partition, write) unless the test
    asks for another ``memory_budget``: the in-memory path ignores partitions and batches, and has
    its own equality tests (test_lsh_memory.py)."""
    kw.setdefault("memory_budget", 0)
    return lsh.run_clusters(root, [SNAPSHOT], threshold, inputs=[lsh.minhash_input(u) for u in urls], **kw)


# ---------------------------------------------------------------- (a) brute force, partitions


@pytest.mark.parametrize("threshold", [0.8, 0.7, 0.9, 1.0])
def test_equals_brute_force(tmp_path: Path, threshold: float) -> None:
    root, urls = make_root(tmp_path)
    record = run(root, urls, threshold, partitions=3)
    expected = brute_force(urls, threshold)
    assert expected, "the planted groups must give clusters"
    assert outputs(root) == expected
    assert record["counts"]["lsh.clustered_docs"] == sum(map(len, expected.values()))
    assert record["counts"]["lsh.null_signatures"] > 0


def test_partition_and_batch_counts_give_identical_bytes(tmp_path: Path) -> None:
    root, urls = make_root(tmp_path)
    seen = []
    for partitions, batch_files, workers in [(1, 64, 1), (2, 1, 1), (7, 2, 2), (32, 3, 3)]:
        run(root, urls, partitions=partitions, batch_files=batch_files, workers=workers, force=True)
        seen.append(file_bytes(root))
    assert seen[0] and all(s == seen[0] for s in seen)


def test_key_collisions_are_split_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With a key that collides for every band (band index only), groups are still exact."""
    root, urls = make_root(tmp_path, per_file=150)
    run(root, urls)
    reference = file_bytes(root)
    monkeypatch.setattr(lsh, "band_keys", lambda bands: np.tile(np.arange(bands.shape[1], dtype=np.uint64), (bands.shape[0], 1)))
    run(root, urls, partitions=2, force=True)
    assert file_bytes(root) == reference


def test_group_rows_edges_to_group_minimum() -> None:
    ids = np.array([50, 10, 30, 20, 40], dtype=np.uint64)
    bands = np.zeros((5, 2, 4), dtype=np.uint8)
    bands[:, 1] = np.arange(5)[:, None]  # band 1 unique per doc
    bands[3, 0] = 9  # doc 20 alone in band 0
    rows = lsh.BandRows(
        lsh.band_keys(bands).ravel(), np.repeat(ids, 2), np.tile(np.arange(2, dtype=np.uint8), 5), bands.reshape(10, 4)
    )
    assert lsh.group_rows(rows).tolist() == [[30, 10], [40, 10], [50, 10]]


# ---------------------------------------------------------------- (b) positions, (c) nulls


def test_equal_bytes_at_different_band_positions_do_not_match(tmp_path: Path) -> None:
    bands, rows = MINHASH_BANDS[0.8]
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2**32, 128, dtype=np.uint32)
    b = rng.integers(0, 2**32, 128, dtype=np.uint32)
    b[rows : 2 * rows] = a[0:rows]  # b's band 1 == a's band 0
    c = rng.integers(0, 2**32, 128, dtype=np.uint32)
    url = write_file(tmp_path, 0, "en", "head", [a, b, c])
    run(str(tmp_path), [url])
    assert outputs(str(tmp_path)) == {}
    assert minhash.band_bytes(b)["signature_sim0.8"][1] == minhash.band_bytes(a)["signature_sim0.8"][0]
    c[0:rows] = a[0:rows]  # the same bytes at the same position: a cluster
    url = write_file(tmp_path, 0, "en", "head", [a, b, c])
    run(str(tmp_path), [url])
    ((tag, listed),) = outputs(str(tmp_path)).items()
    assert tag == f"{SNAPSHOT}/0000/en_head" and [r[0].rsplit("/", 1)[1] for r in listed] == ["0", "2"]


def test_null_signatures_are_dropped(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**32, 128, dtype=np.uint32)
    url1 = write_file(tmp_path, 0, "en", "head", [None, a, None, a.copy(), None])
    url2 = write_file(tmp_path, 0, "en", "middle", [None, None])  # only nulls: no output file
    record = run(str(tmp_path), [url1, url2])
    found = outputs(str(tmp_path))
    assert list(found) == [f"{SNAPSHOT}/0000/en_head"]
    assert [r[0].rsplit("/", 1)[1] for r in found[f"{SNAPSHOT}/0000/en_head"]] == ["1", "3"]
    assert record["counts"]["lsh.null_signatures"] == 5 and record["counts"]["lsh.docs"] == 2


# ---------------------------------------------------------------- (d) real MinHash, known Jaccard


def shingles(words: list[str]) -> set[str]:
    return {" ".join(words[i : i + minhash.SHINGLE_SIZE]) for i in range(len(words) - minhash.SHINGLE_SIZE + 1)}


def test_recall_precision_against_brute_force_jaccard(tmp_path: Path) -> None:
    rnd = random.Random(5)
    vocab = [f"w{i}" for i in range(5000)]
    docs: list[list[str]] = []
    for _ in range(40):  # a base document and variants with 0 .. 12 words replaced
        base = [rnd.choice(vocab) for _ in range(400)]
        docs.append(base)
        for changes in rnd.sample(range(13), 3):
            variant = list(base)
            for pos in rnd.sample(range(len(base)), changes):
                variant[pos] = rnd.choice(vocab)
            docs.append(variant)
    sigs = minhash.signatures([" ".join(d) for d in docs])
    url = write_file(tmp_path, 0, "en", "head", list(sigs))
    run(str(tmp_path), [url])
    (listed,) = outputs(str(tmp_path)).values() or [[]]
    cluster = {int(r[0].rsplit("/", 1)[1]): r[2] for r in listed}
    sets = [shingles(d) for d in docs]
    tp = fp = fn = 0
    high_recall = [0, 0]
    for i, j in itertools.combinations(range(len(docs)), 2):
        jac = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        together = i in cluster and cluster.get(i) == cluster.get(j)
        tp += together and jac >= 0.8
        fp += together and jac < 0.8
        fn += (not together) and jac >= 0.8
        if jac >= 0.9:
            high_recall[0] += together
            high_recall[1] += 1
        assert not (together and jac < 0.3), (i, j, jac)
    recall, precision = tp / (tp + fn), tp / (tp + fp)
    print(
        json.dumps(
            {
                "pairs_jaccard_ge_0.8": tp + fn,
                "recall_at_0.8": round(recall, 3),
                "precision_at_0.8": round(precision, 3),
                "recall_jaccard_ge_0.9": round(high_recall[0] / high_recall[1], 3),
            }
        )
    )
    assert recall > 0.5 and precision > 0.5
    assert high_recall[0] / high_recall[1] > 0.85


# ---------------------------------------------------------------- (e) rerun, force, commit record


def test_rerun_skips_and_force_rewrites_identical_bytes(tmp_path: Path) -> None:
    root, urls = make_root(tmp_path, per_file=150)
    first = run(root, urls)
    assert not first["skipped"]
    before = file_bytes(root)
    record_path = Path(layout.clusters_record_url(root, [SNAPSHOT], 0.8))
    record = json.loads(record_path.read_text())
    assert record["inputs"]["minhash"] == {
        lsh.minhash_input(u).base_tag: hashlib.sha256(Path(u).read_bytes()).hexdigest() for u in urls
    }
    assert {Path(record_path.parent, rel).resolve() for rel in record["outputs"]} == {Path(root, rel).resolve() for rel in before}
    assert run(root, urls)["skipped"]
    forced = run(root, urls, force=True)
    assert not forced["skipped"] and file_bytes(root) == before
    assert forced["outputs"] == first["outputs"]
    assert not Path(layout.lsh_work_url(root, [SNAPSHOT], 0.8)).exists()


def test_changed_input_redoes_and_removes_stale_files(tmp_path: Path) -> None:
    root, urls = make_root(tmp_path, per_file=150)
    run(root, urls)
    rng = np.random.default_rng(11)
    write_file(tmp_path, 0, "en", "head", [rng.integers(0, 2**32, 128, dtype=np.uint32) for _ in range(10)])
    redone = run(root, urls)
    assert not redone["skipped"]
    assert outputs(root) == brute_force(urls, 0.8)


def test_another_threshold_in_the_same_component_invalidates_the_first(tmp_path: Path) -> None:
    root, urls = make_root(tmp_path, per_file=150)
    run(root, urls, 0.8)
    run(root, urls, 0.7)  # rewrites clusters/…: the 0.8 unit is no longer finished
    assert outputs(root) == brute_force(urls, 0.7)
    assert not Path(layout.clusters_record_url(root, [SNAPSHOT], 0.8)).exists()
    assert not run(root, urls, 0.8)["skipped"]
    assert outputs(root) == brute_force(urls, 0.8)
    run(root, urls, 0.7, component="clusters-sim0.7")  # a component of its own: both stay finished
    assert run(root, urls, 0.8)["skipped"] and outputs(root, "clusters-sim0.7") == brute_force(urls, 0.7)
    assert Path(layout.clusters_record_url(root, [SNAPSHOT], 0.7, "clusters-sim0.7")).exists()


def test_snapshot_inputs_from_annotation_records(tmp_path: Path) -> None:
    root, urls = make_root(tmp_path, per_file=50)
    stats_dir = Path(layout.annotate_stats_dir(root, SNAPSHOT))
    stats_dir.mkdir(parents=True)
    for shard in (0, 1):
        listed = {
            commit.relative(str(stats_dir), u): {"sha256": "x", "bytes": Path(u).stat().st_size}
            for u in urls
            if f"/{shard:04d}/" in u
        }
        (stats_dir / f"{shard:04d}.json").write_text(json.dumps({"inputs": {}, "outputs": listed}))
    found = lsh.snapshot_inputs(root, [SNAPSHOT])
    assert [i.base_tag for i in found] == sorted(lsh.minhash_input(u, "x").base_tag for u in urls)
    record = lsh.run_clusters(root, [SNAPSHOT])
    assert outputs(root) == brute_force(urls, 0.8) and record["threshold"] == 0.8


# ---------------------------------------------------------------- (f) keep rule


def test_keep_rule(tmp_path: Path) -> None:
    root, urls = make_root(tmp_path)
    run(root, urls)
    listed = [row for rows in outputs(root).values() for row in rows]
    kept = lsh.keep(np.array([r[1] for r in listed]), np.array([r[2] for r in listed]))
    clusters = {r[2] for r in listed}
    assert int(kept.sum()) == len(clusters)  # exactly one survivor per cluster: its minimum
    assert all(r[1] == r[2] for r, k in zip(listed, kept, strict=True) if k)
    assert all(r[2] == min(x[1] for x in listed if x[2] == r[2]) for r in listed)
    assert lsh.keep(5, 5) and not lsh.keep(2**64 - 1, 5)


def test_memory_formula_and_bad_threshold() -> None:
    assert lsh.partition_memory_bytes(1_000_000, 0.8, 9) == 1_000_000 * (2 * 69 + 40)
    with pytest.raises(lsh.LshInputError):
        lsh.band_layout(0.85)
