"""A small n-gram language-model estimator that writes ARPA files KenLM can load.

The ``kenlm`` wheel only queries models (no ``lmplz``), so the CCNet perplexity models are
estimated here.  The method follows ``lmplz -o N --discount_fallback``:

* **Interpolated modified Kneser-Ney** (Chen & Goodman 1998, eq. 26 discounts D1, D2, D3+ per
  order).  Every input line is one sentence ``<s> w1 .. wk </s>``; tokens are the line's
  ASCII-whitespace-separated words (the way KenLM's query module splits them).
* Counts: the highest order and n-grams starting with ``<s>`` keep raw counts; other lower-order
  n-grams use continuation counts (the number of distinct words seen to their left).
* ``p(w|c) = (a(cw) - D(a(cw))) / sum_x a(cx) + gamma(c) * p(w|c')`` with
  ``gamma(c) = sum_x D(a(cx)) / sum_x a(cx)``; unigrams interpolate with the uniform
  distribution over the vocabulary (``<unk>`` and ``</s>`` included, ``<s>`` excluded), so
  ``<unk>`` gets only interpolation mass.  ``<s>`` has probability 1 (log10 0) as in lmplz.
* The ARPA back-off of a context is ``gamma(c)``, so every conditional distribution sums to 1.
* **Discount fallback**: when the closed form fails (an order lacks n-grams with adjusted count 1,
  2 or 3, or a discount leaves ``[0, k]``), that order uses D = 0.5, 1.0, 1.5 like lmplz.
* When no sentence is long enough for the requested order, the order is lowered (logged).

Arithmetic is float64 (lmplz uses float32), so files are close to, not identical with, lmplz's.
Counting is vectorised with numpy: an n-gram is identified by ``id(prefix) * |V| + last word``,
which keeps memory at a few arrays of one int64 per token and order.  Output is deterministic:
words are numbered by first occurrence and n-grams written in id order.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import IO

import numpy as np

from rpj_tasks.core import storage
from rpj_tasks.core.stats import Stats

log = logging.getLogger("rpj.arpa")

UNK, BOS, EOS = b"<unk>", b"<s>", b"</s>"
_UNK_ID, _BOS_ID, _EOS_ID = 0, 1, 2
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)
_LOG10_ZERO = -99.0


@dataclass
class _Order:
    """The distinct n-grams of one order, in id order."""

    prefix: np.ndarray  # id of the (n-1)-gram w1..w(n-1) (word id for bigrams; unused for unigrams)
    last: np.ndarray  # word id of wn
    suffix: np.ndarray  # id of the (n-1)-gram w2..wn
    first: np.ndarray  # word id of w1
    raw: np.ndarray  # raw occurrence count


@dataclass
class ArpaModel:
    """An estimated model: vocabulary, n-gram tables and log10 probabilities / back-offs."""

    vocab: list[bytes]
    orders: list[_Order]
    discounts: list[tuple[float, float, float]]
    prob: list[np.ndarray]
    backoff: list[np.ndarray]

    @property
    def order(self) -> int:
        return len(self.orders)

    def counts(self) -> list[int]:
        return [len(o.last) for o in self.orders]


def _tokenize(lines: Iterable[str], stats: Stats) -> tuple[np.ndarray, list[bytes], int]:
    """Token ids of ``<s> words </s>`` per line, the vocabulary, and the longest sentence length."""
    vocab = [UNK, BOS, EOS]
    index = {w: i for i, w in enumerate(vocab)}
    ids: list[int] = []
    longest = 0
    for line in lines:
        words = line.encode("utf-8", "replace").split()
        ids.append(_BOS_ID)
        for word in words:
            wid = index.get(word)
            if wid is None:
                wid = index[word] = len(vocab)
                vocab.append(word)
            elif wid <= _EOS_ID:
                stats.inc("arpa.dropped.special_token")
                continue
            ids.append(wid)
        ids.append(_EOS_ID)
        longest = max(longest, len(words) + 2)
        stats.inc("arpa.sentences")
    stats.inc("arpa.tokens", len(ids))
    return np.asarray(ids, dtype=np.int64), vocab, longest


def _count(tokens: np.ndarray, vocab_size: int, order: int) -> list[_Order]:
    """Distinct n-grams of orders 1..order that lie inside one sentence, with raw counts."""
    words = np.arange(vocab_size, dtype=np.int64)
    orders = [_Order(words, words, words, words, np.bincount(tokens, minlength=vocab_size))]
    sentence = np.cumsum(tokens == _BOS_ID)
    prev_ids = tokens  # id, in the previous order, of the n-gram starting at each position
    for n in range(2, order + 1):
        starts = np.flatnonzero(sentence[: len(tokens) - n + 1] == sentence[n - 1 :])
        keys = prev_ids[starts] * vocab_size + tokens[starts + n - 1]
        uniq, inverse = np.unique(keys, return_inverse=True)
        suffix = np.empty(len(uniq), dtype=np.int64)
        suffix[inverse] = prev_ids[starts + 1]
        prefix = uniq // vocab_size
        orders.append(_Order(prefix, uniq % vocab_size, suffix, orders[-1].first[prefix], np.bincount(inverse)))
        prev_ids = np.full(len(tokens), -1, dtype=np.int64)
        prev_ids[starts] = inverse
    return orders


def _adjusted_counts(orders: list[_Order]) -> list[np.ndarray]:
    """Raw counts for the top order and for n-grams starting with ``<s>``, else continuation counts."""
    adjusted = [orders[-1].raw]
    for n in range(len(orders) - 2, -1, -1):
        continuation = np.bincount(orders[n + 1].suffix, minlength=len(orders[n].last))
        adjusted.insert(0, np.where(orders[n].first == _BOS_ID, orders[n].raw, continuation))
    adjusted[0][[_UNK_ID, _BOS_ID]] = 0
    return adjusted


def _discounts(adjusted: np.ndarray, n: int) -> tuple[float, float, float]:
    """Modified Kneser-Ney discounts D1, D2, D3+ of one order, or the fallback."""
    nk = [int(np.count_nonzero(adjusted == k)) for k in range(5)]
    if all(nk[1:4]):
        y = nk[1] / (nk[1] + 2 * nk[2])
        d = tuple(k - (k + 1) * y * nk[k + 1] / nk[k] for k in (1, 2, 3))
        if all(0.0 <= dk <= k for k, dk in zip((1, 2, 3), d)):
            return d  # type: ignore[return-value]
    log.warning(
        "%d-grams: Kneser-Ney discounts undefined (counts of counts %s), using fallback %s",
        n,
        nk[1:],
        FALLBACK_DISCOUNTS,
    )
    return FALLBACK_DISCOUNTS


def estimate(lines: Iterable[str], order: int = 5, stats: Stats | None = None) -> ArpaModel:
    """Estimate an interpolated modified Kneser-Ney model of ``order`` from ``lines``."""
    if order < 2:
        raise ValueError(f"order must be >= 2 (KenLM loads no unigram-only model), not {order}")
    stats = stats if stats is not None else Stats()
    tokens, vocab, longest = _tokenize(lines, stats)
    if longest == 0:
        raise ValueError("cannot estimate a language model from an empty corpus")
    if longest < order:
        log.warning("longest sentence has %d tokens with <s> and </s>: order %d lowered to %d", longest, order, longest)
        order = longest
    orders = _count(tokens, len(vocab), order)
    adjusted = _adjusted_counts(orders)
    discounts = [_discounts(a, n + 1) for n, a in enumerate(adjusted)]
    prob, backoff = _probabilities(orders, adjusted, discounts)
    return ArpaModel(vocab, orders, discounts, prob, backoff)


def _probabilities(
    orders: list[_Order], adjusted: list[np.ndarray], discounts: list[tuple[float, float, float]]
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Interpolated probabilities of every n-gram and back-off weights (gamma) of every context."""
    probs: list[np.ndarray] = []
    gammas: list[np.ndarray] = []
    for n, (grams, counts) in enumerate(zip(orders, adjusted)):
        table = np.array((0.0, *discounts[n]))
        d = table[np.minimum(counts, 3)]
        if n == 0:
            in_vocab = np.arange(len(counts)) != _BOS_ID
            total = counts[in_vocab].sum()
            gamma = d[in_vocab].sum() / total
            p = (counts - d) / total + gamma / int(in_vocab.sum())
            p[_BOS_ID] = 1.0
        else:
            denom = np.bincount(grams.prefix, weights=counts, minlength=len(probs[-1]))
            numer = np.bincount(grams.prefix, weights=d, minlength=len(probs[-1]))
            is_context = denom > 0
            gamma = np.ones(len(denom))
            gamma[is_context] = numer[is_context] / denom[is_context]
            gammas.append(gamma)
            p = (counts - d) / denom[grams.prefix] + gamma[grams.prefix] * probs[-1][grams.suffix]
        probs.append(p)
    gammas.append(np.ones(len(probs[-1])))
    return probs, gammas


def _format_log10(values: np.ndarray) -> list[bytes]:
    """``%.7g`` of log10 of each value (capped at 0), each distinct value formatted once.

    ``math.log10`` rather than numpy's SIMD variant keeps the digits identical across machines.
    """
    distinct, inverse = np.unique(values, return_inverse=True)
    text = [b"%.7g" % (min(0.0, math.log10(x)) if x > 0 else _LOG10_ZERO) for x in distinct.tolist()]
    return [text[i] for i in inverse.tolist()]


def write_arpa(model: ArpaModel, f: IO[bytes], chunk: int = 1 << 16) -> None:
    """Write ``model`` in ARPA format (log10 values with 7 significant digits)."""
    f.write(b"\\data\\\n")
    for n, count in enumerate(model.counts(), 1):
        f.write(b"ngram %d=%d\n" % (n, count))
    texts = model.vocab
    for n, grams in enumerate(model.orders):
        if n:
            texts = [texts[p] + b" " + model.vocab[w] for p, w in zip(grams.prefix.tolist(), grams.last.tolist())]
        f.write(b"\n\\%d-grams:\n" % (n + 1))
        columns = [_format_log10(model.prob[n]), texts]
        if n < model.order - 1:
            columns.append(_format_log10(model.backoff[n]))
        for i in range(0, len(texts), chunk):
            f.write(b"".join(b"\t".join(row) + b"\n" for row in zip(*(c[i : i + chunk] for c in columns))))
    f.write(b"\n\\end\\\n")


def train_arpa(lines: Iterable[str], url: str, order: int = 5, stats: Stats | None = None) -> ArpaModel:
    """Estimate a model from ``lines`` and write it atomically as an ARPA file at ``url``."""
    model = estimate(lines, order, stats)
    with storage.atomic_write(url) as f:
        write_arpa(model, f)
    log.info("ARPA %s: order %d, n-grams %s, discounts %s", url, model.order, model.counts(), model.discounts)
    return model
