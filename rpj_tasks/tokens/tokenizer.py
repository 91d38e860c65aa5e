"""The tokenizer of the token counts: Mistral-7B-v0.1's, counted as the reference's ``token_count.py`` does.

The reference counts ``len(Tokenizer.encode(raw_content).tokens)`` with Hugging Face ``tokenizers``
and Mistral-7B-v0.1's ``tokenizer.json``: special tokens included, so every count holds the BOS
``<s>``.  Offline there is no ``tokenizer.json``; the model's SentencePiece file ships in the
``mistral-common`` wheel (``mistral_common/data/tokenizer.model.v1``, sha256 checked at load:
:data:`MISTRAL_7B_V01_SHA256`).  Two ways to count from it:

* :class:`SentencePieceCounter` (the default, fast): SentencePiece's own BPE encoder, plus what the
  ``tokenizers`` form does around it: the literal special-token strings ``<unk>``, ``<s>``, ``</s>``
  in a text are one token each (``tokenizers`` matches its added tokens in the raw text before the
  model runs), the text between them is encoded piece by piece (each piece gets SentencePiece's
  dummy prefix ``▁``, as the ``Prepend("▁")`` normalizer does per piece), and the BOS adds one.
* :func:`tokenizers_from_sentencepiece`: the ``tokenizers`` form built from the model file as
  transformers' ``LlamaConverter`` (legacy mode) builds it: BPE over the SentencePiece vocabulary,
  merges = every split of a piece into two pieces, ordered by the merged piece's score (ties by
  the two pieces' ids), ``byte_fallback``, ``fuse_unk``, normalizer ``Prepend("▁")`` +
  ``Replace(" ", "▁")``, no pre-tokenizer, template ``<s> $A``, the three special tokens added.
  :class:`TokenizersCounter` counts with it, or with any local ``tokenizer.json``.

``tests/tokens/test_tokenizer.py`` shows that both give the same count for every line of the
fixture corpora in en, de, fr, es and it (and for hand-made edge cases).  What is **not** proven
offline: that this ``tokenizers`` form equals the ``tokenizer.json`` published with
Mistral-7B-v0.1 (not available here); docs/PIPELINE.md §5 says more.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import re
from typing import Any, Protocol

from rpj_tasks.core import storage
from rpj_tasks.core.errors import ConfigError, PermanentError

#: The default tokenizer's name in records (the reference's ``token_count.py`` model).
DEFAULT_NAME = "mistral-7b-v0.1"
#: Where its SentencePiece model is, inside the ``mistral-common`` package.
MISTRAL_MODEL_IN_PACKAGE = ("mistral_common", "data/tokenizer.model.v1")
MISTRAL_7B_V01_SHA256 = "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055"
#: Added special tokens of the ``tokenizers`` form (ids 0, 1, 2 of the SentencePiece model).
SPECIAL_TOKENS: tuple[str, ...] = ("<unk>", "<s>", "</s>")
BOS = "<s>"
_SPECIAL_RE = re.compile("|".join(re.escape(t) for t in SPECIAL_TOKENS))
_SP_BPE = 2  # ModelProto.TrainerSpec.ModelType.BPE
_SP_NORMAL, _SP_USER_DEFINED = 1, 4


class TokenizerError(PermanentError):
    """The tokenizer cannot be loaded, or is not the one expected."""


def file_sha256(path: str) -> str:
    return str(storage.digest(path)["sha256"])


def mistral_model_path() -> str:
    """The path of ``tokenizer.model.v1`` in the installed ``mistral-common`` (its package is not imported)."""
    package, rel = MISTRAL_MODEL_IN_PACKAGE
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise TokenizerError(f"the {package} package is not installed: it ships the Mistral-7B-v0.1 tokenizer model ({rel})")
    path = os.path.join(list(spec.submodule_search_locations)[0], *rel.split("/"))
    if not os.path.isfile(path):
        raise TokenizerError(f"{path}: not found in the installed {package} (the pinned version ships it)")
    return path


def _model_proto(data: bytes) -> Any:
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()  # type: ignore[attr-defined]
    proto.ParseFromString(data)
    return proto


def _check_proto(proto: Any, path: str) -> None:
    """What the counting and the conversion rely on; anything else is refused."""
    norm, trainer = proto.normalizer_spec, proto.trainer_spec
    expected = {
        "model_type (BPE)": (trainer.model_type, _SP_BPE),
        "byte_fallback": (trainer.byte_fallback, True),
        "normalizer": (norm.name, "identity"),
        "add_dummy_prefix": (norm.add_dummy_prefix, True),
        "remove_extra_whitespaces": (norm.remove_extra_whitespaces, False),
        "treat_whitespace_as_suffix": (trainer.treat_whitespace_as_suffix, False),
        "first pieces": ([p.piece for p in proto.pieces[:3]], list(SPECIAL_TOKENS)),
    }
    wrong = {k: got for k, (got, want) in expected.items() if got != want}
    if wrong:
        raise TokenizerError(f"{path}: not a SentencePiece model of the Llama/Mistral kind this counter supports: {wrong}")


class TokenCounter(Protocol):
    #: Goes into the stage's inputs fingerprint: ``name``, ``kind``, ``sha256`` of the file.
    identity: dict[str, str]

    def count(self, texts: list[str]) -> list[int]:
        """Tokens of each text, BOS included."""
        ...


class SentencePieceCounter:
    """Counts with SentencePiece (see the module doc for the rules around it)."""

    def __init__(self, path: str, *, sha256: str = MISTRAL_7B_V01_SHA256, name: str = DEFAULT_NAME) -> None:
        import sentencepiece

        with open(path, "rb") as f:
            data = f.read()
        digest = hashlib.sha256(data).hexdigest()
        if digest != sha256:
            raise TokenizerError(
                f"{path}: sha256 {digest}, expected {sha256} ({name}); the installed package is not the pinned one "
                "or the file was changed"
            )
        _check_proto(_model_proto(data), path)
        self.sp = sentencepiece.SentencePieceProcessor(model_proto=data)
        self.identity = {"name": name, "kind": "sentencepiece", "sha256": digest}

    def _pieces(self, text: str) -> int:
        """Tokens of a text that holds special-token strings, BOS not included."""
        n, start = 0, 0
        for m in _SPECIAL_RE.finditer(text):
            if m.start() > start:
                n += len(self.sp.encode(text[start : m.start()]))
            n += 1
            start = m.end()
        if start < len(text):
            n += len(self.sp.encode(text[start:]))
        return n

    def count(self, texts: list[str]) -> list[int]:
        plain = [i for i, t in enumerate(texts) if "<" not in t or _SPECIAL_RE.search(t) is None]
        out = [0] * len(texts)
        if plain:
            for i, ids in zip(plain, self.sp.encode([texts[i] for i in plain], num_threads=1)):
                out[i] = len(ids) + 1
        if len(plain) < len(texts):
            done = set(plain)
            for i, t in enumerate(texts):
                if i not in done:
                    out[i] = self._pieces(t) + 1
        return out


class TokenizersCounter:
    """Counts with Hugging Face ``tokenizers``: ``len(tokenizer.encode(text).tokens)``, special tokens
    added (the reference's ``token_count.py``); truncation and padding, if the file sets them, are off."""

    def __init__(self, tokenizer: Any, identity: dict[str, str]) -> None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self.tokenizer, self.identity = tokenizer, identity

    @classmethod
    def from_file(cls, path: str) -> TokenizersCounter:
        from tokenizers import Tokenizer

        try:
            tokenizer = Tokenizer.from_file(path)
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exception for a bad file
            raise TokenizerError(f"{path}: not a tokenizers tokenizer.json: {exc}") from exc
        return cls(tokenizer, {"name": "tokenizer.json", "kind": "tokenizers", "sha256": file_sha256(path)})

    def count(self, texts: list[str]) -> list[int]:
        return [len(enc.tokens) for enc in self.tokenizer.encode_batch(texts)]


def tokenizers_from_sentencepiece(path: str) -> Any:
    """The ``tokenizers.Tokenizer`` of a Llama/Mistral SentencePiece BPE model (transformers'
    ``LlamaConverter`` in legacy mode, re-implemented from the model proto; see the module doc)."""
    from tokenizers import AddedToken, Tokenizer, decoders, normalizers, processors
    from tokenizers.models import BPE

    with open(path, "rb") as f:
        proto = _model_proto(f.read())
    _check_proto(proto, path)
    pieces = [p.piece for p in proto.pieces]
    vocab = {piece: i for i, piece in enumerate(pieces)}
    # LlamaConverter.vocab: the three special pieces score 0.0, the others their own score.
    scores = [0.0] * 3 + [p.score for p in proto.pieces[3:]]
    merges: list[tuple[str, str, float]] = []
    for piece, score in zip(pieces, scores):  # SentencePieceExtractor.extract(vocab_scores)
        local = [(piece[:k], piece[k:], score) for k in range(1, len(piece)) if piece[:k] in vocab and piece[k:] in vocab]
        merges.extend(sorted(local, key=lambda m: (vocab[m[0]], vocab[m[1]])))
    merges.sort(key=lambda m: m[2], reverse=True)  # stable: ties keep the order above
    model = BPE(vocab, [(left, right) for left, right, _ in merges], unk_token=pieces[0], fuse_unk=True, byte_fallback=True)
    tokenizer = Tokenizer(model)
    tokenizer.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in SPECIAL_TOKENS])
    tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS}:0 $A:0", pair=f"{BOS}:0 $A:0 {BOS}:1 $B:1", special_tokens=[(BOS, vocab[BOS])]
    )
    tokenizer.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return tokenizer


@functools.lru_cache(maxsize=4)
def load_counter(tokenizer_json: str = "") -> TokenCounter:
    """The counter of a run, loaded once per process: Mistral-7B-v0.1 with SentencePiece (default),
    or ``tokenizers`` with a local ``tokenizer.json`` (a path or ``file://`` URL)."""
    if not tokenizer_json:
        return SentencePieceCounter(mistral_model_path())
    path = tokenizer_json.removeprefix("file://")
    if "://" in path:
        raise ConfigError(f"tokenizer_json must be a local file (a path or file:// URL), got {tokenizer_json!r}")
    if not os.path.isfile(path):
        raise TokenizerError(f"tokenizer_json {path}: no such file")
    return TokenizersCounter.from_file(path)
