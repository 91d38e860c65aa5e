#!/usr/bin/env python3
"""Trigger a DAG run through the REST API v2 of a running deployment and wait for it, as a user would.

    python deploy/trigger.py --url http://127.0.0.1:8080 rpv2_sample --conf '{"shards": ["0-3"]}'

Gets a JWT from ``/auth/token`` (no credentials in the simple auth manager's all-admins mode, else
``--user``/``--password`` or ``RPJ_DEPLOY_ADMIN_PASSWORD``), unpauses the DAG, triggers a run with
the conf, prints each task's state as it changes, and exits 0 on ``success``; on ``failed`` it
prints the failed tasks with the end of their logs and exits 1.  Used by ``scripts/demo.sh``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any
from urllib.parse import quote

import requests


class Api:
    def __init__(self, url: str, user: str | None, password: str | None) -> None:
        self.url, self.session = url.rstrip("/"), requests.Session()
        if password:
            r = self.session.post(f"{self.url}/auth/token", json={"username": user, "password": password}, timeout=30)
        else:
            r = self.session.get(f"{self.url}/auth/token", timeout=30)
        if r.status_code not in (200, 201):
            raise SystemExit(f"trigger: cannot log in at {self.url}/auth/token: HTTP {r.status_code} {r.text[:300]}")
        self.session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    def call(self, method: str, path: str, **kw: Any) -> Any:
        r = self.session.request(method, f"{self.url}/api/v2{path}", timeout=60, **kw)
        if r.status_code >= 400:
            raise SystemExit(f"trigger: {method} {path}: HTTP {r.status_code}: {r.text[:1000]}")
        return r.json()


def log_tail(api: Api, run_path: str, ti: dict[str, Any], lines: int = 15) -> str:
    path = f"{run_path}/taskInstances/{quote(ti['task_id'])}/logs/{ti['try_number']}"
    content = api.call("GET", path, params={"map_index": ti["map_index"]}, headers={"Accept": "application/json"})
    events = [e.get("event", "") if isinstance(e, dict) else str(e) for e in content.get("content", [])]
    return "\n".join(f"      {e}" for e in events[-lines:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dag_id")
    p.add_argument("--url", default=os.environ.get("RPJ_DEPLOY_URL", "http://127.0.0.1:8080"))
    p.add_argument("--conf", default="{}", help="the run's conf (JSON): the DAG's Params")
    p.add_argument("--user", default="admin")
    p.add_argument("--password", default=os.environ.get("RPJ_DEPLOY_ADMIN_PASSWORD"))
    p.add_argument("--timeout", type=float, default=1800)
    args = p.parse_args()
    api = Api(args.url, args.user, args.password)
    dag = quote(args.dag_id, safe="")
    api.call("PATCH", f"/dags/{dag}", json={"is_paused": False})
    run = api.call("POST", f"/dags/{dag}/dagRuns", json={"logical_date": None, "conf": json.loads(args.conf)})
    run_path = f"/dags/{dag}/dagRuns/{quote(run['dag_run_id'], safe='')}"
    print(f"triggered {args.dag_id} run {run['dag_run_id']} with conf {args.conf}", flush=True)
    seen: dict[tuple[str, int], str] = {}
    deadline = time.monotonic() + args.timeout
    while True:
        state = api.call("GET", run_path)["state"]
        tis = api.call("GET", f"{run_path}/taskInstances", params={"limit": 1000})["task_instances"]
        for ti in sorted(tis, key=lambda t: (t["start_date"] or "9", t["task_id"], t["map_index"])):
            key = (ti["task_id"], ti["map_index"])
            if ti["state"] and seen.get(key) != ti["state"] and ti["state"] in ("running", "success", "failed", "up_for_retry"):
                seen[key] = ti["state"]
                label = ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else "")
                print(f"  {label:<24} {ti['state']}", flush=True)
        if state in ("success", "failed"):
            break
        if time.monotonic() > deadline:
            print(f"trigger: run still {state} after {args.timeout:.0f}s", file=sys.stderr)
            return 1
        time.sleep(3)
    print(f"run {run['dag_run_id']}: {state}")
    if state == "failed":
        for ti in tis:
            if ti["state"] == "failed":
                print(f"  failed: {ti['task_id']}[{ti['map_index']}], end of its log:\n{log_tail(api, run_path, ti)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
