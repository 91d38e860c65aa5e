"""``[core] hostname_callable`` for Celery workers started by ``scripts/rpj-deploy``.

Several workers on one machine would all report the machine's FQDN as the task instances'
``hostname``.  The deploy script gives each worker its own loopback address in
``RPJ_WORKER_HOSTNAME`` (``127.0.0.2``, ``127.0.0.3`` ...): distinct per worker, and still
resolvable, so the api-server's fetch of a running task's log from the worker log server (which
listens on every local address) keeps working.  Without the variable this is Airflow's default.
"""

from __future__ import annotations

import os


def worker_hostname() -> str:
    name = os.environ.get("RPJ_WORKER_HOSTNAME")
    if name:
        return name
    from airflow.utils.net import getfqdn

    return getfqdn()
