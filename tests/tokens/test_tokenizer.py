"""The token counter: Mistral-7B-v0.1's SentencePiece model from the mistral-common wheel, counted as
the reference's ``token_count.py`` counts with ``tokenizers`` (BOS included), and the ``tokenizers``
form built from the same model giving the same count for every document of the fixture corpora."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from rpj_tasks.core.stats import Stats
from rpj_tasks.download.wet import iter_documents
from rpj_tasks.tokens import tokenizer as tk
from rpj_tasks.tokens.tokenizer import (
    MISTRAL_7B_V01_SHA256,
    SentencePieceCounter,
    TokenizerError,
    TokenizersCounter,
    load_counter,
    mistral_model_path,
    tokenizers_from_sentencepiece,
)

LANGS = ("en", "de", "fr", "es", "it")

#: Hand-checked: the pieces SentencePiece gives (listed), plus one BOS.
HAND_CHECKED = [
    ("", 1),  # BOS only
    ("Hello world", 3),  # ▁Hello ▁world
    (" ", 2),  # ▁▁ (the dummy prefix and the space)
    ("\n", 3),  # ▁ <0x0A> (byte fallback)
    ("é", 2),  # ▁é
    ("Zürich 2023", 9),  # ▁Z ür ich ▁ 2 0 2 3 (digits one by one)
    ("a<s>b", 4),  # ▁a, <s> as the special token, ▁b: as tokenizers matches added tokens in the text
    ("<s>", 2),  # the special token alone
    ("x</s><unk>", 4),  # ▁x </s> <unk>
]


@pytest.fixture(scope="module")
def sp() -> SentencePieceCounter:
    counter = load_counter()
    assert isinstance(counter, SentencePieceCounter)
    return counter


@pytest.fixture(scope="module")
def hf() -> TokenizersCounter:
    return TokenizersCounter(
        tokenizers_from_sentencepiece(mistral_model_path()), {"name": "converted", "kind": "tokenizers", "sha256": ""}
    )


def test_the_model_comes_from_the_wheel_and_is_checked(sp: SentencePieceCounter) -> None:
    assert mistral_model_path().replace("\\", "/").endswith("mistral_common/data/tokenizer.model.v1")
    assert sp.identity == {"name": "mistral-7b-v0.1", "kind": "sentencepiece", "sha256": MISTRAL_7B_V01_SHA256}
    assert MISTRAL_7B_V01_SHA256.startswith("dadfd56d") and MISTRAL_7B_V01_SHA256.endswith("5e134055")
    assert sp.sp.get_piece_size() == 32000 and sp.sp.bos_id() == 1


def test_a_model_with_another_digest_is_refused(tmp_path: Path) -> None:
    data = bytearray(Path(mistral_model_path()).read_bytes())
    data[-1] ^= 1
    (tmp_path / "m.model").write_bytes(bytes(data))
    with pytest.raises(TokenizerError, match="sha256 .* expected dadfd56d"):
        SentencePieceCounter(str(tmp_path / "m.model"))


@pytest.mark.parametrize(("text", "expected"), HAND_CHECKED)
def test_counts_are_sentencepiece_pieces_plus_bos(sp: SentencePieceCounter, text: str, expected: int) -> None:
    assert sp.count([text]) == [expected]
    if "<" not in text:
        assert expected == len(sp.sp.encode(text)) + 1


def fixture_texts(shared: Path) -> dict[str, list[str]]:
    """Real text of the fixtures per language: the 1,000 LID sentences (each, and the whole file as one
    document), the test-vector documents (en, de) and the WET pages (2014 and 2024 Common Crawl)."""
    texts: dict[str, list[str]] = {}
    for lang in LANGS:
        lines = (shared / "lid" / f"sentences.{lang}.txt").read_text(encoding="utf-8").splitlines()
        texts[lang] = [*lines, "\n".join(lines)]
    for lang in ("en", "de"):
        for line in (shared / "testvectors" / f"docs_{lang}.jsonl").read_text(encoding="utf-8").splitlines():
            texts[lang].append(json.loads(line)["raw_content"])
    wet = []
    for path in sorted((shared / "wet").glob("*.wet*")):
        wet += [doc["raw_content"] for doc in iter_documents(io.BytesIO(path.read_bytes()), str(path), Stats(), min_len=1)]
    texts["wet"] = wet
    return texts


EDGE_CASES = [
    "",
    " ",
    "   leading and trailing   ",
    "a<s>b",
    "<s></s><unk>",
    "<<s>>",
    " <s> ",
    "<s",
    "x\u2581y \u2581",
    "日本語のテキスト🙂 \U0001f600",
    "\x00\x01\x7f",
    "tab\tcr\r\nlf\n\n",
    "3½ 12345 0.5",
    "\ufeffBOM",
    "a" * 5000,
]


def test_sentencepiece_and_the_tokenizers_form_agree_on_the_fixture_corpora(
    shared_data: Path, sp: SentencePieceCounter, hf: TokenizersCounter
) -> None:
    texts = fixture_texts(shared_data)
    assert all(len(texts[lang]) >= 1001 for lang in LANGS) and len(texts["wet"]) >= 4
    for name, batch in [*texts.items(), ("edge", EDGE_CASES)]:
        got, want = sp.count(batch), hf.count(batch)
        differ = [(t[:60], a, b) for t, a, b in zip(batch, got, want) if a != b]
        assert not differ, f"{name}: {len(differ)} of {len(batch)} differ, e.g. {differ[:3]}"
        assert sum(got) > len(batch)


def test_a_local_tokenizer_json_counts_with_tokenizers(tmp_path: Path, sp: SentencePieceCounter) -> None:
    path = tmp_path / "tokenizer.json"
    tokenizers_from_sentencepiece(mistral_model_path()).save(str(path))
    counter = load_counter(str(path))
    assert isinstance(counter, TokenizersCounter)
    assert counter.identity == {"name": "tokenizer.json", "kind": "tokenizers", "sha256": tk.file_sha256(str(path))}
    texts = [t for t, _ in HAND_CHECKED]
    assert counter.count(texts) == sp.count(texts) == [n for _, n in HAND_CHECKED]
    with pytest.raises(TokenizerError, match="no such file"):
        load_counter(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(TokenizerError, match="not a tokenizers"):
        load_counter(str(tmp_path / "bad.json"))
