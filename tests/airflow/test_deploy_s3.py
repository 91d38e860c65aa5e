"""The whole sample DAG on S3 under a real scheduler, with credentials that never leak.

A local S3 server (moto's ``ThreadedMotoServer`` on 127.0.0.1) holds both the Common Crawl mirror
(``s3://<bucket>/mirror/``, copied from the session's CLI reference run) and the storage root
(``s3://<bucket>/root``).  The server checks every request's SigV4 signature against an IAM user
of its own (moto's IAM authentication is switched on once the bucket and the user exist), so an
anonymous request, a wrong secret, or credentials from anywhere else are refused with 403: the
run can only succeed if the ``aws_default`` connection's credentials reach every process that
touches S3, the seed-42 annotation worker processes included.

The deployment (LocalExecutor, fresh PostgreSQL database) gets the credentials only through
``RPJ_AWS_CONN`` (the ``aws_default`` connection, ``endpoint_url`` in its extra): no ``AWS_*``
credential variable in its environment, empty AWS config and credentials files, no instance
metadata lookups.  ``rpv2_sample`` then builds its models and signal artifacts on S3, runs
download, hashes, mine and annotate, and must give the CLI's bytes; finally every task log (every
try and map index, through the REST API), every file of the deployment (component logs, task log
files, config, state), every XCom entry of the run and every object in the bucket is searched for
the secret (except the deployment's saved environment, ``env.json``, which is checked to be 0600).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import time
import uuid
import zlib
from pathlib import Path
from urllib.parse import quote

import boto3
import pytest
import requests
from deploy_harness import (
    OUTPUT_COMPONENTS,
    SAMPLE_DAG,
    SNAPSHOT,
    cli_reference,
    deployment,
    output_digests,
    postgres_available,
)
from moto.server import ThreadedMotoServer

pytestmark = pytest.mark.deploy

BUCKET = "rpj-e2e"
ROOT, MIRROR = "root", "mirror"
REGION = "us-east-1"
RUN_TIMEOUT = 900  # the run takes ~2 minutes; bounded well within the suite's budget on a slow, shared machine
#: Variables through which boto/botocore/s3fs could find credentials other than the connection's.
CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_ACCESS_KEY",
    "AWS_SECRET_KEY",
)


# ------------------------------------------------------------------------------------------------
# The secret and how to find it


class Secret:
    """The secret access key, and every form a leak of it could take in text: the whole key, its
    URL-quoted and JSON-escaped forms, and any 12-character window of it (a truncated repr)."""

    WINDOW = 12

    def __init__(self, value: str) -> None:
        assert len(value) >= 2 * self.WINDOW
        self.value = value
        forms = {value, quote(value, safe=""), json.dumps(value)[1:-1]}
        forms |= {value[i : i + self.WINDOW] for i in range(len(value) - self.WINDOW + 1)}
        self.needles = sorted({f.encode() for f in forms})

    def found_in(self, data: str | bytes) -> bool:
        raw = data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data
        return any(needle in raw for needle in self.needles)


def test_secret_search_finds_what_it_must():
    """The leak search can fail: it finds the secret whole, truncated, quoted and in bytes."""
    secret = Secret("rpj-secret-" + uuid.uuid4().hex + "/+x")
    for text in (
        f"password={secret.value} ok",
        secret.value[5:20],
        quote(secret.value, safe=""),
        json.dumps({"secret": secret.value}),
        ("log: " + secret.value[-14:]).encode(),
    ):
        assert secret.found_in(text), text
    assert not secret.found_in("password=*** " + secret.value[:8] + " " + secret.value[-8:])
    assert not secret.found_in(b"")


# ------------------------------------------------------------------------------------------------
# S3 server


class S3Server:
    """moto on 127.0.0.1 (random port), with one bucket and one IAM user allowed ``s3:*``; after
    :meth:`require_auth` every request must be signed with that user's key."""

    def __init__(self) -> None:
        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one access-log line per request otherwise
        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.server.start()
        self.endpoint = "http://{}:{}".format(*self.server.get_host_and_port())
        boot = {
            "endpoint_url": self.endpoint,
            "region_name": REGION,
            "aws_access_key_id": "bootstrap",
            "aws_secret_access_key": "bootstrap",
        }
        boto3.client("s3", **boot).create_bucket(Bucket=BUCKET)
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="rpj-e2e")
        iam.put_user_policy(
            UserName="rpj-e2e",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
            ),
        )
        key = iam.create_access_key(UserName="rpj-e2e")["AccessKey"]
        self.key_id, self.secret = key["AccessKeyId"], Secret(key["SecretAccessKey"])
        self.client = boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=self.key_id,
            aws_secret_access_key=self.secret.value,
        )

    def require_auth(self, on: bool = True) -> None:
        r = requests.post(f"{self.endpoint}/moto-api/reset-auth", data=b"0" if on else b"inf", timeout=30)
        r.raise_for_status()

    def stop(self) -> None:
        try:
            self.require_auth(False)
            requests.post(f"{self.endpoint}/moto-api/reset", timeout=60)  # frees the bucket's memory
        finally:
            self.server.stop()

    def keys(self, prefix: str = "") -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            out.extend(o["Key"] for o in page.get("Contents", []))
        return sorted(out)

    def get(self, key: str) -> bytes:
        return self.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    def upload_tree(self, local: Path, prefix: str) -> int:
        files = [p for p in sorted(local.rglob("*")) if p.is_file()]
        for path in files:
            self.client.upload_file(str(path), BUCKET, f"{prefix}/{path.relative_to(local).as_posix()}")
        return len(files)


@pytest.fixture(scope="module")
def s3():
    server = S3Server()
    try:
        server.require_auth()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    return cli_reference(tmp_path_factory.getbasetemp())


def test_s3_server_refuses_anything_but_the_users_key(s3):
    """Without the connection's credentials nothing gets through: the run below proves they reached every process."""
    from botocore import UNSIGNED
    from botocore.config import Config

    s3.client.put_object(Bucket=BUCKET, Key="probe/ok.txt", Body=b"ok")
    assert s3.get("probe/ok.txt") == b"ok"
    where = {"endpoint_url": s3.endpoint, "region_name": REGION}
    for name, client in (
        ("anonymous", boto3.client("s3", **where, config=Config(signature_version=UNSIGNED))),
        (
            "wrong secret",
            boto3.client("s3", **where, aws_access_key_id=s3.key_id, aws_secret_access_key="wrong-" + uuid.uuid4().hex),
        ),
    ):
        with pytest.raises(Exception) as info:
            client.get_object(Bucket=BUCKET, Key="probe/ok.txt")
        assert "403" in str(info.value) or "AccessDenied" in str(info.value) or "Signature" in str(info.value), (name, info.value)
    s3.client.delete_object(Bucket=BUCKET, Key="probe/ok.txt")


# ------------------------------------------------------------------------------------------------
# The run


def write_registry(tmp: Path) -> Path:
    """Only the sample snapshot, on S3; the mirror exists already (generate_source is for file:// only)."""
    path = tmp / "registry.yaml"
    path.write_text(
        "defaults:\n"
        f"  storage_root: s3://{BUCKET}/{ROOT}\n"
        f"  source_base: s3://{BUCKET}/{MIRROR}/\n"
        "  models_version: sample-v1\n"
        "  signals_version: sample-v1\n"
        "snapshots:\n"
        '  - {id: "2000-01", dag_id: rpv2_sample, sample: true, generate_source: false, num_shards: 4, hash_group_size: 2, '
        "dedup_scope: snapshot, dedup_partitions: 4, clusters_partitions: 2}\n"
    )
    return path


def deployment_env(tmp: Path, s3: S3Server, monkeypatch) -> dict[str, str]:
    """The deployment's extra environment: the registry, the connection, and nowhere else to find credentials."""
    for name in list(os.environ):
        if name.startswith(("AWS_", "BOTO_")):
            monkeypatch.delenv(name)  # base_env copies the caller's environment
    aws = tmp / "aws"
    aws.mkdir()
    (aws / "config").write_text("")
    (aws / "credentials").write_text("")
    conn = {
        "conn_type": "aws",
        "login": s3.key_id,
        "password": s3.secret.value,
        "extra": {"endpoint_url": s3.endpoint, "region_name": REGION},
    }
    return {
        "RPJ_REGISTRY": str(write_registry(tmp)),
        "RPJ_STORAGE_ROOT": f"s3://{BUCKET}/{ROOT}",
        "RPJ_SAMPLE_SOURCE": f"s3://{BUCKET}/{MIRROR}/",
        "RPJ_AWS_CONN": json.dumps(conn),
        "AWS_CONFIG_FILE": str(aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(aws / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def s3_digests(s3: S3Server) -> dict[str, str]:
    out = {}
    for component in OUTPUT_COMPONENTS:
        for key in s3.keys(f"{ROOT}/{component}/"):
            out[key.removeprefix(f"{ROOT}/")] = hashlib.sha256(s3.get(key)).hexdigest()
    return out


def readable(key: str, body: bytes) -> bytes:
    """An object's bytes as a leak would show in them: gzip decompressed, parquet as its rows."""
    if key.endswith(".gz"):
        try:
            return gzip.decompress(body)
        except (OSError, EOFError, zlib.error):  # the mirror's deliberately broken WET file
            return body
    if key.endswith(".parquet"):
        import pyarrow.parquet as pq

        return repr(pq.read_table(io.BytesIO(body)).to_pylist()).encode()
    return body


def task_log_raw(client, run_id: str, task_id: str, try_number: int, map_index: int) -> str:
    """The task log as the REST API gives it (the whole JSON: every structured field, not only the events)."""
    path = f"/api/v2/dags/{SAMPLE_DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/{quote(task_id, safe='')}/logs/{try_number}"
    r = client.request(
        "GET", path, params={"map_index": map_index, "full_content": "true"}, headers={"Accept": "application/json"}
    )
    return r.text


def xcom_values(client, run_id: str, task_id: str, map_index: int) -> dict[str, str]:
    """``{key: the entry as the REST API returns it, value included}`` for one task instance."""
    base = f"/api/v2/dags/{SAMPLE_DAG}/dagRuns/{quote(run_id, safe='')}/taskInstances/{quote(task_id, safe='')}/xcomEntries"
    entries = client.request("GET", base, params={"map_index": map_index, "limit": 100}).json()["xcom_entries"]
    out = {}
    for entry in entries:
        r = client.request("GET", f"{base}/{quote(entry['key'], safe='')}", params={"map_index": map_index})
        out[entry["key"]] = r.text
    return out


def test_sample_dag_on_s3_with_connection_credentials_only(s3, reference, tmp_path_factory, monkeypatch):
    reason = postgres_available()
    if reason:
        pytest.fail(reason)  # the machine is meant to have it: a missing service is a failure, not a skip
    t0 = time.monotonic()
    mirror = reference.parent / "mirror"
    assert s3.upload_tree(mirror, MIRROR) >= 5
    assert f"{MIRROR}/crawl-data/CC-MAIN-{SNAPSHOT}/wet.paths.gz" in s3.keys(MIRROR)
    assert not s3.keys(f"{ROOT}/")

    tmp = tmp_path_factory.mktemp("deploy-s3")
    env = deployment_env(tmp, s3, monkeypatch)
    with deployment(tmp, executor="local", env=env) as dep:
        assert not [k for k in CREDENTIAL_VARS if k in dep.env]
        import psutil

        for component in ("scheduler", "api-server"):
            proc_env = psutil.Process(dep.pid(component)).environ()
            assert not [k for k in CREDENTIAL_VARS if k in proc_env], component

        conf = {"shards": [0, 1, 2, 3]}
        dep.client.unpause(SAMPLE_DAG)
        run_id = dep.client.trigger(SAMPLE_DAG, conf=conf)["dag_run_id"]
        run = dep.wait(SAMPLE_DAG, run_id, timeout=RUN_TIMEOUT)  # on failure: the failed tasks' logs and component logs
        run_seconds = time.monotonic() - t0
        assert run["state"] == "success" and run["conf"] == conf
        tis = dep.client.task_instances(SAMPLE_DAG, run_id)
        assert {t["state"] for t in tis} == {"success"}, [(t["task_id"], t["map_index"], t["state"]) for t in tis]
        assert {"plan_units", "process.download", "process.hashes", "process.mine", "signal_artifacts", "annotate", "report"} <= {
            t["task_id"] for t in tis
        }

        # -------- outputs: the CLI's bytes, built entirely on S3 (models and artifacts included), no temp objects
        keys = s3.keys()
        assert not [k for k in keys if k.rsplit("/", 1)[-1].startswith(".") and ".tmp-" in k], "temp objects left"
        for prefix in (f"{ROOT}/artifacts/ccnet/sample-v1/MANIFEST.json", f"{ROOT}/artifacts/signals/sample-v1/MANIFEST.json"):
            assert prefix in keys, f"{prefix} not built on S3 by the DAG"
        for shard in range(4):
            for stage in ("ccnet", "annotate"):
                assert f"{ROOT}/stats/{stage}/{SNAPSHOT}/{shard:04d}.json" in keys
        actual, expected = s3_digests(s3), output_digests(reference)
        missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
        differ = sorted(k for k in set(actual) & set(expected) if actual[k] != expected[k])
        assert not (missing or extra or differ), f"missing {missing[:10]}, extra {extra[:10]}, different {differ[:10]}"
        assert len(actual) > 100 and {k.split("/", 1)[0] for k in actual} == set(OUTPUT_COMPONENTS)
        assert not (dep.storage_root / "documents").exists()  # nothing went to the local default root

        # -------- the secret never leaks
        texts: dict[str, str | bytes] = {}
        annotate_logs = []
        for ti in tis:
            tries = dep.client.tries(SAMPLE_DAG, run_id, ti["task_id"], ti["map_index"])
            assert tries, ti
            for t in tries:
                text = task_log_raw(dep.client, run_id, ti["task_id"], t["try_number"], ti["map_index"])
                texts[f"task log {ti['task_id']}[{ti['map_index']}] try {t['try_number']}"] = text
                if ti["task_id"] == "annotate":
                    annotate_logs.append(text)
            for key, value in xcom_values(dep.client, run_id, ti["task_id"], ti["map_index"]).items():
                texts[f"xcom {ti['task_id']}[{ti['map_index']}] {key}"] = value
        # the logs and XComs searched are the real ones: the engine's lines and the seed-42 workers' are in them
        assert any("shards mined" in v for k, v in texts.items() if k.startswith("task log process.mine"))
        assert any("[worker " in text for text in annotate_logs), "no annotation worker process logged"
        assert any(k.startswith("xcom plan_units[-1] listing") for k in texts)
        assert any(k.startswith("xcom report[-1] return_value") for k in texts)

        # Every file of the deployment (component logs, task log files, config, state) but one: env.json, the
        # components' saved environment, holds RPJ_AWS_CONN by design (deploy/native.py); it must stay private.
        env_file = dep.state_dir / "env.json"
        assert env_file.stat().st_mode & 0o077 == 0, oct(env_file.stat().st_mode)
        files = [p for p in sorted(dep.tmp.rglob("*")) if p.is_file() and p != env_file]
        components = {p.stem for p in (dep.state_dir / "logs").glob("*.log")}
        assert {"api-server", "scheduler", "dag-processor", "triggerer"} <= components, components
        for path in files:
            texts[f"file {path.relative_to(dep.tmp)}"] = path.read_bytes()
        for key in keys:
            texts[f"s3 {key}"] = readable(key, s3.get(key))
        assert any(k.startswith(f"s3 {ROOT}/stats/annotate/") for k in texts)

        leaks = sorted(name for name, text in texts.items() if s3.secret.found_in(text))
        assert not leaks, f"the secret access key appears in: {leaks}"
        key_id = s3.key_id.encode()
        with_key_id = [n for n, t in texts.items() if key_id in (t.encode() if isinstance(t, str) else t)]
        assert not [n for n in with_key_id if s3.secret.found_in(texts[n])], "access key id logged with the secret"
        print(
            f"S3 deployment test: run {run_seconds:.0f}s; searched {len(texts)} logs, files, XComs and objects "
            f"({len(with_key_id)} mention the access key id, none the secret: {with_key_id})"
        )
