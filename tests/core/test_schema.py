"""rpj_tasks.core.schema and the constants of rpj_tasks.core.layout against the literal text of the spec.

Each list is read out of ``docs/spec/rpv2_format.md`` / ``docs/spec/quality_signals.md`` here, so
neither the module nor the spec can change without the other.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from rpj_tasks.core import layout, schema

SPEC = Path(__file__).resolve().parents[2] / "docs" / "spec"
FORMAT = (SPEC / "rpv2_format.md").read_text(encoding="utf-8")
SIGNALS = (SPEC / "quality_signals.md").read_text(encoding="utf-8")

ARROW_TYPES = {"string": pa.string(), "uint64": pa.uint64(), "list\\<binary\\>": pa.list_(pa.binary())}
JSON_TYPES = {"string": str, "int": int, "float": float, "array of int": list}


def section(text: str, heading: str) -> str:
    """The body of the ``## ...`` or ``### ...`` section whose heading starts with ``heading``."""
    match = re.search(rf"^(#+) {re.escape(heading)}.*?$", text, re.M)
    assert match, f"no section {heading!r} in the spec"
    level = len(match.group(1))
    end = re.compile(rf"^#{{1,{level}}} ", re.M).search(text, match.end())
    return text[match.end() : end.start() if end else len(text)]


def table_rows(body: str) -> list[list[str]]:
    """The cells of every body row of the markdown tables in ``body`` (header and rule rows skipped)."""
    rows = []
    for line in body.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|[-| ]+\|", line):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return [row for row in rows if row[0] not in {"#", "Field", "Column", "Partition", "threshold", "Language"}]


def code(cell: str) -> str:
    match = re.fullmatch(r"`([^`]+)`", cell)
    assert match, f"expected one code span, got {cell!r}"
    return match.group(1)


def expand_braces(name: str) -> list[str]:
    """``a_{10,5}grams`` -> ``a_10grams``, ``a_5grams`` (the spec's shorthand)."""
    match = re.search(r"\{([^}]+)\}", name)
    if not match:
        return [name]
    return [name[: match.start()] + part + name[match.end() :] for part in match.group(1).split(",")]


# ---------------------------------------------------------------- documents (§2, §4)


def test_document_fields_are_the_spec_table_in_order() -> None:
    rows = table_rows(section(FORMAT, "2. Documents file"))
    assert [int(row[0]) for row in rows] == list(range(1, 17))
    assert tuple(code(row[1]) for row in rows) == schema.DOCUMENT_FIELDS
    assert {code(row[1]): JSON_TYPES[row[2]] for row in rows} == schema.DOCUMENT_FIELD_TYPES
    assert schema.WET_DOCUMENT_FIELDS == schema.DOCUMENT_FIELDS[: schema.DOCUMENT_FIELDS.index("raw_content") + 1]


def test_required_fields_are_the_reference_readers() -> None:
    match = re.search(r"all 14 fields `([^`]+)` are required", section(FORMAT, "4. Quality-signals file"))
    assert match
    required = match.group(1).split()
    assert len(required) == 14 and frozenset(required) == schema.REQUIRED_DOCUMENT_FIELDS
    assert schema.REQUIRED_DOCUMENT_FIELDS < set(schema.DOCUMENT_FIELDS)


# ---------------------------------------------------------------- quality signals (§4, quality_signals.md §3)


def test_signal_keys_are_the_spec_literal_order() -> None:
    body = section(FORMAT, "4. Quality-signals file")
    block = re.search(r"The 45 keys, in emitted order:\s*```\n(.*?)```", body, re.S)
    assert block
    literal = tuple(key.strip() for key in block.group(1).replace("\n", " ").split(",") if key.strip())
    assert literal == schema.SIGNAL_KEYS
    assert len(set(schema.SIGNAL_KEYS)) == 45


def test_signal_keys_are_the_signals_spec_table() -> None:
    rows = table_rows(section(SIGNALS, "3. The 45 signals"))
    keys, line_keys, numbers = [], [], []
    for row in rows:
        first, _, last = row[0].partition("–")
        names = expand_braces(code(row[1]))
        numbers += list(range(int(first), int(last or first) + 1))
        assert len(names) == numbers[-1] - int(first) + 1
        keys += names
        if row[3] == "L":
            line_keys += names
    assert numbers == list(range(1, 46))
    assert tuple(keys) == schema.SIGNAL_KEYS
    assert tuple(line_keys) == schema.LINE_SIGNAL_KEYS


def test_signals_record_layout() -> None:
    body = section(FORMAT, "4. Quality-signals file")
    layout_block = re.search(r"Record layout.*?```\n(.*?)```", body, re.S)
    assert layout_block
    text = layout_block.group(1)
    metadata = re.search(r'"metadata": \{(.*?)\}', text, re.S)
    assert metadata
    assert tuple(re.findall(r'"(\w+)":', metadata.group(1))) == schema.SIGNALS_METADATA_KEYS
    top = re.sub(r'"metadata": \{.*?\}', '"metadata": M', text, flags=re.S)
    assert tuple(re.findall(r'"(\w+)":', top)) == schema.SIGNALS_RECORD_KEYS


def test_the_signals_writer_follows_the_record_layout() -> None:
    from rpj_tasks.annotate.signals import encode_record, null_record

    record = json.loads(encode_record(null_record("2023-06/0000/en_head.json.gz", 3, {"raw_content": "abc"})))
    assert tuple(record) == schema.SIGNALS_RECORD_KEYS
    assert tuple(record["metadata"]) == schema.SIGNALS_METADATA_KEYS
    assert tuple(record["quality_signals"]) == schema.SIGNAL_KEYS


def test_the_signal_code_builds_the_schema_keys() -> None:
    """The names compute_signals builds from its parts (the ccnet copies, the n-gram sizes, the DSIR
    targets) are exactly the schema's keys, so the ``{key: signals[key] ...}`` reordering drops nothing."""
    from rpj_tasks.annotate.signals import compute
    from rpj_tasks.annotate.signals.models import DSIR_TARGETS
    from rpj_tasks.annotate.signals.repetition import DUPE_NS, TOP_NS

    assert compute.SIGNAL_KEYS is schema.SIGNAL_KEYS
    built = {
        *(f"ccnet_{name}" for name in compute.CCNET_FIELDS),
        "ccnet_bucket",
        *(f"rps_doc_frac_chars_dupe_{n}grams" for n in DUPE_NS),
        *(f"rps_doc_frac_chars_top_{n}gram" for n in TOP_NS),
        *(f"rps_doc_{t}_importance{s}" for t in DSIR_TARGETS for s in ("", "_length_correction")),
    }
    assert built <= set(schema.SIGNAL_KEYS)
    assert [k for k in schema.SIGNAL_KEYS if k in built][:7] == list(schema.SIGNAL_KEYS[:7])


# ---------------------------------------------------------------- MinHash (§5, quality_signals.md §6.7)


def test_minhash_schema_is_the_spec_table() -> None:
    rows = table_rows(section(FORMAT, "5. MinHash file"))
    assert [(code(row[0]), ARROW_TYPES[row[1]]) for row in rows] == list(
        zip(schema.MINHASH_SCHEMA.names, schema.MINHASH_SCHEMA.types)
    )
    bands = {}
    for row in rows[3:]:
        match = re.fullmatch(r"(\d+) bands? × (\d+) rows, each band (\d+) bytes", row[2])
        assert match
        b, r, size = map(int, match.groups())
        assert size == 4 * r
        bands[float(code(row[0]).removeprefix("signature_sim"))] = (b, r)
    assert bands == schema.MINHASH_BANDS
    assert tuple(bands) == schema.MINHASH_THRESHOLDS
    assert tuple(schema.signature_column(t) for t in bands) == schema.MINHASH_SIGNATURE_COLUMNS
    assert "row group every 1000 documents" in section(FORMAT, "5. MinHash file")
    assert schema.MINHASH_ROW_GROUP_SIZE == 1000


def test_minhash_bands_are_the_signals_spec_table() -> None:
    body = section(SIGNALS, "6. MinHash signatures")
    rows = re.findall(r"^\s*\| (\d\.\d) \| (\d+) × (\d+) \| (\d+) \|", body, re.M)
    assert {float(t): (int(b), int(r)) for t, b, r, _ in rows} == schema.MINHASH_BANDS
    assert all(int(size) == 4 * int(r) for _, _, r, size in rows)
    assert f"{schema.MINHASH_NUM_PERM} permutations" in body


def test_minhash_writer_uses_the_schema() -> None:
    from rpj_tasks.annotate import minhash

    assert minhash.SCHEMA is schema.MINHASH_SCHEMA and minhash.COLUMNS == schema.MINHASH_SIGNATURE_COLUMNS
    assert minhash.BANDS == {schema.signature_column(t): schema.MINHASH_BANDS[t] for t in schema.MINHASH_THRESHOLDS}


# ---------------------------------------------------------------- duplicates, clusters (§6, §7)


def test_duplicates_schema_is_the_spec_table() -> None:
    rows = table_rows(section(FORMAT, "6. Duplicates file"))
    assert [(code(row[0]), ARROW_TYPES[row[1]]) for row in rows] == list(
        zip(schema.DUPLICATES_SCHEMA.names, schema.DUPLICATES_SCHEMA.types)
    )
    assert f"**without** the `{schema.DIGEST_PREFIX}` prefix" in section(FORMAT, "6. Duplicates file")


def test_clusters_schema_is_the_spec_list() -> None:
    match = re.search(r"Columns, in order: (.*?)\.\n", section(FORMAT, "7. Fuzzy-dedup clusters"))
    assert match
    columns = re.findall(r"`(\w+)` \((\w+)\)", match.group(1))
    assert [(name, ARROW_TYPES[kind]) for name, kind in columns] == list(
        zip(schema.CLUSTERS_SCHEMA.names, schema.CLUSTERS_SCHEMA.types)
    )


def test_token_counts_schema() -> None:
    assert schema.TOKEN_COUNTS_SCHEMA.names == ["id", "tokens"]
    assert pa.types.is_integer(schema.TOKEN_COUNTS_SCHEMA.field("tokens").type)


# ---------------------------------------------------------------- ids (§3)


def test_id_formats() -> None:
    from rpj_tasks.core.ids import doc_id, id_int

    body = section(FORMAT, "3. Document ids")
    assert '`id = f"{shard_key}/{idx}"`' in body and schema.DOC_ID_FORMAT == "{shard_key}/{idx}"
    key = schema.SHARD_KEY_FORMAT.format(snapshot="2023-06", shard=0, lang="en", bucket="head")
    assert key == layout.shard_key("2023-06", 0, "en", "head") == "2023-06/0000/en_head.json.gz"
    assert doc_id(key, 0) == schema.DOC_ID_FORMAT.format(shard_key=key, idx=0)
    assert id_int(doc_id(key, 0)) == 13812950656272331291  # §3's first vector: above 2**63, so uint64
    assert schema.ID_INT_TYPE == pa.uint64()


# ---------------------------------------------------------------- layout constants (§1)


def test_languages_buckets_and_suffixes_are_the_spec() -> None:
    body = section(FORMAT, "1. Release layout")
    match = re.search(r"`lang` is one of `([^`]+)`\. `bucket` is one of `([^`]+)`", body)
    assert match
    assert tuple(match.group(1).split()) == layout.LANGUAGES
    assert tuple(match.group(2).split()) == layout.BUCKETS
    suffixes = re.search(r"The suffixes are (.*?)\.\n", body)
    assert suffixes
    assert re.findall(r"`([^`]+)`", suffixes.group(1)) == [
        layout.DOCUMENTS_SUFFIX,
        layout.SIGNALS_SUFFIX,
        layout.MINHASH_SUFFIX,
        layout.DUPLICATES_SUFFIX,
    ]
    assert "{shard_id without extension}" + layout.CLUSTERS_SUFFIX in section(FORMAT, "7. Fuzzy-dedup clusters")
    partitions = table_rows(body)
    assert [row[0] for row in partitions if row[2] == "yes"] == ["`head`, `middle` (listing partition `head_middle`)"]
    assert layout.ANNOTATED_BUCKETS == ("head", "middle")


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("en_head.json.gz", ("en", "head")),
        ("nl_middle.json.gz", ("nl", "middle")),
        ("yue_tail.json.gz", ("yue", "tail")),
        ("en_all.json.gz", None),
        ("EN_head.json.gz", None),
        ("en_head.signals.json.gz", None),
        (".en_head.json.gz", None),
        ("en_head.json.gz.tmp", None),
        ("e_head.json.gz", None),
    ],
)
def test_documents_file_pattern(name: str, expected: tuple[str, str] | None) -> None:
    match = layout.DOCUMENTS_FILE.match(name)
    assert (match.groups() if match else None) == expected
    if expected:
        assert layout.file_name(*expected) == name


def test_hash_group() -> None:
    assert layout.hash_group(0, 1, 5000) == range(0, 1)
    assert layout.hash_group(7, 2, 8) == range(6, 8)
    assert layout.hash_group(9, 4, 10) == range(8, 10)  # the last group is cut at num_shards
    assert all(s in layout.hash_group(s, size, 23) for size in (1, 2, 5, 50) for s in range(23))


def test_the_language_defaults_are_layouts() -> None:
    """Every default language list (config, registry, CLI) is layout.LANGUAGES (the DAG Param: tests/test_dags.py)."""
    from rpj_tasks.cli import build_parser
    from rpj_tasks.core.config import SnapshotConfig, load_registry

    assert SnapshotConfig(id="2023-06", storage_root="file:///x", source_base="file:///y").languages == list(layout.LANGUAGES)
    assert load_registry(env={"RPJ_HOME": "/tmp/rpj"})["2023-06"].languages == list(layout.LANGUAGES)
    for argv in (
        ["signal-artifacts", "--version", "v", "--config", "c.json"],
        ["models", "sample"],
        ["models", "install", "--version", "v", "--from", "file:///m"],
    ):
        assert build_parser().parse_args(argv).languages == ",".join(layout.LANGUAGES), argv
