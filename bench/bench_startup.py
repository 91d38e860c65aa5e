"""Start-up cost of importing a stage: whole processes, ``python -c "import MODULE"`` against a bare
``python -c pass``, alternated ``--runs`` times; CPU seconds (user + system, ``wait4``) of each, and
the import's cost as the difference (median and range over the runs).  ``--importtime N`` adds the N
modules with the largest cumulative time from one ``python -X importtime`` run.  Target (issue 17):
importing the annotation stage under 150 ms.

    .venv/bin/python bench/bench_startup.py [--module rpj_tasks.annotate.stage] [--runs 7] [--importtime 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

from paired import cpu_model, timed


def importtime(module: str, top: int) -> list[dict]:
    proc = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True)
    rows = []
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        self_us, cumulative_us, name = (part.strip() for part in line[len("import time:") :].split("|"))
        rows.append({"module": name, "self_ms": int(self_us) / 1000, "cumulative_ms": int(cumulative_us) / 1000})
    return sorted(rows, key=lambda r: -r["cumulative_ms"])[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--module", default="rpj_tasks.annotate.stage")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--importtime", type=int, default=0, metavar="N")
    args = parser.parse_args()
    bare, loaded = [], []
    for _ in range(max(1, args.runs)):
        bare.append(timed([sys.executable, "-c", "pass"])["cpu_seconds"])
        loaded.append(timed([sys.executable, "-c", f"import {args.module}"])["cpu_seconds"])
    costs = [round((m - b) * 1000) for m, b in zip(loaded, bare)]
    result = {
        "module": args.module,
        "cpu_model": cpu_model(),
        "runs": len(costs),
        "import_cpu_ms_median": statistics.median(costs),
        "import_cpu_ms_range": f"{min(costs)}-{max(costs)}",
        "bare_interpreter_cpu_ms_median": round(statistics.median(bare) * 1000),
        "with_import_cpu_ms_median": round(statistics.median(loaded) * 1000),
        "target_ms": 150,
        "method": "whole processes, alternated bare / import, CPU = user + system from wait4, difference per pair",
    }
    if args.importtime:
        result["importtime"] = importtime(args.module, args.importtime)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
