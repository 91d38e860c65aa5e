"""The snapshot report: a self-contained HTML page and its JSON twin per snapshot, and an index of
every published snapshot, made from the records and files under the storage root (no Airflow)."""

from rpj_tasks.report.data import build_report
from rpj_tasks.report.stage import build_index, write_index, write_report

__all__ = ["build_index", "build_report", "write_index", "write_report"]
