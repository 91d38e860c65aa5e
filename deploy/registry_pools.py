#!/usr/bin/env python3
"""Print the Airflow pools of the snapshot registry as ``airflow pools import`` JSON.

Each snapshot's ``download_pool`` with its ``download_pool_slots`` (the largest, if snapshots
disagree).  Used by ``rpj-deploy up`` and the compose ``airflow-init`` service::

    python deploy/registry_pools.py > /tmp/pools.json && airflow pools import /tmp/pools.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DESCRIPTION = "rpj: concurrent requests to the Common Crawl source"


def registry_pools(registry: str | None = None) -> dict[str, int]:
    from rpj_tasks.core.config import load_registry

    pools: dict[str, int] = {}
    for cfg in load_registry(registry).values():
        pools[cfg.download_pool] = max(pools.get(cfg.download_pool, 0), cfg.download_pool_slots)
    return pools


def pools_json(registry: str | None = None) -> str:
    return json.dumps(
        {
            name: {"slots": slots, "description": DESCRIPTION, "include_deferred": False}
            for name, slots in registry_pools(registry).items()
        },
        indent=1,
    )


if __name__ == "__main__":
    print(pools_json(sys.argv[1] if len(sys.argv) > 1 else None))
