"""RPv2 quality signals (``docs/spec/quality_signals.md``): the 45 per-document signals and their records.

Typical use, once per process and language, then per document line::

    artifacts = SignalArtifacts.load(artifacts_url, "en")
    line = encode_record(make_record(doc, "2023-06/0000/en_head.json.gz", idx, artifacts))
"""

from typing import Any

from rpj_tasks.annotate.hashseed import (
    HashSeedError,
    WorkerDiedError,
    call_with_seed42,
    dsir_hash_selfcheck,
    require_seed42,
    seed42_pool,
)
from rpj_tasks.annotate.signals.compute import (
    SIGNAL_KEYS,
    BadDocument,
    compute_signals,
    encode_record,
    make_record,
    null_record,
)
from rpj_tasks.annotate.signals.models import DsirScorer, classifier_score, classifier_text
from rpj_tasks.annotate.signals.text import DocText, normalize, prepare, raw_words, split_lines
from rpj_tasks.core.ids import doc_id, id_int, snapshot_id

__all__ = [
    "SIGNAL_KEYS",
    "ArtifactsError",
    "BadDocument",
    "DocText",
    "DsirScorer",
    "HashSeedError",
    "SignalArtifacts",
    "WorkerDiedError",
    "call_with_seed42",
    "classifier_score",
    "classifier_text",
    "compute_signals",
    "doc_id",
    "dsir_hash_selfcheck",
    "encode_record",
    "id_int",
    "make_record",
    "normalize",
    "null_record",
    "prepare",
    "raw_words",
    "require_seed42",
    "seed42_pool",
    "snapshot_id",
    "split_lines",
]


def __getattr__(name: str) -> Any:
    """``ArtifactsError`` and ``SignalArtifacts`` on first use: the artifacts loader imports the
    signal modules, so importing it here eagerly would make a cycle."""
    if name in ("ArtifactsError", "SignalArtifacts"):
        from rpj_tasks.annotate.artifacts import load

        return getattr(load, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
