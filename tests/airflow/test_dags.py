"""DAG structure and parameter handling, parsed by a real Airflow in a subprocess."""

import json
import subprocess
import sys

import pytest
from airflow_env import REPO, airflow, airflow_env

from rpj_tasks.core.layout import LANGUAGES

INSPECT = r"""
import json
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder="%s")
out = {"errors": {k: v for k, v in bag.import_errors.items()}, "dags": {}}
for dag_id, dag in bag.dags.items():
    out["dags"][dag_id] = {
        "tasks": sorted(t.task_id for t in dag.tasks),
        "params": {k: dag.params[k] for k in dag.params.keys()},
        "timetable": type(dag.timetable).__name__,
        "tags": sorted(dag.tags),
    }
print("JSON" + json.dumps(out, default=str))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory):
    env = airflow_env(tmp_path_factory.mktemp("dagbag"))
    proc = subprocess.run([sys.executable, "-c", INSPECT % (REPO / "dags")], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("JSON"))
    return json.loads(line[4:])


def test_no_import_errors(dagbag):
    assert dagbag["errors"] == {}


def test_one_dag_per_snapshot_plus_sample_monthly_artifacts(dagbag):
    dags = dagbag["dags"]
    snapshot_dags = [d for d in dags if d.startswith("rpv2_20") or d.startswith("rpv2_19")]
    assert len(snapshot_dags) == 84
    assert {
        "rpv2_2014_15",
        "rpv2_2023_06",
        "rpv2_2023_14",
        "rpv2_sample",
        "rpv2_monthly",
        "rpv2_prep_artifacts",
        "rpv2_dedup",
        "rpv2_filter",
    } <= set(dags)


def test_snapshot_dag_shape_and_params(dagbag):
    d = dagbag["dags"]["rpv2_2023_06"]
    dedup = ["clusters_group", "clusters_scatter", "clusters_write", "dedup_index", "exact_dedup"]
    # a real snapshot annotates each unit right after mining it (artifacts must exist: checked by the plan)
    assert d["tasks"] == [
        *dedup,
        "plan_units",
        "process.annotate",
        "process.download",
        "process.hashes",
        "process.mine",
        "process.tokens",
        "publish",
        "report",
        "validate",
        "validate_release",
    ]
    # the sample builds its artifacts from its own documents first: annotation waits for every unit
    assert dagbag["dags"]["rpv2_sample"]["tasks"] == [
        "annotate",
        *dedup,
        "plan_units",
        "process.download",
        "process.hashes",
        "process.mine",
        "process.tokens",
        "publish",
        "report",
        "signal_artifacts",
        "validate",
        "validate_release",
    ]
    assert dagbag["dags"]["rpv2_dedup"]["tasks"] == ["members", "partition", "plan", "republish", "write"]
    assert dagbag["dags"]["rpv2_filter"]["tasks"] == ["allot", "count", "filter_shard", "finalize", "plan"]
    assert dagbag["dags"]["rpv2_filter"]["params"] == {
        "snapshot": None,
        "recipe": "gopher",
        "dry_run": False,
        "format": "parquet",
        "force": False,
    }
    assert d["params"]["dedup"] is True and d["params"]["publish"] is True
    assert d["params"]["num_shards"] == 5000
    assert d["params"]["languages"] == list(LANGUAGES)
    assert d["params"]["force"] is False
    assert d["params"]["annotate"] is True and d["params"]["annotate_tail"] is False
    assert d["params"]["dsir_hash_mode"] == "cpython-seed42"
    assert dagbag["dags"]["rpv2_sample"]["params"]["num_shards"] == 4


def test_monthly_uses_data_interval_timetable(dagbag):
    assert dagbag["dags"]["rpv2_monthly"]["timetable"] == "CronDataIntervalTimetable"


def test_monthly_maps_interval_to_snapshot_dags(tmp_path):
    env = airflow_env(tmp_path)
    assert airflow(env, "db", "migrate").returncode == 0
    # a manual run at 2023-03-01 covers the month before it: February 2023 -> CC-MAIN-2023-06
    proc = airflow(env, "tasks", "test", "rpv2_monthly", "snapshots_in_interval", "2023-03-01")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    assert "Returned value was: [{'trigger_dag_id': 'rpv2_2023_06', 'month': '2023-02'}]" in out
    proc = airflow(env, "tasks", "test", "rpv2_monthly", "snapshots_in_interval", "2023-04-01")
    assert "Returned value was: []" in proc.stdout + proc.stderr


def test_bad_shard_param_rejected_before_run(tmp_path):
    env = airflow_env(tmp_path)
    assert airflow(env, "db", "migrate").returncode == 0
    proc = airflow(env, "dags", "test", "rpv2_sample", "-c", json.dumps({"shards": ["7x"]}))
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "7x" in out
    assert not (tmp_path / "data" / "documents").exists()


def test_backfill_dry_run_lists_one_monthly_run_per_month(tmp_path):
    env = airflow_env(tmp_path)
    assert airflow(env, "db", "migrate").returncode == 0
    assert airflow(env, "dags", "reserialize").returncode == 0
    proc = airflow(
        env, "backfill", "create", "--dag-id", "rpv2_monthly", "--from-date", "2023-01-01", "--to-date", "2023-12-31", "--dry-run"
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    # logical date = start of the month interval: the 2023-02-01 run covers February -> CC-MAIN-2023-06
    assert [f"2023-{m:02d}-01 00:00:00+00:00" in out for m in range(1, 13)] == [True] * 12


PARAM_CHECK = r"""
import json, sys
sys.path.insert(0, "%s")
from airflow.sdk.definitions.param import ParamsDict
from rpj_dags.snapshot import snapshot_params
from rpj_tasks.core.config import load_registry
cfg = next(iter(load_registry().values()))
out = []
for name, value in json.loads(sys.argv[1]):
    params = ParamsDict(snapshot_params(cfg))
    try:
        params[name] = value
        params.validate()
        out.append("ok")
    except Exception as exc:
        out.append(type(exc).__name__)
print("JSON" + json.dumps(out))
"""


def test_params_match_whole_ascii_values(tmp_path):
    """Identifiers become paths: a trailing newline or non-ASCII digits are refused at trigger time
    (JSON Schema ``pattern`` is searched, and ``$`` matches before a final newline in Python)."""
    cases = [
        ("languages", ["en"], "ok"),
        ("languages", ["en\n"], "ParamValidationError"),
        ("languages", ["\u0435n"], "ParamValidationError"),  # Cyrillic e
        ("shards", ["3", "10-12", 7], "ok"),
        ("shards", ["3\n"], "ParamValidationError"),
        ("shards", ["\u0663"], "ParamValidationError"),  # ARABIC-INDIC DIGIT THREE
        ("shards", ["1-2\n"], "ParamValidationError"),
        ("month", "2023-02", "ok"),
        ("month", "2023-02\n", "ParamValidationError"),
    ]
    env = airflow_env(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-c", PARAM_CHECK % (REPO / "dags"), json.dumps([[n, v] for n, v, _ in cases])],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(next(x for x in proc.stdout.splitlines() if x.startswith("JSON"))[4:])
    assert got == [want for _, _, want in cases]


def test_mapped_shard_groups_stay_under_max_map_length(monkeypatch):
    """rpv2_filter maps one count and one filter_shard task per group of shards: an RPv2 snapshot's
    5000 shards give at most MAX_MAPPED_UNITS groups (Airflow's max_map_length is 1024), in order."""
    monkeypatch.syspath_prepend(str(REPO / "dags"))
    from rpj_dags.common import MAX_MAPPED_UNITS, grouped

    shards = list(range(5000))
    groups = grouped(shards)
    assert len(groups) <= MAX_MAPPED_UNITS < 1024
    assert [s for g in groups for s in g] == shards and {len(g) for g in groups} == {5}
    assert grouped([0, 1, 2, 3]) == [[0], [1], [2], [3]] and grouped([]) == []
    assert len(grouped(list(range(1001)))) <= MAX_MAPPED_UNITS
    src = (REPO / "dags" / "rpj_dags" / "filter.py").read_text()
    assert src.count("grouped(") == 2  # the plan's shards and the allotted units
