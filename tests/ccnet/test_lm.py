import io
import math
import random
from collections import Counter, defaultdict

import kenlm
import pytest
from faker import Faker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpj_tasks.ccnet import arpa, lm
from rpj_tasks.ccnet.lm import (
    PerplexityScorer,
    bucket,
    compute_cutoffs,
    load_cutoffs,
    normalized_lines,
    train_lm,
    train_sentencepiece,
)
from rpj_tasks.core.stats import Stats


def _corpus(n: int, seed: int = 0) -> list[str]:
    fake = Faker("en_US")
    fake.seed_instance(seed)
    return [fake.sentence(nb_words=10) for _ in range(n)]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [line.lower().rstrip(".") for line in _corpus(1500)]


def _arpa_bytes(lines, order=5, stats=None) -> bytes:
    buf = io.BytesIO()
    arpa.write_arpa(arpa.estimate(lines, order, stats), buf)
    return buf.getvalue()


def _kenlm(tmp_path, data: bytes, name="model.arpa") -> kenlm.Model:
    path = tmp_path / name
    path.write_bytes(data)
    return kenlm.Model(str(path))


def _advance(model: kenlm.Model, words: list[str], bos: bool = True) -> kenlm.State:
    state = kenlm.State()
    (model.BeginSentenceWrite if bos else model.NullContextWrite)(state)
    for word in words:
        out = kenlm.State()
        model.BaseScore(state, word, out)
        state = out
    return state


def _mass(model: kenlm.Model, state: kenlm.State, vocab: list[str]) -> float:
    return sum(10 ** model.BaseScore(state, word, kenlm.State()) for word in vocab)


# --- ARPA estimator -------------------------------------------------------------------------


def test_arpa_loads_in_kenlm(tmp_path, corpus):
    data = _arpa_bytes(corpus)
    model = _kenlm(tmp_path, data)
    assert model.order == 5
    header = data.split(b"\n\n", 1)[0].decode().splitlines()
    counts = [int(line.split("=")[1]) for line in header[1:]]
    for n, count in enumerate(counts, 1):
        section = data.split(b"\\%d-grams:\n" % n, 1)[1].split(b"\n\n", 1)[0]
        assert len(section.splitlines()) == count
    assert b"\t<unk>\t" in data and b"\t<s>\t" in data and b"\t</s>\t" in data


@pytest.mark.parametrize(
    "n_words, bos",
    [(0, True), (0, False), (1, True), (4, True), (2, False), (-1, True)],  # -1: unseen words
)
def test_arpa_distributions_sum_to_one(tmp_path, corpus, n_words, bos):
    model = arpa.estimate(corpus, 5)
    buf = io.BytesIO()
    arpa.write_arpa(model, buf)
    query = _kenlm(tmp_path, buf.getvalue())
    vocab = [w.decode() for w in model.vocab if w != b"<s>"]  # includes <unk> and </s>
    context = ["qwerty", corpus[0].split()[0]] if n_words < 0 else corpus[3].split()[:n_words]
    assert _mass(query, _advance(query, context, bos), vocab) == pytest.approx(1.0, abs=2e-4)


def test_seen_sentence_scores_better_than_shuffled(tmp_path, corpus):
    query = _kenlm(tmp_path, _arpa_bytes(corpus))
    rng = random.Random(1)
    for sentence in corpus[:20]:
        words = sentence.split()
        shuffled = words[:]
        while shuffled == words:
            rng.shuffle(shuffled)
        assert query.score(sentence) > query.score(" ".join(shuffled))


def test_arpa_bytes_are_deterministic(corpus):
    assert _arpa_bytes(corpus) == _arpa_bytes(list(corpus))


def _reference_kn(lines: list[str], order: int):
    """A plain dict implementation of interpolated modified Kneser-Ney (the test oracle)."""
    raw: list[Counter] = [Counter() for _ in range(order + 1)]
    left: list[defaultdict] = [defaultdict(set) for _ in range(order + 1)]
    for line in lines:
        toks = ["<s>", *line.split(), "</s>"]
        for n in range(1, order + 1):
            for i in range(len(toks) - n + 1):
                gram = tuple(toks[i : i + n])
                if gram == ("<s>",):
                    continue
                raw[n][gram] += 1
                if i > 0:
                    left[n][gram].add(toks[i - 1])
    adj = [{}] + [
        {g: (c if n == order or g[0] == "<s>" else len(left[n][g])) for g, c in raw[n].items()} for n in range(1, order + 1)
    ]
    discounts = [None]
    for n in range(1, order + 1):
        nk = Counter(adj[n].values())  # n_k: n-grams with adjusted count exactly k
        try:
            y = nk[1] / (nk[1] + 2 * nk[2])
            d = [0.0] + [k - (k + 1) * y * nk[k + 1] / nk[k] for k in (1, 2, 3)]
            assert all(0 <= d[k] <= k for k in (1, 2, 3))
        except (ZeroDivisionError, AssertionError):
            d = [0.0, 0.5, 1.0, 1.5]
        discounts.append(d)
    denom, gamma = [defaultdict(float) for _ in range(order + 1)], [defaultdict(float) for _ in range(order + 1)]
    for n in range(1, order + 1):
        for g, c in adj[n].items():
            denom[n][g[:-1]] += c
            gamma[n][g[:-1]] += discounts[n][min(c, 3)]
    vocab_size = len(adj[1]) + 1  # + <unk>

    def prob(word: str, context: tuple) -> float:
        n = len(context) + 1
        lower = prob(word, context[1:]) if context else 1.0 / vocab_size
        if denom[n][context] == 0:
            return lower
        c = adj[n].get((*context, word), 0)
        return (c - discounts[n][min(c, 3)]) / denom[n][context] + gamma[n][context] / denom[n][context] * lower

    return prob


@pytest.mark.parametrize("n_lines", [400, 12])  # closed-form discounts, and the fallback
def test_arpa_matches_a_reference_kneser_ney(tmp_path, corpus, n_lines):
    order = 3
    train = corpus[:n_lines]
    query = _kenlm(tmp_path, _arpa_bytes(train, order))
    prob = _reference_kn(train, order)
    for sentence in [*train[:5], *corpus[-5:], "qwerty the zzz"]:
        toks = ["<s>", *sentence.split(), "</s>"]
        expected = [math.log10(prob(toks[i], tuple(toks[max(0, i - order + 1) : i]))) for i in range(1, len(toks))]
        actual = [score for score, _, _ in query.full_scores(sentence)]
        assert actual == pytest.approx(expected, abs=1e-4)


def test_small_corpus_uses_fallback_and_lowers_the_order(tmp_path):
    stats = Stats()
    model = arpa.estimate(["hello", "hello world", "<s> world"], 5, stats)
    assert model.order == 4  # longest sentence: <s> hello world </s>
    assert model.discounts[-1] == arpa.FALLBACK_DISCOUNTS
    assert stats["arpa.dropped.special_token"] == 1 and stats["arpa.sentences"] == 3
    buf = io.BytesIO()
    arpa.write_arpa(model, buf)
    query = _kenlm(tmp_path, buf.getvalue())
    assert query.order == 4
    assert _mass(query, _advance(query, ["hello"]), ["<unk>", "</s>", "hello", "world"]) == pytest.approx(1, abs=1e-4)


def test_empty_corpus_or_unigram_order_is_an_error():
    with pytest.raises(ValueError, match="empty corpus"):
        arpa.estimate([], 5)
    with pytest.raises(ValueError, match="order must be >= 2"):
        arpa.estimate(["a b"], 1)


# --- cutoffs and buckets --------------------------------------------------------------------


def test_real_cutoffs(shared_data):
    cutoffs = load_cutoffs((shared_data / "ccnet" / "cutoff.csv").as_uri())
    assert len(cutoffs) == 48
    expected = {"en": (340, 520), "de": (370, 590), "fr": (180, 330), "es": (180, 290), "it": (220, 360)}
    assert {lang: cutoffs[lang] for lang in expected} == expected


def test_bucket_rule_and_boundary():
    en = (340.0, 520.0)
    assert round(339.96, 1) == 340.0 and bucket(round(339.96, 1), en) == "middle"
    assert bucket(339.9, en) == "head"
    assert bucket(519.9, en) == "middle"
    assert bucket(520.0, en) == "tail"
    assert bucket(100.0, None) == "all"
    assert bucket(None, en) == "all"


def test_compute_cutoffs_round_trip(tmp_path):
    rng = random.Random(0)
    values = {"en": [rng.uniform(10, 1000) for _ in range(5000)], "de": [float(v) for v in range(1, 1001)], "xx": []}
    text = compute_cutoffs(values)
    lines = text.splitlines()
    assert lines[0] == ",de,en" and len(lines) == 101 and lines[1].startswith("0,")
    url = (tmp_path / "cutoff.csv").as_uri()
    with lm.storage.atomic_write(url, "w") as f:
        f.write(text)
    cutoffs = load_cutoffs(url)
    assert cutoffs["de"] == (300.7, 600.4)
    head, tail = cutoffs["en"]
    share = [sum(v < head for v in values["en"]) / 5000, sum(v < tail for v in values["en"]) / 5000]
    assert share == pytest.approx([0.30, 0.60], abs=0.001)
    assert [bucket(v, cutoffs["de"]) for v in (300.6, 300.7, 600.3, 600.4)] == ["head", "middle", "middle", "tail"]


# --- SentencePiece + KenLM perplexity -------------------------------------------------------


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    texts = _corpus(2000, seed=7)
    lines = list(normalized_lines(texts))
    sp_url = (root / "en.sp.model").as_uri()
    arpa_url = (root / "en.arpa").as_uri()
    train_sentencepiece(lines, sp_url, vocab_size=800)
    train_lm(lines, sp_url, arpa_url)
    return sp_url, arpa_url, lines


def test_sentencepiece_training_is_deterministic(tmp_path, models):
    sp_url, _, lines = models
    again = (tmp_path / "again.sp.model").as_uri()
    train_sentencepiece(lines, again, vocab_size=800)
    assert lm.storage.read_bytes(again) == lm.storage.read_bytes(sp_url)


def test_sentencepiece_small_corpus_is_not_an_error(tmp_path):
    url = (tmp_path / "tiny.sp.model").as_uri()
    train_sentencepiece(["tiny corpus", "of two lines"], url, vocab_size=65536)
    assert lm.load_sentencepiece(url).get_piece_size() < 100


def test_perplexity_matches_a_hand_computation(models):
    sp_url, arpa_url, _ = models
    scorer = PerplexityScorer(sp_url, arpa_url)
    raw_content = "The Quick Brown fox\nJumps over the lazy DOG 42 times"
    normalized = "the quick brown foxjumps over the lazy dog 00 times"  # §9.6 step 1 by hand
    assert lm.ccnet_normalize(raw_content) == normalized
    pieces = lm.load_sentencepiece(sp_url).encode_as_pieces(normalized)
    query = kenlm.Model(lm.storage.local_copy(arpa_url))
    log10_prob = sum(score for score, _, _ in query.full_scores(" ".join(pieces)))
    expected = round(10 ** (-log10_prob / (len(pieces) + 1)), 1)
    assert scorer.perplexity(raw_content) == expected
    assert scorer.perplexity(raw_content) > 1.0


def test_batch_perplexities_equal_one_by_one(models):
    sp_url, arpa_url, lines = models
    scorer = PerplexityScorer(sp_url, arpa_url)
    texts = [*lines[:200], "", " \n\t", "Ünïcödé 12 ½ —x… ", "a\ud800b", "日本語のテキスト。", "x\u3000y\u2028z"]
    assert scorer.perplexities(texts) == [scorer.perplexity(t) for t in texts]
    assert scorer.perplexities(texts[:3]) == [scorer.perplexity(t) for t in texts[:3]]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.sampled_from(["▁the", "▁quick", "s", " ", "  ", "\n", "\u3000", "\t", "\u2028", "x"]), min_size=1, max_size=12
    ).map("".join)
)
def test_one_call_score_equals_line_by_line(models, tokenized):
    sp_url, arpa_url, _ = models
    scorer = PerplexityScorer(sp_url, arpa_url)
    score, length = 0.0, 0
    for line in tokenized.split("\n"):
        score += scorer.lm.score(line)
        length += len(line.split()) + 1
    assert scorer._score(tokenized) == round(10.0 ** (-score / length), 1)


def test_perplexity_ranks_real_text_before_noise(models):
    sp_url, arpa_url, lines = models
    scorer = PerplexityScorer(sp_url, arpa_url)
    seen = scorer.perplexity(lines[0])
    noise = scorer.perplexity("zq xv qqj kkw zzzt vvx jjq")
    assert seen is not None and noise is not None and seen < noise


def test_perplexity_of_empty_text_is_none(models):
    scorer = PerplexityScorer(*models[:2])
    assert scorer.perplexity("") is None
    assert scorer.perplexity(" \n\t\n") is None
    assert bucket(scorer.perplexity(""), (1.0, 2.0)) == "all"


def test_lone_surrogate_is_scored_as_a_replacement_char(models):
    scorer = PerplexityScorer(*models[:2])
    assert scorer.perplexity("some text \ud800 here") == scorer.perplexity("some text ? here")


def test_models_are_loaded_once_per_url(models):
    a, b = PerplexityScorer(*models[:2]), PerplexityScorer(*models[:2])
    assert a.sp is b.sp and a.lm is b.lm
