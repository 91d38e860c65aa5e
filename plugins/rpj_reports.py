"""Airflow plugin: the snapshot reports (``reports/`` under the storage roots) in the web UI.

* a FastAPI app mounted into the api-server at :data:`URL_PREFIX`:

  ``GET /rpj/reports/run/{dag_id}/{run_id}``  redirects (307, relative ``Location``) to
  ``files/{snapshot}/index.html``, the page of the DAG's snapshot (the one its last ``report`` task
  wrote; the page names the run that wrote it), so the page's relative links (``report.json``,
  ``../index.html``) resolve below ``files/``;
  ``GET /rpj/reports/files/{snapshot}/{name}``  a snapshot's page or its ``report.json``, from that
  snapshot's storage root (the registry entry's ``storage_root``);
  ``GET /rpj/reports/files/index.html`` (and ``index.json``)  the index of published snapshots under
  the *default root*: the storage root of the registry's first snapshot (with the shipped registry,
  ``defaults.storage_root``, i.e. ``RPJ_STORAGE_ROOT``).  Snapshots published under another root are
  in that root's ``reports/index.html`` (``rpj report --index --storage-root ...``), not served here;
  their pages are (``files/{snapshot}/...``).

* external views: a "Snapshot report" tab on every DAG run (destination ``dag_run``) and a
  "Snapshot reports" entry in the navigation (the index).

Access (401 without a valid session cookie or bearer token, 403 without the right):
``files/{snapshot}/...`` and ``run/{dag_id}/...`` need read access to the runs of the snapshot's
DAG (``is_authorized_dag(method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=...))``;
a snapshot not in the registry, or another DAG, is 404); the index needs it for *every* registry DAG
whose snapshot lives under the default root, since it shows all their headline numbers (a user
restricted to some DAGs reads their pages, not the index).

Only ``.html`` and ``.json`` files are served (anything else is 404); paths come from outside: a
file path must be a plain relative path that stays below ``reports/``
(:func:`rpj_tasks.core.storage.join_below`), else 400 (the message does not name the storage root).
Every response carries a Content-Security-Policy (:data:`CSP`: no script, no remote resource,
sandboxed but keeping its origin: with an opaque origin a link clicked inside the UI's tab, an
iframe, would go without the ``SameSite=Lax`` session cookie), ``X-Content-Type-Options: nosniff`` and ``Cache-Control: no-cache``.  For ``s3://``
roots the ``aws_default`` connection's options are used, as the tasks do.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

log = logging.getLogger(__name__)

URL_PREFIX = "/rpj/reports"
OBJECT_STORE_CONN_ID = "aws_default"
TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}
INDEX_FILES = ("index.html", "index.json")
CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox allow-same-origin"
HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff", "Content-Security-Policy": CSP}

app = FastAPI(title="rpj snapshot reports", description="The snapshot reports under the storage roots.")


@app.middleware("http")
async def _security_headers(request: Request, call_next: Any) -> Response:
    """The CSP and friends on every response, errors and redirects included."""
    response = await call_next(request)
    for key, value in HEADERS.items():
        response.headers.setdefault(key, value)
    return response


async def _user(request: Request) -> Any:
    """The caller (401 without a valid session cookie or bearer token)."""
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    return await resolve_user_from_token(token)


def _auth_manager() -> Any:
    from airflow.api_fastapi.app import get_auth_manager

    return get_auth_manager()


def may_read_runs(auth_manager: Any, user: Any, dag_ids: Iterable[str]) -> bool:
    """Whether ``user`` may read the runs of every one of ``dag_ids`` (the plugin's one decision;
    an empty set is allowed: only login is needed then)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    requests = [
        {"method": "GET", "access_entity": DagAccessEntity.RUN, "details": DagDetails(id=dag_id)}
        for dag_id in sorted(set(dag_ids))
    ]
    return not requests or bool(auth_manager.batch_is_authorized_dag(requests, user=user))


def _require(user: Any, dag_ids: Iterable[str]) -> None:
    """403 unless ``user`` may read the runs of all ``dag_ids``."""
    if not may_read_runs(_auth_manager(), user, dag_ids):
        raise HTTPException(403, "not allowed to read the runs of the DAG(s) this report is about")


@functools.cache
def _registry() -> dict[str, Any]:
    from rpj_tasks.core.config import load_registry

    return load_registry()


def _default_root() -> str:
    return next(iter(_registry().values())).storage_root


def _register(root: str) -> str:
    """``root``, with the object store's options registered for it (once per protocol)."""
    from rpj_tasks.core import storage

    proto = storage.protocol_of(root)
    if proto not in ("file", "http", "https") and proto not in storage.registered_options():
        try:
            from airflow.providers.amazon.aws.fs.s3 import get_fs

            storage.register_options(proto, dict(getattr(get_fs(OBJECT_STORE_CONN_ID), "storage_options", {}) or {}))
        except Exception as exc:  # noqa: BLE001 - a missing connection: the default credential chain
            log.warning(
                "connection %s not usable for %s (%s); using the default credential chain", OBJECT_STORE_CONN_ID, proto, exc
            )
    return root


def _below_reports(root: str, rel: str) -> str:
    """The URL of ``rel`` below ``root``'s ``reports/``; 400 (not naming the root) if it is not a
    plain relative path that stays there."""
    from rpj_tasks.core import storage
    from rpj_tasks.core.errors import UnsafePathError

    try:
        return storage.join_below(storage.join(root, "reports"), rel, "report path")
    except UnsafePathError:
        raise HTTPException(400, f"report path {rel!r} refused: it must be a plain relative path below reports/") from None


def _serve(root: str, rel: str) -> Response:
    from rpj_tasks.core import storage

    url = _below_reports(root, rel)
    name = rel.rsplit("/", 1)[-1]
    suffix = "." + name.rsplit(".", 1)[-1] if "." in name else ""
    if suffix not in TYPES:
        raise HTTPException(404, f"no report file {rel!r}: only .html and .json files are served")
    _register(root)
    try:
        body = storage.read_bytes(url)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise HTTPException(404, f"no report file {rel!r} yet") from None
    return Response(body, media_type=TYPES[suffix])


@app.get("/files/{path:path}")
async def report_file(path: str, request: Request) -> Response:
    user = await _user(request)
    path = path or "index.html"
    registry = _registry()
    if path in INDEX_FILES:  # the index of the default root: every DAG whose snapshot is there
        root = _default_root()
        _require(user, [cfg.dag_id for cfg in registry.values() if cfg.storage_root == root])
        return _serve(root, path)
    cfg = registry.get(path.split("/", 1)[0])
    if cfg is None or "/" not in path:
        _below_reports(_default_root(), path)  # a hostile path is refused as such (400)
        raise HTTPException(404, f"no report file {path!r}: not the index nor a file of a registry snapshot")
    _require(user, [cfg.dag_id])
    return _serve(cfg.storage_root, path)


@app.get("/run/{dag_id}/{run_id}")
async def run_report(dag_id: str, run_id: str, request: Request) -> Response:
    user = await _user(request)
    snapshot = next((cfg.id for cfg in _registry().values() if cfg.dag_id == dag_id), None)
    if snapshot is None:
        raise HTTPException(404, f"{dag_id!r} is not a snapshot DAG of the registry")
    _require(user, [dag_id])
    # relative to /rpj/reports/run/{dag_id}/{run_id}: right behind a proxy that adds a path prefix too
    return RedirectResponse(f"../../files/{snapshot}/index.html", status_code=307)


class RpjReportsPlugin(AirflowPlugin):
    name = "rpj_reports"
    fastapi_apps = [{"app": app, "url_prefix": URL_PREFIX, "name": "rpj snapshot reports"}]
    external_views = [
        {
            "name": "Snapshot report",
            "href": URL_PREFIX.lstrip("/") + "/run/{DAG_ID}/{RUN_ID}",
            "destination": "dag_run",
            "url_route": "rpj_snapshot_report",
        },
        {
            "name": "Snapshot reports",
            "href": URL_PREFIX.lstrip("/") + "/files/index.html",
            "destination": "nav",
            "url_route": "rpj_snapshot_reports",
        },
    ]
