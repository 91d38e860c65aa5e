"""The engine and the Airflow storage glue against a real S3 API server (moto) on 127.0.0.1."""

import json
import subprocess
import sys

import pytest
from airflow_env import REPO, airflow_env
from moto_s3 import moto_s3

from rpj_tasks.ccnet import stage as ccnet
from rpj_tasks.core import storage
from rpj_tasks.core.config import load_registry
from rpj_tasks.download.fetch import download_unit
from rpj_tasks.download.listing import list_segments, shard_segments
from rpj_tasks.sample.setup import ensure_sample

KEY, SECRET = "testing-key", "testing-secret"


@pytest.fixture(scope="module")
def s3():
    with moto_s3(KEY, SECRET) as (endpoint, client):
        client.create_bucket(Bucket="rpj")
        saved = dict(storage._OPTIONS)
        storage.register_options("s3", {"endpoint_url": endpoint, "key": KEY, "secret": SECRET})
        yield endpoint, client
        storage._OPTIONS.clear()
        storage._OPTIONS.update(saved)


def run_shards(cfg, shards):
    segments = list_segments(cfg.source_base, cfg.crawl)
    per_shard = {s: shard_segments(segments, s, cfg.num_shards) for s in shards}
    for s, segs in per_shard.items():
        download_unit(cfg, s, segs)
    for s, segs in per_shard.items():
        ccnet.compute_hashes(cfg, s, segs)
    return [ccnet.mine_shard(cfg, s, segs) for s, segs in per_shard.items()]


def test_ccnet_stage_on_s3_matches_local(s3, tmp_path):
    _, client = s3
    base = load_registry()["2000-01"]
    mirror = (tmp_path / "mirror").as_uri()
    local = base.with_overrides(storage_root=(tmp_path / "data").as_uri(), source_base=mirror)
    remote = base.with_overrides(storage_root="s3://rpj/release", source_base=mirror)
    ensure_sample(local)
    ensure_sample(remote)
    run_shards(local, [0, 1])
    records = run_shards(remote, [0, 1])
    assert all(not r["skipped"] and r["counts"]["kept"] > 0 for r in records)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="rpj", Prefix="release/documents/")["Contents"])
    assert keys and not any(".tmp-" in k for k in keys)
    for key in keys:
        rel = key.removeprefix("release/")
        body = client.get_object(Bucket="rpj", Key=key)["Body"].read()
        assert body == (tmp_path / "data" / rel).read_bytes(), rel
    segments = list_segments(remote.source_base, remote.crawl)
    assert ccnet.is_finished(remote, 0) and ccnet.mine_shard(remote, 0, shard_segments(segments, 0, remote.num_shards))["skipped"]


def test_airflow_connection_configures_the_engine(s3, tmp_path):
    endpoint, client = s3
    conn = {"conn_type": "aws", "login": KEY, "password": SECRET, "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    env = airflow_env(tmp_path, AIRFLOW_CONN_AWS_DEFAULT=json.dumps(conn))
    code = (
        "import sys; sys.path.insert(0, 'dags')\n"
        "from rpj_dags.runtime import configure_storage\n"
        "from rpj_tasks.core import storage\n"
        "configure_storage('s3://rpj/conn-test', 'file:///tmp')\n"
        "storage.write_bytes('s3://rpj/conn-test/hello.txt', b'hello from a task')\n"
        "print(storage.read_bytes('s3://rpj/conn-test/hello.txt').decode())\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("hello from a task")
    assert client.get_object(Bucket="rpj", Key="conn-test/hello.txt")["Body"].read() == b"hello from a task"
