"""The quality classifiers' fastText predictions (signals 37-39, §3.6), computed without fastText's
per-word dictionary probe when the model allows it.

fastText reads a line through a ``std::istream`` one character at a time, makes a ``std::string`` per
word and compares it with the dictionary entry's own heap-allocated string, so on ~500-word documents
its ``predict`` takes ~90-300 µs per document and model on the development machine, mostly in the
reading and the lookups.  For a plain supervised model (softmax loss, word unigrams, no
subwords, not quantized) the prediction is only: the rows of the line's in-vocabulary words and of
``</s>``, averaged; one dot product per label; a softmax; the top label.  :class:`CompiledClassifier`
keeps the vocabulary and the two matrices in numpy buffers, and runs that arithmetic in
``rpj_tasks.native._speedups.ft_predict`` in fastText's own float32 order, so the probabilities are the
same floats, bit for bit.  Words are split and looked up in C too, in an open-addressing table over
the vocabulary's UTF-8 bytes, so no Python string is made per word.

That equality is checked, not assumed: :func:`load_classifier` compares both on probe lines built
from the model's own vocabulary (every separator, out-of-vocabulary words, labels as words, lengths
from 0 to 1,000 words) and keeps fastText itself if any probability differs, or if the model is of
another kind, or if the extension is not built (``RPJ_PURE_PYTHON=1``).  The matrices are views of
the fastText model's own memory (no copy), so the model object stays loaded behind the classifier.

The check's verdict is cached per model content (:func:`cached_verdict`): under
``storage.cache_dir()/classifier-checks/`` (``$RPJ_CACHE_DIR``), one small JSON file per key, the key
being the model file's SHA-256 and size, the probe parameters, and the fastText and extension
builds (their files' SHA-256, :func:`fasttext_build`); written atomically (a temporary file flushed
to disk, then ``os.replace``), so concurrent processes at worst check the same model twice.  A
changed model file (even one rewritten in place with its size, modification time and inode
kept), extension or fastText gets a new key, hence a new check.  Hashing costs ~0.8-0.9 ms of CPU per
MB of model (7-8.5 ms for a 9.2 MB model whose check takes 29-34 ms); the same digest is the one
checked against the artifacts' manifest, so it is computed once per load.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import random
from typing import Any

import numpy as np

from rpj_tasks.core import storage
from rpj_tasks.native import native

log = logging.getLogger(__name__)

EOS = "</s>"
_PROBE_SEED = 20231030
_PROBES = 300
_VERDICT_FORMAT = 1  # bump when the check or CompiledClassifier changes meaning


class CompiledClassifier:
    """``predict(text)`` of a plain supervised fastText model, k=1, threshold 0: the same labels and
    probabilities as ``fasttext.FastText._FastText.predict`` (see the module docstring)."""

    def __init__(
        self, words: list[str], labels: list[str], input_matrix: np.ndarray, output_matrix: np.ndarray, owner: Any = None
    ):
        # `owner` keeps the memory of matrices that are views into it (a fastText model) alive
        self._owner = owner
        if EOS not in words:
            raise ValueError("the vocabulary has no </s>")
        if len(set(words)) != len(words) or not set(words).isdisjoint(labels):
            # fastText's dictionary keeps the last of equal entries (a label wins over a word);
            # training never makes such a model, so these keep fastText's own predict
            raise ValueError("the vocabulary repeats a word or has a word equal to a label")
        encoded = [word.encode("utf-8") for word in words]
        self._blob = b"".join(encoded)
        self._offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum([len(word) for word in encoded], out=self._offsets[1:])
        nslots = 1 << max(4, (2 * len(encoded) - 1).bit_length())
        assert native is not None  # only built when the extension is
        self._slots = native.ft_vocab_slots(self._blob, self._offsets, nslots)
        self._labels = tuple(labels)
        self._wi = np.ascontiguousarray(input_matrix, dtype=np.float32)
        self._wo = np.ascontiguousarray(output_matrix, dtype=np.float32)
        self._dim = self._wi.shape[1]
        if self._wo.shape != (len(self._labels), self._dim) or self._wi.shape[0] < len(words):
            raise ValueError(
                f"matrices {self._wi.shape} / {self._wo.shape} do not match {len(words)} words and {len(self._labels)} labels"
            )

    def predict(self, text: str) -> tuple[tuple[str, ...], np.ndarray]:
        if "\n" in text:
            raise ValueError("predict processes one line at a time (remove '\\n')")
        # UnicodeEncodeError for lone surrogates, which fastText's own predict cannot take either
        assert native is not None
        label, prob = native.ft_predict(
            text.encode("utf-8"), self._blob, self._offsets, self._slots, self._wi, self._wo, self._dim
        )
        return (self._labels[label],), np.array([prob])


def _plain_supervised(model: Any) -> str:
    """Why ``model`` needs fastText itself ('' if the compiled path applies)."""
    import fasttext_pybind as ftp

    if model.f.isQuant():
        return "quantized"
    args = model.f.getArgs()
    if args.model != ftp.model_name.supervised or args.loss != ftp.loss_name.softmax:
        return f"model {args.model.name} with loss {args.loss.name}"
    if args.wordNgrams > 1 or args.maxn > 0:
        return f"wordNgrams={args.wordNgrams}, maxn={args.maxn}"
    return ""


def probe_lines(words: list[str], labels: list[str], n: int = _PROBES, seed: int = _PROBE_SEED) -> list[str]:
    """Lines that exercise every branch: each separator, runs of them at both ends, words outside
    the vocabulary, labels written as words, a lone ``</s>``, and 0 to 1,000 words."""
    rng = random.Random(seed)
    separators = [" ", "\t", "\r", "\v", "\f", "\0", "  ", " \t "]
    extra = [*labels, EOS, "__label__", "oov-\u00e9t\u00e9", "\U0001f600", "x" * 40]
    lines = ["", " ", "\t\0", EOS, labels[0] if labels else "x"]
    for k in range(n):
        length = rng.choice([1, 2, 3, 7, 20, 100, 300, 1000]) if k % 10 else rng.randint(0, 40)
        tokens = [rng.choice(extra) if rng.random() < 0.05 else rng.choice(words) for _ in range(length)]
        out = rng.choice(["", " ", "\t"])
        for token in tokens:
            out += token + (rng.choice(separators) if rng.random() < 0.2 else " ")
        lines.append(out if rng.random() < 0.5 else out.strip(" "))
    return lines


def compiled_or_fasttext(model: Any, name: str) -> Any:
    """A :class:`CompiledClassifier` equal to ``model`` on every probe line, else ``model``."""
    return checked_predictor(model, name)[0]


def checked_predictor(model: Any, name: str, verdict: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
    """:func:`compiled_or_fasttext` and its verdict (``{"compiled": bool, "why": str, "probe_lines": int}``).  With a ``verdict`` from an
    earlier check of the same model file, the probe lines are not run again."""
    if native is None:
        return model, {"compiled": False, "why": "the extension is not built", "probe_lines": 0}
    why = _plain_supervised(model) if verdict is None else verdict["why"]
    if not why:
        try:
            words, labels = model.get_words(), model.get_labels()
            # views of fastText's own matrices (no copy: the peak RSS stays fastText's); the
            # classifier keeps the model, whose memory they are, alive
            wi, wo = np.asarray(model.f.getInputMatrix()), np.asarray(model.f.getOutputMatrix())
            fast = CompiledClassifier(words, labels, wi, wo, owner=model)
        except (ValueError, UnicodeError) as exc:
            why = str(exc)
    checked = verdict["probe_lines"] if verdict is not None else 0
    if not why and verdict is None:
        lines = probe_lines(words, labels)
        checked = len(lines)
        for line in lines:
            want, got = model.predict(line), fast.predict(line)
            if want[0] != got[0] or want[1].tolist() != got[1].tolist():
                why = f"differs from fastText on a probe line ({want} != {got})"
                break
    cached = " (cached check)" if verdict is not None else ""
    if why:
        log.info("classifier %s: fastText's own predict (%s)%s", name, why, cached)
        return model, {"compiled": False, "why": why, "probe_lines": checked}
    log.info("classifier %s: compiled predict (checked on %d probe lines)%s", name, checked, cached)
    return fast, {"compiled": True, "why": "", "probe_lines": checked}


@functools.lru_cache(maxsize=8)
def _build_digest(path: str) -> str:
    """SHA-256 of a build file (a library, a module): read once per process."""
    return storage.sha256_file(path)


@functools.lru_cache(maxsize=1)
def fasttext_build() -> tuple[Any, ...]:
    """What identifies the fastText that answers ``predict``: the module's ``__version__`` (the
    ``fasttext-numpy2`` wheels have none) and the SHA-256 of its Python wrapper and of its compiled
    ``fasttext_pybind`` module (~17 MB, 13-17 ms of CPU once per process), so a rebuild under the same
    version number is a new build too.  (Asking ``importlib.metadata`` which distribution owns the
    module costs ~0.12 s; the files' digests say more.)"""
    import sys

    import fasttext
    import fasttext.FastText

    files = [fasttext.FastText.__file__, getattr(sys.modules.get("fasttext_pybind"), "__file__", None)]
    return (getattr(fasttext, "__version__", None), *(_build_digest(f) if f else None for f in files))


def verdict_path(model_path: str, sha256: str | None = None) -> str:
    """Where the check of the model file at ``model_path`` is cached (see the module docstring).
    ``sha256`` is the file's content digest when the caller has already checked it
    (:func:`rpj_tasks.core.storage.local_copy` with the manifest's digest); otherwise it is computed."""
    build = getattr(native, "__file__", None)
    key = [
        _VERDICT_FORMAT,
        sha256 or storage.sha256_file(model_path),
        os.path.getsize(model_path),
        _PROBES,
        _PROBE_SEED,
        fasttext_build(),
        _build_digest(build) if build else None,
    ]
    digest = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:32]
    return os.path.join(storage.cache_dir(), "classifier-checks", f"{digest}.json")


def cached_verdict(path: str) -> dict[str, Any] | None:
    """The verdict stored at ``path``, or None (absent, unreadable or not a verdict: check again)."""
    try:
        with open(path, encoding="utf-8") as f:
            verdict = json.load(f)
    except (OSError, ValueError):
        return None
    ok = isinstance(verdict, dict) and isinstance(verdict.get("compiled"), bool) and isinstance(verdict.get("why"), str)
    if not ok or verdict["compiled"] == bool(verdict["why"]) or not isinstance(verdict.get("probe_lines"), int):
        return None
    return verdict


def store_verdict(path: str, verdict: dict[str, Any]) -> None:
    """Write ``verdict`` to ``path`` atomically (:func:`rpj_tasks.core.storage.write_cache`: flushed
    to disk, then renamed); a failure only costs a check next time."""
    storage.write_cache(path, json.dumps(verdict).encode(), checksum=False)


def load_classifier(url: str, sha256: str | None = None) -> Any:
    """The fastText model at ``url``, as :func:`compiled_or_fasttext` returns it; the check is
    cached per model content (:func:`verdict_path`).  With ``sha256`` (the digest the artifacts'
    ``MANIFEST.json`` records) the file is checked against it first
    (:func:`rpj_tasks.core.storage.local_copy`: a stale cached copy is downloaded again, a local
    file that differs raises :class:`~rpj_tasks.core.storage.ChecksumError`)."""
    import fasttext  # here: importing the stage does not load it (tests/core/test_imports.py)

    local = storage.local_copy(url, sha256=sha256)
    model = fasttext.load_model(local)
    if native is None:
        return compiled_or_fasttext(model, url)
    path = verdict_path(local, sha256)
    earlier = cached_verdict(path)
    predictor, verdict = checked_predictor(model, url, earlier)
    if earlier is None:
        store_verdict(path, verdict)
    return predictor
