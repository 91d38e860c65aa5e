"""The rpj_reports Airflow plugin (plugins/rpj_reports.py) in-process: its FastAPI app serves .html
and .json files below ``reports/`` only, from each snapshot's own storage root, redirects a snapshot
DAG's run to its report so that the page's links resolve, authorizes per DAG, and refuses callers
without a session.  The deployment test (tests/airflow/test_deploy_local.py) checks it in a real
api-server (login, the redirect and the links there).

The caller's identity is the one part replaced here (a real JWT needs a running api-server); the
authorization decision runs through the plugin's own code against an auth manager that allows a
fixed set of DAGs per user and checks what it is asked."""

from __future__ import annotations

import importlib.util
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urljoin

import pytest
import yaml
from fastapi import FastAPI, HTTPException, Request
from fastapi.testclient import TestClient

from rpj_tasks.core.config import load_registry
from rpj_tasks.report import write_index, write_report

REPO = Path(__file__).resolve().parents[2]
SAMPLE, OTHER_ROOT_SNAPSHOT, DEFAULT_ROOT_SNAPSHOT = "2000-01", "2023-06", "2023-14"


class DagsAuthManager:
    """Allows each user the runs of a fixed set of DAGs; fails the test on any other kind of question."""

    def __init__(self, allowed: dict[str, set[str]]) -> None:
        self.allowed = allowed
        self.asked: list[tuple[str, str]] = []

    def batch_is_authorized_dag(self, requests: list[dict[str, Any]], *, user: str) -> bool:
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity

        for r in requests:
            assert r["method"] == "GET" and r["access_entity"] == DagAccessEntity.RUN, r
            self.asked.append((user, r["details"].id))
        return all(r["details"].id in self.allowed.get(user, set()) for r in requests)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[ModuleType, Path, Path]]:
    """A registry of three snapshots: the sample and 2023-14 under the default root, 2023-06 under
    another root; the sample's report and the index written by the real report code."""
    root, other = tmp_path / "data", tmp_path / "other"
    shipped = yaml.safe_load((REPO / "config" / "snapshots.yaml").read_text())
    entries = {e["id"]: e for e in shipped["snapshots"]}
    registry = tmp_path / "snapshots.yaml"
    shipped["defaults"]["storage_root"] = root.as_uri()
    snapshots = [
        entries[DEFAULT_ROOT_SNAPSHOT],
        entries[SAMPLE],
        {**entries[OTHER_ROOT_SNAPSHOT], "storage_root": other.as_uri()},
    ]
    registry.write_text(yaml.safe_dump({"defaults": shipped["defaults"], "snapshots": snapshots}))
    monkeypatch.setenv("RPJ_REGISTRY", str(registry))
    cfgs = load_registry(registry)
    (root / "listings").mkdir(parents=True)
    manifest = {"crawl": "CC-MAIN-2000-01", "shards": [0], "documents": {"en": {"head": 3}}, "files": {}}
    (root / "listings" / f"{SAMPLE}.manifest.json").write_text(json.dumps(manifest))
    write_report(cfgs[SAMPLE])
    write_index(root.as_uri())
    write_report(cfgs[OTHER_ROOT_SNAPSHOT])  # its page under the other root
    (root / "reports" / SAMPLE / "notes.txt").write_text("not a report file")
    (root / "reports" / SAMPLE / "page.htm").write_text("<p>not served</p>")
    (root / "stats" / "secret.json").parent.mkdir(exist_ok=True)
    (root / "stats" / "secret.json").write_text("not a report")
    os.symlink(root / "stats", root / "reports" / "escape")
    os.symlink(root / "stats", root / "reports" / SAMPLE / "escape")
    spec = importlib.util.spec_from_file_location("rpj_reports_under_test", REPO / "plugins" / "rpj_reports.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    yield module, root, other
    module._registry.cache_clear()


def as_user(module: ModuleType, monkeypatch: pytest.MonkeyPatch, allowed: dict[str, set[str]]) -> DagsAuthManager:
    """Callers name themselves in ``X-User`` (none: 401, as without a token); ``allowed`` decides."""

    async def user(request: Request) -> str:
        if "x-user" not in request.headers:
            raise HTTPException(401, "not authenticated")
        return request.headers["x-user"]

    manager = DagsAuthManager(allowed)
    monkeypatch.setattr(module, "_user", user)
    monkeypatch.setattr(module, "_auth_manager", lambda: manager)
    return manager


ALL = {"rpv2_sample", "rpv2_2023_06", "rpv2_2023_14"}


def test_files_below_reports_only(plugin: tuple[ModuleType, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    module, root, other = plugin
    as_user(module, monkeypatch, {"admin": ALL})
    client = TestClient(module.app, headers={"X-User": "admin"})
    r = client.get(f"/files/{SAMPLE}/index.html")
    assert r.status_code == 200 and r.content == (root / "reports" / SAMPLE / "index.html").read_bytes()
    assert r.headers["content-type"].startswith("text/html")
    assert (
        r.headers["content-security-policy"]
        == "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox allow-same-origin"
    )
    assert r.headers["x-content-type-options"] == "nosniff"
    assert client.get(f"/files/{SAMPLE}/report.json").headers["content-type"] == "application/json"
    assert client.get("/files/index.html").content == (root / "reports" / "index.html").read_bytes()
    assert client.get("/files/index.json").json()["snapshots"][0]["snapshot"] == SAMPLE
    # each snapshot from its own storage root
    r = client.get(f"/files/{OTHER_ROOT_SNAPSHOT}/report.json")
    assert r.status_code == 200 and r.content == (other / "reports" / OTHER_ROOT_SNAPSHOT / "report.json").read_bytes()
    assert not (root / "reports" / OTHER_ROOT_SNAPSHOT).exists()
    assert client.get(f"/files/{DEFAULT_ROOT_SNAPSHOT}/index.html").status_code == 404  # not written yet
    assert client.get("/files/1999-01/index.html").status_code == 404  # not a registry snapshot
    # only .html and .json, and only files
    for name in (f"{SAMPLE}/notes.txt", f"{SAMPLE}/page.htm", f"{SAMPLE}", "stats.txt", "secret.json"):
        r = client.get(f"/files/{name}")
        assert r.status_code == 404, (name, r.text)
        assert r.headers["content-security-policy"] == module.CSP  # errors too
    for hostile in (
        "%2e%2e/stats/secret.json",
        f"{SAMPLE}/%2e%2e/%2e%2e/stats/secret.json",
        "escape/secret.json",
        f"{SAMPLE}/escape/secret.json",
        "a%5cb",
        "%2fetc/passwd",
    ):
        r = client.get(f"/files/{hostile}")
        assert r.status_code == 400 and "refused" in r.json()["detail"], (hostile, r.text)
        assert str(tmp_root(root)) not in r.text and "file:" not in r.text, r.text  # the root is not named


def tmp_root(root: Path) -> Path:
    return root.parent


def test_the_run_route_redirects_so_every_link_resolves(
    plugin: tuple[ModuleType, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """From a DAG run's tab, every link of the page and of the index it leads to opens a file of
    the reports (as a browser resolves them: against the URL after the redirect)."""
    module, root, _ = plugin
    as_user(module, monkeypatch, {"admin": ALL})
    server = FastAPI()  # mounted as the api-server mounts a plugin's app
    server.mount(module.URL_PREFIX, module.app)
    client = TestClient(server, headers={"X-User": "admin"}, base_url="http://api:8080")
    start = "http://api:8080/rpj/reports/run/rpv2_sample/manual__2026-12-08T00:00:00+00:00"
    r = client.get(start, follow_redirects=False)
    assert r.status_code == 307 and r.headers["location"] == f"../../files/{SAMPLE}/index.html"
    assert r.headers["content-security-policy"] == module.CSP
    page = client.get(start)
    assert str(page.url) == f"http://api:8080/rpj/reports/files/{SAMPLE}/index.html"
    assert page.content == (root / "reports" / SAMPLE / "index.html").read_bytes()
    seen, todo = set(), [str(page.url)]
    while todo:
        url = todo.pop()
        if url in seen:
            continue
        seen.add(url)
        r = client.get(url)
        assert r.status_code == 200, (url, r.status_code, r.text[:200])
        if r.headers["content-type"].startswith("text/html"):
            todo += [urljoin(url, href) for href in re.findall(r'href="([^"]+)"', r.text)]
    base = "http://api:8080/rpj/reports/files/"
    assert seen == {base + f"{SAMPLE}/index.html", base + f"{SAMPLE}/report.json", base + "index.html", base + "index.json"}
    assert client.get("/rpj/reports/run/no_such_dag/x").status_code == 404


def test_access_is_per_dag(plugin: tuple[ModuleType, Path, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot's files and its run route need read access to that DAG's runs; the index needs it
    for every DAG whose snapshot is under the default root (it shows all their numbers)."""
    module, _, _ = plugin
    manager = as_user(
        module,
        monkeypatch,
        {"sample": {"rpv2_sample"}, "default-root": {"rpv2_sample", "rpv2_2023_14"}, "other": {"rpv2_2023_06"}},
    )

    def get(user: str, path: str) -> int:
        return TestClient(module.app, headers={"X-User": user}).get(path, follow_redirects=False).status_code

    assert get("sample", f"/files/{SAMPLE}/index.html") == 200
    assert get("sample", f"/files/{SAMPLE}/report.json") == 200
    assert get("sample", "/run/rpv2_sample/x") == 307
    assert get("sample", f"/files/{OTHER_ROOT_SNAPSHOT}/report.json") == 403
    assert get("sample", "/run/rpv2_2023_06/x") == 403
    assert get("sample", "/files/index.html") == 403 and get("sample", "/files/index.json") == 403
    assert get("default-root", "/files/index.html") == 200  # 2023-06 lives under another root
    assert get("other", f"/files/{OTHER_ROOT_SNAPSHOT}/report.json") == 200
    assert get("other", f"/files/{SAMPLE}/index.html") == 403
    assert get("other", f"/files/{SAMPLE}/no-such.html") == 403  # refused before looking
    assert get("nobody", f"/files/{SAMPLE}/index.html") == 403
    assert ("sample", "rpv2_sample") in manager.asked and ("sample", "rpv2_2023_14") in manager.asked
    assert not module.may_read_runs(manager, "sample", ["rpv2_sample", "rpv2_2023_06"])
    assert module.may_read_runs(manager, "sample", ["rpv2_sample"]) and module.may_read_runs(manager, "nobody", [])


UI = """<!DOCTYPE html><html><body><iframe id="tab" src="/rpj/reports/run/rpv2_sample/manual__1"></iframe><script>
window.result = null; let loads = 0;
document.getElementById('tab').onload = () => {
  loads += 1;
  let doc;
  try { doc = frames[0].document; } catch (e) { window.result = 'no access to the tab: ' + e; return; }
  if (loads === 1) doc.querySelector('a[href="report.json"]').click();
  else window.result = {url: frames[0].location.href, text: doc.body.innerText};
};
</script></body></html>"""


def test_a_link_clicked_in_the_ui_tab_keeps_the_session(
    plugin: tuple[ModuleType, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In headless Chromium: the run's tab (an iframe of the UI page) follows the redirect, and a link
    clicked in the page opens report.json with the session cookie (SameSite=Lax, as Airflow sets it).
    A CSP ``sandbox`` without ``allow-same-origin`` gives the page an opaque origin: the click's
    request then goes without the cookie (401), and the UI page cannot reach into the tab either."""
    import threading
    import time

    import uvicorn
    from chromium import render
    from fastapi.responses import HTMLResponse

    module, root, _ = plugin

    async def user(request: Request) -> str:
        if request.cookies.get("_token") != "good":
            raise HTTPException(401, "not authenticated")
        return "admin"

    monkeypatch.setattr(module, "_user", user)
    monkeypatch.setattr(module, "_auth_manager", lambda: DagsAuthManager({"admin": ALL}))
    server = FastAPI()
    server.mount(module.URL_PREFIX, module.app)

    @server.get("/ui")
    def ui() -> HTMLResponse:
        response = HTMLResponse(UI)
        response.set_cookie("_token", "good", samesite="lax", path="/")
        return response

    http = uvicorn.Server(uvicorn.Config(server, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not http.started:
            assert time.monotonic() < deadline and thread.is_alive(), "the test server did not start"
            time.sleep(0.05)
        port = http.servers[0].sockets[0].getsockname()[1]
        out = render(f"http://127.0.0.1:{port}/ui", "window.result", settle=3.0)
    finally:
        http.should_exit = True
        thread.join(30)
    assert isinstance(out.value, dict), out.value
    assert out.value["url"] == f"http://127.0.0.1:{port}/rpj/reports/files/{SAMPLE}/report.json"
    assert json.loads(out.value["text"]) == json.loads((root / "reports" / SAMPLE / "report.json").read_text())


def test_a_session_is_required(plugin: tuple[ModuleType, Path, Path]) -> None:
    module, _, _ = plugin
    client = TestClient(module.app)
    assert client.get("/files/index.html").status_code == 401
    assert client.get(f"/files/{SAMPLE}/index.html").status_code == 401
    assert client.get("/run/rpv2_sample/x", follow_redirects=False).status_code == 401


def test_plugin_declares_its_views(plugin: tuple[ModuleType, Path, Path]) -> None:
    module, _, _ = plugin
    views = {v["destination"]: v for v in module.RpjReportsPlugin.external_views}
    assert views["dag_run"]["href"] == "rpj/reports/run/{DAG_ID}/{RUN_ID}"
    assert views["nav"]["href"] == "rpj/reports/files/index.html"
    assert module.RpjReportsPlugin.fastapi_apps[0]["url_prefix"] == "/rpj/reports"
