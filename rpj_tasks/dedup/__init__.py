"""Deduplication: exact duplicates of the release (:mod:`rpj_tasks.dedup.exact`, the ``duplicates/``
component, ``docs/spec/rpv2_format.md`` §6) and fuzzy MinHash LSH clusters (``lsh``, §7)."""
