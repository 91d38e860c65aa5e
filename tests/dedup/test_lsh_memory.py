"""run_clusters' in-memory path (band rows in one array, no intermediates) against the three
steps with their band and edges files (``memory_budget=0``): same bytes, same record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_lsh import SNAPSHOT, brute_force, file_bytes, make_root, outputs, write_file

from rpj_tasks.core import layout
from rpj_tasks.dedup import lsh


def record(root: str, threshold: float = 0.8) -> dict:
    found = json.loads(Path(layout.clusters_record_url(root, [SNAPSHOT], threshold)).read_text())
    return {k: v for k, v in found.items() if k not in ("seconds", "wall_seconds")}


def both(root: str, urls: list[str], threshold: float = 0.8, **kw) -> tuple[dict, dict]:
    """``(files, record)`` of the in-memory path, then the same of the file path; asserts which
    path ran each time."""
    calls: list[str] = []
    real = lsh._scatter

    def scatter(*args, **kwargs):
        calls.append("scatter")
        return real(*args, **kwargs)

    inputs = [lsh.minhash_input(u) for u in urls]
    seen = []
    for budget in (lsh.DEFAULT_MEMORY_BUDGET, 0):
        shutil.rmtree(Path(root, "clusters"), ignore_errors=True)
        shutil.rmtree(Path(root, "stats", "clusters"), ignore_errors=True)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(lsh, "_scatter", scatter)
            lsh.run_clusters(root, [SNAPSHOT], threshold, inputs=inputs, memory_budget=budget, **kw)
        assert calls == ([] if budget else ["scatter"])
        assert not Path(layout.lsh_work_url(root, [SNAPSHOT], threshold)).exists()
        seen.append((file_bytes(root), record(root, threshold)))
    return seen[0], seen[1]


@pytest.mark.parametrize("threshold", [0.8, 0.7, 1.0])
def test_in_memory_path_gives_the_file_path_bytes_and_record(tmp_path: Path, threshold: float) -> None:
    root, urls = make_root(tmp_path)
    memory, files = both(root, urls, threshold, partitions=3, workers=2)
    assert memory[0] and memory == files
    assert outputs(root) == brute_force(urls, threshold)


def test_in_memory_path_splits_key_collisions_exactly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root, urls = make_root(tmp_path, per_file=150)
    memory, _ = both(root, urls)
    monkeypatch.setattr(lsh, "band_keys", lambda bands: np.tile(np.arange(bands.shape[1], dtype=np.uint64), (bands.shape[0], 1)))
    colliding, files = both(root, urls)
    assert colliding == memory == files


def test_in_memory_path_with_null_and_empty_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    a = rng.integers(0, 2**32, 128, dtype=np.uint32)
    url1 = write_file(tmp_path, 0, "en", "head", [None, a, None, a.copy(), None])
    url2 = write_file(tmp_path, 0, "en", "middle", [None, None])
    url3 = write_file(tmp_path, 1, "en", "head", [a.copy(), rng.integers(0, 2**32, 128, dtype=np.uint32)])
    memory, files = both(str(tmp_path), [url1, url2, url3])
    assert memory == files and memory[1]["counts"]["lsh.null_signatures"] == 5
    assert memory[1]["counts"]["lsh.docs"] == 4 and memory[1]["counts"]["lsh.clustered_docs"] == 3


def test_budget_chooses_the_path(tmp_path: Path) -> None:
    root, urls = make_root(tmp_path, per_file=50)
    rows = sum(lsh.file_rows([lsh.minhash_input(u) for u in urls]))
    need = lsh.in_memory_bytes(rows, 0.8)
    assert need > rows * 9 * 52
    _, files = both(root, urls)  # the default budget holds these
    inputs = [lsh.minhash_input(u) for u in urls]
    calls: list[int] = []
    real = lsh._scatter
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(lsh, "_scatter", lambda *a, **k: calls.append(1) or real(*a, **k))
        lsh.run_clusters(root, [SNAPSHOT], 0.8, inputs=inputs, memory_budget=need - 1, force=True)
        assert calls == [1]
        lsh.run_clusters(root, [SNAPSHOT], 0.8, inputs=inputs, memory_budget=need, force=True)
        assert calls == [1]
    assert record(root) == files[1]
