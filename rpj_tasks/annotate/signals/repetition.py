"""Repetition signals 13-21 (``docs/spec/quality_signals.md`` §3.3) without materialising every n-gram.

The reference builds all n-grams of NW for n = 2..10.  Here the levels are chained: an n-gram at
position ``i`` can only occur twice if the (n-1)-grams at ``i`` and ``i + 1`` both do, so each level
only looks at the positions that survived the previous one, and the chain stops as soon as no
n-gram repeats (every higher n then scores 0.0).  The values are exact, not approximations:

* ``frac_chars_top_{n}gram``: the most frequent n-gram is always a repeated one; among equally
  frequent ones the earliest first occurrence wins (``Counter.most_common(1)``);
* ``frac_chars_dupe_{n}grams``: characters of the words covered by any occurrence of a repeated
  n-gram, over all word characters.

The chain runs in C (``rpj_tasks.native._speedups.repetition``) when the extension is built.  Without it,
short documents run the pure-Python chain and documents of :data:`NUMPY_MIN_WORDS` words or more the
same chain with numpy arrays (heavy repetition in a huge document would make the Python loops slow).
All three give the same values (``tests/test_speedups.py``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from itertools import accumulate, compress, islice
from typing import Any

import numpy as np

from rpj_tasks.native import native

TOP_NS = (2, 3, 4)
DUPE_NS = (10, 5, 6, 7, 8, 9)
MAX_N = 10
PRECISION = 8
NUMPY_MIN_WORDS = 10_000
_ONE = 1


def repetition_scores(
    words: list[str], *, use_numpy: bool | None = None, use_native: bool | None = None
) -> tuple[dict[int, float], dict[int, float]]:
    """``(top, dupe)``: ``top[n]`` for n in 2..4 and ``dupe[n]`` for n in 5..10, rounded to 8 places.

    ``use_native`` / ``use_numpy`` pick an implementation (default: C if built, else by size).
    """
    top = dict.fromkeys(TOP_NS, 0.0)
    dupe = dict.fromkeys(DUPE_NS, 0.0)
    if len(words) < 2:
        return top, dupe
    if use_native is None:
        use_native = native is not None and use_numpy is None
    if use_numpy is None:
        use_numpy = len(words) >= NUMPY_MIN_WORDS
    chain = _chain_native if use_native else _chain_numpy if use_numpy else _chain_python
    chain(words, top, dupe)
    return top, dupe


def _chain_native(words: list[str], top: dict[int, float], dupe: dict[int, float]) -> None:
    if native is None:
        raise RuntimeError("rpj_tasks.native._speedups is not built")
    total, top_chars, covered = native.repetition(words if type(words) is list else list(words), MAX_N)
    for n in top:
        top[n] = round(top_chars[n] / total, PRECISION)
    for n in dupe:
        dupe[n] = round(covered[n] / total, PRECISION)


def _keep_repeated(positions: Iterable[int], keys: list[Any]) -> tuple[list[int], list[Any], Counter[Any]]:
    """The positions and keys of keys that occur more than once, and the key counts (C-level loops)."""
    counts = Counter(keys)
    repeated = list(map(_ONE.__lt__, map(counts.__getitem__, keys)))
    return list(compress(positions, repeated)), list(compress(keys, repeated)), counts


def _covered_chars(positions: list[int], n: int, prefix: list[int]) -> int:
    """Characters of the words in the union of ``[i, i + n)`` over sorted ``positions``."""
    total, covered_to = 0, 0
    for i in positions:
        start, end = max(i, covered_to), i + n
        if end > start:
            total += prefix[end] - prefix[start]
            covered_to = end
    return total


def _chain_python(words: list[str], top: dict[int, float], dupe: dict[int, float]) -> None:
    n_words = len(words)
    total = sum(map(len, words))
    prefix: list[int] = []  # word-length prefix sums, built when a dupe level is reached
    grams: list[tuple[str, ...]] = list(zip(words, islice(words, 1, None)))
    positions, keys, counts = _keep_repeated(range(len(grams)), grams)
    n = 2
    while positions:
        if n in top:
            best, best_count = keys[0], 1
            for key in keys:
                if counts[key] > best_count:
                    best, best_count = key, counts[key]
            top[n] = round(sum(map(len, best)) * best_count / total, PRECISION)
        else:
            prefix = prefix or [0, *accumulate(map(len, words))]
            dupe[n] = round(_covered_chars(positions, n, prefix) / total, PRECISION)
        n += 1
        if n > MAX_N:
            return
        repeated = set(positions)
        candidates = [i for i in positions if i + 1 in repeated and i + n <= n_words]
        positions, keys, counts = _keep_repeated(candidates, [tuple(words[i : i + n]) for i in candidates])


def _chain_numpy(words: list[str], top: dict[int, float], dupe: dict[int, float]) -> None:
    n_words = len(words)
    index: dict[str, int] = {}
    ids = np.fromiter((index.setdefault(w, len(index)) for w in words), np.int64, n_words)
    prefix = np.concatenate(([0], np.cumsum(np.fromiter(map(len, words), np.int64, n_words))))
    total = int(prefix[-1])
    vocab = len(index)
    # classes[i]: id of the repeated (n-1)-gram starting at i, -1 if it does not repeat (padded by one)
    classes = np.full(n_words + 1, -1, np.int64)
    repeated_word = np.bincount(ids)[ids] > 1
    classes[:n_words][repeated_word] = ids[repeated_word]
    positions = np.flatnonzero(repeated_word)
    for n in range(2, MAX_N + 1):
        candidates = positions[positions + n <= n_words]
        candidates = candidates[classes[candidates + 1] >= 0]
        keys = classes[candidates] * vocab + ids[candidates + n - 1]
        _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
        is_repeated = counts[inverse] > 1
        positions = candidates[is_repeated]
        if positions.size == 0:
            return
        classes = np.full(n_words + 1, -1, np.int64)
        classes[positions] = inverse[is_repeated]
        if n in top:
            best_count = int(counts.max())
            start = int(candidates[first[counts == best_count]].min())
            top[n] = round(int(prefix[start + n] - prefix[start]) * best_count / total, PRECISION)
        else:
            cover = np.zeros(n_words + 1, np.int64)
            cover[positions] += 1
            cover[positions + n] -= 1
            covered = np.cumsum(cover[:n_words]) > 0
            chars = int(np.diff(prefix)[covered].sum())
            dupe[n] = round(chars / total, PRECISION)
