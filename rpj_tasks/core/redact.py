"""Credentials never reach a log, an error or a record.

:func:`redact` replaces the secrets of every URL in a text by ``***``: the user info of
``scheme://user:password@host`` and query parameters that carry secrets (presigned URLs, tokens).
Messages that show a URL from the configuration (``source_base``, a mirror) pass through it;
:func:`install` adds a safety net to a process: every log record's message is redacted when it is
created (the CLI, each Airflow task and each worker process install it).
"""

from __future__ import annotations

import logging
import re
from typing import Any

# ``scheme://user:password@host``: the user info; query parameters that carry secrets (presigned
# URLs, tokens).  Both are replaced by ``***`` wherever a URL is shown.
_USERINFO = re.compile(r"(?<=://)[^/?#\s]*@")  # greedy: up to the last "@" before the host's end
_SECRET_QUERY = re.compile(
    r"(?i)([?&][^=&#\s'\"]*(?:signature|sig|token|secret|password|passwd|credential|key)[^=&#\s'\"]*=)[^&#\s'\"]*"
)


def redact(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced by ``***`` (user info, and query
    parameters such as ``X-Amz-Signature`` or ``token``): for logs, errors and records."""
    if "://" not in text and "?" not in text:
        return text
    return _SECRET_QUERY.sub(r"\1***", _USERINFO.sub("***@", text))


_installed = False


def redact_values(value: Any) -> Any:
    """``value`` (JSON-like data: a record, a manifest) with every string in it redacted."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {redact_values(k): redact_values(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_values(v) for v in value]
    return value


def install() -> None:
    """Redact the message of every log record this process creates from now on (once per process;
    it composes with other record-factory wrappers such as :mod:`rpj_tasks.core.logctx`)."""
    global _installed
    if _installed:
        return
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string is the handler's to report
            return record
        if (clean := redact(message)) != message:
            record.msg, record.args = clean, None
        return record

    logging.setLogRecordFactory(factory)
    _installed = True
