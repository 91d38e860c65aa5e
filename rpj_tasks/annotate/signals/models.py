"""Model-based signals: fastText classifiers (37-39, §3.6) and DSIR importance weights (40-45, §3.7)."""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import platform
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import Any

import numpy as np

from rpj_tasks.annotate.hashseed import SEED42, feature_hash
from rpj_tasks.native import native

PRECISION = 8
CC_LABEL = "__label__cc"
DSIR_BUCKETS = 10_000
DSIR_SOURCE = "ccnet"
DSIR_TARGETS = ("books", "openwebtext", "wikipedia")


def classifier_text(raw: str) -> str:
    """§3.6 input: the lines of RAW (``str.splitlines``) joined by single spaces, stripped."""
    return " ".join(raw.splitlines()).strip()


def classifier_score(model: Any, text: str) -> float:
    """R(1 - p) if fastText's top label is ``__label__cc``, else R(p) (``predict``, k=1).

    A text with lone surrogates (not encodable as UTF-8) is scored with them replaced by ``?``.
    """
    try:
        labels, probs = model.predict(text)
    except (TypeError, UnicodeError):
        labels, probs = model.predict(text.encode("utf-8", "replace").decode("utf-8"))
    prob = probs[0]
    return round(float(1 - prob if labels[0] == CC_LABEL else prob), PRECISION)


def _scipy_special() -> Any:
    """``scipy.special``, imported only where it is needed: :func:`poisson_pmf` (the definition, for
    tests), the ``gammaln`` table's first computation and lengths beyond it.  Importing it costs
    ~0.2 s of CPU, which neither the stage's import nor, once the table is stored, its DSIR scoring
    pays (``tests/core/test_imports.py``, ``tests/annotate/test_signals_dsir.py``)."""
    from scipy import special

    return special


def poisson_pmf(k: int, lam: float) -> float:
    """``scipy.stats.poisson.pmf(k, lam)`` computed as scipy does, without its dispatch overhead."""
    special = _scipy_special()
    return float(np.clip(np.exp(special.xlogy(k, lam) - special.gammaln(k + 1) - lam), 0.0, 1.0))


def log_poisson_pmfs(k: int | np.ndarray, lambdas: Sequence[float]) -> np.ndarray:
    """``np.log(poisson_pmf(k, lam) + 1e-8)`` for several lambdas in one pass of each ufunc (``k`` an
    int, or a column of lengths: one row per length).

    The ufuncs are element-wise, so every element equals the scalar computation (checked over a
    large grid in ``tests/annotate/test_signals_dsir.py``).  scipy's two functions are replaced by
    their exact equivalents so that a process does not import ``scipy.special`` (~0.2 s of CPU):
    ``xlogy`` by :func:`_xlogy`, ``gammaln(k + 1)`` by :func:`_gammaln_plus_one` (scipy's own values,
    kept in the cache directory).
    """
    lams = np.asarray(lambdas, dtype=np.float64)
    ks = np.asarray(k, dtype=np.float64)
    pmf = np.clip(np.exp(_xlogy(ks, lams) - _gammaln_plus_one(ks) - lams), 0.0, 1.0)
    return np.log(pmf + 1e-8)


def _xlogy(ks: np.ndarray, lams: np.ndarray) -> np.ndarray:
    """``scipy.special.xlogy(ks, lams)``: 0 where ``k == 0`` and ``lam`` is not NaN, else ``k * log(lam)``
    with the C library's ``log`` (``math.log``: numpy's own vectorised ``log`` may differ in the last
    bit), multiplied in float64 as scipy's C code does."""
    logs = np.array([math.log(lam) if lam > 0 else (-math.inf if lam == 0 else math.nan) for lam in lams.tolist()])
    with np.errstate(invalid="ignore"):
        out = ks * logs
    return np.where((ks == 0) & ~np.isnan(lams), 0.0, out)


#: gammaln(k + 1) is looked up for lengths below this (2 MB of float64); longer documents use scipy.
_GAMMALN_TABLE = 1 << 18


def _gammaln_plus_one(ks: np.ndarray) -> np.ndarray:
    """``scipy.special.gammaln(ks + 1)`` for non-negative integer ``ks``: from :func:`_gammaln_table`
    when they are all below its size, else from scipy itself."""
    if ks.size and ks.min() >= 0 and ks.max() < _GAMMALN_TABLE and bool(np.all(ks == np.floor(ks))):
        return _gammaln_table()[ks.astype(np.intp)]
    return _scipy_special().gammaln(ks + 1)


def _gammaln_table_path() -> str | None:
    """Where :func:`_gammaln_table` keeps the table, or None when scipy's ``version.py`` is not found.
    The key holds everything the values may depend on: scipy's ``version.py`` (its version and
    commit, read without importing scipy), numpy's version, the table size, the machine
    architecture and operating system (scipy's ``gammaln`` is its own C code, but a build for
    another machine may round differently), so a cache directory shared between machines keeps
    one table per kind of machine."""
    from rpj_tasks.core.storage import cache_dir

    spec = importlib.util.find_spec("scipy")
    where = list(spec.submodule_search_locations or []) if spec is not None else []
    try:
        version = Path(where[0], "version.py").read_bytes() if where else b""
    except OSError:
        version = b""
    if not version:
        return None
    parts = f"\0{np.__version__}\0{_GAMMALN_TABLE}\0{platform.machine()}\0{sys.platform}\0{sys.byteorder}"
    key = hashlib.sha256(version + parts.encode()).hexdigest()[:24]
    return os.path.join(cache_dir(), "dsir", f"gammaln-{key}.bin")


@functools.lru_cache(maxsize=1)
def _gammaln_table() -> np.ndarray:
    """``scipy.special.gammaln(k + 1)`` for ``k < _GAMMALN_TABLE``, computed by scipy once per scipy
    build and machine (:func:`_gammaln_table_path`) and stored under the cache directory
    (``$RPJ_CACHE_DIR/dsir/``): the little-endian float64 values, then their SHA-256, written
    atomically.  A missing file, or one whose size or SHA-256 does not match (torn, damaged,
    planted), is recomputed and written again."""
    from rpj_tasks.core.storage import read_cache, write_cache

    path = _gammaln_table_path()
    if path is not None:
        stored = read_cache(path, _GAMMALN_TABLE * 8)
        if stored is not None:
            return np.frombuffer(stored, dtype="<f8").astype(np.float64)
    table = np.asarray(_scipy_special().gammaln(np.arange(_GAMMALN_TABLE, dtype=np.float64) + 1), dtype=np.float64)
    if path is not None:
        write_cache(path, table.astype("<f8").tobytes())
    return table


@dataclass(frozen=True)
class DsirTarget:
    """Log-ratio of one target distribution against the source, and both length lambdas."""

    log_diff: np.ndarray
    target_lambda: float
    source_lambda: float


_PMF_BLOCK = 256  # lengths per computed block of log Poisson pmfs (DsirScorer._log_pmfs)


class DsirScorer:
    """Importance weights of documents against each available target dataset.

    ``source`` and each of ``targets`` are ``(counts, lambda)``: the int64[10000] hashed feature
    counts and the 0-d mean RW token count.  Built in a process where ``hash_mode`` cannot be
    reproduced, the constructor raises :class:`~rpj_tasks.annotate.hashseed.HashSeedError`.
    """

    def __init__(
        self,
        source: tuple[np.ndarray, np.ndarray],
        targets: dict[str, tuple[np.ndarray, np.ndarray]],
        hash_mode: str,
    ) -> None:
        self.hash_mode = hash_mode
        self._hash: Callable[[Any], int] = feature_hash(hash_mode)
        # builtin hash in C (same str hash, CPython's tuple-hash formula for the bigrams)
        self._native = native is not None and hash_mode == SEED42
        # log(pmf(length, lambda) + 1e-8) per distinct lambda, by document length (a pure function)
        self._log_pmf: dict[int, dict[float, float]] = {}
        source_counts, source_lambda = source
        source_log = np.log(_distribution(source_counts) + 1e-8)
        self.targets = {
            name: DsirTarget(np.array(np.log(_distribution(counts) + 1e-8) - source_log), float(lam), float(source_lambda))
            for name, (counts, lam) in targets.items()
        }

    def features(self, tokens: Sequence[str]) -> np.ndarray:
        """Bucket counts of the RW unigrams and bigram tuples (``abs(hash(x)) % 10000``).

        ``abs`` is taken in uint64 so that a hash of -2**63 maps like Python's ``abs``.
        """
        if self._native:
            counts = np.zeros(DSIR_BUCKETS, dtype=np.int64)
            assert native is not None
            native.dsir_counts(tokens if type(tokens) is list else list(tokens), counts)
            return counts
        return self.features_python(tokens)

    def features_python(self, tokens: Sequence[str]) -> np.ndarray:
        """:meth:`features` computed with the mode's hash function object (the definition)."""
        h = self._hash
        pairs = zip(tokens, islice(tokens, 1, None))
        hashes = np.fromiter(chain(map(h, tokens), map(h, pairs)), np.int64, max(0, 2 * len(tokens) - 1))
        index = np.abs(hashes).view(np.uint64) % np.uint64(DSIR_BUCKETS)
        return np.bincount(index.astype(np.intp), minlength=DSIR_BUCKETS)

    def scores(self, tokens: Sequence[str], length: int) -> dict[str, tuple[float, float]]:
        """``{target: (importance, length-corrected importance)}`` for a document of ``length`` chars."""
        # float64 once: np.inner would cast the int64 counts for every target (the same values)
        features = self.features(tokens).astype(np.float64)
        log_pmf = self._log_pmfs(length)
        out = {}
        for name, target in self.targets.items():
            score = float(np.inner(features, target.log_diff))
            correction = log_pmf[target.target_lambda] - log_pmf[target.source_lambda]
            out[name] = (round(score, PRECISION), round(score + float(correction), PRECISION))
        return out

    def _log_pmfs(self, length: int) -> dict[float, float]:
        """``np.log(poisson_pmf(length, lam) + 1e-8)`` for every lambda, computed once per length.

        A miss computes the whole block of :data:`_PMF_BLOCK` lengths around ``length`` in one call of
        each ufunc (documents' lengths cluster, and a ufunc call costs ~10 µs whatever its size); the
        ufuncs are element-wise, so each value is the one a call for that length alone gives
        (``tests/annotate/test_signals_dsir.py``)."""
        cached = self._log_pmf.get(length)
        if cached is None:
            if len(self._log_pmf) >= 100_000:
                self._log_pmf.clear()
            lambdas = sorted({lam for t in self.targets.values() for lam in (t.target_lambda, t.source_lambda)})
            first = length - length % _PMF_BLOCK
            block = log_poisson_pmfs(np.arange(first, first + _PMF_BLOCK, dtype=np.float64)[:, None], lambdas).tolist()
            for k, row in enumerate(block, first):
                self._log_pmf[k] = dict(zip(lambdas, row))
            cached = self._log_pmf[length]
        return cached


def _distribution(counts: np.ndarray) -> np.ndarray:
    if counts.shape != (DSIR_BUCKETS,):
        raise ValueError(f"DSIR counts must have shape ({DSIR_BUCKETS},), not {counts.shape}")
    total = counts.sum()
    if total <= 0 or not math.isfinite(float(total)):
        raise ValueError("DSIR counts must have a positive finite sum")
    return counts / total
