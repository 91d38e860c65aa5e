"""Per-step counters and timings, in the spirit of datatrove's pipeline stats.

A :class:`Stats` is a flat ``{name: int}`` counter plus ``{step: seconds}`` timings.  Counter
names are dotted: ``wet.records``, ``wet.skipped.truncated``, ``dedup.dropped.empty``,
``lid.dropped.below_threshold``, ``kept.en.head`` ...  Stats merge by addition, serialise to
JSON with sorted keys, and log as one line.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.seconds: dict[str, float] = {}

    def inc(self, name: str, n: int = 1) -> None:
        self.counts[name] += n

    def __getitem__(self, name: str) -> int:
        return self.counts[name]

    @contextlib.contextmanager
    def timer(self, step: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add_time(step, time.perf_counter() - start)

    def add_time(self, step: str, seconds: float) -> None:
        self.seconds[step] = self.seconds.get(step, 0.0) + seconds

    def merge(self, other: Stats) -> Stats:
        self.counts.update(other.counts)
        for step, sec in other.seconds.items():
            self.add_time(step, sec)
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": dict(sorted(self.counts.items())),
            "seconds": {k: round(v, 3) for k, v in sorted(self.seconds.items())},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Stats:
        s = cls()
        s.counts.update(data.get("counts", {}))
        s.seconds.update(data.get("seconds", {}))
        return s

    def summary(self) -> str:
        counts = " ".join(f"{k}={v}" for k, v in sorted(self.counts.items()))
        times = " ".join(f"{k}={v:.2f}s" for k, v in sorted(self.seconds.items()))
        return f"{counts} | {times}"

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, indent=1)
