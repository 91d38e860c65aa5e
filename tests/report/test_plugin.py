"""The rpj_reports Airflow plugin (plugins/rpj_reports.py) in-process: its FastAPI app serves files
below ``reports/`` only, maps a snapshot DAG's run to its report, and refuses callers without a
session.  The deployment test (tests/airflow/test_deploy_local.py) checks it in a real api-server."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from fastapi.testclient import TestClient

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Path]]:
    root = tmp_path / "data"
    (root / "reports" / "2000-01").mkdir(parents=True)
    (root / "reports" / "2000-01" / "index.html").write_text("<p>the sample's report</p>")
    (root / "reports" / "2000-01" / "report.json").write_text('{"snapshot": "2000-01"}')
    (root / "reports" / "index.html").write_text("<p>index</p>")
    (root / "stats").mkdir()
    (root / "stats" / "secret.json").write_text("not a report")
    os.symlink(root / "stats", root / "reports" / "escape")
    monkeypatch.setenv("RPJ_STORAGE_ROOT", root.as_uri())
    spec = importlib.util.spec_from_file_location("rpj_reports_under_test", REPO / "plugins" / "rpj_reports.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, root
    module._registry.cache_clear()


def test_files_below_reports_only(plugin: tuple[ModuleType, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    module, root = plugin

    async def allow(request: object, dag_id: str | None = None) -> None:
        return None

    monkeypatch.setattr(module, "_authorize", allow)
    client = TestClient(module.app)
    r = client.get("/files/2000-01/index.html")
    assert r.status_code == 200 and r.content == (root / "reports" / "2000-01" / "index.html").read_bytes()
    assert r.headers["content-type"].startswith("text/html")
    assert client.get("/files/2000-01/report.json").headers["content-type"] == "application/json"
    assert client.get("/files/index.html").text == "<p>index</p>"
    assert client.get("/run/rpv2_sample/manual__2026-12-08T00:00:00+00:00").text == "<p>the sample's report</p>"
    assert client.get("/run/no_such_dag/x").status_code == 404
    assert client.get("/files/1999-01/index.html").status_code == 404
    for hostile in (
        "%2e%2e/stats/secret.json",
        "2000-01/%2e%2e/%2e%2e/stats/secret.json",
        "escape/secret.json",
        "a%5cb",
        "%2fetc/passwd",
    ):
        r = client.get(f"/files/{hostile}")
        assert r.status_code == 400 and "refused" in r.json()["detail"], (hostile, r.text)
    assert client.get("/files/2000-01").status_code == 404  # a folder is not a file


def test_a_session_is_required(plugin: tuple[ModuleType, Path]) -> None:
    module, _ = plugin
    client = TestClient(module.app)
    assert client.get("/files/index.html").status_code == 401
    assert client.get("/run/rpv2_sample/x").status_code == 401


def test_plugin_declares_its_views(plugin: tuple[ModuleType, Path]) -> None:
    module, _ = plugin
    views = {v["destination"]: v for v in module.RpjReportsPlugin.external_views}
    assert views["dag_run"]["href"] == "rpj/reports/run/{DAG_ID}/{RUN_ID}"
    assert views["nav"]["href"] == "rpj/reports/files/index.html"
    assert module.RpjReportsPlugin.fastapi_apps[0]["url_prefix"] == "/rpj/reports"
