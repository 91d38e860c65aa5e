"""The ``report`` task's extra link: **Snapshot report**, the page the task wrote, served by the
``rpj_reports`` plugin (plugins/rpj_reports.py) at ``/rpj/reports/run/{dag_id}/{run_id}`` (which
redirects to the snapshot's page below ``/rpj/reports/files/``).

Airflow 3 computes an operator's links in the worker when the task ends and stores them as XComs;
the UI shows the stored URL.  Absolute when ``[api] base_url`` is a full URL, else a path on the
api-server.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

REPORT_ROUTE = "/rpj/reports/run"


class SnapshotReportLink(BaseOperatorLink):
    name = "Snapshot report"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        from airflow.configuration import conf

        base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
        path = f"{REPORT_ROUTE}/{quote(ti_key.dag_id, safe='')}/{quote(ti_key.run_id, safe='')}"
        return base + path if "://" in base else path
