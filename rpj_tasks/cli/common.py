"""What every ``rpj`` command that works on a snapshot shares: its arguments, its config and
:class:`ShardSteps`, which runs the shards' steps one by one and reports the failed ones at the end."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any

from rpj_tasks.core.config import ConfigError, SnapshotConfig, load_registry, validate_languages
from rpj_tasks.core.errors import PermanentError, RpjError, storage_full
from rpj_tasks.core.plan import format_shards
from rpj_tasks.core.redact import redact


def positive_int(text: str) -> int:
    """An argparse type: :func:`ascii_int` of at least 1."""
    value = ascii_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def ascii_int(text: str) -> int:
    """An argparse type: a non-negative integer in ASCII digits (``int()`` would take ``"٣"`` or ``"3\\n"``)."""
    if not (text.isascii() and text.isdigit() and len(text) <= 9):
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}")
    return int(text)


def add_snapshot_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--snapshot", required=True, help="YYYY-WW")
    p.add_argument("--shards", default="", help='e.g. "0-9,15" (default: all)')
    p.add_argument("--limit", type=positive_int, help="at most this many shards")
    p.add_argument("--force", action="store_true", help="recompute finished shards")
    p.add_argument("--storage-root")
    p.add_argument("--source-base")
    p.add_argument("--num-shards", type=positive_int)
    p.add_argument("--languages", help="e.g. en,de")


def snapshot_config(args: argparse.Namespace) -> SnapshotConfig:
    """The registry's config of ``--snapshot`` (registry defaults for any other valid id), with the
    command line's overrides."""
    registry = load_registry(args.registry)
    if args.snapshot in registry:
        cfg = registry[args.snapshot]
    else:
        any_cfg = next(iter(registry.values()))
        cfg = SnapshotConfig(
            **{**any_cfg.to_dict(), "id": args.snapshot, "dag_id": "", "sample": False, "generate_source": False}
        )
    return cfg.with_overrides(
        storage_root=args.storage_root,
        source_base=args.source_base,
        num_shards=args.num_shards,
        languages=validate_languages(args.languages) if args.languages else None,
        dsir_hash_mode=getattr(args, "hash_mode", None),
    )


def storage_root(args: argparse.Namespace) -> str:
    """``--storage-root``, else the registry's (one root for every snapshot)."""
    return args.storage_root or next(iter(load_registry(args.registry).values())).storage_root


def key_values(items: list[str] | None) -> dict[str, str]:
    """``["en=URL", ...]`` -> ``{"en": URL}``."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"expected LANG=URL, got {item!r}")
        out[key] = value
    return out


class ShardSteps:
    """The per-shard steps of one command, like the DAG's mapped tasks: every shard is attempted.

    An expected engine error (:class:`~rpj_tasks.core.errors.RpjError`) fails that shard's step
    only: one line on stderr, and the run goes on with the other shards.  The shard's later steps
    are then not attempted, nor a step whose ``needs`` (the shards of its hash group) include a
    shard that failed in an earlier stage: that one is reported as skipped, naming the shard.
    Anything else is a bug and propagates.  :meth:`exit_code` ends the run with a summary.
    """

    def __init__(self) -> None:
        self.stages: list[str] = []  # in the order they ran (one after the other)
        self.shards: set[int] = set()
        self.failed: dict[int, tuple[str, RpjError]] = {}  # shard -> (stage, error)
        self.skipped: dict[int, tuple[str, int]] = {}  # shard -> (stage, the failed shard it needs)

    def run(self, stage: str, shard: int, step: Callable[..., Any], *args: Any, needs: Iterable[int] = ()) -> None:
        """``step(*args)`` as ``stage`` of ``shard``, unless an earlier failure stands in its way."""
        if stage not in self.stages:
            self.stages.append(stage)
        self.shards.add(shard)
        if shard in self.failed or shard in self.skipped:
            return  # an earlier step of this shard failed: reported already
        blocker = next((s for s in needs if s in self.failed and self.failed[s][0] != stage), None)
        if blocker is not None:
            self.skipped[shard] = (stage, blocker)
            print(
                f"rpj: {stage} shard {shard:04d} skipped: it needs the hashes of shard {blocker:04d} (its hash group), "
                f"whose {self.failed[blocker][0]} failed",
                file=sys.stderr,
            )
            return
        try:
            step(*args)
        except (RpjError, OSError) as caught:
            exc = caught if isinstance(caught, RpjError) else storage_full(caught)
            if exc is None:
                raise  # another OSError is a bug or an unexpected system state: its traceback helps
            self.failed[shard] = (stage, exc)
            print(f"rpj: {stage} shard {shard:04d} failed: {type(exc).__name__}: {redact(str(exc))}", file=sys.stderr)

    def exit_code(self) -> int:
        """0 if every shard finished; else print which failed, by stage, and return 2 if every
        failure is permanent, 1 if one may pass on a retry (the exit codes of ``rpj``)."""
        if not self.failed:
            return 0
        parts = []
        for stage in self.stages:
            if failed := [s for s, (st, _) in self.failed.items() if st == stage]:
                parts.append(f"{stage} {format_shards(failed)}")
            if skipped := [s for s, (st, _) in self.skipped.items() if st == stage]:
                parts.append(f"{stage} skipped {format_shards(skipped)}")
        stopped = len(self.failed) + len(self.skipped)
        print(
            f"rpj: {stopped} of {len(self.shards)} shards failed: {'; '.join(parts)} (see the messages above)",
            file=sys.stderr,
        )
        return 2 if all(isinstance(exc, PermanentError) for _, exc in self.failed.values()) else 1
