"""The commit protocol in the real stages: a kill or a full disk at a commit point of ``mine``,
``annotate`` or an artifacts build never leaves work that the next run skips, and the next run ends
byte-identical to a clean one; two copies of one shard at once both succeed.

Each faulty run is a real ``rpj`` process with ``RPJ_FAULT`` (rpj_tasks.core.commit): killed with
SIGKILL, or failing with ENOSPC, after the first, a middle and the last output, after the stale-file
removal, and just before the record.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from pathlib import Path

import pytest
from airflow_env import base_env
from trees import digests, temp_files

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SNAPSHOT = "2000-01"


def env_for(tmp: Path, **extra: str) -> dict[str, str]:
    return base_env(tmp, **extra)


def rpj(tmp: Path, *args: str, fault: str | None = None) -> subprocess.CompletedProcess:
    env = env_for(tmp, **({"RPJ_FAULT": fault} if fault else {}))
    return subprocess.run([str(BIN / "rpj"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("commit-stages")
    for args in (("ccnet", "--snapshot", SNAPSHOT), ("annotate", "--snapshot", SNAPSHOT)):
        proc = rpj(tmp, *args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp


def points(outputs: int) -> list[str]:
    return sorted({f"output:{n}" for n in (1, max(1, outputs // 2), outputs)}) + ["stale:1", "record:1"]


MINE = ("mine", "--snapshot", SNAPSHOT, "--shards", "1")
ANNOTATE = ("annotate", "--snapshot", SNAPSHOT, "--shards", "1")


@pytest.mark.parametrize("action", ["kill", "enospc"])
def test_mine_fault_at_every_commit_point(sample, action):
    root = sample / "data"
    clean = digests(root, "documents")
    outputs = len(list((root / "documents" / SNAPSHOT / "0001").glob("*.json.gz")))
    for point in points(outputs):
        faulty = rpj(sample, *MINE, "--force", fault=f"{point}:{action}")
        assert faulty.returncode != 0, point
        assert not (root / "stats" / "ccnet" / SNAPSHOT / "0001.json").exists(), f"a record survived the fault at {point}"
        again = rpj(sample, *MINE)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "skipped" not in again.stdout, f"the run after a fault at {point} skipped the shard: {again.stdout}"
        assert digests(root, "documents") == clean, point
        assert not temp_files(root / "documents"), point


@pytest.mark.parametrize("action", ["kill", "enospc"])
def test_annotate_fault_at_every_commit_point(sample, action):
    root = sample / "data"
    clean = digests(root, "quality_signals", "minhash")
    outputs = len(list((root / "quality_signals" / SNAPSHOT / "0001").glob("*"))) * 2
    for point in points(outputs):
        faulty = rpj(sample, *ANNOTATE, "--force", fault=f"{point}:{action}")
        assert faulty.returncode != 0, point
        assert not (root / "stats" / "annotate" / SNAPSHOT / "0001.json").exists(), point
        again = rpj(sample, *ANNOTATE)
        assert again.returncode == 0, again.stderr[-2000:]
        assert "annotate shard 0001: done" in again.stdout, f"after a fault at {point}: {again.stdout}"
        assert digests(root, "quality_signals", "minhash") == clean, point
        assert not temp_files(root / "quality_signals") and not temp_files(root / "minhash"), point


BUILD_ARTIFACTS = """
import sys
from rpj_tasks.core.config import load_registry
from rpj_tasks.sample.setup import ensure_signal_artifacts
ensure_signal_artifacts(load_registry()["2000-01"], force=True)
"""


def test_artifacts_build_fault_is_rebuilt_identically(sample):
    root = sample / "data"
    artifacts = root / "artifacts" / "signals" / "sample-v1"
    clean = digests(artifacts, ".")
    for fault in ("output:1:kill", "stale:1:enospc", "record:1:kill"):
        env = env_for(sample, RPJ_FAULT=fault)
        proc = subprocess.run(
            [sys.executable, "-c", BUILD_ARTIFACTS], env=env, cwd=REPO, capture_output=True, text=True, timeout=600
        )
        assert proc.returncode != 0, fault
        assert not (artifacts / "MANIFEST.json").exists(), fault  # half-rebuilt artifacts are never loadable
        again = rpj(sample, *ANNOTATE, "--force")  # rebuilds the sample's artifacts as needed, then annotates
        assert again.returncode == 0, again.stderr[-2000:]
        assert digests(artifacts, ".") == clean, fault


def test_two_runs_of_one_shard_at_once(sample):
    root = sample / "data"
    clean = digests(root, "documents")
    env = env_for(sample)
    procs = [
        subprocess.Popen(
            [str(BIN / "rpj"), *MINE, "--force"], env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in results]
    assert digests(root, "documents") == clean
    assert not temp_files(root / "documents")
    again = rpj(sample, *MINE)
    assert "skipped (finished)" in again.stdout


def test_sample_outputs_unchanged_by_the_restructure(sample):
    """Every output byte of the sample equals what the code wrote before the engine was reorganised
    into packages and the commit protocol (digests pinned from commit 7d8dad0's CLI run)."""
    import json

    pinned = json.loads((REPO / "tests" / "sample_outputs.sha256.json").read_text())
    assert digests(sample / "data", "documents", "quality_signals", "minhash") == pinned


@pytest.fixture(scope="module")
def s3_sample(sample, tmp_path_factory):
    """The sample's shards 0-1 mined and annotated with the storage root on a local S3 server (moto);
    the rpj processes reach it through fsspec's FSSPEC_S3 configuration."""
    import json

    from moto_s3 import moto_s3

    stack = contextlib.ExitStack()
    endpoint, client = stack.enter_context(moto_s3())
    client.create_bucket(Bucket="rpj")
    tmp = tmp_path_factory.mktemp("commit-s3")
    extra = {
        "RPJ_STORAGE_ROOT": "s3://rpj/root",
        "RPJ_SAMPLE_SOURCE": (sample / "mirror").as_uri(),
        "FSSPEC_S3": json.dumps({"endpoint_url": endpoint, "key": "k", "secret": "s"}),
    }

    def run(*args: str, fault: str | None = None) -> subprocess.CompletedProcess:
        env = env_for(tmp, **extra, **({"RPJ_FAULT": fault} if fault else {}))
        return subprocess.run([str(BIN / "rpj"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=600)

    for args in (("ccnet", "--snapshot", SNAPSHOT, "--shards", "0-1"), ("annotate", "--snapshot", SNAPSHOT, "--shards", "0-1")):
        proc = run(*args)
        assert proc.returncode == 0, proc.stderr[-3000:]
    with stack:
        yield run, client


def s3_objects(client, prefix: str) -> dict[str, str]:
    listed = client.list_objects_v2(Bucket="rpj", Prefix=prefix).get("Contents", [])
    return {o["Key"]: o["ETag"] for o in listed}


@pytest.mark.parametrize(
    "step,point", [("mine", "output:2"), ("mine", "record:1"), ("annotate", "output:2"), ("annotate", "stale:1")]
)
def test_s3_fault_is_redone_to_identical_objects(s3_sample, step, point):
    run, client = s3_sample
    record = f"root/stats/{'ccnet' if step == 'mine' else 'annotate'}/{SNAPSHOT}/0001.json"
    prefixes = ("root/documents/",) if step == "mine" else ("root/quality_signals/", "root/minhash/")
    clean = {p: s3_objects(client, p) for p in prefixes}
    args = (step, "--snapshot", SNAPSHOT, "--shards", "1")
    assert run(*args, "--force", fault=f"{point}:kill").returncode != 0
    assert record not in s3_objects(client, record), f"a record survived the kill at {point}"
    again = run(*args)
    assert again.returncode == 0 and "skipped" not in again.stdout, again.stdout + again.stderr[-2000:]
    assert {p: s3_objects(client, p) for p in prefixes} == clean  # same objects, same bytes (ETag = MD5)
    assert not [k for p in prefixes for k in s3_objects(client, p) if ".tmp-" in k]
