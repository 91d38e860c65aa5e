"""Per-language inputs of the quality signals, read from the artifact layout of
:mod:`rpj_tasks.annotate.artifacts.build`::

    stopwords/{lang}.json                                  stop words (JSON array)
    ldnoobw/{lang}.txt                                     LDNOOBW list (one entry per line)
    ut1/domain_to_category_id.json                         UT1 domain -> category-set id
    classifiers/{lang}/{palm|wikipedia|wikiref}.model.bin  fastText models
    dsir/{lang}/{dataset}.{lang}.10000.counts.npy          DSIR counts (ccnet = source)
    dsir/{lang}/{dataset}.{lang}.lambda.npy                DSIR mean RW token count
    MANIFEST.json                                          records the DSIR ``hash_mode`` and
                                                           each file's sha256

Everything except the stop words is optional: a missing part gives null (or, for LDNOOBW, zero)
scores, as in the reference, and is logged once.  LDNOOBW and stop words apply only to
en/de/fr/es/it (§3.2); other languages get empty sets.  Artifacts are loaded once per process.
A classifier model is checked against the sha256 the manifest records for it (a cached copy of a
remote model that differs is downloaded again; a file that still differs is refused).
"""

from __future__ import annotations

import io
import json
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rpj_tasks.annotate.hashseed import HASH_MODES, SEED42
from rpj_tasks.annotate.signals.classifier import load_classifier
from rpj_tasks.annotate.signals.models import DSIR_SOURCE, DSIR_TARGETS, DsirScorer
from rpj_tasks.core import storage
from rpj_tasks.core.errors import PermanentError
from rpj_tasks.core.layout import LANGUAGES

log = logging.getLogger(__name__)

WORD_LIST_LANGS = LANGUAGES  # other languages have no word lists (quality_signals.md §3.2)
CLASSIFIERS = ("palm", "wikipedia", "wikiref")
_CACHE: dict[tuple[str, str, str], SignalArtifacts] = {}
_LOCK = threading.Lock()


class ArtifactsError(PermanentError, RuntimeError):
    """Signal artifacts are unreadable or were built for another hash mode."""


@dataclass(frozen=True)
class SignalArtifacts:
    """Everything one language's signals need.  ``classifiers`` maps a model name to its
    predictor (:func:`rpj_tasks.annotate.signals.classifier.load_classifier`); ``dsir`` is ``None`` when the source or every target is missing."""

    lang: str
    stop_words: frozenset[str] = frozenset()
    ldnoobw: frozenset[str] = frozenset()
    ut1: dict[str, int] = field(default_factory=dict)
    classifiers: dict[str, Any] = field(default_factory=dict)
    dsir: DsirScorer | None = None

    @classmethod
    def load(cls, root_url: str, lang: str, hash_mode: str = SEED42) -> SignalArtifacts:
        """Read ``lang``'s artifacts under ``root_url`` (cached per process).

        ``hash_mode`` is the DSIR mode the run asks for; artifacts whose ``MANIFEST.json`` records
        another mode are refused (:class:`ArtifactsError`).  Without a manifest (a bare copy of the
        published RPv2 ``artifacts_dir``; the annotation stage itself requires one) the counts are
        taken to be ``cpython-seed42``.
        """
        if hash_mode not in HASH_MODES:
            raise ValueError(f"unknown hash_mode {hash_mode!r}; expected one of {HASH_MODES}")
        key = (root_url, lang, hash_mode)
        with _LOCK:
            if key not in _CACHE:
                _CACHE[key] = _load(root_url, lang, hash_mode)
            return _CACHE[key]


def ldnoobw_entries(text: str) -> frozenset[str]:
    """The reference's list: every line (``\\n``, ``\\r\\n`` or ``\\r`` ended) ``strip()``-ed."""
    return frozenset(line.strip() for line in io.StringIO(text, newline=None))


def _listed(root: str) -> dict[str, str | None] | None:
    """The files ``MANIFEST.json`` lists (the only ones read: a rebuild's leftovers are never picked
    up), each with the sha256 it records (None if none), or None without a manifest (then whatever
    exists is read)."""
    url = storage.join(root, "MANIFEST.json")
    if not storage.exists(url):
        return None
    manifest = json.loads(storage.read_bytes(url))
    for key in ("outputs", "artifacts"):  # the commit record's listing, or an older manifest's
        if key in manifest:
            entries = manifest[key]
            if not isinstance(entries, dict):
                return dict.fromkeys(entries)
            return {
                rel: e.get("sha256") if isinstance(e, dict) and isinstance(e.get("sha256"), str) else None
                for rel, e in entries.items()
            }
    return None  # a manifest that lists nothing (hand-made): read what exists


def _present(root: str, rel: str, listed: dict[str, str | None] | None) -> bool:
    return rel in listed if listed is not None else storage.exists(storage.join(root, rel))


def _optional(root: str, rel: str, listed: dict[str, str | None] | None) -> bytes | None:
    if not _present(root, rel, listed):
        log.warning("signal artifact %s missing: its signal is null", storage.join(root, rel))
        return None
    return storage.read_bytes(storage.join(root, rel))


def _read_npy(url: str) -> np.ndarray:
    try:
        return np.load(io.BytesIO(storage.read_bytes(url)), allow_pickle=False)
    except ValueError as exc:
        raise ArtifactsError(f"{url}: not a numpy .npy array ({exc})") from exc


def _load_word_lists(root: str, lang: str, listed: dict[str, str | None] | None) -> tuple[frozenset[str], frozenset[str]]:
    if lang not in WORD_LIST_LANGS:
        return frozenset(), frozenset()
    url = storage.join(root, "stopwords", f"{lang}.json")
    if not _present(root, f"stopwords/{lang}.json", listed):
        raise ArtifactsError(f"{url} missing: build the signal artifacts (rpj_tasks.annotate.artifacts.build) first")
    words = json.loads(storage.read_bytes(url))
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ArtifactsError(f"{url}: not a JSON array of strings")
    bad = _optional(root, f"ldnoobw/{lang}.txt", listed)
    return frozenset(words), ldnoobw_entries(bad.decode("utf-8")) if bad is not None else frozenset()


def _load_ut1(root: str, listed: dict[str, str | None] | None) -> dict[str, int]:
    data = _optional(root, "ut1/domain_to_category_id.json", listed)
    mapping = json.loads(data) if data is not None else {}
    if not isinstance(mapping, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        raise ArtifactsError(f"{root}: ut1/domain_to_category_id.json is not a {{domain: int}} object")
    return mapping


def _load_classifiers(root: str, lang: str, listed: dict[str, str | None] | None) -> dict[str, Any]:
    models = {}
    for name in CLASSIFIERS:
        rel = f"classifiers/{lang}/{name}.model.bin"
        if _present(root, rel, listed):
            models[name] = load_classifier(storage.join(root, rel), sha256=listed.get(rel) if listed is not None else None)
    return models


def _recorded_hash_mode(root: str, counts_file: str) -> str:
    """The mode ``MANIFEST.json`` records for ``counts_file`` (its own entry, else the top level);
    ``cpython-seed42`` without a manifest, the mode of the published RPv2 counts."""
    url = storage.join(root, "MANIFEST.json")
    if not storage.exists(url):
        return SEED42
    manifest = json.loads(storage.read_bytes(url))
    entry = manifest.get("artifacts", {}).get(counts_file, {})
    return entry.get("hash_mode") or manifest.get("hash_mode") or SEED42


def _load_dsir(root: str, lang: str, hash_mode: str, listed: dict[str, str | None] | None) -> DsirScorer | None:
    def pair(dataset: str) -> tuple[np.ndarray, np.ndarray] | None:
        counts = f"dsir/{lang}/{dataset}.{lang}.10000.counts.npy"
        lam = f"dsir/{lang}/{dataset}.{lang}.lambda.npy"
        if not (_present(root, counts, listed) and _present(root, lam, listed)):
            return None
        return _read_npy(storage.join(root, counts)), _read_npy(storage.join(root, lam))

    source = pair(DSIR_SOURCE)
    targets = {name: p for name in DSIR_TARGETS if (p := pair(name)) is not None}
    if source is None or not targets:
        log.warning("%s: no DSIR source/target counts for %s: importance signals are null", root, lang)
        return None
    recorded = _recorded_hash_mode(root, f"dsir/{lang}/{DSIR_SOURCE}.{lang}.10000.counts.npy")
    if recorded != hash_mode:
        raise ArtifactsError(f"{root}: DSIR counts were built with hash_mode {recorded!r}, the run asks for {hash_mode!r}")
    return DsirScorer(source, targets, hash_mode)


def _load(root: str, lang: str, hash_mode: str) -> SignalArtifacts:
    listed = _listed(root)
    stop_words, ldnoobw = _load_word_lists(root, lang, listed)
    return SignalArtifacts(
        lang=lang,
        stop_words=stop_words,
        ldnoobw=ldnoobw,
        ut1=_load_ut1(root, listed),
        classifiers=_load_classifiers(root, lang, listed),
        dsir=_load_dsir(root, lang, hash_mode, listed),
    )
