"""``token_totals``: a snapshot's documents and tokens per language and bucket, before and after exact
dedup (rows of the duplicates files), fuzzy dedup (clusters rows with ``id_int != cluster_id``) and
both, on a hand-made tree whose numbers are computed by hand below."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from test_stage import BAD_JSON, SNAPSHOT, config, write_shard

from rpj_tasks.core import layout
from rpj_tasks.core.schema import CLUSTERS_SCHEMA, DUPLICATES_SCHEMA
from rpj_tasks.tokens import count_shard, token_totals

# Token counts, hand-checked in test_tokenizer.HAND_CHECKED: "Hello world" 3, "" 1, "é" 2,
# "Zürich 2023" 9, " " 2.
FILES = {
    0: {
        ("en", "head"): ["Hello world", "Hello world", "", "é", ""],  # 3 3 1 2 1
        ("en", "middle"): ["Zürich 2023", BAD_JSON],  # 9, null
        ("en", "tail"): [" ", "Hello world"],  # 2 3
    },
    1: {("de", "head"): ["é", "é"]},  # 2 2; dedup has not run over this file
}


def doc(shard: int, lang: str, bucket: str, line: int) -> str:
    return f"{layout.shard_key(SNAPSHOT, shard, lang, bucket)}/{line}"


def write_duplicates(root: Path, shard: int, lang: str, bucket: str, lines: list[int]) -> None:
    key = layout.shard_key(SNAPSHOT, shard, lang, bucket)
    rows = {"shard_id": [key] * len(lines), "doc_id": [doc(shard, lang, bucket, i) for i in lines], "digest": ["X"] * len(lines)}
    path = root / "duplicates" / layout.base_tag(SNAPSHOT, shard, lang, bucket)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(rows, schema=DUPLICATES_SCHEMA), f"{path}{layout.DUPLICATES_SUFFIX}")


def write_clusters(root: Path, shard: int, lang: str, bucket: str, rows: list[tuple[int, int, int]]) -> None:
    """``(line, id_int, cluster_id)`` rows (only the keep rule reads id_int and cluster_id)."""
    key = layout.shard_key(SNAPSHOT, shard, lang, bucket)
    table = {
        "id": [doc(shard, lang, bucket, line) for line, _, _ in rows],
        "id_int": [i for _, i, _ in rows],
        "cluster_id": [c for _, _, c in rows],
        "shard_id": [key] * len(rows),
    }
    path = root / "clusters" / layout.base_tag(SNAPSHOT, shard, lang, bucket)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(table, schema=CLUSTERS_SCHEMA), f"{path}{layout.CLUSTERS_SUFFIX}")


def sets(all_: tuple[int, int], exact: tuple[int, int], fuzzy: tuple[int, int], both: tuple[int, int], nulls: int = 0) -> dict:
    pair = lambda t: {"documents": t[0], "tokens": t[1]}  # noqa: E731
    return {
        "all": pair(all_),
        "after_exact": pair(exact),
        "after_fuzzy": pair(fuzzy),
        "after_both": pair(both),
        "null_counts": nulls,
    }


def test_totals_before_and_after_dedup_equal_the_hand_computed_numbers(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for shard, files in FILES.items():
        write_shard(tmp_path, shard, files)
        count_shard(cfg, shard)
    write_duplicates(tmp_path, 0, "en", "head", [1, 4])  # exact: lines 1 and 4
    write_duplicates(tmp_path, 0, "en", "middle", [])  # dedup ran, nothing found
    big = 2**64 - 5  # uint64 above 2**63
    write_clusters(tmp_path, 0, "en", "head", [(0, 7, 7), (1, 9, 7), (3, big, 7)])  # fuzzy: 1 and 3 go, 0 kept
    write_clusters(tmp_path, 0, "en", "tail", [(0, 3, 3), (1, big, 3)])  # tail: only fuzzy, line 1 goes

    totals = token_totals(tmp_path.as_uri(), SNAPSHOT)

    assert totals["languages"] == {
        "de": {"head": sets((2, 4), (2, 4), (2, 4), (2, 4))},
        "en": {
            # all 3+3+1+2+1; exact drops 1, 4; fuzzy drops 1, 3; both drop 1, 3, 4
            "head": sets((5, 10), (3, 6), (3, 5), (2, 4)),
            "middle": sets((2, 9), (2, 9), (2, 9), (2, 9), nulls=1),
            "tail": sets((2, 5), (2, 5), (1, 2), (1, 2)),
        },
    }
    assert totals["total"] == sets((11, 28), (9, 24), (8, 20), (7, 19), nulls=1)
    assert totals["by_shard"] == {
        "0000": sets((9, 24), (7, 20), (6, 16), (5, 15), nulls=1),  # the en files
        "0001": sets((2, 4), (2, 4), (2, 4), (2, 4)),
    }
    assert totals["shards"] == 2 and totals["files"] == 4 and totals["snapshot"] == SNAPSHOT
    assert totals["dedup"] == {
        "duplicates_files": 2,
        "duplicates_missing": [layout.base_tag(SNAPSHOT, 1, "de", "head")],
        "clusters_files": 2,
    }
    # the totals of some shards only: those shards' files, nothing of the others
    one = token_totals(tmp_path.as_uri(), SNAPSHOT, shards=[1, 7])
    assert one["languages"] == {"de": {"head": sets((2, 4), (2, 4), (2, 4), (2, 4))}}
    assert one["total"] == totals["by_shard"]["0001"] and list(one["by_shard"]) == ["0001"] and one["shards"] == 1


def test_a_snapshot_without_token_records_has_zero_totals(tmp_path: Path) -> None:
    totals = token_totals(tmp_path.as_uri(), SNAPSHOT)
    assert totals["files"] == 0 and totals["languages"] == {} and totals["total"]["all"] == {"documents": 0, "tokens": 0}
