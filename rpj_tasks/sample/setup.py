"""Everything the offline sample snapshot needs, made on demand and deterministically.

* the sample Common Crawl mirror at the snapshot's ``source_base`` (``rpj_tasks.sample.mirror``);
* reference corpora to train the sample's SentencePiece/KenLM models;
* a calibration corpus: web-like pages from an independent mirror (another seed), run through
  the real WET reader, paragraph dedup and LID, whose perplexity percentiles give the sample's
  head/middle/tail cutoffs (cc_net's cutoffs only fit cc_net's own models).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from rpj_tasks.ccnet import models
from rpj_tasks.ccnet.dedup import ShardHashes, remove_duplicate_lines
from rpj_tasks.ccnet.lid import LanguageIdentifier
from rpj_tasks.core import commit, layout, storage
from rpj_tasks.core.config import PACKAGE_DATA, SnapshotConfig
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.sample")

MIRROR_SEED, REFERENCE_SEED, CALIBRATION_SEED, OPENWEBTEXT_SEED, BOOKS_SEED = 0, 1, 2, 3, 4
MIRROR_SEGMENTS, MIRROR_DOCS_PER_SEGMENT = 4, 250
REFERENCE_DOCS_PER_LANG = 1500
CALIBRATION_DOCS = 1500


def ensure_mirror(cfg: SnapshotConfig) -> None:
    """Generate the sample mirror at ``source_base`` when the registry allows it and it is absent.

    Only a snapshot with ``generate_source: true`` (the offline sample; its ``source_base`` must
    then be a ``file://`` URL, checked by the config) ever gets a mirror written; any other source
    is only read.  Absent means the local listing file does not exist: nothing is concluded from
    an error.
    """
    from rpj_tasks.download.listing import listing_source_url
    from rpj_tasks.sample.mirror import generate_mirror

    if not cfg.generate_source:
        return
    paths = listing_source_url(cfg.source_base, cfg.crawl)
    if storage.exists(paths):
        return
    log.warning("no listing at %s: generating the offline sample mirror at %s (generate_source: true)", paths, cfg.source_base)
    generate_mirror(cfg.source_base, seed=MIRROR_SEED, segments=MIRROR_SEGMENTS, docs_per_segment=MIRROR_DOCS_PER_SEGMENT)


def ensure_sample(cfg: SnapshotConfig) -> None:
    """Make the sample mirror and the sample models if they are missing."""
    ensure_mirror(cfg)
    out = layout.models_url(cfg.storage_root, cfg.models_version)
    if models.exists(out):
        return
    log.info("building the sample CCNet models %s", out)
    models.begin(out)
    corpora, calibration = sample_corpora(cfg)
    entries = [
        models.build_language(lang, corpora[lang], out, vocab_size=models.SAMPLE_VOCAB_SIZE, calibration_url=calibration[lang])
        for lang in cfg.languages
    ]
    models.finalize_built(out, entries)


def sample_corpora(cfg: SnapshotConfig) -> tuple[dict[str, str], dict[str, str]]:
    """``({lang: reference corpus URL}, {lang: calibration corpus URL})``, generated if missing."""
    from rpj_tasks.download.wet import iter_documents
    from rpj_tasks.sample.mirror import generate_mirror, generate_reference_corpus

    base = storage.join(cfg.storage_root, "artifacts", "corpora", "sample")
    corpora = generate_reference_corpus(
        storage.join(base, "reference"), cfg.languages, seed=REFERENCE_SEED, docs_per_lang=REFERENCE_DOCS_PER_LANG
    )
    calibration = {lang: storage.join(base, "calibration", f"{lang}.jsonl") for lang in cfg.languages}
    if all(storage.exists(url) for url in calibration.values()):
        return corpora, calibration

    mirror = storage.join(base, "calibration-mirror")
    generate_mirror(mirror, seed=CALIBRATION_SEED, segments=1, docs_per_segment=CALIBRATION_DOCS, broken=False)
    from rpj_tasks.download.listing import list_segments

    stats = Stats()
    docs: list[dict[str, Any]] = []
    for segment in list_segments(mirror, cfg.crawl):
        with storage.open_read(storage.join(mirror, segment)) as f:
            docs.extend(
                iter_documents(f, source=segment, stats=stats, min_len=cfg.min_len, max_record_bytes=cfg.max_record_bytes)
            )
    table = ShardHashes.collect(d["raw_content"].split("\n") for d in docs)
    lid = LanguageIdentifier(cfg.lid_model or None)
    by_lang: dict[str, list[bytes]] = {lang: [] for lang in cfg.languages}
    for raw_doc in docs:
        doc = remove_duplicate_lines(raw_doc, table, stats)
        if doc is None:
            continue
        lang, score = lid.predict(doc["raw_content"])
        if lang in by_lang and score >= cfg.lid_threshold:
            by_lang[lang].append(json.dumps({"text": doc["raw_content"]}, ensure_ascii=False).encode() + b"\n")
    for lang, lines in by_lang.items():
        storage.write_bytes(calibration[lang], b"".join(lines))
        log.info("calibration corpus %s: %d documents", lang, len(lines))
    return corpora, calibration


WORDLISTS = PACKAGE_DATA / "wordlists"
SIGNALS_SAMPLE_SIZES = {"dsir_num_samples": 2000, "classifier_num_samples": 400}


def ensure_signal_artifacts(cfg: SnapshotConfig, *, force: bool = False) -> str:
    """The sample's quality-signal artifacts, built if missing (or with ``force``); returns their URL.

    Word lists come from the copies bundled in ``rpj_tasks/data/wordlists`` (the real upstream
    files); classifiers and DSIR counts are trained on the sample's reference corpora against a
    CCNet sample drawn from the snapshot's own ``documents/`` (so the CCNet stage must have run).
    No UT1 list is available offline: ``rps_doc_ut1_blacklist`` is null, as in the spec's vectors.
    """
    from rpj_tasks.annotate.artifacts.build import build_signal_artifacts

    out = layout.signal_artifacts_url(cfg.storage_root, cfg.signals_version)
    if not force and commit.finished(storage.join(out, "MANIFEST.json"), None) is not None:  # built earlier, every file there
        return out
    log.info("building the sample quality-signal artifacts %s", out)
    build_signal_artifacts(sample_signals_config(cfg), out, force=force)
    return out


def sample_signals_config(cfg: SnapshotConfig) -> dict[str, Any]:
    """The sample's artifact build config (its reference corpora generated if missing)."""
    from rpj_tasks.sample.mirror import generate_reference_corpus

    base = storage.join(cfg.storage_root, "artifacts", "corpora", "sample")
    corpora: dict[str, dict[str, str]] = {lang: {} for lang in cfg.languages}
    for dataset, seed in (("wikipedia", REFERENCE_SEED), ("openwebtext", OPENWEBTEXT_SEED), ("books", BOOKS_SEED)):
        langs = cfg.languages if dataset == "wikipedia" else [lang for lang in cfg.languages if lang == "en"]
        if langs:
            urls = generate_reference_corpus(storage.join(base, dataset), langs, seed=seed, docs_per_lang=REFERENCE_DOCS_PER_LANG)
            for lang, url in urls.items():
                corpora[lang][dataset] = url
    return {
        "langs": cfg.languages,
        "stopwords_url_template": (WORDLISTS / "stopwords").as_uri() + "/{lang}.json",
        "ldnoobw_url_template": (WORDLISTS / "ldnoobw").as_uri() + "/{lang}.txt",
        "ccnet": {"documents_root": storage.join(cfg.storage_root, "documents"), "snapshots": [cfg.id]},
        "corpora": corpora,
        "hash_mode": cfg.dsir_hash_mode,
        **SIGNALS_SAMPLE_SIZES,
    }
