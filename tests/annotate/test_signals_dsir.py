"""DSIR importance signals (docs/spec/quality_signals.md §3.7, §5 item 3) and the hash-seed guard (D11)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.special
import scipy.stats

from rpj_tasks.annotate.hashseed import SEED42_VECTORS, stable_hash
from rpj_tasks.annotate.signals import (
    HashSeedError,
    SignalArtifacts,
    call_with_seed42,
    compute_signals,
    dsir_hash_selfcheck,
    raw_words,
)
from rpj_tasks.annotate.signals.models import DsirScorer, log_poisson_pmfs, poisson_pmf

TEXTS = [
    "The cat sat on the mat. The cat!",
    "Caf\u00e9 \u00fcber alles -- 3\u00bd ### ... \u2026",
    "x" * 600,
    "one two three " * 200,
]
TARGETS = ("books", "openwebtext", "wikipedia")


def write_dsir(root: Path, lang: str, lambdas: dict[str, float], seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    folder = root / "dsir" / lang
    folder.mkdir(parents=True)
    (root / "stopwords").mkdir()
    (root / "stopwords" / f"{lang}.json").write_text('["the"]')
    for dataset, lam in lambdas.items():
        counts = rng.integers(0, 50, 10000).astype(np.int64)
        np.save(folder / f"{dataset}.{lang}.10000.counts.npy", counts)
        np.save(folder / f"{dataset}.{lang}.lambda.npy", np.asarray(lam))


def literal_scores(root: Path, lang: str, text: str, hash_fn) -> dict[str, float | None]:
    """§3.7 word for word: dense feature vector, np.inner, scipy's Poisson pmf."""
    folder = root / "dsir" / lang
    load = lambda name: np.load(folder / name)  # noqa: E731
    src_counts, src_lam = load(f"ccnet.{lang}.10000.counts.npy"), load(f"ccnet.{lang}.lambda.npy")
    words = raw_words(text)
    features = np.zeros(10000, dtype=np.int64)
    for item in [*words, *zip(words, words[1:])]:
        features[abs(hash_fn(item)) % 10000] += 1
    out: dict[str, float | None] = {}
    for target in TARGETS:
        path = folder / f"{target}.{lang}.10000.counts.npy"
        if not path.exists():
            out[f"rps_doc_{target}_importance"] = out[f"rps_doc_{target}_importance_length_correction"] = None
            continue
        counts, lam = np.load(path), load(f"{target}.{lang}.lambda.npy")
        logdiff = np.log(counts / counts.sum() + 1e-8) - np.log(src_counts / src_counts.sum() + 1e-8)
        score = float(np.inner(features, logdiff))
        k = len(text)
        correction = np.log(scipy.stats.poisson.pmf(k, lam) + 1e-8) - np.log(scipy.stats.poisson.pmf(k, src_lam) + 1e-8)
        out[f"rps_doc_{target}_importance"] = round(score, 8)
        out[f"rps_doc_{target}_importance_length_correction"] = round(score + float(correction), 8)
    return out


def ours(arts: SignalArtifacts, text: str) -> dict[str, float | None]:
    signals = compute_signals({"raw_content": text}, arts)
    return {k: v[0][2] for k, v in signals.items() if "importance" in k}


def seed42_case(root: str) -> list[tuple[dict, dict]]:
    """Runs in a PYTHONHASHSEED=42 worker: our scores and the literal ones for every text."""
    arts = SignalArtifacts.load(Path(root).as_uri(), "en")
    return [(ours(arts, t), literal_scores(Path(root), "en", t, hash)) for t in TEXTS]


# ---------------------------------------------------------------- the hash guard


def test_selfcheck_passes_in_a_seed42_worker() -> None:
    before = os.environ.get("PYTHONHASHSEED")
    assert call_with_seed42(dsir_hash_selfcheck) is True
    assert os.environ.get("PYTHONHASHSEED") == before  # exported only while the pool starts


def test_selfcheck_fails_and_scorer_refuses_under_another_seed() -> None:
    code = (
        "import numpy as np\n"
        "from rpj_tasks.annotate.signals import DsirScorer, dsir_hash_selfcheck\n"
        "print(dsir_hash_selfcheck())\n"
        "pair = (np.ones(10000, np.int64), np.asarray(5.0))\n"
        "DsirScorer(pair, {'wikipedia': pair}, 'cpython-seed42')\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": "0"}, capture_output=True, text=True, timeout=120
    )
    assert proc.stdout.strip() == "False"
    assert proc.returncode != 0
    assert "HashSeedError" in proc.stderr and "PYTHONHASHSEED=42" in proc.stderr


def test_scorer_refuses_in_this_process_unless_seeded() -> None:
    pair = (np.ones(10000, np.int64), np.asarray(5.0))
    if dsir_hash_selfcheck():
        pytest.skip("this test process itself runs with PYTHONHASHSEED=42")
    with pytest.raises(HashSeedError, match="PYTHONHASHSEED=42"):
        DsirScorer(pair, {"wikipedia": pair}, "cpython-seed42")
    with pytest.raises(ValueError, match="hash_mode"):
        DsirScorer(pair, {"wikipedia": pair}, "siphash")
    with pytest.raises(ValueError, match="shape"):
        DsirScorer((np.ones(10, np.int64), np.asarray(5.0)), {"wikipedia": pair}, "stable")


def test_self_check_vectors_are_the_spec_values() -> None:
    # docs/spec/quality_signals.md §5 item 3, the table copied verbatim: (object, hash(x), abs(hash(x)) % 10000)
    spec = [
        ("the", 6599659648229272820, 2820),
        ("The", 28150671178049062, 9062),
        ("caf\u00e9", 6223193746424771551, 1551),
        (("the", "cat"), -1944465398313317419, 7419),
        ((".", "The"), 3900638045852841616, 1616),
    ]
    assert list(SEED42_VECTORS) == [(obj, full) for obj, full, _ in spec]
    assert all(abs(full) % 10000 == bucket for _, full, bucket in spec)  # the table is self-consistent


# ---------------------------------------------------------------- scores


def test_seed42_scores_equal_literal_formula(tmp_path: Path) -> None:
    write_dsir(tmp_path, "en", {"ccnet": 800.0, "wikipedia": 500.0, "books": 610.0})
    for got, want in call_with_seed42(seed42_case, str(tmp_path)):
        assert got == want
        assert got["rps_doc_openwebtext_importance"] is None
        assert isinstance(got["rps_doc_wikipedia_importance"], float)


def test_stable_mode_scores_in_any_process(tmp_path: Path) -> None:
    write_dsir(tmp_path, "de", {"ccnet": 40.0, "wikipedia": 30.0}, seed=1)
    (tmp_path / "MANIFEST.json").write_text('{"hash_mode": "stable"}')
    arts = SignalArtifacts.load(tmp_path.as_uri(), "de", hash_mode="stable")
    for text in TEXTS:
        assert ours(arts, text) == literal_scores(tmp_path, "de", text, stable_hash)
    assert all(v is None for v in ours(arts, "").values())


# stable_hash values, computed once (signed little-endian 64-bit BLAKE2b, digest_size=8, of the UTF-8
# text, surrogatepass; a tuple is its items joined by U+0000) and pinned: built "stable" DSIR
# artifacts stay comparable only while these do not change.
STABLE_PINNED = [
    ("the", 3331141520948189790),  # same literal as STABLE_THE in test_signal_artifacts.py
    (("the", "cat"), 2135851104040289225),  # blake2b(b"the\x00cat")
    (("a", "b"), -6648911726629502465),  # blake2b(b"a\x00b")
    ("a\x00b", -6648911726629502465),  # the same bytes as the tuple above
    ("\ud800", 7497787021708494914),  # lone surrogate: blake2b(b"\xed\xa0\x80")
    ("caf\u00e9", -2028992364774525097),  # NFC cafe-acute, blake2b(b"caf\xc3\xa9")
]


def test_stable_hash_is_pinned() -> None:
    assert [(obj, stable_hash(obj)) for obj, _ in STABLE_PINNED] == STABLE_PINNED
    script = "from rpj_tasks.annotate.hashseed import stable_hash as h; print(h('the'), h(('the', 'cat')))"
    runs = {
        subprocess.run(
            [sys.executable, "-c", script], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True, check=True
        ).stdout
        for seed in ("0", "1")
    }
    assert runs == {"3331141520948189790 2135851104040289225\n"}  # the same in every hash seed


@pytest.mark.parametrize(
    "k,lam", [(0, 3.0), (1, 0.5), (600, 500.0), (600, 800.0), (3000, 500.0), (7, 0.0), (0, 0.0), (123456, 123000.5)]
)
def test_poisson_pmf_is_scipys(k: int, lam: float) -> None:
    assert poisson_pmf(k, lam) == float(scipy.stats.poisson.pmf(k, lam))


def test_length_correction_examples_of_the_spec() -> None:
    def correction(k: int, target: float, source: float) -> float:
        return float(np.log(poisson_pmf(k, target) + 1e-8) - np.log(poisson_pmf(k, source) + 1e-8))

    assert round(correction(600, 500.0, 800.0), 7) == 4.9175463
    assert round(correction(3000, 500.0, 800.0), 8) == 0.0


def test_vectorised_log_pmfs_equal_the_scalar_computation() -> None:
    """Each element of the one-pass computation is the per-lambda scalar one, bit for bit."""
    rng = np.random.default_rng(11)
    lambdas = [450.0, 620.0, 700.0, 900.0, *rng.uniform(0.5, 20_000, 12).round(3).tolist(), 0.0]
    for k in [*range(0, 3000), *rng.integers(3000, 400_000, 1500).tolist()]:
        got = log_poisson_pmfs(int(k), lambdas)
        for lam, value in zip(lambdas, got.tolist()):
            assert value == float(np.log(poisson_pmf(int(k), lam) + 1e-8)), (k, lam)


def test_blocks_of_lengths_equal_the_scalar_computation() -> None:
    """The scorer computes log pmfs for a block of 256 lengths at once (a column of lengths against
    the lambdas): every element is the scalar computation for its length, bit for bit."""
    rng = np.random.default_rng(12)
    lambdas = [450.0, 620.0, 700.0, 900.0, *rng.uniform(0.5, 20_000, 6).round(3).tolist(), 0.0]
    for first in [0, 256, 2816, *(int(x) * 256 for x in rng.integers(12, 1500, 12))]:
        block = log_poisson_pmfs(np.arange(first, first + 256, dtype=np.float64)[:, None], lambdas).tolist()
        for k, row in enumerate(block, first):
            assert row == [float(np.log(poisson_pmf(k, lam) + 1e-8)) for lam in lambdas], k
            assert row == log_poisson_pmfs(k, lambdas).tolist(), k


def test_scorer_length_corrections_by_block_equal_the_scalar_ones() -> None:
    rng = np.random.default_rng(13)
    counts = rng.integers(1, 5000, 10000)
    scorer = DsirScorer((counts, np.asarray(620.0)), {"books": (counts[::-1].copy(), np.asarray(900.0))}, "stable")
    for length in [0, 1, 255, 256, 257, 2765, 2766, 2765, 100_000, 3]:
        got = scorer._log_pmfs(length)
        assert got == {lam: float(np.log(poisson_pmf(length, lam) + 1e-8)) for lam in (620.0, 900.0)}, length


def test_xlogy_is_scipys() -> None:
    """The replacement of scipy.special.xlogy, bit for bit, including k = 0 and lambdas 0, NaN, inf and < 0."""
    from rpj_tasks.annotate.signals.models import _xlogy

    rng = np.random.default_rng(14)
    lams = np.array([0.0, 1e-300, 0.5, 1.0, 450.0, 620.0, math.inf, math.nan, -2.0, *rng.uniform(0, 50_000, 200)])
    ks = np.array([0, 1, 2, 13, 600, 2765, 262_143, 10**6, *rng.integers(0, 400_000, 200)], dtype=np.float64)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        want = scipy.special.xlogy(ks, lams)
    got = _xlogy(ks, lams)
    assert np.array_equal(got, want, equal_nan=True)


def test_gammaln_table_is_scipys_and_cached(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """gammaln(k + 1) comes from a table scipy computed once, stored in the cache directory, read back
    by later processes; a damaged file is recomputed."""
    from rpj_tasks.annotate.signals import models

    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path))
    models._gammaln_table.cache_clear()
    try:
        table = models._gammaln_table()
        want = scipy.special.gammaln(np.arange(models._GAMMALN_TABLE, dtype=np.float64) + 1)
        assert np.array_equal(table, want)
        (stored,) = (tmp_path / "dsir").glob("gammaln-*")
        models._gammaln_table.cache_clear()
        assert np.array_equal(models._gammaln_table(), want)  # read back
        stored.write_bytes(b"not an array")
        models._gammaln_table.cache_clear()
        assert np.array_equal(models._gammaln_table(), want)  # recomputed
        models._gammaln_table.cache_clear()
        assert np.array_equal(models._gammaln_table(), want)  # and rewritten: read back
    finally:
        models._gammaln_table.cache_clear()


def test_a_gammaln_table_with_a_wrong_value_is_rebuilt(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A well-formed stored table whose values differ from scipy's (a bad copy, another machine's
    build in a shared cache directory, a planted file) is detected and recomputed: the DSIR length
    correction stays scipy's."""
    from rpj_tasks.annotate.signals import models

    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path))
    models._gammaln_table.cache_clear()
    try:
        want = scipy.special.gammaln(np.arange(models._GAMMALN_TABLE, dtype=np.float64) + 1)
        models._gammaln_table()
        (stored,) = (tmp_path / "dsir").glob("gammaln-*")
        data = bytearray(stored.read_bytes())
        data[2765 * 8] ^= 1  # the lowest bit of gammaln(2766): same size, same layout, one value off
        stored.write_bytes(bytes(data))
        models._gammaln_table.cache_clear()
        assert np.array_equal(models._gammaln_table(), want)
        ks = np.array([[0], [1], [2765], [4000]], dtype=np.float64)
        assert np.array_equal(models._gammaln_plus_one(ks), scipy.special.gammaln(ks + 1))
        assert stored.read_bytes() != bytes(data)  # and stored again, right
        models._gammaln_table.cache_clear()
        assert np.array_equal(models._gammaln_table(), want)
    finally:
        models._gammaln_table.cache_clear()


def test_the_gammaln_table_key_names_the_machine(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two machines of different architectures sharing a cache directory keep one table each."""
    from rpj_tasks.annotate.signals import models

    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path))
    here = models._gammaln_table_path()
    monkeypatch.setattr(models.platform, "machine", lambda: "some-other-arch")
    assert here is not None and models._gammaln_table_path() not in (None, here)


def test_gammaln_beyond_the_table_is_scipys(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rpj_tasks.annotate.signals import models

    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path))
    models._gammaln_table.cache_clear()
    try:
        big = np.array([models._GAMMALN_TABLE, 10**7], dtype=np.float64)
        assert np.array_equal(models._gammaln_plus_one(big), scipy.special.gammaln(big + 1))  # beyond: scipy
    finally:
        models._gammaln_table.cache_clear()


def test_dsir_scoring_needs_no_scipy_once_the_table_is_stored(tmp_path) -> None:
    """A process that finds the stored table scores DSIR without importing scipy (~0.2 s of CPU)."""
    code = (
        "import sys; from rpj_tasks.annotate.signals.models import log_poisson_pmfs; "
        "print(log_poisson_pmfs(2765, [450.0, 620.0]).tolist(), 'scipy' in sys.modules)"
    )
    env = {**os.environ, "RPJ_CACHE_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    second = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert first.split(" True")[0] == second.split(" False")[0] and first.endswith("True\n") and second.endswith("False\n")
