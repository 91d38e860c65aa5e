"""``rpj``: run any stage of the pipeline without Airflow; one module per stage.

Examples::

    rpj snapshots
    rpj sample-mirror file:///tmp/mirror --docs-per-segment 500
    rpj ccnet --snapshot 2000-01 --shards 0-3            # download + hashes + mine
    rpj mine --snapshot 2023-06 --shards 17 --force
    rpj annotate --snapshot 2000-01 --shards 0-3        # quality signals + MinHash of mined shards
    rpj models install --version ccnet-official --from https://example.org/cc_net/lm/
    rpj dedup --snapshot 2000-01                        # exact dedup: duplicates/
    rpj clusters --snapshot 2000-01                     # fuzzy clusters: clusters/
    rpj tokens --snapshot 2000-01                       # token counts: tokens/
    rpj tokens --snapshot 2000-01 --totals              # totals before and after dedup
    rpj validate --snapshot 2000-01                     # Great Expectations gates (stats/validate/, validation/)
    rpj publish --snapshot 2000-01                      # listings/ and the release manifest, after the gates
    rpj filter --snapshot 2000-01 --recipe gopher       # training shards of a published snapshot: filtered/
    rpj filter --snapshot 2000-01 --recipe my.yaml --dry-run   # what each rule would drop, nothing written
    rpj summary --snapshot 2000-01
    rpj report --snapshot 2000-01                       # reports/2000-01/index.html (+ report.json), reports/index.html

Expected failures (:class:`rpj_tasks.core.errors.RpjError`) print one line: exit 2 when retrying
cannot help, 1 when it may (network trouble after the retries, a full disk); bugs keep their
traceback (exit 1), with any credential in it redacted.
A failure of the whole command (bad config or ``--shards``, no listing, no models or artifacts)
stops it at once.  A shard's failure in ``download``, ``hashes``, ``mine``, ``ccnet`` or
``annotate`` stops only that shard (and the mine of the shards of its hash group): the others are
finished, then a summary names the failed shards by stage and the exit code is 2, or 1 if one of
the failures was transient.  A rerun skips the finished shards and retries the failed ones.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback

from rpj_tasks.cli import annotate, ccnet, dedup, models, snapshots, tokens, validate
from rpj_tasks.cli import filter as filter_cmd
from rpj_tasks.cli import report as report_cli
from rpj_tasks.core import redact
from rpj_tasks.core.errors import PermanentError, RpjError, storage_full


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rpj", description="RedPajama-V2 pipeline stages (no Airflow needed)")
    p.add_argument("--registry", help="snapshot registry YAML (default: config/snapshots.yaml or $RPJ_REGISTRY)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)
    for module in (snapshots, ccnet, annotate, dedup, tokens, validate, models, filter_cmd):
        module.register(sub)
    report_cli.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("rpj").setLevel(logging.INFO)
    redact.install()
    try:
        code = args.run(args)  # a command returns its exit code, or None for 0
    except BrokenPipeError:  # e.g. `rpj summary | head`: the reader has gone, nothing to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("rpj: interrupted", file=sys.stderr)
        return 130
    except Exception as caught:  # noqa: BLE001 - expected failures: one line; bugs: their traceback, redacted
        exc = caught if isinstance(caught, RpjError) else storage_full(caught)
        if exc is None:
            print(redact.redact(traceback.format_exc()), end="", file=sys.stderr)
            return 1
        kind = "error" if isinstance(exc, PermanentError) else "transient error (try again later)"
        print(f"rpj: {kind}: {redact.redact(str(exc))}", file=sys.stderr)
        return 2 if isinstance(exc, PermanentError) else 1
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
