"""DAG parse cost: what the dag-processor pays for the DAG folder, and what each task start pays.

Each measurement runs in a fresh interpreter (as Airflow's processes do) and reports CPU seconds
(``time.process_time``) after ``import airflow.sdk`` (Airflow's own start-up, printed apart):

* ``folder``: the whole folder through Airflow's ``DagBag`` plus serialization of every DAG, the
  dag-processor's work per parse loop (target: under 2 s of CPU);
* ``task_start``: the same file with the parsing context a task runner sets
  (``_AIRFLOW_PARSING_CONTEXT_DAG_ID``): only the task's DAG is built.

Runs alternate between the two; the JSON gives min / median / max per figure over ``--runs``.

    .venv/bin/python bench/bench_dag_parse.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
t0 = time.process_time()
import airflow.sdk  # noqa: F401
t1 = time.process_time()
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
bag = DagBag(dag_folder=sys.argv[1])
t2 = time.process_time()
for dag in bag.dags.values():
    DagSerialization.to_dict(dag)
t3 = time.process_time()
print("JSON" + json.dumps({
    "airflow_import_cpu_s": t1 - t0, "parse_cpu_s": t2 - t1, "serialize_cpu_s": t3 - t2,
    "dags": len(bag.dags), "tasks": sum(len(d.tasks) for d in bag.dags.values()),
    "errors": list(bag.import_errors),
}))
"""


def run_child(dags_folder: Path, env: dict[str, str]) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(dags_folder)], env=env, capture_output=True, text=True, timeout=600, check=False
    )
    line = next((x for x in proc.stdout.splitlines() if x.startswith("JSON")), None)
    if proc.returncode != 0 or line is None:
        raise SystemExit(f"parse child failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    out = json.loads(line[4:])
    if out["errors"]:
        raise SystemExit(f"import errors: {out['errors']}")
    return out


def summary(values: list[float]) -> dict[str, float]:
    return {"min": round(min(values), 3), "median": round(statistics.median(values), 3), "max": round(max(values), 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--dags-folder", type=Path, default=REPO / "dags")
    p.add_argument("--dag-id", default="rpv2_2023_06", help="the DAG a task start asks for")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as home:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "_AIRFLOW_"))}
        env.update({"AIRFLOW_HOME": home, "AIRFLOW__CORE__LOAD_EXAMPLES": "False", "RPJ_HOME": str(REPO)})
        task_env = {**env, "_AIRFLOW_PARSING_CONTEXT_DAG_ID": args.dag_id, "_AIRFLOW_PARSING_CONTEXT_TASK_ID": "plan_units"}
        folder, task = [], []
        for _ in range(args.runs):
            folder.append(run_child(args.dags_folder, env))
            task.append(run_child(args.dags_folder, task_env))
    print(
        json.dumps(
            {
                "method": "fresh interpreter per run, CPU time after `import airflow.sdk`, folder and task-start runs alternated",
                "runs": args.runs,
                "folder": {
                    "dags": folder[0]["dags"],
                    "tasks": folder[0]["tasks"],
                    "parse_cpu_s": summary([r["parse_cpu_s"] for r in folder]),
                    "parse_and_serialize_cpu_s": summary([r["parse_cpu_s"] + r["serialize_cpu_s"] for r in folder]),
                },
                "task_start": {
                    "dag_id": args.dag_id,
                    "dags": task[0]["dags"],
                    "tasks": task[0]["tasks"],
                    "parse_cpu_s": summary([r["parse_cpu_s"] for r in task]),
                },
                "airflow_import_cpu_s": summary([r["airflow_import_cpu_s"] for r in folder + task]),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
