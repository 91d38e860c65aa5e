"""All rpj Airflow DAGs, built from config/snapshots.yaml by rpj_dags.factory: one DAG per snapshot,
rpv2_sample, rpv2_monthly, rpv2_prep_artifacts, rpv2_dedup and rpv2_filter.

(Airflow's DAG-discovery safe mode only parses files that mention both "airflow" and "dag".)
"""

import os
import sys

# The factory package sits next to this file; the DAG folder is not on sys.path in every
# Airflow process (e.g. a bare DagBag), so make it importable explicitly.
_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)

from rpj_dags.factory import build_all  # noqa: E402

globals().update(build_all())
