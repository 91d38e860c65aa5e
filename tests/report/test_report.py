"""The snapshot report (rpj_tasks/report): its numbers against the stats records and the data files
(computed again here, independently), the page as headless Chromium renders it, the commit
protocol (same inputs, same bytes), partial runs, sampling, the index, and ``rpj report``.

The snapshot is the sample as the CLI builds it, validated and published once per session
(tests/helpers/deploy_harness.py ``published_sample``), copied per test.
"""

from __future__ import annotations

import gzip
import json
import math
import shutil
from collections import defaultdict
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from chromium import render
from deploy_harness import SNAPSHOT, published_sample

from rpj_tasks.core.config import load_registry
from rpj_tasks.core.summary import DROP_REASONS
from rpj_tasks.report import data, write_index, write_report


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return published_sample(tmp_path_factory.getbasetemp())


@pytest.fixture
def root(published: Path, tmp_path: Path) -> Path:
    out = tmp_path / "data"
    shutil.copytree(published, out)
    return out


def config(root: Path) -> Any:
    return load_registry()[SNAPSHOT].with_overrides(storage_root=root.as_uri())


def lines(path: Path) -> list[bytes]:
    return gzip.decompress(path.read_bytes()).splitlines()


# ---------------------------------------------------------------------------- the numbers, computed again


def expected(root: Path, shards: set[int] | None = None) -> dict[str, Any]:
    """The report's figures from the files, without the report's code: of ``shards`` (default:
    every shard), except the dedup counts, rates and their denominators (the whole snapshot's)."""

    def wanted(shard_name: str) -> bool:
        return shards is None or int(shard_name) in shards

    out: dict[str, Any] = {}
    ccnet = [
        json.loads(p.read_text())["counts"]
        for p in sorted((root / "stats" / "ccnet" / SNAPSHOT).glob("[0-9]*.json"))
        if wanted(p.stem)
    ]
    out["documents.read"] = sum(c.get("wet.docs", 0) for c in ccnet)
    for code, label in DROP_REASONS.items():
        out[f"documents.dropped.{label}"] = sum(c.get(code, 0) for c in ccnet)
    kept: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    every_annotated = 0
    for path in (root / "documents" / SNAPSHOT).rglob("*.json.gz"):
        lang, bucket = path.name.removesuffix(".json.gz").split("_")
        n = len(lines(path))
        every_annotated += n if bucket in ("head", "middle") else 0
        if wanted(path.parent.name):
            kept[lang][bucket] += n
    for lang, per in kept.items():
        for bucket, n in per.items():
            out[f"kept.{lang}.{bucket}"] = n
        out[f"languages_kept.{lang}"] = sum(per.values())
    for bucket in ("head", "middle", "tail"):
        out[f"buckets_kept.{bucket}"] = sum(per[bucket] for per in kept.values())
    out["documents.kept"] = sum(sum(per.values()) for per in kept.values())
    annotated = sum(per["head"] + per["middle"] for per in kept.values())
    out["dedup.annotated_documents"] = out["annotated.documents"] = annotated
    # exact and fuzzy duplicates of the whole snapshot, from the parquet files
    dup_ids: dict[str, set[str]] = {}
    for path in (root / "duplicates" / SNAPSHOT).rglob("*.parquet"):
        dup_ids[str(path.relative_to(root / "duplicates"))] = set(pq.read_table(path).column("doc_id").to_pylist())
    out["dedup.exact_duplicates"] = sum(len(s) for s in dup_ids.values())
    fuzzy_ids: dict[str, set[str]] = {}
    clustered, cluster_ids = 0, set()
    for path in (root / "clusters" / SNAPSHOT).rglob("*.parquet"):
        t = pq.read_table(path).to_pydict()
        clustered += len(t["id"])
        cluster_ids |= set(t["cluster_id"])
        fuzzy_ids[str(path.relative_to(root / "clusters"))] = {
            i for i, a, c in zip(t["id"], t["id_int"], t["cluster_id"]) if a != c
        }
    out["dedup.clustered_documents"] = clustered
    out["dedup.clusters"] = len(cluster_ids)
    out["dedup.fuzzy_removed"] = sum(len(s) for s in fuzzy_ids.values())
    assert out["dedup.exact_duplicates"] > 0 and out["dedup.fuzzy_removed"] > 0  # the sample has both
    # both steps read every head and middle document of the snapshot: the rates are over those
    minhash_docs = sum(len(pq.read_table(p, columns=["id"])) for p in (root / "minhash" / SNAPSHOT).rglob("*.parquet"))
    assert minhash_docs == every_annotated
    out["dedup.exact_documents"] = out["dedup.fuzzy_documents"] = every_annotated
    out["dedup.exact_rate"] = round(out["dedup.exact_duplicates"] / every_annotated, 6)
    out["dedup.fuzzy_rate"] = round(out["dedup.fuzzy_removed"] / every_annotated, 6)
    # tokens per language before and after dedup, from the token files of the shards
    tokens: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(lambda: [0, 0]))
    for path in (root / "tokens" / SNAPSHOT).rglob("*.tokens.parquet"):
        if not wanted(path.parent.name):
            continue
        rel = str(path.relative_to(root / "tokens")).removesuffix(".tokens.parquet")
        t = pq.read_table(path, columns=["id", "tokens"]).to_pydict()
        exact = dup_ids.get(rel + ".duplicates.parquet", set())
        fuzzy = fuzzy_ids.get(rel + ".clusters.parquet", set())
        lang = path.name.split("_")[0]
        for doc_id, n in zip(t["id"], t["tokens"]):
            for name, dropped in (("all", False), ("after_exact", doc_id in exact), ("after_fuzzy", doc_id in fuzzy)):
                if not dropped:
                    for key in (lang, "total"):
                        tokens[key][name][0] += 1
                        tokens[key][name][1] += n or 0
            if doc_id not in exact and doc_id not in fuzzy:
                for key in (lang, "total"):
                    tokens[key]["after_both"][0] += 1
                    tokens[key]["after_both"][1] += n or 0
    for key, sets in tokens.items():
        for name, (docs, toks) in sets.items():
            out[f"tokens.{key}.{name}.documents"], out[f"tokens.{key}.{name}.tokens"] = docs, toks
    for name in ("after_exact", "after_fuzzy", "after_both"):
        out[f"dedup.removed_by_tokens_files.{name}"] = tokens["total"]["all"][0] - tokens["total"][name][0]
    # per-stage shards: the record files
    for stage in ("download", "hashes", "ccnet", "annotate", "tokens"):
        out[f"stages.{stage}.shards"] = len(
            [p for p in (root / "stats" / stage / SNAPSHOT).glob("[0-9]*.json") if wanted(p.stem)]
        )
    # quality signals: every document of every signals file
    values: dict[str, list[Any]] = defaultdict(list)
    files = sorted(p for p in (root / "quality_signals" / SNAPSHOT).rglob("*.signals.json.gz") if wanted(p.parent.name))
    for path in files:
        for line in lines(path):
            signals = json.loads(line)["quality_signals"]
            for name in data.SIGNALS:
                values[name].append(signals[name][0][2])
    out["signals.sample.files"] = len(files)
    out["signals.sample.documents"] = annotated
    for name, vals in values.items():
        present = sorted(v for v in vals if v is not None)
        out[f"signals.histograms.{name}.n"] = len(present)
        out[f"signals.histograms.{name}.nulls"] = len(vals) - len(present)
        if present:
            out[f"signals.histograms.{name}.min"], out[f"signals.histograms.{name}.max"] = present[0], present[-1]
            for q, key in ((0.1, "p10"), (0.5, "p50"), (0.9, "p90")):  # nearest rank
                out[f"signals.histograms.{name}.{key}"] = present[max(1, math.ceil(q * len(present))) - 1]
        out[f"signals.histograms.{name}.counts"] = bin_counts(present, data.SIGNALS[name][1])
    return out


def bin_counts(present: list[float], scale: str, bins: int = data.BINS) -> list[int]:
    """Histogram counts by exact decimal arithmetic: bin ``i`` holds ``lo + i*w <= v < lo + (i+1)*w``
    (the last bin also its upper edge), with the edges of the report's scales: [0, 1] for ``unit``,
    the decimal log's range widened to halves for ``log10``, [min, max] for ``linear``."""
    from decimal import Decimal

    if scale == "log10":
        points = [math.log10(v) for v in present if v > 0]
        lo = Decimal(math.floor(min(points) * 2)) / 2 if points else Decimal(0)
        hi = Decimal(math.ceil(max(points) * 2)) / 2 if points else Decimal(1)
    elif scale == "unit":
        points = [v for v in present if 0 <= v <= 1]
        lo, hi = Decimal(0), Decimal(1)
    else:
        points = list(present)
        lo, hi = (Decimal(repr(min(points))), Decimal(repr(max(points)))) if points else (Decimal(0), Decimal(1))
    if not present:
        return []
    if hi <= lo:
        hi = lo + 1
    counts = [0] * bins
    for v in points:
        i = int((Decimal(repr(v)) - lo) * bins // (hi - lo))
        counts[min(bins - 1, max(0, i))] += 1
    return counts


def resolve(report: dict[str, Any], key: str) -> Any:
    """The value a page's ``data-key`` names in the report's JSON."""
    parts = key.split(".")
    if parts[:2] == ["documents", "dropped"]:
        return report["documents"]["dropped"][key.split(".", 2)[2]]
    if key == "documents.kept.total":
        return sum(report["languages_kept"].values())
    node: Any = report
    for part in parts:
        node = next(r for r in node if r["stage"] == part) if isinstance(node, list) else node[part]
    return node


def test_numbers_equal_the_records_and_files(root: Path) -> None:
    out = write_report(config(root), list(range(4)))
    report = json.loads((root / "reports" / SNAPSHOT / "report.json").read_text())
    assert report == out["report"]
    want = expected(root)
    got = {key: resolve(report, key) for key in want}
    assert got == want
    assert report["failures"]["unfinished"] == {} and report["validation"] == {
        "passed": True,
        "failed_shards": [],
        "published": True,
    }
    for name, h in report["signals"]["histograms"].items():
        assert sum(h["counts"]) + h["excluded"] == h["n"], name
        if h["n"]:
            mean = math.fsum(v for v in _signal_values(root, name) if v is not None) / h["n"]
            assert h["mean"] == pytest.approx(mean, abs=1e-6)
    assert report["signals"]["sample"]["sampled"] is False


def _signal_values(root: Path, name: str) -> list[Any]:
    return [
        json.loads(line)["quality_signals"][name][0][2]
        for path in sorted((root / "quality_signals" / SNAPSHOT).rglob("*.signals.json.gz"))
        for line in lines(path)
    ]


PAGE = """(() => {
  const values = {};
  for (const el of document.querySelectorAll('[data-key]')) values[el.dataset.key] = [JSON.parse(el.dataset.value), el.textContent];
  const plots = {};
  for (const svg of document.querySelectorAll('svg[data-plot]')) plots[svg.dataset.plot] = svg.querySelectorAll('rect').length;
  const links = [...document.querySelectorAll('a')].map(a => a.getAttribute('href'));
  return {values, plots, links, scripts: document.scripts.length, title: document.title};
})()"""


def test_page_in_headless_chromium(root: Path) -> None:
    write_report(config(root), list(range(4)))
    report = json.loads((root / "reports" / SNAPSHOT / "report.json").read_text())
    page = render((root / "reports" / SNAPSHOT / "index.html").as_uri(), PAGE)
    assert page.errors == []
    assert {u.split("://")[0] for u in page.requests} == {"file"}, page.requests  # nothing from the network
    v = page.value
    assert v["scripts"] == 0 and v["title"] == f"rpj report {SNAPSHOT}"
    # every plot is there and drawn (a histogram without any value says so instead)
    want_plots = {"languages", "buckets", "dropped", "tokens_all", "tokens_after_both", *data.SIGNALS}
    assert set(v["plots"]) == want_plots
    for name, rects in v["plots"].items():
        empty = name in data.SIGNALS and not report["signals"]["histograms"][name]["n"]
        assert (rects == 0) if empty else (rects > 0), name
    # every number shown is the report's, and the report's are the files' (test above)
    shown = {key: value for key, (value, _) in v["values"].items()}
    assert {key: resolve(report, key) for key in shown} == shown
    want = expected(root)
    assert {k: shown[k] for k in want if k in shown} == {k: want[k] for k in want if k in shown}
    assert len([k for k in want if k in shown]) >= 60
    for key, (value, text) in v["values"].items():
        if isinstance(value, int) and not isinstance(value, bool):
            assert text.replace(",", "") == str(value), key
    assert {"report.json", "../index.html"} <= set(v["links"])
    index = render((root / "reports" / "index.html").as_uri(), PAGE)
    assert index.errors == []
    manifest = json.loads((root / "listings" / f"{SNAPSHOT}.manifest.json").read_text())
    assert index.value["values"][f"snapshots.{SNAPSHOT}.documents"][0] == sum(
        n for per in manifest["documents"].values() for n in per.values()
    )
    assert (
        index.value["values"][f"snapshots.{SNAPSHOT}.tokens.after_both"][0] == manifest["tokens"]["total"]["after_both"]["tokens"]
    )
    assert f"{SNAPSHOT}/index.html" in index.value["links"]


def test_same_inputs_same_bytes_and_commit_protocol(root: Path) -> None:
    cfg = config(root)
    first = write_report(cfg, list(range(4)))
    assert not first["skipped"]
    out = root / "reports" / SNAPSHOT
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"index.html", "report.json"}
    record = json.loads((root / "stats" / "report" / f"{SNAPSHOT}.json").read_text())
    assert set(record["outputs"]) == {"../../reports/2000-01/index.html", "../../reports/2000-01/report.json"}
    assert write_report(cfg, list(range(4)))["skipped"]  # same numbers: nothing rewritten
    (out / "stale.html").write_text("x")
    (out / "index.html").unlink()  # a damaged unit is redone
    assert not write_report(cfg, list(range(4)))["skipped"]
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "stale.html"} == before
    write_report(cfg, list(range(4)), force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "stale.html"} == before
    assert not [p for p in out.iterdir() if ".tmp-" in p.name]


def test_a_partial_run_has_a_page_naming_the_unfinished_shards(root: Path) -> None:
    (root / "stats" / "annotate" / SNAPSHOT / "0002.json").unlink()
    (root / "stats" / "tokens" / SNAPSHOT / "0001.json").unlink()
    run = {
        "dag_id": "rpv2_sample",
        "run_id": "manual__x",
        "task_states": {"annotate_2": "failed", "annotate_0": "success", "report": "running"},
    }
    out = write_report(config(root), list(range(4)), run=run)
    r = out["report"]
    assert r["failures"]["unfinished"] == {"annotate": [2], "tokens": [1]}
    assert r["failures"]["airflow"] == {
        "dag_id": "rpv2_sample",
        "run_id": "manual__x",
        "by_state": {"failed": 1, "running": 1, "success": 1},
        "not_successful": ["annotate_2"],
    }
    files = len(list((root / "quality_signals" / SNAPSHOT / "0002").glob("*.signals.json.gz")))
    assert r["signals"]["sample"]["files"] == 40 - files  # only the files the records list
    page = (root / "reports" / SNAPSHOT / "index.html").read_text()
    assert 'data-key="failures.unfinished.annotate" data-value="1"' in page and "annotate_2" in page


def test_histograms_are_sampled_deterministically(root: Path) -> None:
    cfg = config(root)
    a = data.build_report(cfg, list(range(4)), sample_cap=50)
    sample = a["signals"]["sample"]
    assert sample["sampled"] and sample["per_file_cap"] == 2 and sample["documents"] <= 80 and sample["files_cut"] > 0
    assert data.build_report(cfg, list(range(4)), sample_cap=50) == a
    page = write_report(cfg, list(range(4)), sample_cap=50)
    assert "at most the first 2 documents of each" in (root / "reports" / SNAPSHOT / "index.html").read_text()
    assert page["report"]["signals"]["histograms"]["rps_doc_word_count"]["n"] == sample["documents"]
    few = data.signal_histograms(cfg, list(range(4)), cap=1000, max_files=7)["sample"]
    assert few["files"] == 40 and few["files_read"] == 7 and few["sampled"] and few["per_file_cap"] == 143
    every = sorted((root / "quality_signals" / SNAPSHOT).rglob("*.signals.json.gz"))
    assert few["documents"] == sum(min(143, len(lines(every[i * 40 // 7]))) for i in range(7))


def test_histogram_bins() -> None:
    h = data.histogram([0.0, 0.15, 0.5, 1.0, None, 1.5], "unit", bins=10)
    assert h["counts"] == [1, 1, 0, 0, 0, 1, 0, 0, 0, 1] and h["excluded"] == 1 and h["nulls"] == 1 and h["n"] == 5
    # a value on an inner edge goes right of it, also where (v - lo) / width falls short of the
    # edge's index in floating point (0.3 / 0.05 == 5.999...)
    edge_values = [0.05, 0.1, 0.15, 0.3, 0.35, 0.6, 0.7, 0.85, 0.95]
    assert [int(v / 0.05) for v in (0.3, 0.35, 0.6, 0.7)] == [5, 6, 11, 13]  # what plain division says
    h = data.histogram(edge_values, "unit", bins=20)
    assert h["edges"] == [i / 20 for i in range(21)]
    assert [i for i, c in enumerate(h["counts"]) for _ in range(c)] == [1, 2, 3, 6, 7, 12, 14, 17, 19]
    assert h["counts"] == bin_counts(sorted(edge_values), "unit", 20)
    h = data.histogram([1.0, 10.0, 100.0, 1000.0], "log10", bins=6)  # edges 0, 0.5, ..., 3
    assert h["counts"] == [1, 0, 1, 0, 1, 1]
    h = data.histogram([10, 100, 1000, 0], "log10", bins=4)
    assert h["edges"][0] == 1.0 and h["edges"][-1] == 3.0 and sum(h["counts"]) == 3 and h["excluded"] == 1
    h = data.histogram([None, None], "linear")
    assert h["n"] == 0 and h["counts"] == [] and h["nulls"] == 2


def test_a_non_numeric_score_is_a_bad_line(tmp_path: Path) -> None:
    """A line that is valid JSON but whose score is a string, a bool or a list is counted as a bad
    line, not read (and does not stop the report)."""
    name = "rps_doc_word_count"

    def line(score: Any) -> str:
        return json.dumps({"quality_signals": {name: [[0, 10, score]]}})

    path = tmp_path / "x.signals.json.gz"
    path.write_bytes(gzip.compress("\n".join([line(12), line("12"), line(True), line([1]), line(None), line(3.5)]).encode()))
    values, sample = data.read_signals([path.as_uri()], [name], cap=100)
    assert values == {name: [12, None, 3.5]} and sample["bad_lines"] == 3 and sample["documents"] == 3
    h = data.histogram(values[name], "log10")
    assert h["n"] == 2 and h["nulls"] == 1 and h["min"] == 3.5


def test_a_report_of_some_shards_keeps_its_figures_apart(root: Path) -> None:
    """A report of shard 0 of the 4: its documents, tokens, stages and histograms are shard 0's, the
    dedup counts and rates the whole snapshot's (each over the documents its step read), said so."""
    cfg = config(root)
    whole = data.build_report(cfg, list(range(4)))
    one = write_report(cfg, [0])["report"]
    want = expected(root, {0})
    assert {key: resolve(one, key) for key in want} == want
    assert want["tokens.total.all.documents"] < expected(root)["tokens.total.all.documents"]  # not the whole's
    assert one["dedup"]["annotated_documents"] < one["dedup"]["exact_documents"]
    for key in ("exact_documents", "exact_duplicates", "exact_rate", "fuzzy_documents", "fuzzy_removed", "fuzzy_rate"):
        assert one["dedup"][key] == whole["dedup"][key], key
    assert one["dedup"]["subset"] is True and whole["dedup"]["subset"] is False and one["shards"]["subset"] is True
    page = (root / "reports" / SNAPSHOT / "index.html").read_text()
    assert "Duplicates (whole snapshot)" in page and "covers fewer shards than the snapshot has" in page
    write_report(cfg, list(range(4)))
    assert "covers fewer shards" not in (root / "reports" / SNAPSHOT / "index.html").read_text()


def test_index_lists_every_published_snapshot(root: Path) -> None:
    out = write_index(root.as_uri())
    assert [e["snapshot"] for e in out["index"]["snapshots"]] == [SNAPSHOT]
    e = out["index"]["snapshots"][0]
    assert e["report"] is False  # no page yet: listed without a link
    write_report(config(root), list(range(4)))
    index = json.loads((root / "reports" / "index.json").read_text())
    assert index["snapshots"][0]["report"] is True
    assert '<a href="2000-01/index.html">' in (root / "reports" / "index.html").read_text()
    (root / "listings" / f"{SNAPSHOT}.manifest.json").unlink()  # unpublished: gone from the index
    assert write_index(root.as_uri())["index"]["snapshots"] == []


def test_an_index_lost_to_a_concurrent_writer_is_repaired_by_the_next(root: Path) -> None:
    """Two snapshot DAGs' report tasks at once: the one that read the manifests and pages before the
    other wrote its page may commit its index last (last writer wins, a stale view).  The index is
    built from the manifests and pages every time, so the next report or ``rpj report --index``
    writes the right one (the stale commit's record does not make it skip)."""
    from rpj_tasks.report import render, stage

    stale = stage.build_index(root.as_uri())  # before this snapshot's page existed
    assert stale["snapshots"][0]["report"] is False
    write_report(config(root), list(range(4)))  # the other task: page and index
    files = {"index.json": stage._json(stale), "index.html": render.render_index(stale).encode()}
    stage._write(stage.record_url(root.as_uri(), "index"), stage.reports_dir(root.as_uri()), files, stage.INDEX_OWNED, False)
    assert '<a href="2000-01/index.html">' not in (root / "reports" / "index.html").read_text()  # lost
    assert write_index(root.as_uri())["skipped"] is False
    assert '<a href="2000-01/index.html">' in (root / "reports" / "index.html").read_text()
    assert json.loads((root / "reports" / "index.json").read_text())["snapshots"][0]["report"] is True


def test_rpj_report_cli(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rpj_tasks.cli import main

    assert main(["report", "--snapshot", SNAPSHOT, "--storage-root", root.as_uri()]) == 0
    out = capsys.readouterr().out
    assert f"report of {SNAPSHOT} written: {(root / 'reports' / SNAPSHOT / 'index.html').as_uri()}" in out
    assert main(["report", "--snapshot", SNAPSHOT, "--storage-root", root.as_uri()]) == 0
    assert "unchanged" in capsys.readouterr().out
    assert main(["report", "--index", "--storage-root", root.as_uri()]) == 0
    assert "index of 1 published snapshots" in capsys.readouterr().out
    assert main(["report", "--snapshot", "2000-99", "--storage-root", root.as_uri()]) == 2
    assert "week 99" in capsys.readouterr().err


def test_the_browser_check_sees_errors_and_network(tmp_path: Path) -> None:
    """The render check itself: a console error, an exception and a remote request are reported."""
    page = tmp_path / "bad.html"
    page.write_text(
        "<!DOCTYPE html><html><body><img src='http://127.0.0.1:9/x.png'>"
        "<script>console.error('boom'); throw new Error('thrown')</script></body></html>"
    )
    out = render(page.as_uri(), "document.title")
    assert any("boom" in e for e in out.errors) and any("thrown" in e for e in out.errors), out.errors
    assert "http://127.0.0.1:9/x.png" in out.requests


def test_the_dag_report_task_writes_the_page_before_failing(root: Path) -> None:
    """The snapshot DAG's report body (dags/rpj_dags/snapshot.py ``_report``, without a running
    Airflow): a partial run gets its page, then the task fails naming the unfinished shards."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "dags"))
    try:
        from rpj_dags.snapshot import _report
    finally:
        sys.path.pop(0)
    (root / "stats" / "annotate" / SNAPSHOT / "0002.json").unlink()
    units = [{"unit": 0, "mine": "0-1", "hashes": "0-1"}, {"unit": 1, "mine": "2-3", "hashes": "2-3"}]
    with pytest.raises(RuntimeError, match=r"shards that did not finish, by stage: annotate: 1 2\."):
        _report(config(root), units, annotated=True, run=None)
    report = json.loads((root / "reports" / SNAPSHOT / "report.json").read_text())
    assert report["failures"]["unfinished"] == {"annotate": [2]} and report["shards"]["planned"] == 4
    assert (root / "reports" / "index.html").is_file()
