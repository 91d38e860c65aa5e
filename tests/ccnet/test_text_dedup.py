import random

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from rpj_tasks.ccnet.dedup import ShardHashes, remove_duplicate_lines, remove_duplicate_lines_batch
from rpj_tasks.ccnet.normalize import (
    ccnet_normalize,
    content_hashes,
    line_hash,
    line_hashes,
    line_hashes_python,
    normalize_for_dedup,
)
from rpj_tasks.core.schema import DOCUMENT_FIELDS
from rpj_tasks.core.stats import Stats

VECTORS = [  # docs/spec/rpv2_format.md §9.4
    ("Hello World 2024!", "hello world 0000!", 4213747061662223874),
    ("  Hello   world 1999! ", "hello   world 0000!", 16128435427374557619),
    ("", "", 957977401221134810),
    ("« Ceci est “un” test… »", " ceci est un test ", 13882870377976357833),
    ("Tab\there\x85", "tabhere", 12744745973480505280),
    ("Famous Mark Twain Quotes", "famous mark twain quotes", 4686377691549766586),
]


def test_dedup_normalisation_and_hash_vectors():
    for line, norm, h in VECTORS:
        assert normalize_for_dedup(line) == norm
        assert line_hash(norm) == h
    assert line_hashes([v[0] for v in VECTORS]).tolist() == [v[2] for v in VECTORS]
    assert line_hashes([]).dtype == np.dtype("<u8")


def test_fullwidth_digit_is_a_digit_first():
    assert normalize_for_dedup("１２３") == "000"
    assert ccnet_normalize("１") == "0"


def test_ccnet_normalize_example():
    text = "Héllo Wörld 42!\nZweite Zeile — “quoted” …"
    assert ccnet_normalize(text) == 'hello world 00!zweite zeile  -  "quoted" ...'
    assert ccnet_normalize("   ") == ""
    assert ccnet_normalize("Ａ．Ｂ％") == "ａ. ｂ%"  # fullwidth letters are not accents: kept


def docs(*contents, seg="s"):
    return [
        {
            "url": f"u{i}",
            "date_download": "d",
            "digest": "x",
            "length": len(c.encode()),
            "nlines": c.count("\n") + 1,
            "source_domain": "h",
            "title": "t",
            "raw_content": c,
            "cc_segment": seg,
        }
        for i, c in enumerate(contents)
    ]


WORKED = (
    "Home\nWelcome to our shop\nCopyright 2023 Shop Inc.\nWelcome to our shop",
    "Home\nA unique article line\nCopyright 2021 Shop Inc.",
    "Totally different text\nanother line",
)


def test_worked_example():
    ds = docs(*WORKED)
    table = ShardHashes.collect(d["raw_content"].split("\n") for d in ds)
    stats = Stats()
    out = [remove_duplicate_lines(d, table, stats) for d in ds]
    assert (out[0]["raw_content"], out[0]["nlines"], out[0]["line_ids"]) == ("Welcome to our shop", 1, [1])
    assert (out[1]["raw_content"], out[1]["nlines"], out[1]["line_ids"]) == ("A unique article line", 1, [1])
    assert out[2]["raw_content"] == WORKED[2] and out[2]["line_ids"] == [0, 1]
    assert tuple(out[0]) == DOCUMENT_FIELDS[: DOCUMENT_FIELDS.index("line_ids") + 1]  # on-disk order so far
    assert out[0]["original_nlines"] == 4 and out[0]["original_length"] == len(WORKED[0].encode())
    assert out[0]["length"] == len("Welcome to our shop")
    assert stats["dedup.lines_in"] == 9 and stats["dedup.lines_kept"] == 4


def test_document_whose_lines_all_repeat_elsewhere_is_dropped():
    ds = docs("a\nb", "a\nb\nc", "b\na")
    table = ShardHashes.collect(d["raw_content"].split("\n") for d in ds)
    stats = Stats()
    assert remove_duplicate_lines(ds[0], table, stats) is None
    assert remove_duplicate_lines(ds[2], table, stats) is None
    assert remove_duplicate_lines(ds[1], table, stats)["raw_content"] == "c"
    assert stats["dedup.dropped.all_lines_duplicate"] == 2


def test_hash_groups_merge_and_blocks_do_not_dedup_across():
    shard_a = ShardHashes.collect([["shared line", "only a"]])
    shard_b = ShardHashes.collect([["shared line", "only b"]])
    merged = ShardHashes.merge([shard_a, shard_b])
    assert merged.flags_of(line_hashes(["shared line", "only a", "only b"])).tolist() == [1, 0, 0]
    # separate blocks: each shard alone keeps its copy
    assert shard_a.flags_of(line_hashes(["shared line"])).tolist() == [0]
    # a flag from a part survives the merge
    flagged = ShardHashes.collect([["x"], ["x"]])
    assert ShardHashes.merge([flagged, shard_a]).flags_of(line_hashes(["x"])).tolist() == [1]


def test_serialisation_round_trip_is_byte_identical():
    table = ShardHashes.collect([["a", "b", "a"], ["b", "c"]])
    data = table.to_bytes()
    again = ShardHashes.from_bytes(data)
    assert again.to_bytes() == data and len(again) == 3
    assert ShardHashes.collect([["a", "b", "a"], ["b", "c"]]).to_bytes() == data
    for bad in (b"nope" * 4, data[:-1]):
        try:
            ShardHashes.from_bytes(bad)
        except ValueError:
            continue
        raise AssertionError("corrupt hash file accepted")


lines_st = st.lists(st.sampled_from(["", "a", "A", "b 1", "b 2", "c", "x y", "Home", "©"]), min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.lists(lines_st, min_size=1, max_size=6))
def test_properties(contents):
    ds = docs(*("\n".join(c) for c in contents))
    table = ShardHashes.collect(d["raw_content"].split("\n") for d in ds)
    for d, original in zip(ds, contents):
        out = remove_duplicate_lines(dict(d), table, Stats())
        if out is None:
            continue
        ids = out["line_ids"]
        assert ids == sorted(set(ids)) and all(i < out["original_nlines"] for i in ids)
        assert out["raw_content"].split("\n") == [original[i] for i in ids]
        assert out["length"] == len(out["raw_content"]) and out["nlines"] == len(ids)
        norm = [normalize_for_dedup(original[i]) for i in ids]
        assert len(set(norm)) == len(norm)  # no repeats inside the document


def test_collect_is_order_independent_within_documents():
    rng = random.Random(0)
    lines = [f"line {i % 7}" for i in range(30)]
    a = ShardHashes.collect([lines, lines[:5]])
    shuffled = lines[:]
    rng.shuffle(shuffled)
    b = ShardHashes.collect([shuffled, ["line 4", "line 3", "line 2", "line 1", "line 0"]])
    assert a.to_bytes() == b.to_bytes()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_characters="\n", blacklist_categories=("Cs",))), max_size=8))
def test_batched_line_hashes_equal_per_line(lines):
    assert line_hashes(lines).tolist() == [line_hash(normalize_for_dedup(x)) for x in lines]


def test_final_sigma_and_controls_inside_lines():
    lines = ["ΟΔΟΣ", "ΟΔΟΣ ΑΘΗΝΑ", " \x00 a", "x\x85", "\x1f", "Σ"]
    assert line_hashes(lines).tolist() == [line_hash(normalize_for_dedup(x)) for x in lines]


# Literal readings of the spec's steps, to check the fast table-driven implementation against.
SPECIAL = "，。、„”“«»１」「《》´∶：？！（）；–—．～’…━〈〉【】％►"
CTRL = "".join(map(chr, [*range(32), *range(127, 160)]))


def dedup_reference(line):
    import re

    line = line.strip()
    if not line:
        return line
    line = re.sub(r"\d", "0", line.lower())
    return "".join(c for c in line if c not in SPECIAL and c not in CTRL)


def perplexity_reference(text):
    import re
    import unicodedata

    from rpj_tasks.ccnet.normalize import UNICODE_PUNCT

    text = text.strip()
    if not text:
        return text
    text = "".join(c for c in unicodedata.normalize("NFD", text.lower()) if unicodedata.category(c) != "Mn")
    text = re.sub(r"\d", "0", text)
    text = "".join(UNICODE_PUNCT.get(c, c) for c in text)
    return "".join(c for c in text if c not in CTRL)


interesting = st.text(
    alphabet=st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from(SPECIAL + CTRL + "é١２³½ΣAa \n\t"))
)


@settings(max_examples=500, deadline=None)
@given(interesting)
def test_fast_normalisations_equal_literal_reading(text):
    assert normalize_for_dedup(text) == dedup_reference(text)
    assert ccnet_normalize(text) == perplexity_reference(text)


# The compiled paragraph hashes (rpj_tasks.native._speedups.ccnet_line_hashes) against their twin.
NATIVE_TEXT = st.text(
    st.one_of(
        st.characters(codec=None, blacklist_characters="\n"),
        st.sampled_from([*SPECIAL, *CTRL.replace("\n", ""), "Σ", "İ", "\u0663", "\U0001d7ce", "\ud800", "\u2028", "\xa0"]),
    ),
    max_size=60,
)


def test_native_line_hashes_are_built():
    from rpj_tasks import native

    assert native.native is not None and hasattr(native.native, "ccnet_line_hashes")


@settings(max_examples=500, deadline=None)
@given(st.lists(NATIVE_TEXT, max_size=8))
def test_native_line_hashes_equal_python(lines):
    assert line_hashes(lines).tolist() == line_hashes_python(lines).tolist()


def test_native_line_hashes_every_code_point():
    """Every code point but ``\\n``, alone on a line (padded so that stripping does not hide it)
    and in runs of 64, hashes the same in C and in Python: digits, deletions, strip, UTF-8."""
    cps = [cp for cp in range(0x110000) if cp != 0x0A]
    alone = [f"a{chr(cp)}b" for cp in cps]
    runs = ["".join(map(chr, cps[i : i + 64])) for i in range(0, len(cps), 64)]
    for lines in (alone, runs, [chr(cp) for cp in cps[:0x3100]]):
        assert line_hashes(lines).tolist() == line_hashes_python(lines).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "A ", "c1", "c2", "", "Σ"]), max_size=6), max_size=12), st.integers(1, 5))
def test_collect_hashes_in_chunks_equals_one_unique_per_document(docs, chunk):
    per_doc = [np.unique(line_hashes(lines)) for lines in docs]
    keys = np.concatenate(per_doc) if per_doc else np.zeros(0, dtype="<u8")
    expected = ShardHashes._from_occurrences(keys, np.zeros(len(keys), dtype=np.uint8))
    got = ShardHashes.collect_hashes((line_hashes(lines) for lines in docs), chunk=chunk)
    assert got.to_bytes() == expected.to_bytes()
    for lines in docs:
        if lines:
            assert content_hashes("\n".join(lines)).tolist() == line_hashes(lines).tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "A ", "c1", "c2", "", "only", "x"]), max_size=6).map("\n".join), max_size=10))
def test_batch_dedup_equals_one_document_at_a_time(contents):
    import copy

    table = ShardHashes.collect([["a", "b"], ["a", "c0"], ["x"]])
    docs = [{"raw_content": c, "nlines": c.count("\n") + 1, "length": len(c)} for c in contents]
    one_stats, batch_stats = Stats(), Stats()
    one = [remove_duplicate_lines(d, table, one_stats) for d in copy.deepcopy(docs)]
    batch = remove_duplicate_lines_batch(copy.deepcopy(docs), table, batch_stats)
    assert batch == one and batch_stats.to_dict() == one_stats.to_dict()


def test_category_table_is_this_pythons_unicode_database():
    """The bundled Nd/Mn ranges equal a scan of every code point (regenerate the file with
    ``category_ranges()`` if the Python, and so its Unicode version, changes)."""
    import json

    from rpj_tasks.ccnet import normalize

    assert json.loads(normalize.CATEGORY_TABLE.read_text()) == normalize.category_ranges()
    assert normalize._DIGITS == {cp: "0" for cp in range(0x110000) if chr(cp).isdecimal()}


def test_native_perplexity_normalisation_every_code_point():
    """ccnet_normalize with the compiled table step equals its regex twin for every code point
    (alone between letters, and in runs of 64), for lower-casing and NFD included."""
    from rpj_tasks.ccnet.normalize import ccnet_normalize_python

    cps = range(0x110000)
    for text in [f"a{chr(cp)}b" for cp in cps] + ["".join(map(chr, cps[i : i + 64])) for i in range(0, 0x110000, 64)]:
        assert ccnet_normalize(text) == ccnet_normalize_python(text), ascii(text)


@settings(max_examples=500, deadline=None)
@given(NATIVE_TEXT)
def test_native_perplexity_normalisation_equals_python(text):
    from rpj_tasks.ccnet.normalize import ccnet_normalize_python

    assert ccnet_normalize(text) == ccnet_normalize_python(text)


def _rule_line_by_line(doc, table, stats):
    """The §9.4 removal rule read literally, one line at a time (what the batch arrays must give)."""
    lines = doc["raw_content"].split("\n")
    hashes = content_hashes(doc["raw_content"]).tolist()
    flags = table.flags_of(np.array(hashes, dtype="<u8")).tolist()
    stats.inc("dedup.lines_in", len(lines))
    seen, kept = set(), []
    for i, (h, flagged) in enumerate(zip(hashes, flags)):
        if not flagged and h != 0 and h not in seen:
            kept.append(i)
        seen.add(h)
    if not kept:
        stats.inc("dedup.dropped.all_lines_duplicate")
        return None
    doc.setdefault("original_nlines", doc["nlines"])
    doc.setdefault("original_length", doc["length"])
    doc.update(raw_content="\n".join(lines[i] for i in kept), nlines=len(kept), line_ids=kept)
    doc["length"] = len(doc["raw_content"])
    stats.inc("dedup.lines_kept", len(kept))
    return doc


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.lists(st.sampled_from(["a", "b", "A ", "c1", "c2", "", "only", "x", "y", "Σ"]), max_size=8), max_size=12),
    st.lists(st.lists(st.sampled_from(["a", "b", "c0", "x", "y", "only"]), max_size=3), max_size=4),
)
def test_vectorised_dedup_equals_the_rule_line_by_line(contents, shard):
    """The batch keeps exactly the lines the literal rule keeps (unflagged, not hashing to 0, first
    of their hash in their document), with the same counters."""
    import copy

    table = ShardHashes.collect(shard)
    docs = [{"raw_content": "\n".join(c), "nlines": len(c), "length": len("\n".join(c))} for c in contents]
    want_stats, got_stats = Stats(), Stats()
    want = []
    for d in copy.deepcopy(docs):
        if not d["raw_content"]:
            want_stats.inc("dedup.dropped.empty")
            want.append(None)
        else:
            want.append(_rule_line_by_line(d, table, want_stats))
    got = remove_duplicate_lines_batch(copy.deepcopy(docs), table, got_stats)
    assert got == want and got_stats.to_dict() == want_stats.to_dict()
