"""The optional compiled inner loops of the annotation and CCNet stages and the WET reader (``rpj_tasks/native/_speedups.c``).

``native`` is the extension module, or ``None`` when it is not built (no C compiler at install
time) or disabled with ``RPJ_PURE_PYTHON=1``.  Every function in it has a pure-Python twin that
defines the result and is used in its absence; the outputs are identical either way
(``tests/annotate/test_speedups.py``, ``tests/ccnet/test_text_dedup.py``, ``tests/download/test_wet.py``),
only the speed differs.
"""

from __future__ import annotations

import logging
import os
from types import ModuleType

log = logging.getLogger(__name__)


def _load() -> ModuleType | None:
    if os.environ.get("RPJ_PURE_PYTHON", "") not in ("", "0"):
        return None
    try:
        from rpj_tasks.native import _speedups  # type: ignore[attr-defined]  # the compiled extension
    except ImportError as exc:  # pragma: no cover - depends on the install
        log.warning("rpj_tasks.native._speedups is not built (%s): annotation runs on the slower pure-Python path", exc)
        return None
    return _speedups


native: ModuleType | None = _load()
