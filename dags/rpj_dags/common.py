"""Settings shared by every rpj DAG (parse-time only: no engine import beyond the config)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

START_DATE = dt.datetime(2014, 1, 1, tzinfo=dt.UTC)
# Retries are for transient failures; permanent ones fail at once (runtime.engine_task).
DEFAULT_ARGS = {
    "owner": "rpj",
    "retries": 2,
    "retry_delay": dt.timedelta(seconds=30),
    "retry_exponential_backoff": True,
    "execution_timeout": dt.timedelta(hours=1),
}
MAX_MAPPED_UNITS = 1000  # stays below Airflow's default [core] max_map_length of 1024


def grouped(items: Sequence[T], max_units: int = MAX_MAPPED_UNITS) -> list[list[T]]:
    """``items`` in order, in at most ``max_units`` consecutive groups of equal size (the last may
    be smaller): one mapped task per group keeps a mapping under Airflow's max_map_length."""
    if max_units < 1:
        raise ValueError("max_units must be at least 1")
    per_task = -(-len(items) // max_units) or 1
    return [list(items[i : i + per_task]) for i in range(0, len(items), per_task)]


def whole(regex: str) -> str:
    """A JSON Schema ``pattern`` that must match the whole value.  Validators run ``pattern`` with
    Python's ``re.search``, where ``$`` also matches before a final newline (``"en\\n"`` would
    pass); ``(?!\\n)`` closes that gap and means the same in ECMA-262 regexes (the UI's)."""
    return f"^(?:{regex})$(?!\\n)"
