"""Airflow plugin: the snapshot reports (``reports/`` under the storage root) in the web UI.

* a FastAPI app mounted into the api-server at :data:`URL_PREFIX`:

  ``GET /rpj/reports/run/{dag_id}/{run_id}``  the report page of the DAG's snapshot (the one its
  last ``report`` task wrote; the page names the run that wrote it);
  ``GET /rpj/reports/files/{path}``           any file below ``reports/`` (``index.html`` lists every
  published snapshot, ``{snapshot}/index.html`` and ``report.json``);

* external views: a "Snapshot report" tab on every DAG run (destination ``dag_run``) and a
  "Snapshot reports" entry in the navigation (the index).

Access: the caller must be logged in (the UI's session cookie or a bearer token), and for a run's
report be allowed to read that DAG's runs.  Paths come from outside: a file path must be a plain
relative path that stays below ``reports/`` (:func:`rpj_tasks.core.storage.join_below`), else 400.
The storage root is the registry's (``RPJ_STORAGE_ROOT``); for ``s3://`` the ``aws_default``
connection's options are used, as the tasks do.
"""

from __future__ import annotations

import functools
import logging
import mimetypes
from typing import Any

from airflow.plugins_manager import AirflowPlugin
from fastapi import FastAPI, HTTPException, Request, Response

log = logging.getLogger(__name__)

URL_PREFIX = "/rpj/reports"
OBJECT_STORE_CONN_ID = "aws_default"
TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}

app = FastAPI(title="rpj snapshot reports", description="The snapshot reports under the storage root.")


async def _authorize(request: Request, dag_id: str | None = None) -> None:
    """401 without a valid session or token; 403 if ``dag_id`` is given and its runs are not readable."""
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.base_auth_manager import COOKIE_NAME_JWT_TOKEN
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
    from airflow.api_fastapi.core_api.security import resolve_user_from_token

    header = request.headers.get("authorization", "")
    token = header[7:] if header.lower().startswith("bearer ") else request.cookies.get(COOKIE_NAME_JWT_TOKEN)
    user = await resolve_user_from_token(token)
    if dag_id is not None and not get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.RUN, details=DagDetails(id=dag_id), user=user
    ):
        raise HTTPException(403, "not allowed to read this DAG's runs")


@functools.cache
def _registry() -> dict[str, Any]:
    from rpj_tasks.core.config import load_registry

    return load_registry()


def _storage_root() -> str:
    from rpj_tasks.core import storage

    root = next(iter(_registry().values())).storage_root
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


def _serve(rel: str) -> Response:
    from rpj_tasks.core import storage
    from rpj_tasks.core.errors import UnsafePathError

    root = _storage_root()
    try:
        url = storage.join_below(storage.join(root, "reports"), rel, "report path")
    except UnsafePathError as exc:
        raise HTTPException(400, str(exc)) from None
    try:
        body = storage.read_bytes(url)
    except (FileNotFoundError, IsADirectoryError):
        raise HTTPException(404, f"no report file {rel!r} yet") from None
    suffix = "." + rel.rsplit(".", 1)[-1] if "." in rel else ""
    media = TYPES.get(suffix) or mimetypes.guess_type(rel)[0] or "application/octet-stream"
    return Response(body, media_type=media, headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


@app.get("/files/{path:path}")
async def report_file(path: str, request: Request) -> Response:
    await _authorize(request)
    return _serve(path or "index.html")


@app.get("/run/{dag_id}/{run_id}")
async def run_report(dag_id: str, run_id: str, request: Request) -> Response:
    await _authorize(request, dag_id)
    snapshot = next((cfg.id for cfg in _registry().values() if cfg.dag_id == dag_id), None)
    if snapshot is None:
        raise HTTPException(404, f"{dag_id!r} is not a snapshot DAG of the registry")
    return _serve(f"{snapshot}/index.html")


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
