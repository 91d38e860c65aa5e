"""CCNet perplexity models: a versioned directory of SentencePiece + KenLM models and cutoffs.

Layout under ``artifacts/ccnet/{version}/`` (see :mod:`rpj_tasks.core.layout`)::

    MANIFEST.json           {"version", "kind": "built"|"installed", "languages": {lang: {"sp", "lm", "sha256"}},
                             "cutoffs": "cutoff.csv", ...}
    {lang}.sp.model         SentencePiece unigram model
    {lang}.arpa | {lang}.arpa.bin   KenLM 5-gram (ARPA we estimate ourselves, or cc_net's binary)
    cutoff.csv              cc_net layout: percentile rows 0-99, one column per language

Two ways to fill it: :func:`install_models` copies official cc_net files from a URL;
:func:`build_models` trains SentencePiece and estimates a 5-gram model from a reference corpus per
language and derives bucket cutoffs from the perplexity percentiles of a calibration corpus
(CCNet's own cutoffs only fit CCNet's own models).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from rpj_tasks.ccnet.lm import PerplexityScorer, compute_cutoffs, load_cutoffs, normalized_lines, train_lm, train_sentencepiece
from rpj_tasks.core import commit, storage
from rpj_tasks.core.config import PACKAGE_DATA
from rpj_tasks.core.errors import PermanentError
from rpj_tasks.core.lines import INVALID_JSON, INVALID_UTF8, BadLines, iter_lines
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.models")

MANIFEST = "MANIFEST.json"
CCNET_CUTOFFS = PACKAGE_DATA / "ccnet_cutoff.csv"
SAMPLE_VOCAB_SIZE = 8000
LM_ORDER = 5


class ModelsError(PermanentError, RuntimeError):
    pass


@dataclass
class CCNetModels:
    """The loaded models of one version, restricted to the languages a run needs."""

    manifest_url: str
    fingerprint: str
    cutoffs: dict[str, tuple[float, float]]
    files: dict[str, tuple[str, str]]
    _scorers: dict[str, PerplexityScorer] = field(default_factory=dict)

    @classmethod
    def load(cls, models_url: str, languages: Iterable[str]) -> CCNetModels:
        manifest_url = storage.join(models_url, MANIFEST)
        if not storage.exists(manifest_url):
            raise ModelsError(
                f"no CCNet models at {models_url} ({MANIFEST} missing): build or install them with the "
                "rpv2_prep_artifacts DAG or `rpj models build|install|sample`"
            )
        raw = storage.read_bytes(manifest_url)
        manifest = json.loads(raw)
        missing = [lang for lang in languages if lang not in manifest["languages"]]
        if missing:
            raise ModelsError(f"models {models_url} have no model for languages {missing}")
        entry_url = functools.partial(storage.join_below, models_url, what=f"file named by {manifest_url}")
        files = {
            lang: (entry_url(entry["sp"]), entry_url(entry["lm"]))
            for lang, entry in manifest["languages"].items()
            if lang in set(languages)
        }
        cutoffs = load_cutoffs(entry_url(manifest["cutoffs"]))
        return cls(manifest_url, hashlib.sha256(raw).hexdigest(), cutoffs, files)

    def scorer(self, lang: str) -> PerplexityScorer:
        if lang not in self._scorers:
            self._scorers[lang] = PerplexityScorer(*self.files[lang])
        return self._scorers[lang]


def exists(models_url: str) -> bool:
    """Whether a complete models version is at ``models_url``: its manifest (the commit record,
    written last) exists and every file it lists is there."""
    return commit.finished(storage.join(models_url, MANIFEST), None) is not None


def begin(models_url: str) -> None:
    """Start (re)building a models version: its manifest goes first, so that a build that dies
    half-way is never taken for a finished one."""
    storage.remove(storage.join(models_url, MANIFEST))


def _copy(src: str, dst: str) -> None:
    with storage.open_read(src) as fin, storage.atomic_write(dst) as fout:
        for chunk in iter(lambda: fin.read(1 << 20), b""):
            fout.write(chunk)


def _write_manifest(out_url: str, manifest: dict, inputs: dict) -> dict:
    """Commit the version (:mod:`rpj_tasks.core.commit`): every model file and the cutoffs listed
    with sha256 and size, files of an earlier build that this one did not write removed, then
    ``MANIFEST.json`` (the record) written last."""
    files = [entry[k] for entry in manifest["languages"].values() for k in ("sp", "lm")] + [manifest["cutoffs"]]
    outputs = {}
    for rel in files:
        url = storage.join(out_url, rel)
        outputs[url] = storage.digest(url)
    for entry in manifest["languages"].values():
        entry["sha256"] = {k: outputs[storage.join(out_url, entry[k])]["sha256"] for k in ("sp", "lm")}
    manifest["cutoffs_sha256"] = outputs[storage.join(out_url, manifest["cutoffs"])]["sha256"]
    with commit.UnitCommit(
        storage.join(out_url, MANIFEST), inputs, [out_url], owned=lambda n: n != MANIFEST, recursive=True
    ) as unit:
        unit.add_outputs(outputs)
        record = unit.commit(manifest)
    log.info("models %s written to %s", manifest["version"], out_url)
    return record


def install_models(source_url: str, languages: list[str], out_url: str, *, cutoffs_url: str | None = None) -> dict:
    """Copy official cc_net models ``{source_url}/{lang}.sp.model`` and ``{lang}.arpa.bin``."""
    begin(out_url)
    entries = {}
    for lang in languages:
        for name in (f"{lang}.sp.model", f"{lang}.arpa.bin"):
            src = storage.join(source_url, name)
            if not storage.exists(src):
                raise ModelsError(f"official model file {storage.redact(src)} not found")
            _copy(src, storage.join(out_url, name))
        entries[lang] = {"sp": f"{lang}.sp.model", "lm": f"{lang}.arpa.bin"}
    _copy(cutoffs_url or CCNET_CUTOFFS.as_uri(), storage.join(out_url, "cutoff.csv"))
    manifest = {
        "version": out_url.rstrip("/").rsplit("/", 1)[-1],
        "kind": "installed",
        "source": storage.redact(source_url),
        "languages": entries,
        "cutoffs": "cutoff.csv",
    }
    inputs = {
        "source": storage.redact(source_url),
        "languages": list(languages),
        "cutoffs": cutoffs_url and storage.redact(cutoffs_url),
    }
    return _write_manifest(out_url, manifest, inputs)


def read_corpus(url: str, stats: Stats | None = None) -> Iterator[str]:
    """Documents of a reference corpus: one per line (``.txt``) or the ``text`` field (``.jsonl``), gzip allowed.

    Lines end as in text mode (``\\n``, ``\\r\\n`` or ``\\r``); blank lines are skipped.  A line that is
    not UTF-8, or (``.jsonl``) not a JSON object with a string ``text``, is counted as
    ``corpus.bad_line`` and logged with its byte offset, as is a gzip stream that ends early
    (``corpus.truncated``); the other lines are kept (:mod:`rpj_tasks.core.lines`).
    """
    is_jsonl = ".jsonl" in url
    bad = BadLines(stats if stats is not None else Stats(), "corpus", logger=log)
    for offset, line in iter_lines(url, bad, universal_newlines=True):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            bad.line(url, offset, INVALID_UTF8)
            continue
        if not text.strip():
            continue
        if is_jsonl:
            try:
                doc = json.loads(text)
            except ValueError:
                bad.line(url, offset, INVALID_JSON)
                continue
            value = doc.get("text") if isinstance(doc, dict) else None
            if not isinstance(value, str):
                bad.line(url, offset, "no_string_text")
                continue
            text = value
        yield text
    bad.log_unlogged(url)


def build_language(
    lang: str, corpus_url: str, out_url: str, *, vocab_size: int, order: int = LM_ORDER, calibration_url: str | None = None
) -> dict:
    """Train ``{lang}.sp.model`` and estimate ``{lang}.arpa`` from a reference corpus.

    Documents are normalised like cc_net (``ccnet_normalize``) before both trainings.  With a
    calibration corpus, the perplexities of its documents are returned for the cutoffs.
    """
    texts = list(normalized_lines(read_corpus(corpus_url)))
    if not texts:
        raise ModelsError(f"reference corpus {corpus_url} for {lang} is empty")
    sp_url, lm_url = storage.join(out_url, f"{lang}.sp.model"), storage.join(out_url, f"{lang}.arpa")
    train_sentencepiece(texts, sp_url, vocab_size)
    train_lm(texts, sp_url, lm_url, order)
    entry: dict = {
        "lang": lang,
        "sp": f"{lang}.sp.model",
        "lm": f"{lang}.arpa",
        "corpus": corpus_url,
        "documents": len(texts),
        "vocab_size": vocab_size,
        "order": order,
    }
    if calibration_url:
        scorer = PerplexityScorer(sp_url, lm_url)
        perplexities = [p for p in map(scorer.perplexity, read_corpus(calibration_url)) if p is not None]
        if not perplexities:
            raise ModelsError(f"calibration corpus {calibration_url} for {lang} is empty")
        entry["calibration"] = calibration_url
        entry["perplexities"] = perplexities
    log.info("built %s models from %d documents in %s", lang, len(texts), out_url)
    return entry


def finalize_built(out_url: str, entries: list[dict], *, cutoffs_url: str | None = None) -> dict:
    """Write ``cutoff.csv`` and ``MANIFEST.json`` for models made by :func:`build_language`.

    Cutoffs come from the calibration perplexities when every language has them, else from
    ``cutoffs_url`` (default: cc_net's file).
    """
    target = storage.join(out_url, "cutoff.csv")
    if all("perplexities" in e for e in entries):
        storage.write_bytes(target, compute_cutoffs({e["lang"]: e["perplexities"] for e in entries}).encode())
        cutoff_source = "calibration"
    else:
        cutoff_source = cutoffs_url or CCNET_CUTOFFS.as_uri()
        _copy(cutoff_source, target)
    languages = {
        e["lang"]: {k: v for k, v in e.items() if k not in ("lang", "perplexities")}
        | ({"calibration_documents": len(e["perplexities"])} if "perplexities" in e else {})
        for e in entries
    }
    manifest = {
        "version": out_url.rstrip("/").rsplit("/", 1)[-1],
        "kind": "built",
        "languages": languages,
        "cutoffs": "cutoff.csv",
        "cutoffs_source": cutoff_source,
    }
    inputs = {
        lang: {k: v for k, v in entry.items() if k in ("corpus", "calibration", "vocab_size", "order")}
        for lang, entry in languages.items()
    }
    return _write_manifest(out_url, manifest, {"built": inputs, "cutoffs": cutoff_source})
