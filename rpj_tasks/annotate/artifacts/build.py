"""Build the artifacts the RPv2 quality signals read (``docs/spec/quality_signals.md`` §3.6, §3.7, §4).

Layout under an artifacts root URL (what ``rpj_tasks.annotate.signals.SignalArtifacts.load`` reads)::

    classifiers/{lang}/{palm|wikipedia|wikiref}.model.bin   fastText supervised models
    dsir/{lang}/{dataset}.{lang}.10000.counts.npy          int64[10000] hashed RW uni+bigram counts
    dsir/{lang}/{dataset}.{lang}.lambda.npy                0-d float64: mean RW token count
    ut1/domain_to_category_id.json                         {domain: category-combination id}
    ut1/category_index.json                                {"id": [category, ...]} in id order
    ldnoobw/{lang}.txt                                     the upstream list, byte for byte (one
                                                           entry per line; readers strip() lines)
    stopwords/{lang}.json                                  the upstream JSON array, byte for byte
    MANIFEST.json                                          provenance of every file above

:func:`install_signal_artifacts` fills the same layout from published RPv2 artifacts (the
reference's ``artifacts_dir``: ``bad_words/``, ``bad_urls/``, ``classifiers/``, ``dsir/``), so that
annotation with them gives the published scores.

Every builder returns manifest entries keyed by the path relative to the root: source URLs,
sha256 of the written bytes, counts, seeds and, for DSIR, the ``hash_mode``:

* ``"cpython-seed42"`` reproduces the reference: CPython's builtin ``hash`` with
  ``PYTHONHASHSEED=42``.  Counting always runs in ``rpj_tasks.annotate.signals.seed42_pool`` workers
  (:mod:`rpj_tasks.core.workers` subprocesses), which check the §5 item 3 vectors before they count
  anything (defect D11); a worker that dies fails the build with ``WorkerDiedError``.
* ``"stable"`` is seed-independent (``rpj_tasks.annotate.hashseed.stable_hash``); its artifacts
  only match signals computed in the same mode.

The text preprocessing (RW tokens, classifier input) and the hash modes are those of
``rpj_tasks.annotate.signals``, imported here: one definition in the project.

Rebuilt artifacts differ from the published RPv2 ones (defect D16): the reference sampled
unseeded and took the first records of its input listing.  Here every draw is seeded.
"""

from __future__ import annotations

import functools
import hashlib
import io
import itertools
import json
import logging
import os
import platform
import posixpath
import random
import re
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rpj_tasks.annotate.hashseed import HASH_MODES, feature_hash, seed42_pool
from rpj_tasks.annotate.signals.models import CC_LABEL, DSIR_BUCKETS, classifier_text
from rpj_tasks.annotate.signals.text import raw_words
from rpj_tasks.core import commit, storage
from rpj_tasks.core.layout import LANGUAGES, file_name
from rpj_tasks.core.lines import INVALID_UTF8, BadLines, iter_lines, parse_object
from rpj_tasks.core.stats import Stats
from rpj_tasks.core.workers import WorkerPool

log = logging.getLogger(__name__)

LANGS = LANGUAGES
DEFAULT_STOPWORDS_URL = (
    "https://raw.githubusercontent.com/6/stopwords-json/fca10ee6724fdfae58b9e72e43ac7d4a6ae9cd45/dist/{lang}.json"
)
DEFAULT_LDNOOBW_URL = (
    "https://raw.githubusercontent.com/LDNOOBW/List-of-Dirty-Naughty-Obscene-and-Otherwise-Bad-Words/"
    "5faf2ba42d7b1c0977169ec3611df25a3c08eb13/{lang}"
)
UT1_CATEGORIES = (
    "adult",
    "agressif",
    "agressive",
    "arjel",
    "chat",
    "dating",
    "ddos",
    "filehosting",
    "gambling",
    "mixed_adult",
    "phishing",
    "porn",
    "violence",
)
DSIR_DATASETS = ("ccnet", "wikipedia", "openwebtext", "books")
# fastText train_supervised defaults (§3.6), written to the manifest; thread=1 for determinism.
FASTTEXT_PARAMS = {"lr": 0.1, "dim": 100, "epoch": 5, "wordNgrams": 1, "minCount": 1, "loss": "softmax"}
# Reference CCNet sample per snapshot: 10 % head, 20 % middle, 70 % tail (ccnet_downloader.py).
CCNET_BUCKET_TENTHS = (("head", 1), ("middle", 2), ("tail", 7))

_NAME_RE = re.compile(r"[A-Za-z0-9_-]+")


# ---------------------------------------------------------------- small helpers


MANIFEST_NAME = "MANIFEST.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write(url: str, data: bytes) -> dict[str, Any]:
    """Write ``data`` atomically; return its sha256 and size for the manifest."""
    storage.write_bytes(url, data)
    return {"sha256": _sha256(data), "bytes": len(data)}


def _check_name(kind: str, value: str) -> str:
    if not _NAME_RE.fullmatch(value):
        raise ValueError(f"invalid {kind} {value!r}: use letters, digits, '_' or '-'")
    return value


def _decode_line(line: bytes, field: str | None) -> tuple[str | None, str | None]:
    """``(text, None)``: the string ``field`` of a JSON line (:func:`json.loads` on the bytes), or the
    line itself (UTF-8); ``(None, reason)`` when it has none."""
    if field is None:
        try:
            return line.decode("utf-8"), None
        except UnicodeDecodeError:
            return None, INVALID_UTF8
    obj, reason = parse_object(line, encoding=None)
    if obj is None:
        return None, reason
    value = obj.get(field)
    return (value, None) if isinstance(value, str) else (None, "no_string_field")


def iter_texts(url: str, stats: Stats, prefix: str = "corpus", field: str = "text") -> Iterator[str]:
    """The documents of a corpus file; gzip if ``url`` ends in ``.gz``.

    ``*.json``/``*.jsonl`` files hold one JSON object per line and give its string ``field``;
    any other file holds one document per line (blank lines are skipped, ``{prefix}.blank_line``).
    Undecodable lines are counted as ``{prefix}.bad_line`` and the first ones logged with their
    (decompressed) byte offset; a truncated or corrupt gzip ends the file with ``{prefix}.truncated``
    (:mod:`rpj_tasks.core.lines`).  Good lines are always kept.
    """
    name = url.removesuffix(".gz")
    json_field = field if name.endswith((".json", ".jsonl")) else None
    bad = BadLines(stats, prefix, logger=log, by_reason=False)
    for offset, line in iter_lines(url, bad):
        value, reason = _decode_line(line, json_field)
        if value is None:
            bad.line(url, offset, reason or "invalid")
            continue
        if json_field is None and not value.strip():
            stats.inc(f"{prefix}.blank_line")
            continue
        stats.inc(f"{prefix}.docs")
        yield value
    bad.log_unlogged(url)


# ---------------------------------------------------------------- word lists (§4)


def fetch_word_lists(
    out_root: str,
    langs: Iterable[str],
    *,
    stopwords_url_template: str = DEFAULT_STOPWORDS_URL,
    ldnoobw_url_template: str = DEFAULT_LDNOOBW_URL,
) -> dict[str, dict[str, Any]]:
    """Copy each language's stop-word JSON array and LDNOOBW list to ``out_root``, verbatim.

    The templates take ``{lang}`` and may be any fsspec URL.  A stop-word file that is not a
    JSON array of strings, or an LDNOOBW file that is not UTF-8, raises ``ValueError``.
    """
    entries: dict[str, dict[str, Any]] = {}
    for lang in langs:
        _check_name("language", lang)
        url = stopwords_url_template.format(lang=lang)
        data = storage.read_bytes(url)
        try:
            words = json.loads(data)
        except ValueError as exc:
            raise ValueError(f"{url}: stop words are not JSON ({exc})") from exc
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError(f"{url}: stop words are not a JSON array of strings")
        rel = f"stopwords/{lang}.json"
        entries[rel] = {"sources": [url], "entries": len(set(words)), **_write(storage.join(out_root, rel), data)}

        url = ldnoobw_url_template.format(lang=lang)
        data = storage.read_bytes(url)
        try:
            lines = data.decode("utf-8").splitlines()
        except UnicodeDecodeError as exc:
            raise ValueError(f"{url}: LDNOOBW list is not UTF-8 ({exc})") from exc
        rel = f"ldnoobw/{lang}.txt"
        distinct = {line.strip() for line in lines} - {""}
        entries[rel] = {"sources": [url], "entries": len(distinct), **_write(storage.join(out_root, rel), data)}
    return entries


# ---------------------------------------------------------------- UT1 (§4)


def ut1_category_index(categories: Iterable[str] = UT1_CATEGORIES) -> dict[tuple[str, ...], int]:
    """Id of every non-empty combination of the sorted categories, in ``combinations`` order."""
    cats = sorted(categories)
    combos = itertools.chain.from_iterable(itertools.combinations(cats, r) for r in range(1, len(cats) + 1))
    return {combo: i for i, combo in enumerate(combos)}


def _clean_member_name(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.strip("/")


def _resolve_member(members: dict[str, tarfile.TarInfo], path: str) -> tarfile.TarInfo | None:
    """The regular-file member at ``path``, following symlinks and hard links in any component."""
    parts = path.split("/")
    i, hops = 1, 0
    while i <= len(parts):
        prefix = "/".join(parts[:i])
        member = members.get(prefix)
        if member is not None and (member.issym() or member.islnk()):
            hops += 1
            base = posixpath.dirname(prefix) if member.issym() else ""
            target = posixpath.normpath(posixpath.join(base, member.linkname))
            if hops > 32 or target.startswith(("/", "..")):
                return None
            parts, i = _clean_member_name(target).split("/") + parts[i:], 1
            continue
        i += 1
    member = members.get("/".join(parts))
    return member if member is not None and member.isfile() else None


def _read_ut1_domains(tar: tarfile.TarFile, member: tarfile.TarInfo, where: str, stats: Stats) -> set[str]:
    """The stripped, non-empty lines of one ``domains`` file; non-UTF-8 lines are counted and skipped."""
    handle = tar.extractfile(member)
    assert handle is not None  # _resolve_member only returns regular files
    domains: set[str] = set()
    offset = 0
    for raw in handle:
        start, offset = offset, offset + len(raw)
        try:
            domain = raw.decode("utf-8").strip()
        except UnicodeDecodeError:
            stats.inc("ut1.bad_line")
            log.warning("%s: byte %d: skipped non-UTF-8 domain line", where, start)
            continue
        if domain:
            domains.add(domain)
    return domains


def build_ut1(out_root: str, ut1_url: str, *, stats: Stats | None = None) -> dict[str, dict[str, Any]]:
    """Turn the UT1 blacklists tarball into ``ut1/domain_to_category_id.json`` and its inverse.

    Reads ``blacklists/<category>/domains`` for the 13 categories of §4 (symlinked category
    folders are followed, as an extracted tree would be).  A domain listed in several
    categories gets the id of its sorted category set.  A category missing from the tarball
    is counted (``ut1.missing_category``) and logged.
    """
    stats = stats if stats is not None else Stats()
    index = ut1_category_index()
    local = storage.local_copy(ut1_url)
    with open(local, "rb") as f:
        source_sha = hashlib.file_digest(f, "sha256").hexdigest()
    categories_of: dict[str, list[str]] = {}
    per_category: dict[str, int] = {}
    with tarfile.open(local, "r:*") as tar:
        members = {_clean_member_name(m.name): m for m in tar.getmembers()}
        for category in sorted(UT1_CATEGORIES):
            path = f"blacklists/{category}/domains"
            member = _resolve_member(members, path)
            if member is None:
                stats.inc("ut1.missing_category")
                log.warning("%s: no %s; category %r left empty", ut1_url, path, category)
                continue
            domains = _read_ut1_domains(tar, member, f"{ut1_url}!{path}", stats)
            per_category[category] = len(domains)
            for domain in domains:
                categories_of.setdefault(domain, []).append(category)
    mapping = {d: index[tuple(categories_of[d])] for d in sorted(categories_of)}
    inverse = {str(i): list(combo) for combo, i in index.items()}
    common = {"sources": [ut1_url], "source_sha256": source_sha}
    return {
        "ut1/domain_to_category_id.json": {
            **common,
            "domains": len(mapping),
            "category_domains": per_category,
            **_write(storage.join(out_root, "ut1/domain_to_category_id.json"), json.dumps(mapping).encode()),
        },
        "ut1/category_index.json": {
            **common,
            "categories": sorted(UT1_CATEGORIES),
            "ids": len(inverse),
            **_write(storage.join(out_root, "ut1/category_index.json"), json.dumps(inverse).encode()),
        },
    }


# ---------------------------------------------------------------- CCNet sample


def ccnet_bucket_quotas(n: int) -> dict[str, int]:
    """Documents per bucket for a snapshot sample of ``n``: floor of 10/20/70 % (the reference)."""
    return {bucket: n * tenths // 10 for bucket, tenths in CCNET_BUCKET_TENTHS}


def _bucket_files(documents_root: str, snapshot: str, lang: str, bucket: str) -> list[str]:
    fs, root = storage.fs_and_path(documents_root)
    name = file_name(lang, bucket)
    shards = sorted(p.rstrip("/").split("/")[-2] for p in fs.glob(f"{root.rstrip('/')}/{snapshot}/*/{name}"))
    return [storage.join(documents_root, snapshot, shard, name) for shard in shards]


def _reservoir(items: Iterable[str], k: int, rng: random.Random) -> list[str]:
    """A uniform sample of ``k`` items (all of them if fewer), Algorithm R."""
    sample: list[str] = []
    for i, item in enumerate(items):
        if i < k:
            sample.append(item)
        elif (j := rng.randrange(i + 1)) < k:
            sample[j] = item
    return sample


def sample_ccnet_documents(
    documents_root: str,
    snapshot: str,
    lang: str,
    n: int,
    *,
    seed: int,
    oversample: int = 4,
    stats: Stats | None = None,
) -> list[str]:
    """A seeded sample of ``n`` ``raw_content`` strings of one snapshot and language.

    ``documents_root`` is the ``documents/`` folder (children ``{snapshot}/{shard}/``).  Per
    bucket the quota is :func:`ccnet_bucket_quotas` (the reference's 10/20/70 %).  The
    bucket's files are read in a seeded random order until ``oversample`` times the quota has
    been seen, and the quota is drawn uniformly from what was read; the result is shuffled.
    (The reference took the first records of its listing and shuffled unseeded, D16.)
    A short bucket gives what it has, counted as ``ccnet_sample.short``.
    """
    stats = stats if stats is not None else Stats()
    rng = random.Random(f"ccnet-sample/{seed}/{snapshot}/{lang}")
    sample: list[str] = []
    for bucket, quota in ccnet_bucket_quotas(n).items():
        if quota == 0:
            continue
        files = _bucket_files(documents_root, snapshot, lang, bucket)
        rng.shuffle(files)
        seen = itertools.chain.from_iterable(iter_texts(url, stats, "ccnet_sample", "raw_content") for url in files)
        drawn = _reservoir(itertools.islice(seen, oversample * quota), quota, rng)
        if len(drawn) < quota:
            stats.inc("ccnet_sample.short", quota - len(drawn))
            log.warning("%s/%s: %s_%s has %d of %d documents", documents_root, snapshot, lang, bucket, len(drawn), quota)
        sample.extend(drawn)
    rng.shuffle(sample)
    return sample


# ---------------------------------------------------------------- classifiers (§3.6)


def _fasttext_worker_main(argv: list[str]) -> None:
    """Child side of :func:`train_classifier`: ``train_path model_path seed``."""
    import fasttext  # heavy; only the child needs it

    train_path, model_path, seed = argv
    model = fasttext.train_supervised(input=train_path, verbose=0, thread=1, seed=int(seed), **FASTTEXT_PARAMS)
    model.save_model(model_path)


def _train_fasttext(train_path: str, model_path: str, seed: int) -> None:
    """Run fastText in a child whose fresh heap memory is zero (``MALLOC_PERTURB_=255``, glibc).

    The ``fasttext-numpy2`` wheel stores matrices in uninitialised ``posix_memalign`` memory
    and its seeded uniform init only fills ``thread``/10 of the input matrix, so in a reused
    heap the other rows hold garbage: training then depends on earlier allocations and often
    stops with "Encountered NaN".  Zeroed memory restores upstream fastText's zero rows.
    """
    code = "import sys; from rpj_tasks.annotate.artifacts.build import _fasttext_worker_main as m; m(sys.argv[1:])"
    env = {**os.environ, "MALLOC_PERTURB_": "255"}
    proc = subprocess.run(
        [sys.executable, "-c", code, train_path, model_path, str(seed)], env=env, capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise RuntimeError(f"fastText training failed (exit {proc.returncode}): {proc.stderr.strip()[-2000:]}")


def train_classifier(out_url: str, positives: list[str], negatives: list[str], *, label: str, seed: int) -> dict[str, Any]:
    """Train a fastText model ``__label__{label}`` vs ``__label__cc`` and write it to ``out_url``.

    Training lines are ``__label__X <classifier_text>`` in a seeded shuffle; fastText runs with
    its defaults (§3.6), ``seed`` and ``thread=1``, so the model bytes are reproducible.
    """
    _check_name("label", label)
    lines = [f"__label__{label} {classifier_text(t)}\n" for t in positives]
    lines += [f"{CC_LABEL} {classifier_text(t)}\n" for t in negatives]
    random.Random(f"fasttext-train/{seed}/{label}").shuffle(lines)
    data = "".join(lines).encode("utf-8", "replace")
    with tempfile.TemporaryDirectory(prefix="rpj-fasttext-") as tmp:
        train_path, model_path = os.path.join(tmp, "train.txt"), os.path.join(tmp, "model.bin")
        with open(train_path, "wb") as f:
            f.write(data)
        _train_fasttext(train_path, model_path, seed)
        with open(model_path, "rb") as f:
            model_bytes = f.read()
    return {
        "label": f"__label__{label}",
        "positives": len(positives),
        "negatives": len(negatives),
        "seed": seed,
        "fasttext": {**FASTTEXT_PARAMS, "thread": 1},
        "train_data_sha256": _sha256(data),
        **_write(out_url, model_bytes),
    }


# ---------------------------------------------------------------- DSIR (§3.7)


def _chunks(texts: Iterable[str], size: int) -> Iterator[list[str]]:
    iterator = iter(texts)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _count_chunk(texts: list[str], hash_mode: str) -> tuple[np.ndarray, int, int]:
    """Worker call: summed DSIR features of ``texts``, their number and their RW token count.

    ``feature_hash`` refuses (``HashSeedError``) unless this interpreter reproduces the
    ``hash_mode`` (the §5 item 3 vectors for ``cpython-seed42``), before anything is counted.
    """
    hash_fn = feature_hash(hash_mode)
    index: list[int] = []
    tokens = 0
    for text in texts:
        words = raw_words(text)
        tokens += len(words)
        index += [abs(hash_fn(w)) % DSIR_BUCKETS for w in words]
        index += [abs(hash_fn(pair)) % DSIR_BUCKETS for pair in zip(words, words[1:])]
    counts = np.bincount(np.asarray(index, dtype=np.int64), minlength=DSIR_BUCKETS)
    return counts, len(texts), tokens


@dataclass
class DsirCounts:
    """Summed DSIR feature counts (int64[10000]) of ``docs`` documents with ``tokens`` RW tokens."""

    counts: np.ndarray
    docs: int
    tokens: int


def count_dsir(
    texts: Iterable[str], hash_mode: str, *, pool: WorkerPool | None = None, workers: int = 1, chunk_docs: int = 1000
) -> DsirCounts:
    """Summed DSIR features of ``texts`` under ``hash_mode`` (one of :data:`HASH_MODES`).

    Counted in ``pool`` or else in a new ``rpj_tasks.annotate.signals.seed42_pool(workers)``, whose
    interpreters start with ``PYTHONHASHSEED=42`` whatever this process's seed; chunks of
    ``chunk_docs`` texts are counted in parallel and summed in order.  Each chunk checks the hash
    before counting, so a pool without the seed is refused.
    """
    if hash_mode not in HASH_MODES:
        raise ValueError(f"unknown hash_mode {hash_mode!r}; expected one of {HASH_MODES}")
    if pool is None:
        with seed42_pool(workers) as own_pool:
            return count_dsir(texts, hash_mode, pool=own_pool, chunk_docs=chunk_docs)
    total = DsirCounts(np.zeros(DSIR_BUCKETS, dtype=np.int64), 0, 0)
    work = functools.partial(_count_chunk, hash_mode=hash_mode)
    for counts, docs, tokens in pool.imap(work, _chunks(texts, chunk_docs)):
        total.counts += counts
        total.docs += docs
        total.tokens += tokens
    return total


def _npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def build_dsir_counts(
    out_root: str,
    lang: str,
    dataset: str,
    texts: Iterable[str],
    *,
    hash_mode: str,
    max_docs: int = 500_000,
    sources: list[str] | None = None,
    pool: WorkerPool | None = None,
) -> dict[str, dict[str, Any]]:
    """Write the counts and lambda of the first ``max_docs`` texts of ``dataset`` (§3.7).

    ``pool``: a ``rpj_tasks.annotate.signals.seed42_pool`` to count in (default: a new one-worker pool).
    """
    _check_name("language", lang)
    if dataset not in DSIR_DATASETS:
        raise ValueError(f"unknown DSIR dataset {dataset!r}; expected one of {DSIR_DATASETS}")
    counter = count_dsir(itertools.islice(texts, max_docs), hash_mode, pool=pool)
    if counter.docs == 0:
        raise ValueError(f"DSIR {dataset}.{lang}: no documents to count")
    lam = np.float64(counter.tokens / counter.docs)
    common = {
        "sources": list(sources or []),
        "hash_mode": hash_mode,
        "docs": counter.docs,
        "tokens": counter.tokens,
        "max_docs": max_docs,
    }
    rel_counts = f"dsir/{lang}/{dataset}.{lang}.{DSIR_BUCKETS}.counts.npy"
    rel_lambda = f"dsir/{lang}/{dataset}.{lang}.lambda.npy"
    return {
        rel_counts: {**common, "buckets": DSIR_BUCKETS, **_write(storage.join(out_root, rel_counts), _npy_bytes(counter.counts))},
        rel_lambda: {**common, "lambda": float(lam), **_write(storage.join(out_root, rel_lambda), _npy_bytes(np.asarray(lam)))},
    }


# ---------------------------------------------------------------- orchestration


def _ccnet_sample(config: dict[str, Any], lang: str, stats: Stats) -> list[str]:
    """The reference's snapshot-balanced CCNet sample: ``n // len(snapshots)`` per snapshot, where
    ``n`` is the larger of the DSIR and classifier sample sizes."""
    n, seed = max(config["dsir_num_samples"], config["classifier_num_samples"]), config["seed"]
    ccnet = config["ccnet"]
    snapshots = list(ccnet["snapshots"])
    per_snapshot = max(1, n // len(snapshots))
    texts: list[str] = []
    for snapshot in snapshots:
        texts += sample_ccnet_documents(ccnet["documents_root"], snapshot, lang, per_snapshot, seed=seed, stats=stats)
    random.Random(f"ccnet-sample/{seed}/{lang}").shuffle(texts)
    return texts


def _build_dsir(
    config: dict[str, Any], out_root: str, lang: str, cc_texts: list[str], pool: WorkerPool, stats: Stats
) -> dict[str, dict[str, Any]]:
    """DSIR counts of the CCNet sample (the source) and of every configured target corpus."""
    ccnet, corpora = config["ccnet"], config.get("corpora", {}).get(lang, {})
    common = {"hash_mode": config["hash_mode"], "max_docs": config["dsir_num_samples"], "pool": pool}
    cc_sources = [storage.join(ccnet["documents_root"], s) for s in ccnet["snapshots"]]
    entries = build_dsir_counts(out_root, lang, "ccnet", cc_texts, sources=cc_sources, **common)
    for dataset in DSIR_DATASETS[1:]:
        if dataset in corpora:
            texts = iter_texts(corpora[dataset], stats, f"corpus.{lang}.{dataset}")
            entries |= build_dsir_counts(out_root, lang, dataset, texts, sources=[corpora[dataset]], **common)
    return entries


def _build_classifier(
    config: dict[str, Any], out_root: str, lang: str, cc_texts: list[str], stats: Stats
) -> dict[str, dict[str, Any]]:
    """en ``palm`` (Wikipedia, OpenWebText, books) or ``wikipedia``, against as many CCNet documents.

    As the reference: ``classifier_num_samples // len(targets)`` first documents of each target.
    """
    corpora: dict[str, str] = config.get("corpora", {}).get(lang, {})
    label, wanted = ("palm", ("wikipedia", "openwebtext", "books")) if lang == "en" else ("wikipedia", ("wikipedia",))
    targets = [t for t in wanted if t in corpora]
    if not targets:
        log.warning("%s: no target corpus configured; classifier %r not built", lang, label)
        stats.inc("classifier.skipped")
        return {}
    positives: list[str] = []
    for target in targets:
        texts = iter_texts(corpora[target], stats, f"corpus.{lang}.{target}")
        positives += itertools.islice(texts, config["classifier_num_samples"] // len(targets))
    rel = f"classifiers/{lang}/{label}.model.bin"
    entry = train_classifier(storage.join(out_root, rel), positives, cc_texts[: len(positives)], label=label, seed=config["seed"])
    ccnet = config["ccnet"]
    sources = [corpora[t] for t in targets] + [storage.join(ccnet["documents_root"], s) for s in ccnet["snapshots"]]
    return {rel: {"sources": sources, **entry}}


#: The published RPv2 artifacts directory (the reference's ``artifacts_dir``) -> this layout.
REFERENCE_LAYOUT = {
    "ldnoobw": "bad_words/{lang}.txt",
    "ut1": "bad_urls/domain_to_category_id.json",
    "classifier": "classifiers/{lang}/{name}.model.bin",
    "dsir": "dsir/{lang}/{dataset}.{lang}.{kind}",
}


def install_signal_artifacts(
    source_url: str,
    out_root: str,
    langs: Iterable[str] = LANGS,
    *,
    stopwords_url_template: str = DEFAULT_STOPWORDS_URL,
    force: bool = False,
) -> dict[str, Any]:
    """Install published (reference-layout) quality-signal artifacts under ``out_root``.

    ``source_url`` is a directory laid out as the reference's ``artifacts_dir`` (see
    :data:`REFERENCE_LAYOUT`): ``bad_words/{lang}.txt`` (required for every language),
    ``bad_urls/domain_to_category_id.json``, ``classifiers/{lang}/{palm|wikipedia|wikiref}.model.bin``
    and ``dsir/{lang}/{dataset}.{lang}.10000.counts.npy`` / ``.lambda.npy``; the optional parts that
    are absent are counted and logged (their signals are null, as in the reference).  The reference
    keeps its stop words in code; here they are fetched from ``stopwords_url_template`` (the same
    upstream lists).  The files are copied byte for byte and ``MANIFEST.json`` records
    ``hash_mode = "cpython-seed42"``, the mode the published DSIR counts were made in.

    A committed unit (:func:`_publish`): an install with the same source, languages and stop-word
    lists that finished is kept unless ``force``.
    """
    langs = [_check_name("language", lang) for lang in langs]
    inputs = {"installed_from": storage.redact(source_url), "langs": langs, "stopwords_url_template": stopwords_url_template}
    return _publish(out_root, inputs, force, lambda: _install(source_url, out_root, langs, stopwords_url_template))


def _install(source_url: str, out_root: str, langs: list[str], stopwords_url_template: str) -> dict[str, Any]:
    stats = Stats()
    artifacts = fetch_word_lists(
        out_root,
        langs,
        stopwords_url_template=stopwords_url_template,
        ldnoobw_url_template=storage.join(source_url, REFERENCE_LAYOUT["ldnoobw"]),
    )

    def copy(rel_source: str, rel_out: str, validate: Any = None) -> None:
        url = storage.join(source_url, rel_source)
        if not storage.exists(url):
            stats.inc("missing")
            log.warning("install: %s not found; the signals that need it will be null", url)
            return
        data = storage.read_bytes(url)
        if validate is not None:
            validate(url, data)
        artifacts[rel_out] = {"sources": [url], **_write(storage.join(out_root, rel_out), data)}
        stats.inc("copied")

    copy(REFERENCE_LAYOUT["ut1"], "ut1/domain_to_category_id.json", _check_ut1_map)
    for lang in langs:
        for name in ("palm", "wikipedia", "wikiref"):
            copy(REFERENCE_LAYOUT["classifier"].format(lang=lang, name=name), f"classifiers/{lang}/{name}.model.bin")
        for dataset in DSIR_DATASETS:
            for kind in (f"{DSIR_BUCKETS}.counts.npy", "lambda.npy"):
                rel = REFERENCE_LAYOUT["dsir"].format(lang=lang, dataset=dataset, kind=kind)
                copy(rel, rel, _check_npy)
    manifest = {
        "format_version": 1,
        "hash_mode": "cpython-seed42",
        "dsir_buckets": DSIR_BUCKETS,
        "installed_from": storage.redact(source_url),
        "langs": langs,
        "artifacts": dict(sorted(artifacts.items())),
        "counts": dict(sorted(stats.counts.items())),
    }
    log.info("signal artifacts installed from %s to %s: %s", source_url, out_root, stats.summary())
    return manifest


def _check_ut1_map(url: str, data: bytes) -> None:
    try:
        mapping = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{url}: not JSON ({exc})") from exc
    if not isinstance(mapping, dict) or not all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values()):
        raise ValueError(f"{url}: not a JSON object of domain -> integer category id")


def _check_npy(url: str, data: bytes) -> None:
    try:
        array = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as exc:
        raise ValueError(f"{url}: not a .npy array ({exc})") from exc
    expected = (DSIR_BUCKETS,) if url.endswith(".counts.npy") else ()
    if array.shape != expected:
        raise ValueError(f"{url}: shape {array.shape}, expected {expected}")


def build_signal_artifacts(config: dict[str, Any], out_root: str, *, force: bool = False) -> dict[str, Any]:
    """Build every artifact of the module docstring's layout and write ``MANIFEST.json``.

    ``config`` keys (URLs are any fsspec URL):

    - ``langs`` (default all five), ``seed`` (42), ``hash_mode`` (``"cpython-seed42"``);
    - ``stopwords_url_template`` / ``ldnoobw_url_template`` (default: upstream at the pinned commits);
    - ``ut1_url``: the UT1 ``blacklists.tar.gz`` (skipped with a warning if absent);
    - ``ccnet``: ``{"documents_root": <documents/ URL>, "snapshots": [...]}`` (required);
    - ``corpora``: ``{lang: {"wikipedia"|"openwebtext"|"books": <corpus URL>}}``, read by
      :func:`iter_texts` (``.jsonl`` with a ``text`` field, or one document per line; ``.gz`` allowed);
    - ``wikiref_model_url``: the RedPajama-1T fastText model, copied to ``classifiers/en/wikiref.model.bin``;
    - ``dsir_num_samples`` (500 000) and ``classifier_num_samples`` (75 000);
    - ``workers``: DSIR counting processes (1).

    Returns the manifest (also written, last, to ``MANIFEST.json``).  A committed unit
    (:func:`_publish`): a build of the same config that finished is kept unless ``force``.
    """
    config = {
        "langs": list(LANGS),
        "seed": 42,
        "hash_mode": "cpython-seed42",
        "dsir_num_samples": 500_000,
        "classifier_num_samples": 75_000,
        "workers": 1,
        **config,
    }
    if config["hash_mode"] not in HASH_MODES:
        raise ValueError(f"unknown hash_mode {config['hash_mode']!r}; expected one of {HASH_MODES}")
    inputs = {"build": {k: v for k, v in config.items() if k != "workers"}}
    return _publish(out_root, inputs, force, lambda: _build(config, out_root))


def _build(config: dict[str, Any], out_root: str) -> dict[str, Any]:
    stats = Stats()
    artifacts = fetch_word_lists(
        out_root,
        config["langs"],
        stopwords_url_template=config.get("stopwords_url_template", DEFAULT_STOPWORDS_URL),
        ldnoobw_url_template=config.get("ldnoobw_url_template", DEFAULT_LDNOOBW_URL),
    )
    if config.get("ut1_url"):
        artifacts |= build_ut1(out_root, config["ut1_url"], stats=stats)
    else:
        log.warning("no ut1_url configured; UT1 artifacts not built")
    with seed42_pool(config["workers"]) as pool:
        for lang in config["langs"]:
            cc_texts = _ccnet_sample(config, lang, stats)
            artifacts |= _build_dsir(config, out_root, lang, cc_texts, pool, stats)
            artifacts |= _build_classifier(config, out_root, lang, cc_texts, stats)
    if "en" in config["langs"] and config.get("wikiref_model_url"):
        url = config["wikiref_model_url"]
        rel = "classifiers/en/wikiref.model.bin"
        artifacts[rel] = {"sources": [url], **_write(storage.join(out_root, rel), storage.read_bytes(url))}
    manifest = {
        "format_version": 1,
        "hash_mode": config["hash_mode"],
        "dsir_buckets": DSIR_BUCKETS,
        "python": platform.python_version(),
        "seed": config["seed"],
        "langs": list(config["langs"]),
        "artifacts": dict(sorted(artifacts.items())),
        "counts": dict(sorted(stats.counts.items())),
    }
    log.info("signal artifacts written to %s: %s", out_root, stats.summary())
    return manifest


def _publish(out_root: str, inputs: dict[str, Any], force: bool, make: Any) -> dict[str, Any]:
    """An artifacts version under the commit protocol: ``MANIFEST.json`` is its record.

    Finished for these ``inputs`` (and every listed file present): kept, unless ``force``.
    Otherwise the manifest is removed first, ``make()`` writes the files and returns the manifest,
    files of an earlier build that this one did not write are removed (the loader only reads
    listed files anyway), and the manifest is written last.
    """
    manifest_url = storage.join(out_root, MANIFEST_NAME)
    if not force and (manifest := commit.finished(manifest_url, inputs)) is not None:
        log.info("signal artifacts at %s are built for these inputs; kept (force to rebuild)", out_root)
        return {**manifest, "skipped": True}
    with commit.UnitCommit(manifest_url, inputs, [out_root], owned=lambda name: name != MANIFEST_NAME, recursive=True) as unit:
        manifest = make()
        unit.add_outputs(
            {
                storage.join(out_root, rel): {"sha256": e["sha256"], "bytes": e["bytes"]}
                for rel, e in manifest["artifacts"].items()
            }
        )
        return unit.commit(manifest)
