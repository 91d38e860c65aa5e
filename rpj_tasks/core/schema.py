"""The fields and columns of every component of an RPv2 release, in on-disk order: one definition,
read by the writers and by the tests.

Paths, file-name patterns, languages and buckets are in :mod:`rpj_tasks.core.layout`; the id
formats are implemented in :mod:`rpj_tasks.core.ids` (``docs/spec/rpv2_format.md`` §3) and named
here.  ``tests/test_schema.py`` compares every list below with the literal text of
``docs/spec/rpv2_format.md`` and ``docs/spec/quality_signals.md``, so this module cannot drift
from the spec silently.

===================  =====================================================  ==========================
component            file                                                   definition here
===================  =====================================================  ==========================
documents            ``documents/{base_tag}.json.gz``                       :data:`DOCUMENT_FIELDS`
quality signals      ``quality_signals/{base_tag}.signals.json.gz``         :data:`SIGNAL_KEYS`
MinHash              ``minhash/{base_tag}.minhash.parquet``                 :data:`MINHASH_SCHEMA`
duplicates           ``duplicates/{base_tag}.duplicates.parquet``           :data:`DUPLICATES_SCHEMA`
clusters (users')    ``{shard key without .json.gz}.clusters.parquet``      :data:`CLUSTERS_SCHEMA`
token counts (rpj)   ``tokens/{base_tag}.tokens.parquet``                   :data:`TOKEN_COUNTS_SCHEMA`
===================  =====================================================  ==========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    ID_INT_TYPE: pa.DataType
    MINHASH_SCHEMA: pa.Schema
    DUPLICATES_SCHEMA: pa.Schema
    CLUSTERS_SCHEMA: pa.Schema
    TOKEN_COUNTS_SCHEMA: pa.Schema

# ---------------------------------------------------------------- ids (rpv2_format.md §3)

#: ``id`` of line ``idx`` of a documents file (:func:`rpj_tasks.core.ids.doc_id`), e.g.
#: ``2023-06/0000/en_head.json.gz/17``; the duplicates files call the same string ``doc_id``.
DOC_ID_FORMAT = "{shard_key}/{idx}"
#: The shard key (``shard_id`` / ``cc_net_source``): the documents file's path relative to the
#: release root (:func:`rpj_tasks.core.layout.shard_key`), e.g. ``2023-06/0000/en_head.json.gz``.
SHARD_KEY_FORMAT = "{snapshot}/{shard:04d}/{lang}_{bucket}.json.gz"
#: ``id_int`` (:func:`rpj_tasks.core.ids.id_int`): the first 8 bytes of SHA-1(id as UTF-8), read as
#: an unsigned little-endian integer; often above 2**63, so always uint64.
#: (pyarrow ``uint64``; the Arrow types and schemas below are built on first use, see __getattr__)


def _id_int_type() -> Any:
    import pyarrow as pa

    return pa.uint64()


# ---------------------------------------------------------------- documents (rpv2_format.md §2)

#: The 16 CCNet fields of a documents line, in the order written (``json.dumps(doc,
#: ensure_ascii=False)``, insertion order of the CCNet steps), with their JSON types.
DOCUMENT_FIELD_TYPES: dict[str, type] = {
    "url": str,
    "date_download": str,
    "digest": str,
    "length": int,
    "nlines": int,
    "source_domain": str,
    "title": str,
    "raw_content": str,
    "cc_segment": str,
    "original_nlines": int,
    "original_length": int,
    "line_ids": list,
    "language": str,
    "language_score": float,
    "perplexity": float,
    "bucket": str,
}
DOCUMENT_FIELDS: tuple[str, ...] = tuple(DOCUMENT_FIELD_TYPES)
#: The fields the WET reader sets (:func:`rpj_tasks.download.wet.iter_documents`), fields 1-8;
#: the CCNet steps add the others in order (``cc_segment``; dedup: ``original_nlines``,
#: ``original_length``, ``line_ids``; LID: ``language``, ``language_score``; LM: ``perplexity``,
#: ``bucket``).
WET_DOCUMENT_FIELDS: tuple[str, ...] = DOCUMENT_FIELDS[:8]
#: The 14 fields the reference's strict reader requires of a documents line
#: (rpv2_format.md §4); ``title`` and ``line_ids`` are not read.  A line without one of them is
#: still annotated here (counted as ``annotate.incomplete_document``).
REQUIRED_DOCUMENT_FIELDS: frozenset[str] = frozenset(
    {
        "raw_content",
        "url",
        "nlines",
        "original_nlines",
        "source_domain",
        "length",
        "original_length",
        "language",
        "language_score",
        "perplexity",
        "bucket",
        "digest",
        "cc_segment",
        "date_download",
    }
)

# ---------------------------------------------------------------- quality signals (rpv2_format.md §4)

#: Top-level keys of a signals record, in the order written.
SIGNALS_RECORD_KEYS: tuple[str, ...] = ("id", "id_int", "metadata", "quality_signals")
#: Keys of its ``metadata`` object, in the order written (``cc_net_source`` = the shard key,
#: ``snapshot_id`` = its ``YYYY-WW``; the others are copied from the document).
SIGNALS_METADATA_KEYS: tuple[str, ...] = (
    "cc_segment",
    "cc_net_source",
    "url",
    "source_domain",
    "language",
    "snapshot_id",
)
#: The six line-level signals (quality_signals.md §3.5), in emitted order.
LINE_SIGNAL_KEYS: tuple[str, ...] = (
    "rps_lines_ending_with_terminal_punctution_mark",  # sic: misspelled upstream
    "rps_lines_javascript_counts",
    "rps_lines_num_words",
    "rps_lines_numerical_chars_fraction",
    "rps_lines_start_with_bulletpoint",
    "rps_lines_uppercase_letter_fraction",
)
#: The 45 ``quality_signals`` keys in emitted order (rpv2_format.md §4, quality_signals.md §3):
#: the seven ``ccnet_*`` copies, then the modules content, repetitions, natural_language, lines,
#: classifiers, importance_weights; inside a module by upstream class name (``10grams`` before
#: ``5grams``).  Each value is a list of ``[start, end, score]`` triples.
SIGNAL_KEYS: tuple[str, ...] = (
    "ccnet_length",
    "ccnet_original_length",
    "ccnet_nlines",
    "ccnet_original_nlines",
    "ccnet_language_score",
    "ccnet_perplexity",
    "ccnet_bucket",
    "rps_doc_curly_bracket",
    "rps_doc_ldnoobw_words",
    "rps_doc_lorem_ipsum",
    "rps_doc_stop_word_fraction",
    "rps_doc_ut1_blacklist",
    "rps_doc_frac_chars_dupe_10grams",
    "rps_doc_frac_chars_dupe_5grams",
    "rps_doc_frac_chars_dupe_6grams",
    "rps_doc_frac_chars_dupe_7grams",
    "rps_doc_frac_chars_dupe_8grams",
    "rps_doc_frac_chars_dupe_9grams",
    "rps_doc_frac_chars_top_2gram",
    "rps_doc_frac_chars_top_3gram",
    "rps_doc_frac_chars_top_4gram",
    "rps_doc_frac_all_caps_words",
    "rps_doc_frac_lines_end_with_ellipsis",
    "rps_doc_frac_no_alph_words",
    "rps_doc_frac_unique_words",
    "rps_doc_mean_word_length",
    "rps_doc_num_sentences",
    "rps_doc_symbol_to_word_ratio",
    "rps_doc_unigram_entropy",
    "rps_doc_word_count",
    *LINE_SIGNAL_KEYS,
    "rps_doc_ml_palm_score",
    "rps_doc_ml_wikipedia_score",
    "rps_doc_ml_wikiref_score",
    "rps_doc_books_importance",
    "rps_doc_books_importance_length_correction",
    "rps_doc_openwebtext_importance",
    "rps_doc_openwebtext_importance_length_correction",
    "rps_doc_wikipedia_importance",
    "rps_doc_wikipedia_importance_length_correction",
)

# ---------------------------------------------------------------- MinHash (rpv2_format.md §5, quality_signals.md §6)

MINHASH_NUM_PERM = 128
#: Similarity thresholds, in column order.
MINHASH_THRESHOLDS: tuple[float, ...] = (1.0, 0.9, 0.8, 0.7)
#: ``(bands, rows)`` per threshold (quality_signals.md §6.7); band ``k`` is signature values
#: ``k*rows ... k*rows + rows - 1`` as 4-byte big-endian integers, ``4 * rows`` bytes.
#: :mod:`rpj_tasks.annotate.minhash` checks datasketch's optimiser against this table at import.
MINHASH_BANDS: dict[float, tuple[int, int]] = {1.0: (1, 128), 0.9: (5, 25), 0.8: (9, 13), 0.7: (14, 9)}
#: The reference writes a row group every this many rows.
MINHASH_ROW_GROUP_SIZE = 1000


def signature_column(threshold: float) -> str:
    """Parquet column of a threshold, e.g. ``signature_sim0.9`` (the threshold formatted as a Python float)."""
    return f"signature_sim{float(threshold)}"


MINHASH_SIGNATURE_COLUMNS: tuple[str, ...] = tuple(signature_column(t) for t in MINHASH_THRESHOLDS)


#: One row per documents line, in order; the four signature columns are null together when the
#: document has fewer than 13 normalised words (or the line is not a usable document, D18).
def _minhash_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [("shard_id", pa.string()), ("id", pa.string()), ("id_int", _id_int_type())]
        + [(name, pa.list_(pa.binary())) for name in MINHASH_SIGNATURE_COLUMNS]
    )


# ---------------------------------------------------------------- duplicates (rpv2_format.md §6)


#: Exact duplicates of a head/middle documents file: every occurrence of a ``digest`` after the
#: first one seen (the first is not listed).  ``doc_id`` is the document's ``id``; ``digest`` is its
#: documents ``digest`` without the ``sha1:`` prefix.  Not built yet (README).
def _duplicates_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("shard_id", pa.string()), ("doc_id", pa.string()), ("digest", pa.string())])


DIGEST_PREFIX = "sha1:"

# ---------------------------------------------------------------- fuzzy-dedup clusters (rpv2_format.md §7)


#: ``run_lsh.py``'s output per shard (users run it; not part of the release): only documents of
#: non-singleton clusters, ``cluster_id`` = the smallest ``id_int`` of the cluster (keep a document
#: iff ``id_int == cluster_id``).
def _clusters_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("id_int", _id_int_type()), ("cluster_id", _id_int_type()), ("shard_id", pa.string())])


# ---------------------------------------------------------------- token counts (rpj; not in the spec)


#: Tokens per document (rpj's own component, not in an RPv2 release; :mod:`rpj_tasks.tokens`): one row
#: per documents line, in line order, ``id`` as in the signals and MinHash files (:data:`DOC_ID_FORMAT`,
#: e.g. ``2023-06/0000/en_head.json.gz/17``); ``tokens`` = Mistral-7B-v0.1 tokens of ``raw_content``
#: with the BOS (the reference's ``token_count.py``), null for a line that is not a usable document.
def _token_counts_schema() -> Any:
    import pyarrow as pa

    return pa.schema([("id", pa.string()), ("tokens", pa.int64())])


# The Arrow objects (ID_INT_TYPE, MINHASH_SCHEMA, DUPLICATES_SCHEMA, CLUSTERS_SCHEMA,
# TOKEN_COUNTS_SCHEMA) are made on first access: importing pyarrow costs ~0.1 s, which a stage's
# import does not pay until it writes parquet (tests/core/test_imports.py).
_ARROW: dict[str, Callable[[], Any]] = {
    "ID_INT_TYPE": _id_int_type,
    "MINHASH_SCHEMA": _minhash_schema,
    "DUPLICATES_SCHEMA": _duplicates_schema,
    "CLUSTERS_SCHEMA": _clusters_schema,
    "TOKEN_COUNTS_SCHEMA": _token_counts_schema,
}


def __getattr__(name: str) -> Any:
    build = _ARROW.get(name)
    if build is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = globals()[name] = build()
    return value
