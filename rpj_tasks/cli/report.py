"""``rpj report``: write a snapshot's report (``reports/{snapshot}/index.html`` and ``report.json``)
and the index of published snapshots (``reports/index.html``), or only the index (``--index``)."""

from __future__ import annotations

import argparse
from typing import Any

from rpj_tasks.cli.common import ascii_int, positive_int, snapshot_config, storage_root
from rpj_tasks.core import plan
from rpj_tasks.core.redact import redact


def register(sub: Any) -> None:
    p = sub.add_parser("report", help="write a snapshot's report page (and the index of published snapshots)")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--snapshot", help="YYYY-WW")
    what.add_argument("--index", action="store_true", help="only rewrite reports/index.html from the release manifests")
    p.add_argument("--shards", default="", help='the shards the report covers, e.g. "0-9,15" (default: all)')
    p.add_argument("--limit", type=positive_int, help="at most this many shards")
    p.add_argument("--num-shards", type=positive_int)
    p.add_argument("--storage-root")
    p.add_argument("--source-base")
    p.add_argument("--languages", help="e.g. en,de")
    p.add_argument("--sample", type=ascii_int, help="documents read for the histograms, at most (default 200000)")
    p.add_argument("--force", action="store_true", help="rewrite even if the numbers did not change")
    p.set_defaults(run=run_report)


def run_report(args: argparse.Namespace) -> int:
    from rpj_tasks.report import write_index, write_report
    from rpj_tasks.report.data import DEFAULT_SAMPLE

    if args.index:
        out = write_index(storage_root(args), force=args.force)
        print(f"index of {len(out['index']['snapshots'])} published snapshots: {redact(out['html'])}")
        return 0
    cfg = snapshot_config(args)
    shards = plan.parse_shards(args.shards, cfg.num_shards)[: args.limit]
    sample = DEFAULT_SAMPLE if args.sample is None else args.sample
    out = write_report(cfg, shards, sample_cap=sample, force=args.force)
    state = "unchanged" if out["skipped"] else "written"
    print(f"report of {cfg.id} {state}: {redact(out['html'])} (numbers: {redact(out['json'])})")
    print(f"index of published snapshots: {redact(out['index'])}")
    return 0
