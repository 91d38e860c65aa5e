"""No secret reaches a log: the record-factory safety net of rpj_tasks.core.redact, in a process of its own."""

import subprocess
import sys

SCRIPT = r"""
import logging, sys
from rpj_tasks.core import logctx, redact
logging.basicConfig(stream=sys.stdout, format="%(name)s %(message)s", level=logging.INFO)
redact.install()
with logctx.log_context(shard="2000-01/0001"):
    redact.install()  # once per process, whatever wraps the factory in between
    logging.getLogger("rpj.download").warning("fetching %s", "https://reader:hunter2@mirror.example/x.gz")
    logging.getLogger("airflow.task").info("presigned s3://b/k?X-Amz-Signature=deadbeef&x=1")
    logging.getLogger("rpj.other").info("100%% of %d", 3)
"""


def test_every_log_record_is_redacted_once_installed():
    proc = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "rpj.download [2000-01/0001] fetching https://***@mirror.example/x.gz",
        "airflow.task presigned s3://b/k?X-Amz-Signature=***&x=1",
        "rpj.other [2000-01/0001] 100% of 3",
    ]
