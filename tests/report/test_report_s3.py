"""The report on an object store (moto's S3 server on 127.0.0.1): the same bytes as on a local
root (nothing in it names the root), and the rpj_reports plugin serves it from there."""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest
from deploy_harness import SNAPSHOT, cli_reference
from fastapi.testclient import TestClient
from moto_s3 import moto_s3

from rpj_tasks.core import storage
from rpj_tasks.core.config import load_registry
from rpj_tasks.report import write_report

pytestmark = pytest.mark.s3
KEY, SECRET = "testing-key", "testing-secret"
PARTS = ("documents", "quality_signals", "duplicates", "clusters", "tokens", "stats", "staging/dedup")
REPO = Path(__file__).resolve().parents[2]


def test_report_on_s3_equals_local_and_is_served(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = cli_reference(tmp_path_factory.getbasetemp())
    local = tmp_path / "data"
    for part in PARTS:
        shutil.copytree(reference / part, local / part)
    with moto_s3(KEY, SECRET) as (endpoint, client):
        client.create_bucket(Bucket="rpj")
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            client.put_object(Bucket="rpj", Key=f"release/{path.relative_to(local)}", Body=path.read_bytes())
        saved = dict(storage._OPTIONS)
        storage.register_options("s3", {"endpoint_url": endpoint, "key": KEY, "secret": SECRET})
        try:
            base = load_registry()[SNAPSHOT]
            remote = write_report(base.with_overrides(storage_root="s3://rpj/release"), list(range(4)))
            write_report(base.with_overrides(storage_root=local.as_uri()), list(range(4)))
            assert remote["html"] == f"s3://rpj/release/reports/{SNAPSHOT}/index.html"
            for name in ("index.html", "report.json"):
                body = client.get_object(Bucket="rpj", Key=f"release/reports/{SNAPSHOT}/{name}")["Body"].read()
                assert body == (local / "reports" / SNAPSHOT / name).read_bytes(), name
            keys = [o["Key"] for o in client.list_objects_v2(Bucket="rpj", Prefix="release/reports/")["Contents"]]
            assert not any(".tmp-" in k for k in keys)

            monkeypatch.setenv("RPJ_STORAGE_ROOT", "s3://rpj/release")
            spec = importlib.util.spec_from_file_location("rpj_reports_s3_test", REPO / "plugins" / "rpj_reports.py")
            assert spec and spec.loader
            plugin = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(plugin)

            class Everyone:  # every caller may read every DAG (access is tested in test_plugin.py)
                def batch_is_authorized_dag(self, requests: object, *, user: object) -> bool:
                    return True

            async def user(request: object) -> str:
                return "admin"

            monkeypatch.setattr(plugin, "_user", user)
            monkeypatch.setattr(plugin, "_auth_manager", Everyone)
            http = TestClient(plugin.app)
            r = http.get("/run/rpv2_sample/manual__1")  # redirected to files/2000-01/index.html
            assert r.status_code == 200 and r.content == (local / "reports" / SNAPSHOT / "index.html").read_bytes()
            assert http.get(f"/files/{SNAPSHOT}/report.json").json() == remote["report"]
            assert http.get("/files/index.html").content == (local / "reports" / "index.html").read_bytes()
            assert http.get("/files/%2e%2e/stats/report/index.json").status_code == 400
        finally:
            storage._OPTIONS.clear()
            storage._OPTIONS.update(saved)
