"""The compiled fastText predict (rpj_tasks.annotate.signals.classifier) gives fastText's own labels and
probabilities, bit for bit, and falls back to fastText whenever it cannot."""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import fasttext
import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from rpj_tasks.annotate.signals import classifier
from rpj_tasks.annotate.signals.classifier import EOS, CompiledClassifier, compiled_or_fasttext, load_classifier, probe_lines
from rpj_tasks.annotate.signals.models import classifier_score
from rpj_tasks.native import native

pytestmark = pytest.mark.skipif(native is None, reason="needs the extension (test_speedups.test_extension_is_built)")

VOCAB = [f"{a}{b}" for a in ("ka", "lo", "mi", "nu", "pe", "ra", "su", "ti") for b in range(60)]
UNICODE = ["caf\u00e9", "stra\u00dfe", "\u65e5\u672c", "\U0001f600", "na\u00efve"]


def corpus(path: Path, labels: list[str], lines: int = 400, seed: int = 1) -> str:
    """Lines whose word mix depends on the label (so the model learns something), with unicode words."""
    rng = random.Random(seed)
    out = []
    for k in range(lines):
        label = labels[k % len(labels)]
        bias = VOCAB[:160] if k % len(labels) == 0 else VOCAB[320:]
        words = [rng.choice(bias if rng.random() < 0.6 else VOCAB + UNICODE) for _ in range(rng.randint(3, 60))]
        out.append(f"__label__{label} " + " ".join(words))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return str(path)


TRAIN = """
import json, sys, fasttext
data, out, params, quantize = sys.argv[1], sys.argv[2], json.loads(sys.argv[3]), sys.argv[4] == "1"
model = fasttext.train_supervised(input=data, **params)
if quantize:
    model.quantize(input=data, retrain=False, cutoff=0, qnorm=False, dsub=2)
model.save_model(out)
"""


def train(tmp: Path, labels: list[str], quantize: bool = False, **params) -> fasttext.FastText._FastText:
    """Trained in a child with zeroed fresh heap memory, as rpj_tasks.annotate.artifacts.build trains (the
    fasttext-numpy2 wheel leaves parts of its matrices uninitialised)."""
    defaults = {"lr": 0.5, "dim": 100, "epoch": 5, "wordNgrams": 1, "minCount": 1, "thread": 1, "seed": 1, "verbose": 0}
    name = "-".join(f"{k}{v}" for k, v in sorted(params.items())) + "-".join(labels) + ("-q" if quantize else "")
    data, out = corpus(tmp / f"{name}.txt", labels), tmp / f"{name}.bin"
    proc = subprocess.run(
        [sys.executable, "-c", TRAIN, data, str(out), json.dumps({**defaults, **params}), "1" if quantize else "0"],
        env={**os.environ, "MALLOC_PERTURB_": "255"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return fasttext.load_model(str(out))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, fasttext.FastText._FastText]:
    """Plain models of the kinds fastText computes differently: dim 100 (generic loop), dims 16 and 64
    (its SSE row-averaging loops), and three labels."""
    tmp = tmp_path_factory.mktemp("models")
    return {
        "dim100": train(tmp, ["palm", "cc"]),
        "dim16": train(tmp, ["wiki", "cc"], dim=16),
        "dim64": train(tmp, ["wiki", "cc"], dim=64, lr=0.05),
        "three": train(tmp, ["a", "b", "c"]),
    }


def compiled(model: fasttext.FastText._FastText) -> CompiledClassifier:
    return CompiledClassifier(model.get_words(), model.get_labels(), model.get_input_matrix(), model.get_output_matrix())


def same(model, fast, line: str) -> None:
    want, got = model.predict(line), fast.predict(line)
    assert got[0] == want[0], line
    assert got[1].tolist() == want[1].tolist(), line  # the same floats, not just close


SEPARATORS = [" ", "\t", "\r", "\v", "\f", "\0", "  ", "\u00a0", "\u3000", "\x1c"]  # the last three are not fastText's
TOKENS = st.one_of(
    st.sampled_from(VOCAB + UNICODE + [EOS, "__label__palm", "__label__x", "</s>x"]),
    st.text(st.characters(codec="utf-8", exclude_characters="\n"), min_size=1, max_size=8),
)
LINES = st.lists(st.tuples(TOKENS, st.sampled_from(SEPARATORS)), max_size=300).map(
    lambda pairs: "".join(t + s for t, s in pairs).replace("\n", " ")
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(line=LINES, which=st.sampled_from(["dim100", "dim16", "dim64", "three"]))
@example(line="", which="dim100")
@example(line=" \t\0 ", which="dim100")
@example(line=EOS, which="dim100")
@example(line=f"ka1 lo2 {EOS} mi3 mi3 mi3", which="dim100")  # fastText stops reading at </s>
@example(line="__label__palm __label__cc", which="dim100")  # labels written as words are not words
@example(line="ka1\0lo2\vmi3\fnu4\rpe5", which="three")
def test_same_labels_and_probabilities_as_fasttext(models, line: str, which: str) -> None:
    same(models[which], compiled(models[which]), line)


def test_long_and_many_lines(models) -> None:
    rng = random.Random(7)
    for model in models.values():
        fast = compiled(model)
        for n in (1, 13, 500, 5000):
            for _ in range(10):
                same(model, fast, " ".join(rng.choice(VOCAB + UNICODE + ["oov"]) for _ in range(n)))


def test_the_classifier_score_is_the_same(models) -> None:
    """Through the signal rule too, including a lone surrogate (both replace it, §3.6 input)."""
    model = models["dim100"]
    fast = compiled(model)
    for text in ["ka1 lo2 mi3", "caf\u00e9 \ud800 ka1", "", "\U0001f600 " * 50]:
        assert classifier_score(fast, text) == classifier_score(model, text)
    with pytest.raises(UnicodeEncodeError):
        fast.predict("ka1 \ud800")
    with pytest.raises(ValueError, match="one line at a time"):
        fast.predict("ka1\nlo2")


def test_plain_models_are_compiled_after_the_probe_check(models, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpj_tasks.annotate.signals.classifier")
    for name, model in models.items():
        assert isinstance(compiled_or_fasttext(model, name), CompiledClassifier), name
    assert "compiled predict (checked on 305 probe lines)" in caplog.text


def test_other_models_keep_fasttext(tmp_path: Path, models, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="rpj_tasks.annotate.signals.classifier")
    bigrams = train(tmp_path, ["palm", "cc"], wordNgrams=2, bucket=10000)
    assert compiled_or_fasttext(bigrams, "bigrams") is bigrams
    assert "wordNgrams=2" in caplog.text
    subwords = train(tmp_path, ["palm", "cc"], minn=2, maxn=4, bucket=10000)
    assert compiled_or_fasttext(subwords, "subwords") is subwords
    assert "maxn=4" in caplog.text
    quantized = train(tmp_path, ["palm", "cc"], quantize=True)
    assert compiled_or_fasttext(quantized, "q8") is quantized
    assert "classifier q8: fastText's own predict (quantized)" in caplog.text
    for loss in ("hs", "ova"):
        other = train(tmp_path, ["palm", "cc"], loss=loss)
        assert compiled_or_fasttext(other, loss) is other
        assert f"model supervised with loss {loss}" in caplog.text


def test_a_probe_that_differs_keeps_fasttext(models, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """The check is real: an arithmetic that is one float off on some line is not used."""
    caplog.set_level(logging.INFO, logger="rpj_tasks.annotate.signals.classifier")
    real = CompiledClassifier.predict

    def off_by_one_ulp(self, text: str):
        labels, probs = real(self, text)
        return labels, np.nextafter(probs, 2.0) if text.count(" ") > 100 else probs

    monkeypatch.setattr(CompiledClassifier, "predict", off_by_one_ulp)
    model = models["dim100"]
    assert compiled_or_fasttext(model, "palm") is model
    assert "differs from fastText on a probe line" in caplog.text


def test_without_the_extension_fasttext_is_used(models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classifier, "native", None)
    model = models["dim100"]
    assert compiled_or_fasttext(model, "palm") is model


def test_load_classifier_from_a_url(tmp_path: Path, models) -> None:
    path = tmp_path / "palm.model.bin"
    models["dim100"].save_model(str(path))
    loaded = load_classifier(path.as_uri())
    assert isinstance(loaded, CompiledClassifier)
    gc.collect()  # its matrices are views of the fastText model it holds: still valid
    same(fasttext.load_model(str(path)), loaded, "ka1 lo2 caf\u00e9 mi3")


def test_probe_lines_cover_the_branches(models) -> None:
    model = models["dim100"]
    lines = probe_lines(model.get_words(), model.get_labels())
    assert lines == probe_lines(model.get_words(), model.get_labels())  # seeded
    joined = "".join(lines)
    assert all(sep in joined for sep in [" ", "\t", "\r", "\v", "\f", "\0"])
    assert EOS in joined and "__label__" in joined and "" in lines
    assert max(len(line.split()) for line in lines) >= 900


def test_bad_arguments_are_errors(models) -> None:
    model = models["dim100"]
    with pytest.raises(ValueError, match="no </s>"):
        CompiledClassifier(["a", "b"], ["__label__x"], np.zeros((2, 4), np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="repeats a word"):
        CompiledClassifier([EOS, "a", "a"], ["__label__x"], np.zeros((3, 4), np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="equal to a label"):
        CompiledClassifier([EOS, "__label__x"], ["__label__x"], np.zeros((2, 4), np.float32), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="do not match"):
        CompiledClassifier([EOS, "a"], ["__label__x"], np.zeros((2, 4), np.float32), np.zeros((2, 4), np.float32))
    fast = compiled(model)
    with pytest.raises(ValueError, match="offsets"):
        native.ft_predict(b"ka1", fast._blob, fast._offsets[:-1], fast._slots, fast._wi, fast._wo, fast._dim)
    with pytest.raises(ValueError, match="dim columns"):
        native.ft_predict(b"ka1", fast._blob, fast._offsets, fast._slots, fast._wi, fast._wo, 7)
    with pytest.raises(ValueError, match="bad offsets or slot count"):
        native.ft_vocab_slots(fast._blob, fast._offsets, 3)
    with pytest.raises(ValueError, match="power of two"):
        native.ft_predict(b"ka1", fast._blob, fast._offsets, fast._slots[:-4], fast._wi, fast._wo, fast._dim)


def test_the_check_is_cached_per_model_file(
    tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The first load checks the probe lines and stores the verdict; later loads of the same file
    reuse it; another model in the file or a corrupt verdict file is checked again."""
    caplog.set_level(logging.INFO, logger="rpj_tasks.annotate.signals.classifier")
    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "palm.model.bin"
    models["dim100"].save_model(str(path))
    assert isinstance(load_classifier(path.as_uri()), CompiledClassifier)
    stored = classifier.verdict_path(str(path))
    assert json.loads(Path(stored).read_text()) == {"compiled": True, "why": "", "probe_lines": len(probe_lines(["a"], []))}

    calls = []
    real_probe = classifier.probe_lines
    monkeypatch.setattr(classifier, "probe_lines", lambda *a, **k: calls.append(1) or real_probe(*a, **k))
    loaded = load_classifier(path.as_uri())
    assert isinstance(loaded, CompiledClassifier) and calls == []  # the cached verdict, no probe run
    assert "(cached check)" in caplog.text
    same(fasttext.load_model(str(path)), loaded, "ka1 lo2 caf\u00e9 mi3")

    models["dim16"].save_model(str(path))  # another model in the same file: a new key, checked again
    os.utime(path, ns=(1, 1))
    assert classifier.verdict_path(str(path)) != stored
    assert isinstance(load_classifier(path.as_uri()), CompiledClassifier) and calls == [1]

    Path(classifier.verdict_path(str(path))).write_text("{not json")  # unreadable: checked again
    load_classifier(path.as_uri())
    assert calls == [1, 1]


def test_a_model_rewritten_in_place_is_checked_again(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch) -> None:
    """Other bytes in the same file, with the same size, inode and modification time (a copy tool
    that keeps times, a model replaced in place): the stored verdict is not reused."""
    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "palm.model.bin"
    models["dim100"].save_model(str(path))
    load_classifier(path.as_uri())
    before = os.stat(path)
    stored = classifier.verdict_path(str(path))

    calls = []
    real_probe = classifier.probe_lines
    monkeypatch.setattr(classifier, "probe_lines", lambda *a, **k: calls.append(1) or real_probe(*a, **k))
    with open(path, "r+b") as f:  # the low byte of the output matrix's last float, in place
        f.seek(-4, os.SEEK_END)
        low = f.read(1)
        f.seek(-4, os.SEEK_END)
        f.write(bytes([low[0] ^ 1]))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(path)
    assert (after.st_size, after.st_mtime_ns, after.st_ino) == (before.st_size, before.st_mtime_ns, before.st_ino)
    assert classifier.verdict_path(str(path)) != stored
    loaded = load_classifier(path.as_uri())
    assert calls == [1]  # probed again
    same(fasttext.load_model(str(path)), loaded, "ka1 lo2 caf\u00e9 mi3")


def test_the_check_key_names_the_fasttext_build(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch) -> None:
    """fastText's wheels carry no ``__version__``: the key holds the digests of its wrapper and of
    its compiled module, and another build gives another key."""
    import fasttext_pybind

    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path / "cache"))
    build = classifier.fasttext_build()
    assert classifier.storage.sha256_file(fasttext_pybind.__file__) in build
    assert classifier.storage.sha256_file(fasttext.FastText.__file__) in build
    path = tmp_path / "palm.model.bin"
    models["dim100"].save_model(str(path))
    here = classifier.verdict_path(str(path))
    monkeypatch.setattr(classifier, "fasttext_build", lambda: (None, "another wrapper", "another build"))
    assert classifier.verdict_path(str(path)) != here


def test_a_model_that_differs_from_its_manifest_is_refused(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the manifest's sha256, a local model file with other bytes is an error, not a guess."""
    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "palm.model.bin"
    models["dim100"].save_model(str(path))
    digest = classifier.storage.sha256_file(str(path))
    assert isinstance(load_classifier(path.as_uri(), sha256=digest), CompiledClassifier)
    models["dim16"].save_model(str(path))
    with pytest.raises(classifier.storage.ChecksumError, match="differs from the expected"):
        load_classifier(path.as_uri(), sha256=digest)


def test_a_cached_fasttext_verdict_keeps_fasttext(tmp_path: Path, models, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stored "fastText's own predict" verdict is obeyed (e.g. a model whose probe differed)."""
    monkeypatch.setenv("RPJ_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "palm.model.bin"
    models["dim100"].save_model(str(path))
    classifier.store_verdict(classifier.verdict_path(str(path)), {"compiled": False, "why": "differs", "probe_lines": 3})
    assert not isinstance(load_classifier(path.as_uri()), CompiledClassifier)
