"""What the fault matrix runs on: a clean reference run, and per case its own mirror, storage root
(local or on a local S3 server), registry, HTTP server and ``rpj`` processes.

The sample's CCNet models are built once, by the reference run, and hard-linked (or uploaded) into
each case's storage root, so a case's run only downloads, hashes and mines its 4 small shards.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import posixpath
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from cases import SHARDS, SNAPSHOT, Case

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
DOCS_PER_SEGMENT = 20  # ~15 kept documents and ~10 documents files per shard
MODELS = "artifacts/ccnet/sample-v1"
COMPARED = ("documents/", "staging/hashes/")  # the outputs that must be byte-identical after a repair
SNAPSHOT_ENTRY = {
    "id": SNAPSHOT,
    "dag_id": "rpv2_sample",
    "sample": True,  # its models are the sample's (built by the reference run, then present)
    "generate_source": False,  # each case brings its own mirror
    "num_shards": len(SHARDS),
    "hash_group_size": 2,
    "models_version": "sample-v1",
    "signals_version": "sample-v1",
}

# `rpj` with download retries of milliseconds (same CLI, same engine): the cases that retry until
# they give up would otherwise sleep up to a minute of jittered backoff.
FAST_RETRY = """
import sys
from rpj_tasks import cli
from rpj_tasks.download import fetch, listing
fast = fetch.RetryPolicy(base_delay=0.005, max_delay=0.02)
for fn in (fetch.download_unit, fetch.download_shard, listing.stage_listing, listing.list_segments):
    assert "retry" in (fn.__kwdefaults__ or {}), f"{fn.__qualname__} has no retry= default: update FAST_RETRY"
    fn.__kwdefaults__["retry"] = fast
sys.exit(cli.main(sys.argv[1:]))
"""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def is_temp(key: str) -> bool:
    name = key.rsplit("/", 1)[-1]
    return name.startswith(".") and ".tmp-" in name


# --------------------------------------------------------------------------- storage roots


class LocalRoot:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.url = path.as_uri()

    def keys(self, prefix: str = "") -> list[str]:
        base = self.path / prefix
        if not base.exists():
            return []
        return sorted(str(p.relative_to(self.path)) for p in base.rglob("*") if p.is_file())

    def read(self, key: str) -> bytes | None:
        try:
            return (self.path / key).read_bytes()
        except FileNotFoundError:
            return None

    def add_models(self, models: Path) -> None:
        shutil.copytree(models, self.path / MODELS, copy_function=os.link)


class S3Root:
    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix.strip("/") + "/"
        self.url = f"s3://{bucket}/{self.prefix}"

    def keys(self, prefix: str = "") -> list[str]:
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            out += [obj["Key"][len(self.prefix) :] for obj in page.get("Contents", [])]
        return sorted(out)

    def read(self, key: str) -> bytes | None:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self.prefix + key)["Body"].read()
        except self.client.exceptions.NoSuchKey:
            return None

    def add_models(self, models: Path) -> None:
        for path in sorted(models.rglob("*")):
            if path.is_file():
                key = f"{self.prefix}{MODELS}/{path.relative_to(models)}"
                self.client.put_object(Bucket=self.bucket, Key=key, Body=path.read_bytes())


Root = LocalRoot | S3Root


def record_key(kind: str, shard: int) -> str:
    return f"stats/{kind}/{SNAPSHOT}/{shard:04d}.json"


def load_record(root: Root, kind: str, shard: int) -> dict[str, Any] | None:
    data = root.read(record_key(kind, shard))
    return None if data is None else json.loads(data)


def state(root: Root) -> dict[str, Any]:
    """What must be byte-identical to the clean run: the files under COMPARED (sha256 by key, temp
    files included, so a leftover shows) and, per shard, the CCNet record's inputs, outputs, files and
    counters (not its timings, nor ``stale_files_removed``, which counts an earlier run's leftovers)."""
    files = {key: sha256(root.read(key) or b"") for prefix in COMPARED for key in root.keys(prefix)}
    records = {}
    for shard in SHARDS:
        record = load_record(root, "ccnet", shard)
        if record is not None:
            counts = {k: v for k, v in record["counts"].items() if k != "stale_files_removed"}
            records[shard] = {k: record.get(k) for k in ("inputs", "outputs", "files")} | {"counts": counts}
    return {"files": files, "records": records}


def outputs(st: dict[str, Any]) -> dict[str, Any]:
    """The outputs of a :func:`state`: the files and what each CCNet record lists (for damage that
    must not change them although the input bytes, hence the records' inputs, differ)."""
    return {"files": st["files"], "records": {s: {"outputs": r["outputs"]} for s, r in st["records"].items()}}


def diff(got: dict[str, Any], want: dict[str, Any]) -> str:
    """A short description of how two :func:`state` values differ."""
    out = []
    for key in sorted(set(got["files"]) | set(want["files"])):
        if got["files"].get(key) != want["files"].get(key):
            out.append(f"{key}: {'missing' if key not in got['files'] else 'extra' if key not in want['files'] else 'differs'}")
    for shard in SHARDS:
        g, w = got["records"].get(shard), want["records"].get(shard)
        if g != w:
            fields = "record missing" if g is None else ", ".join(k for k in w or {} if g.get(k) != (w or {}).get(k))
            out.append(f"CCNet record of shard {shard}: {fields}")
    return "; ".join(out[:12]) + (f" (+{len(out) - 12} more)" if len(out) > 12 else "")


# --------------------------------------------------------------------------- the clean run


@dataclass
class Reference:
    """The clean run, once per session: its mirror, models and outputs."""

    dir: Path
    mirror: Path
    models: Path
    segments: list[str]
    state: dict[str, Any]

    def files(self, shard: int) -> int:
        """How many documents files the clean run wrote for ``shard``."""
        return len(self.state["records"][shard]["files"])

    def count(self, shard: int, name: str) -> int:
        return int(self.state["records"][shard]["counts"].get(name, 0))


def write_registry(path: Path, root_url: str, source: str, extra: dict[str, Any] | None = None) -> Path:
    data = {"defaults": {"storage_root": root_url, "source_base": source}, "snapshots": [{**SNAPSHOT_ENTRY, **(extra or {})}]}
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def base_env(workdir: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without RPJ_* / AIRFLOW_* settings; the case's own cache and temp dir
    (where S3 uploads are spooled)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RPJ_", "AIRFLOW_", "AIRFLOW__", "FSSPEC_"))}
    (workdir / "tmp").mkdir(parents=True, exist_ok=True)
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "RPJ_HOME": str(REPO),
            "RPJ_CACHE_DIR": str(workdir / "cache"),
            "TMPDIR": str(workdir / "tmp"),
        }
    )
    env.update(extra)
    return env


def build_reference(base: Path) -> Reference:
    from rpj_tasks.sample.mirror import generate_mirror

    mirror = base / "mirror"
    manifest = generate_mirror(str(mirror), seed=0, segments=len(SHARDS), docs_per_segment=DOCS_PER_SEGMENT, broken=False)
    root = LocalRoot(base / "data")
    registry = write_registry(base / "registry.yaml", root.url, mirror.as_uri() + "/")
    proc = subprocess.run(
        [str(BIN / "rpj"), "--registry", str(registry), *("ccnet", "--snapshot", SNAPSHOT)],
        env=base_env(base),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    ref = Reference(base, mirror, root.path / MODELS, manifest["paths"], state(root))
    assert sorted(ref.state["records"]) == list(SHARDS) and all(ref.files(s) >= 2 for s in SHARDS)
    return ref


# --------------------------------------------------------------------------- one case


class Harness:
    """One case's world.  ``cases.py``'s hooks use: ``mirror``, ``dir``, ``ref``, ``server``,
    ``source``, ``fault``, ``segment_file``, ``segment_path``, ``staged_file``, ``restore_mirror``,
    ``write_listing``, ``truncate_always``, ``clean_run``, ``everything_written``,
    ``written_outside_models``, ``spool_files``."""

    def __init__(self, workdir: Path, ref: Reference, case: Case, s3: tuple[str, Any] | None = None) -> None:
        self.dir, self.ref, self.case = workdir, ref, case
        self.mirror = workdir / "mirror"
        shutil.copytree(ref.mirror, self.mirror)
        self.env_extra: dict[str, str] = {}
        if case.source == "s3":
            assert s3 is not None
            endpoint, client = s3
            self.root: Root = S3Root(client, "rpj-faults", case.id)
            self.env_extra["FSSPEC_S3"] = json.dumps({"endpoint_url": endpoint, "key": "k", "secret": "s"})
        else:
            self.root = LocalRoot(workdir / "data")
        self.root.add_models(ref.models)
        self.server: Any = None
        if case.source == "http":
            from test_download import MirrorServer

            self.server = MirrorServer(self.mirror)
        self.source = self.server.url if self.server else self.mirror.as_uri() + "/"
        self.fault: str | None = None
        self.transcripts: list[tuple[str, str]] = []  # (what, text) of every process's stdout and stderr

    def close(self) -> None:
        if self.server is not None:
            self.server.close()

    # ---- the mirror and the staging area
    def segment_path(self, shard: int) -> str:
        return self.ref.segments[shard]

    def segment_file(self, shard: int) -> Path:
        return self.mirror / self.segment_path(shard)

    def staged_file(self, shard: int) -> Path:
        assert isinstance(self.root, LocalRoot)
        return self.root.path / "staging" / "wet" / self.segment_path(shard)

    def restore_mirror(self) -> None:
        shutil.rmtree(self.mirror)
        shutil.copytree(self.ref.mirror, self.mirror)

    def write_listing(self, entries: list[str]) -> None:
        listing = self.mirror / "crawl-data" / f"CC-MAIN-{SNAPSHOT}" / "wet.paths.gz"
        listing.write_bytes(gzip.compress("".join(f"{e}\n" for e in entries).encode(), mtime=0))

    def truncate_always(self, path: str | None) -> None:
        """Cut off every transfer of ``path`` (None: stop); MirrorServer cuts each path once, and
        forgets it through ``discard``."""

        class Always(set):
            def discard(self, item: object) -> None:
                pass

        self.server.truncate_once = Always({path}) if path else set()

    # ---- running rpj
    def registry(self, extra: dict[str, Any] | None = None) -> Path:
        return write_registry(self.dir / "registry.yaml", self.root.url, self.source, extra)

    def command(self, args: tuple[str, ...], registry: Path) -> list[str]:
        head = [sys.executable, "-c", FAST_RETRY] if self.case.fast_retry else [str(BIN / "rpj")]
        return [*head, "--registry", str(registry), *args]

    def run(self, args: tuple[str, ...], *, fault: str | None = None, extra: dict[str, Any] | None = None, copies: int = 1):
        """Run ``rpj args`` (``copies`` processes at once); their CompletedProcess results."""
        env = base_env(self.dir, **self.env_extra, **({"RPJ_FAULT": fault} if fault else {}))
        cmd = self.command(args, self.registry(extra))
        procs = [
            subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(copies)
        ]
        results = []
        for proc in procs:
            out, err = proc.communicate(timeout=600)
            results.append(subprocess.CompletedProcess(cmd, proc.returncode, out, err))
            self.transcripts += [(f"stdout of {' '.join(args)}", out), (f"stderr of {' '.join(args)}", err)]
        return results

    def clean_run(self) -> None:
        (proc,) = self.run(("ccnet", "--snapshot", SNAPSHOT))
        assert proc.returncode == 0, proc.stderr[-3000:]

    # ---- what a run left
    def state(self) -> dict[str, Any]:
        return state(self.root)

    def record(self, kind: str, shard: int) -> dict[str, Any] | None:
        return load_record(self.root, kind, shard)

    def temp_files(self) -> list[str]:
        return [k for k in self.root.keys() if is_temp(k)]

    def incomplete_records(self) -> list[str]:
        """Records that list an output that is missing or differs from its sha256."""
        bad = []
        for kind in ("download", "hashes", "ccnet"):
            for shard in SHARDS:
                record = self.record(kind, shard)
                for rel, meta in (record or {}).get("outputs", {}).items():
                    key = posixpath.normpath(posixpath.join(f"stats/{kind}/{SNAPSHOT}", rel))
                    data = self.root.read(key)
                    if data is None or sha256(data) != meta["sha256"]:
                        bad.append(
                            f"{record_key(kind, shard)} lists {key}, which is {'missing' if data is None else 'different'}"
                        )
        return bad

    def everything_written(self) -> list[tuple[str, str]]:
        """Every process output and every file under the storage root (as Latin-1 text)."""
        files = [(key, (self.root.read(key) or b"").decode("latin-1")) for key in self.root.keys() if not key.startswith(MODELS)]
        return self.transcripts + files

    def written_outside_models(self) -> list[str]:
        return [k for k in self.root.keys() if not k.startswith(MODELS + "/")]

    def spool_files(self) -> list[str]:
        return sorted(p.name for p in (self.dir / "tmp").glob("rpj-spool-*"))

    def summary(self) -> dict[str, Any]:
        (proc,) = self.run(("summary", "--snapshot", SNAPSHOT, "--json"))
        assert proc.returncode == 0, proc.stderr[-2000:]
        return json.loads(proc.stdout)
