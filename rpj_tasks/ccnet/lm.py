"""CCNet perplexity (SentencePiece + KenLM) and head/middle/tail buckets (spec §9.6, §9.7).

``PerplexityScorer.perplexity`` reproduces cc_net's ``DocLM`` on the ``tokenized`` field: the
whole deduplicated ``raw_content`` is normalised (``ccnet_normalize``, which also deletes ``\\n``),
encoded into SentencePiece pieces joined by spaces, scored by KenLM with ``<s>``/``</s>``, and
``round(10 ** (-score / (n_pieces + 1)), 1)`` is the perplexity.

Models are trained here too: :func:`train_sentencepiece` (unigram model) and :func:`train_lm`
(a 5-gram ARPA estimated by :mod:`rpj_tasks.ccnet.arpa` from the SentencePiece-encoded lines).  Both take
lines that are already normalised (see :func:`normalized_lines`), as cc_net's models were trained.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
import re
import sys
import tempfile
import threading
from collections.abc import Iterable, Iterator

import kenlm
import numpy as np
import sentencepiece as spm

from rpj_tasks.ccnet import arpa
from rpj_tasks.ccnet.normalize import ccnet_normalize
from rpj_tasks.core import storage
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.lm")

#: Whitespace other than the space (``\n`` included): str.split would split on it too.
_OTHER_WHITESPACE = re.compile(r"[^\S ]")

PERCENTILE_HEAD = 30
PERCENTILE_TAIL = 60

_SP_MODELS: dict[str, spm.SentencePieceProcessor] = {}
_LMS: dict[str, kenlm.Model] = {}
_LOCK = threading.Lock()


def normalized_lines(texts: Iterable[str]) -> Iterator[str]:
    """``ccnet_normalize`` of each text, skipping texts that normalise to nothing."""
    for text in texts:
        line = ccnet_normalize(text)
        if line:
            yield line


def train_sentencepiece(
    lines: Iterable[str],
    model_url: str,
    vocab_size: int,
    *,
    character_coverage: float = 0.9995,
    num_threads: int = 1,
    seed: int = 0,
    max_sentence_length: int = 1 << 16,
) -> None:
    """Train a SentencePiece unigram model on ``lines`` and write it atomically to ``model_url``.

    ``hard_vocab_limit=False`` lets small corpora yield fewer pieces than ``vocab_size``.  The bytes
    are reproducible for the same lines, ``num_threads`` and ``seed``; a different thread count
    gives a (slightly) different model.
    """
    spm.set_random_generator_seed(seed)
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        model_type="unigram",
        vocab_size=vocab_size,
        character_coverage=character_coverage,
        hard_vocab_limit=False,
        num_threads=num_threads,
        max_sentence_length=max_sentence_length,
        minloglevel=1,
    )
    storage.write_bytes(model_url, buf.getvalue())
    log.info("SentencePiece model %s: %d bytes, vocab_size %d", model_url, buf.tell(), vocab_size)


def load_sentencepiece(url: str) -> spm.SentencePieceProcessor:
    """The SentencePiece model at ``url``, loaded once per process."""
    with _LOCK:
        sp = _SP_MODELS.get(url)
        if sp is None:
            sp = _SP_MODELS[url] = spm.SentencePieceProcessor(model_file=storage.local_copy(url))
        return sp


#: What the kenlm library prints on stderr while it loads a model, logged at DEBUG: the ARPA
#: banner, the file name and the progress bar.  Other lines it prints are logged at INFO.
KENLM_BANNER = ("Loading the LM will be faster if you build a binary file.", "Reading ", "----5---10", "****")


@contextlib.contextmanager
def _captured_fd2(lines: list[str]) -> Iterator[None]:
    """Redirect file descriptor 2 to a temp file for the block; its non-blank lines go to ``lines``.

    C++ libraries write to fd 2 directly, which an Airflow task logs at ERROR.  Process-wide:
    what other threads write to stderr meanwhile is captured too (and logged by the caller).
    """
    with tempfile.TemporaryFile() as tmp:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    sys.stderr.flush()
                os.dup2(saved, 2)
        finally:
            os.close(saved)
            tmp.seek(0)
            lines += [line for line in tmp.read().decode("utf-8", "replace").splitlines() if line.strip()]


def load_kenlm(url: str) -> kenlm.Model:
    """The KenLM model (ARPA or binary) at ``url``, loaded once per process.

    What kenlm prints on stderr while loading goes to the ``rpj.lm`` logger instead (banner and
    progress bar at DEBUG, other lines at INFO; all at WARNING if the load fails); a load error
    is raised as kenlm raises it.
    """
    with _LOCK:
        lm = _LMS.get(url)
        if lm is None:
            log.info("loading KenLM model %s", url)
            path = storage.local_copy(url)
            printed: list[str] = []
            try:
                with _captured_fd2(printed):
                    lm = kenlm.Model(path)
            except BaseException:
                _log_kenlm_output(url, printed, logging.WARNING)
                raise
            _log_kenlm_output(url, printed)
            _LMS[url] = lm
        return lm


def _log_kenlm_output(url: str, lines: list[str], level: int | None = None) -> None:
    for line in lines:
        line_level = level or (logging.DEBUG if line.startswith(KENLM_BANNER) else logging.INFO)
        log.log(line_level, "kenlm (%s): %s", url, line)


def tokenize(sp: spm.SentencePieceProcessor, line: str) -> str:
    """SentencePiece pieces of a normalised line, joined by single spaces."""
    return " ".join(sp.encode_as_pieces(line))


def train_lm(
    lines: Iterable[str], sp_model_url: str, arpa_url: str, order: int = 5, stats: Stats | None = None
) -> arpa.ArpaModel:
    """Estimate an ``order``-gram ARPA model on the SentencePiece pieces of normalised ``lines``."""
    sp = load_sentencepiece(sp_model_url)
    return arpa.train_arpa((tokenize(sp, line) for line in lines), arpa_url, order, stats)


class PerplexityScorer:
    """Document perplexity under one language's SentencePiece + KenLM pair."""

    def __init__(self, sp_model_url: str, lm_url: str) -> None:
        self.sp = load_sentencepiece(sp_model_url)
        self.lm = load_kenlm(lm_url)

    def perplexity(self, raw_content: str) -> float | None:
        """cc_net's rounded document perplexity; ``None`` when the text normalises to nothing
        (cc_net then sets no perplexity and the bucket is ``all``)."""
        normalized = ccnet_normalize(raw_content)
        try:
            tokenized = tokenize(self.sp, normalized)
        except RuntimeError:  # pybind11 rejects lone surrogates: score the text with "?" for each
            tokenized = tokenize(self.sp, normalized.encode("utf-8", "replace").decode("utf-8"))
        return self._score(tokenized)

    def perplexities(self, raw_contents: list[str]) -> list[float | None]:
        """:meth:`perplexity` of each text: every text normalised, then SentencePiece over the
        list in one call, then KenLM over the pieces (each model's tables stay in the cache for
        the whole list instead of alternating per document); the same figures as one by one.

        A list that SentencePiece's binding rejects (a lone surrogate in one of the texts) is
        encoded text by text, so each text gets exactly what :meth:`perplexity` gives it."""
        normalized = [ccnet_normalize(text) for text in raw_contents]
        try:
            pieces = self.sp.encode(normalized, out_type=str, num_threads=1)
        except (RuntimeError, TypeError, UnicodeError):
            return [self.perplexity(text) for text in raw_contents]
        return [self._score(" ".join(p)) for p in pieces]

    def _score(self, tokenized: str) -> float | None:
        """cc_net's perplexity of the pieces ``tokenized`` (joined by spaces), line by line.

        A text whose only whitespace is single spaces between words is one line of
        ``count(" ") + 1`` words: it is scored without splitting it again (the same sums)."""
        if not tokenized:
            return None
        if _OTHER_WHITESPACE.search(tokenized) is None and "  " not in tokenized and tokenized[0] != " " and tokenized[-1] != " ":
            return round(10.0 ** (-self.lm.score(tokenized) / (tokenized.count(" ") + 2)), 1)
        score, length = 0.0, 0
        for line in tokenized.split("\n"):
            score += self.lm.score(line)
            length += len(line.split()) + 1
        return round(10.0 ** (-score / length), 1)


def load_cutoffs(csv_url: str) -> dict[str, tuple[float, float]]:
    """``{lang: (p30, p60)}`` from a cc_net ``cutoff.csv`` (index column = percentile)."""
    with storage.open_read(csv_url, "rt") as f:
        rows = list(csv.reader(f))
    languages = rows[0][1:]
    by_percentile = {int(row[0]): row[1:] for row in rows[1:] if row}
    missing = {PERCENTILE_HEAD, PERCENTILE_TAIL} - by_percentile.keys()
    if missing:
        raise ValueError(f"{csv_url}: no row for percentile(s) {sorted(missing)}")
    head, tail = by_percentile[PERCENTILE_HEAD], by_percentile[PERCENTILE_TAIL]
    return {lang: (float(head[i]), float(tail[i])) for i, lang in enumerate(languages)}


def bucket(perplexity: float | None, cutoffs: tuple[float, float] | None) -> str:
    """``head`` below p30, ``middle`` below p60, else ``tail``; ``all`` without cutoffs or perplexity."""
    if cutoffs is None or perplexity is None or perplexity < 0:
        return "all"
    head, tail = cutoffs
    if perplexity < head:
        return "head"
    if perplexity < tail:
        return "middle"
    return "tail"


def compute_cutoffs(perplexities: dict[str, list[float]]) -> str:
    """A cutoff.csv in cc_net's layout: rows 0..99 hold each language's percentiles.

    Percentiles use numpy's default linear interpolation, rounded to 1 decimal like perplexities;
    languages are sorted, and a language without values is left out (it then buckets as ``all``).
    """
    languages = sorted(lang for lang, values in perplexities.items() if len(values))
    for lang in sorted(set(perplexities) - set(languages)):
        log.warning("no perplexities for %s: left out of the cutoffs", lang)
    table = {lang: np.percentile(np.asarray(perplexities[lang], dtype=np.float64), np.arange(100)) for lang in languages}
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["", *languages])
    for q in range(100):
        writer.writerow([q, *(repr(round(float(table[lang][q]), 1)) for lang in languages)])
    return out.getvalue()
