import datetime as dt

import pytest

from rpj_tasks.core.config import (
    ConfigError,
    SnapshotConfig,
    crawl_id,
    load_registry,
    snapshot_week_start,
    snapshots_released_between,
    validate_shard,
    validate_snapshot,
)
from rpj_tasks.core.plan import format_shards, parse_shards, plan_units, unit_shards


def cfg(**kw) -> SnapshotConfig:
    base = {"id": "2023-06", "storage_root": "file:///tmp/x", "source_base": "file:///tmp/m", "num_shards": 10}
    return SnapshotConfig(**{**base, **kw})


@pytest.mark.parametrize("bad", ["2023-6", "23-06", "2023-06/..", "../2023-06", "2023-00", "2023-54", "CC-MAIN-2023-06", ""])
def test_bad_snapshot_ids_rejected(bad):
    with pytest.raises(ConfigError, match="snapshot"):
        validate_snapshot(bad)


def test_crawl_id():
    assert crawl_id("2023-06") == "CC-MAIN-2023-06"


@pytest.mark.parametrize("bad", [-1, 10, "x", "1; rm", "00010", True, 1.5, "3/../4", "\u0663", "3\n"])
def test_bad_shards_rejected(bad):
    with pytest.raises(ConfigError):
        validate_shard(bad, 10)


def test_five_digit_shards_accepted_as_strings_and_ints():
    assert validate_shard("12345", 20000) == validate_shard(12345, 20000) == 12345


def test_generate_source_only_for_a_local_sample():
    with pytest.raises(ConfigError, match="never writes to a source"):
        cfg(generate_source=True)
    with pytest.raises(ConfigError, match="never writes to a source"):
        cfg(generate_source=True, sample=True, source_base="https://example.org/")
    assert cfg(generate_source=True, sample=True).generate_source


def test_parse_shards():
    assert parse_shards(None, 5) == [0, 1, 2, 3, 4]
    assert parse_shards("0-2, 4", 5) == [0, 1, 2, 4]
    assert parse_shards([3, "0-1", 3], 5) == [0, 1, 3]
    with pytest.raises(ConfigError):
        parse_shards(["3-1"], 5)
    with pytest.raises(ConfigError, match="out of range"):
        parse_shards("0-5", 5)


def test_registry_loads_84_snapshots_and_sample(monkeypatch):
    monkeypatch.setenv("RPJ_STORAGE_ROOT", "s3://bucket/rpv2")
    reg = load_registry()
    real = [c for c in reg.values() if not c.sample]
    assert len(real) == 84 and real[0].id == "2014-15" and real[-1].id == "2023-14"
    assert all(c.num_shards == 5000 and c.storage_root == "s3://bucket/rpv2" for c in real)
    assert reg["2023-06"].dag_id == "rpv2_2023_06"
    sample = reg["2000-01"]
    assert sample.sample and sample.dag_id == "rpv2_sample" and sample.num_shards == 4


def test_dsir_hash_mode_setting():
    from rpj_tasks.annotate.hashseed import HASH_MODES
    from rpj_tasks.core.config import DSIR_HASH_MODES

    assert DSIR_HASH_MODES == HASH_MODES == ("cpython-seed42", "stable")  # defined once, in config
    assert cfg().dsir_hash_mode == "cpython-seed42" and cfg(dsir_hash_mode="stable").dsir_hash_mode == "stable"
    assert all(c.dsir_hash_mode == "cpython-seed42" for c in load_registry().values())
    with pytest.raises(ConfigError, match="dsir_hash_mode must be one of cpython-seed42, stable, got 'seed7'"):
        cfg(dsir_hash_mode="seed7")


def test_max_record_bytes_setting(tmp_path):
    from rpj_tasks.core.config import DEFAULT_MAX_RECORD_BYTES

    assert DEFAULT_MAX_RECORD_BYTES == 4 << 20 == cfg().max_record_bytes
    assert all(c.max_record_bytes == DEFAULT_MAX_RECORD_BYTES for c in load_registry().values())  # the YAML default
    assert cfg(max_record_bytes=1 << 16).max_record_bytes == 65536
    for bad in (0, -1, (1 << 16) - 1, (1 << 28) + 1, True, 4.0, "4194304"):
        with pytest.raises(ConfigError, match="max_record_bytes must be an integer in 65536..268435456"):
            cfg(max_record_bytes=bad)
    reg = tmp_path / "r.yaml"
    reg.write_text(
        "defaults: {storage_root: file:///x, source_base: file:///y, max_record_bytes: 1048576}\nsnapshots:\n  - {id: '2023-06'}\n"
    )
    assert load_registry(reg)["2023-06"].max_record_bytes == 1 << 20


def test_registry_rejects_unknown_keys(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("defaults: {storage_root: file:///x, source_base: file:///y}\nsnapshots:\n  - {id: '2023-06', shardz: 3}\n")
    with pytest.raises(ConfigError, match="unknown keys"):
        load_registry(p)


def test_monthly_interval_mapping():
    assert snapshot_week_start("2023-06") == dt.date(2023, 2, 6)
    ids = ["2022-49", "2023-06", "2023-14", "2014-15"]
    feb = snapshots_released_between(ids, dt.datetime(2023, 2, 1), dt.datetime(2023, 3, 1))
    assert feb == ["2023-06"]
    assert snapshots_released_between(ids, dt.date(2023, 3, 1), dt.date(2023, 4, 1)) == []
    assert snapshots_released_between(ids, dt.date(2023, 4, 1), dt.date(2023, 5, 1)) == ["2023-14"]
    # every registry snapshot falls in exactly one month
    reg = [c.id for c in load_registry().values() if not c.sample]
    months = [(y, m) for y in range(2014, 2024) for m in range(1, 13)]
    hits = []
    for y, m in months:
        start = dt.date(y, m, 1)
        end = dt.date(y + (m == 12), m % 12 + 1, 1)
        hits += snapshots_released_between(reg, start, end)
    assert sorted(hits) == sorted(reg)


def test_plan_units_groups_and_limits():
    c = cfg(num_shards=10, hash_group_size=3)
    units = plan_units(c, shards="4,8", max_units=1000)
    assert [u["mine"] for u in units] == ["4", "8"]
    assert [u["hashes"] for u in units] == ["3-5", "6-8"]
    assert [unit_shards(u, "hashes") for u in units] == [[3, 4, 5], [6, 7, 8]]
    allu = plan_units(c, max_units=2)
    assert len(allu) == 2
    assert sorted(s for u in allu for s in unit_shards(u)) == list(range(10))
    # the last group is truncated at num_shards
    assert unit_shards(allu[-1], "hashes")[-1] == 9
    assert unit_shards(plan_units(c, limit=2)[0]) == [0, 1]


@pytest.mark.parametrize("shards", [[], [0], [0, 1, 2, 3, 7], [5, 9, 10, 11, 4999], list(range(0, 5000, 2))])
def test_format_shards_round_trips(shards):
    text = format_shards(shards)
    assert parse_shards(text, 5000) == sorted(shards) or (shards == [] and text == "")
    if shards:
        assert len(text) <= len(",".join(map(str, shards)))


def test_plan_of_a_real_crawl_keeps_every_xcom_small(tmp_path):
    """90,000 segments into 5,000 shards: the plan's XComs (units, listing descriptor) stay under
    64 KB and the tasks resolve every segment exactly once from the staged listing."""
    import gzip
    import json

    from rpj_tasks.download.listing import read_listing, shard_segments, stage_listing

    segments = [f"crawl-data/CC-MAIN-2023-06/segments/{i:013d}.{i % 7}/wet/CC-MAIN-{i:06d}.warc.wet.gz" for i in range(90000)]
    source = tmp_path / "source"
    listing_file = source / "crawl-data" / "CC-MAIN-2023-06" / "wet.paths.gz"
    listing_file.parent.mkdir(parents=True)
    listing_file.write_bytes(gzip.compress("\n".join(segments).encode()))
    c = cfg(num_shards=5000, storage_root=(tmp_path / "data").as_uri(), source_base=source.as_uri())
    listing = stage_listing(c.source_base, c.crawl, c.storage_root)
    units = plan_units(c, max_units=1000)
    assert len(units) <= 1000
    assert len(json.dumps(units)) < 64 * 1024
    assert len(json.dumps(max(units, key=lambda u: len(json.dumps(u))))) < 200
    assert len(json.dumps(listing)) < 1024 and listing["segments"] == 90000
    assert sum(len(unit_shards(u)) for u in units) == 5000
    resolved = read_listing(listing)
    seen = [seg for u in units for s in unit_shards(u) for seg in shard_segments(resolved, s, c.num_shards)]
    assert seen == segments


def test_release_and_stats_layout_urls():
    from rpj_tasks.core import layout

    root = "s3://bucket/rpv2"
    assert layout.signals_url(root, "2023-06", 7, "en", "head") == (
        "s3://bucket/rpv2/quality_signals/2023-06/0007/en_head.signals.json.gz"
    )
    assert layout.minhash_url(root, "2023-06", 7, "de", "middle") == (
        "s3://bucket/rpv2/minhash/2023-06/0007/de_middle.minhash.parquet"
    )
    assert layout.annotate_stats_url(root, "2023-06", 7) == "s3://bucket/rpv2/stats/annotate/2023-06/0007.json"
    assert layout.documents_url(root, "2023-06", 7, "en", "head").endswith("/documents/2023-06/0007/en_head.json.gz")
    with pytest.raises(ValueError):
        layout.signals_url(root, "2023/06", 7, "en", "head")


@pytest.mark.parametrize("bad", ["2000-01\n", "\u0662000-01", "2000-0\u0661"])
def test_identifiers_are_full_ascii_matches(bad):
    with pytest.raises(ConfigError, match="invalid snapshot id"):
        validate_snapshot(bad)


def test_language_with_trailing_newline_rejected():
    from rpj_tasks.core.config import validate_languages

    with pytest.raises(ConfigError, match="invalid language code"):
        validate_languages(["en\n"])


def test_missing_week_and_missing_registry_key_are_named(tmp_path):
    with pytest.raises(ConfigError, match="week 99 does not exist"):
        validate_snapshot("1999-99")
    reg = tmp_path / "r.yaml"
    reg.write_text('defaults:\n  source_base: file:///x\nsnapshots:\n  - {id: "2023-06"}\n')
    with pytest.raises(ConfigError, match="snapshot '2023-06' has no storage_root"):
        load_registry(reg)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("s3://AKIAKEY:Sekr1tPW@bucket/", "carries credentials; for s3:// put them in the storage connection"),
        ("htp://x/", "protocol 'htp' is not known to fsspec"),
        ("http://h:99999/", "Port out of range"),
        ("file:///data\n", "expected a URL"),
    ],
)
def test_storage_urls_are_checked_and_shown_redacted(url, message):
    from rpj_tasks.core.config import SnapshotConfig

    with pytest.raises(ConfigError, match=message) as err:
        SnapshotConfig(id="2023-06", storage_root=url, source_base="https://data.commoncrawl.org/")
    assert "Sekr1tPW" not in str(err.value)
    assert SnapshotConfig(id="2023-06", storage_root="file:///d", source_base="https://u:p@h/").source_base == "https://u:p@h/"


def test_a_missing_or_broken_registry_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="No such file or directory"):
        load_registry(tmp_path / "missing.yaml")
    (tmp_path / "bad.yaml").write_text("snapshots: [\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_registry(tmp_path / "bad.yaml")


def test_versions_are_one_path_component():
    from rpj_tasks.core import layout

    assert layout.models_url("file:///r", "sample-v1") == "file:///r/artifacts/ccnet/sample-v1"
    for bad in ("../..", "a/b", "v1\n", "\uff561", " v1", "", ".hidden"):
        with pytest.raises(ConfigError, match="invalid models version"):
            layout.models_url("file:///r", bad)
        with pytest.raises(ConfigError, match="invalid signal artifacts version"):
            layout.signal_artifacts_url("file:///r", bad)
