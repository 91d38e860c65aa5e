"""Which shards to process, grouped into work units for fan-out.

A *unit* is what one mapped Airflow task instance (or one CLI loop) handles: a set of whole
hash groups (``hash_group_size``, see docs/PIPELINE.md), so that the ``mine`` step of every
selected shard finds the hashes of its whole group inside its own unit.  Units are sized so
their number stays under the orchestrator's map-length limit (Airflow's default is 1024).

A unit is a compact descriptor, ``{"unit": 3, "mine": "12-15", "hashes": "12-15"}``: shard sets
as range strings, no segment paths.  Each task resolves its segments from the crawl's listing,
staged once per run under the storage root (:func:`rpj_tasks.download.listing.stage_listing`), so the
plan stays a few bytes per unit (about 40 KB for 5,000 shards in 1,000 units) however large the
crawl.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

from rpj_tasks.core import layout
from rpj_tasks.core.config import ConfigError, SnapshotConfig, validate_shard

DEFAULT_MAX_UNITS = 1000


def parse_shards(spec: Any, num_shards: int) -> list[int]:
    """Shard selection from ``[0, 3, "10-19"]`` or ``"0-9,15"``; empty/None means all shards."""
    if spec in (None, "", []):
        return list(range(num_shards))
    items = re.split(r"[\s,]+", spec.strip()) if isinstance(spec, str) else list(spec)
    out: set[int] = set()
    for item in items:
        if isinstance(item, str) and "-" in item:
            lo, _, hi = item.partition("-")
            a, b = validate_shard(lo, num_shards), validate_shard(hi, num_shards)
            if a > b:
                raise ConfigError(f"invalid shard range {item!r}: start > end")
            out.update(range(a, b + 1))
        elif item != "":
            out.add(validate_shard(item, num_shards))
    return sorted(out)


def format_shards(shards: Iterable[int]) -> str:
    """The shortest range string of a shard set: ``[0, 1, 2, 3, 7]`` -> ``"0-3,7"``."""
    runs: list[list[int]] = []
    for shard in sorted(set(shards)):
        if runs and shard == runs[-1][1] + 1:
            runs[-1][1] = shard
        else:
            runs.append([shard, shard])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def unit_shards(unit: dict[str, Any], key: str = "mine") -> list[int]:
    """The shards of a unit descriptor: ``key`` is ``"mine"`` (selected) or ``"hashes"`` (their groups)."""
    spec = unit[key]
    return [] if spec == "" else parse_shards(spec, 1 << 30)


def plan_units(
    cfg: SnapshotConfig,
    *,
    shards: Any = None,
    limit: int | None = None,
    max_units: int = DEFAULT_MAX_UNITS,
) -> list[dict[str, Any]]:
    """Work units ``{"unit": i, "mine": "a-b,...", "hashes": "a-b,..."}`` (see the module doc)."""
    selected = parse_shards(shards, cfg.num_shards)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"shard_limit must be an integer >= 1, got {limit!r}")
        selected = selected[:limit]
    size = cfg.hash_group_size
    groups: dict[int, list[int]] = {}
    for shard in selected:
        groups.setdefault(layout.hash_group(shard, size, cfg.num_shards).start, []).append(shard)
    group_ids = sorted(groups)  # each group's first shard
    per_unit = max(1, math.ceil(len(group_ids) / max_units))
    units: list[dict[str, Any]] = []
    for i in range(0, len(group_ids), per_unit):
        chunk = group_ids[i : i + per_unit]
        mine = [s for g in chunk for s in groups[g]]
        hashes = [s for g in chunk for s in layout.hash_group(g, size, cfg.num_shards)]
        units.append({"unit": len(units), "mine": format_shards(mine), "hashes": format_shards(hashes)})
    return units
