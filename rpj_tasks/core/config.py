"""The snapshot registry (``config/snapshots.yaml``) and validation of ids and shard numbers.

Every identifier that ends up in a path is validated here first, so that a malformed snapshot id
or shard number is rejected before any URL is built.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from dataclasses import MISSING, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from rpj_tasks.core.errors import ConfigError
from rpj_tasks.core.layout import LANGUAGES, SNAPSHOT_RE, validate_snapshot, validate_version
from rpj_tasks.core.redact import redact

__all__ = ["LANGUAGES", "SNAPSHOT_RE", "ConfigError", "validate_snapshot"]  # re-exported: long-standing import paths

CRAWL_RE = re.compile(r"CC-MAIN-([0-9]{4}-[0-9]{2})")
LANG_RE = re.compile(r"[a-z]{2,3}")
# Identifiers become paths: every check is a full match (no trailing newline, ASCII digits only).
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-((?:[^{}]|\$\{[^}]*\})*))?\}")

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Files shipped inside the package (word lists, cc_net cutoffs, their licenses).
PACKAGE_DATA = Path(__file__).resolve().parents[1] / "data"
DEFAULT_REGISTRY = REPO_ROOT / "config" / "snapshots.yaml"


def crawl_id(snapshot: str) -> str:
    return f"CC-MAIN-{validate_snapshot(snapshot)}"


def snapshot_of_crawl(crawl: str) -> str:
    m = CRAWL_RE.fullmatch(crawl) if isinstance(crawl, str) else None
    if not m:
        raise ConfigError(f"invalid crawl id {crawl!r}: expected CC-MAIN-YYYY-WW")
    return validate_snapshot(m.group(1))


def validate_shard(shard: Any, num_shards: int) -> int:
    """Return ``shard`` as an int if it is a valid shard number in ``[0, num_shards)``."""
    if isinstance(shard, bool) or not isinstance(shard, int | str):
        raise ConfigError(f"invalid shard {shard!r}: expected an integer")
    if isinstance(shard, str) and not re.fullmatch(r"[0-9]{1,6}", shard):
        raise ConfigError(f"invalid shard {shard!r}: expected an integer 0..{num_shards - 1}")
    value = int(shard)
    if not 0 <= value < num_shards:
        raise ConfigError(f"shard {value} out of range: this snapshot has {num_shards} shards (0..{num_shards - 1})")
    return value


def validate_url(url: Any, what: str) -> str:
    """``url`` if it is a usable storage URL (or a plain local path), else ConfigError.

    A known fsspec protocol, a valid port, and credentials only where the protocol takes them from
    the URL (``http``/``https``): an object store's keys belong in its connection (``aws_default``),
    never in a URL that ends up in paths and messages.  Messages show the URL redacted.
    """
    import urllib.parse

    import fsspec

    if not isinstance(url, str) or not url or any(c in url for c in "\n\r\t\x00"):
        raise ConfigError(f"{what}: expected a URL such as s3://bucket/prefix or file:///data, got {redact(repr(url))}")
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    known = set(fsspec.available_protocols())  # names only: no filesystem is imported (DAG parsing)
    try:
        if parts.scheme not in known:
            raise ValueError(f"protocol {parts.scheme!r} is not known to fsspec")
        parts.port  # noqa: B018 - raises ValueError when out of range or not a number
    except ValueError as exc:
        raise ConfigError(f"{what}: {redact(url)} is not usable: {redact(str(exc))}") from None
    if "@" in parts.netloc and parts.scheme not in ("http", "https"):
        raise ConfigError(
            f"{what}: {redact(url)} carries credentials; for {parts.scheme}:// put them in the "
            "storage connection (aws_default) or the environment, never in the URL"
        )
    return url


def validate_languages(langs: Any) -> list[str]:
    if isinstance(langs, str):  # "en,de" (spaces around commas allowed); anything else in a code is refused
        langs = [x.strip(" ") for x in langs.split(",") if x.strip(" ")]
    if not isinstance(langs, list | tuple) or not langs:
        raise ConfigError(f"invalid languages {langs!r}: expected a non-empty list such as [en, de]")
    for lang in langs:
        if not isinstance(lang, str) or not LANG_RE.fullmatch(lang):
            raise ConfigError(f"invalid language code {lang!r}: expected a 2- or 3-letter ISO code")
    if len(set(langs)) != len(langs):
        raise ConfigError(f"duplicate language in {langs!r}")
    return list(langs)


def snapshot_week_start(snapshot: str) -> dt.date:
    """Monday of ISO week WW of year YYYY: the date a crawl ``CC-MAIN-YYYY-WW`` is taken to be released."""
    year, week = (int(x) for x in validate_snapshot(snapshot).split("-"))
    try:
        return dt.date.fromisocalendar(year, week, 1)
    except ValueError as exc:
        raise ConfigError(f"snapshot {snapshot!r}: {year} has no ISO week {week}") from exc


def _default_languages() -> list[str]:
    return list(LANGUAGES)


#: DSIR feature-hash modes, defined here (not in ``rpj_tasks.annotate.hashseed``, which imports them)
#: so that DAG parsing does not import the signal code.
DSIR_HASH_MODES = ("cpython-seed42", "stable")

#: The default ``max_record_bytes``: a WET record whose block is larger is dropped unread
#: (``wet.too_large``).  Common Crawl truncates every fetched payload at 1 MiB (WARC files since
#: 2013), and the text extracted from it is smaller than the payload except for charset
#: conversion: a single-byte charset turns into at most 3 UTF-8 bytes per byte (e.g. Thai
#: TIS-620), so a real WET text block stays under ~3 MiB; 4 MiB leaves a margin over that worst
#: case.  The largest conversion block in the real WET files under ``tests/fixtures/wet/`` (Common
#: Crawl 2014 and 2024, cc_net's sample) is 4,456 bytes.  Raise it per snapshot for crawls fetched
#: with a larger content limit (Common Crawl plans 5 MiB).
DEFAULT_MAX_RECORD_BYTES = 4 << 20
#: The accepted range of ``max_record_bytes``: below 64 KiB ordinary pages would be dropped; above
#: 256 MiB one record (held whole, then copied by each CCNet step) could exhaust a worker's memory.
MAX_RECORD_BYTES_RANGE = (1 << 16, 1 << 28)

#: Exact-dedup scopes (``rpj_tasks.dedup.exact``): ``release`` (RPv2: across every release-scope
#: snapshot under the storage root) or ``snapshot`` (each snapshot alone).
DEDUP_SCOPES = ("release", "snapshot")
#: The thresholds with a MinHash signature column (rpv2_format.md §5), for the fuzzy clusters.
CLUSTERS_THRESHOLDS = (0.7, 0.8, 0.9, 1.0)


@dataclass(frozen=True)
class SnapshotConfig:
    """Settings of one snapshot (registry defaults merged with the entry)."""

    id: str
    storage_root: str
    source_base: str
    languages: list[str] = field(default_factory=_default_languages)
    num_shards: int = 5000
    hash_group_size: int = 1
    min_len: int = 300
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    lid_threshold: float = 0.5
    lid_model: str = ""
    models_version: str = "ccnet-official"
    signals_version: str = "rpv2-official"
    dsir_hash_mode: str = "cpython-seed42"
    download_pool: str = "rpj_commoncrawl"
    download_pool_slots: int = 4
    # Exact dedup (duplicates/) and fuzzy clusters (clusters/): see config/snapshots.yaml.
    dedup_scope: str = "release"
    dedup_partitions: int = 256
    dedup_memory_budget: int = 2 << 30
    dedup_queue: str = "dedup"
    clusters_threshold: float = 0.8
    clusters_partitions: int = 8
    # Token counts (rpj_tasks/tokens): "" = Mistral-7B-v0.1 from the mistral-common wheel, else a
    # local tokenizer.json (path or file:// URL) counted with Hugging Face tokenizers.
    tokenizer_json: str = ""
    dag_id: str = ""
    sample: bool = False
    # The offline sample only: generate its mirror at source_base (a file:// URL) when absent.
    generate_source: bool = False

    def __post_init__(self) -> None:
        validate_snapshot(self.id)
        validate_languages(self.languages)
        for key in ("storage_root", "source_base"):
            validate_url(getattr(self, key), f"{self.id}: {key}")
        if not isinstance(self.num_shards, int) or not 1 <= self.num_shards <= 100_000:
            raise ConfigError(f"{self.id}: num_shards must be an integer in 1..100000, got {self.num_shards!r}")
        if not isinstance(self.hash_group_size, int) or self.hash_group_size < 1:
            raise ConfigError(f"{self.id}: hash_group_size must be a positive integer")
        low, high = MAX_RECORD_BYTES_RANGE
        if (
            isinstance(self.max_record_bytes, bool)
            or not isinstance(self.max_record_bytes, int)
            or not low <= self.max_record_bytes <= high
        ):
            raise ConfigError(
                f"{self.id}: max_record_bytes must be an integer in {low}..{high} (64 KiB..256 MiB), got {self.max_record_bytes!r}"
            )
        for key in ("models_version", "signals_version"):
            validate_version(getattr(self, key), f"{self.id}: {key}")
        if self.dsir_hash_mode not in DSIR_HASH_MODES:
            raise ConfigError(
                f"{self.id}: dsir_hash_mode must be one of {', '.join(DSIR_HASH_MODES)}, got {self.dsir_hash_mode!r}"
            )
        self._check_dedup()
        if not isinstance(self.tokenizer_json, str) or "://" in self.tokenizer_json.removeprefix("file://"):
            raise ConfigError(f"{self.id}: tokenizer_json must be a local path or file:// URL, got {self.tokenizer_json!r}")
        if self.generate_source and not (self.sample and self.source_base.startswith("file://")):
            raise ConfigError(
                f"{self.id}: generate_source is only for the sample snapshot with a file:// source_base "
                f"(got sample={self.sample}, source_base={redact(repr(self.source_base))}); rpj never writes to a source"
            )
        if not self.dag_id:
            object.__setattr__(self, "dag_id", "rpv2_" + self.id.replace("-", "_"))

    def _check_dedup(self) -> None:
        if self.dedup_scope not in DEDUP_SCOPES:
            raise ConfigError(f"{self.id}: dedup_scope must be one of {', '.join(DEDUP_SCOPES)}, got {self.dedup_scope!r}")
        for key, low, high in (
            ("dedup_partitions", 1, 65536),
            ("dedup_memory_budget", 1 << 20, 1 << 50),
            ("clusters_partitions", 1, 1000),
        ):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ConfigError(f"{self.id}: {key} must be an integer in {low}..{high}, got {value!r}")
        if not isinstance(self.dedup_queue, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.dedup_queue):
            raise ConfigError(
                f"{self.id}: dedup_queue must be a queue name ([A-Za-z0-9_.-], 1-64 characters), got {self.dedup_queue!r}"
            )
        if isinstance(self.clusters_threshold, bool) or self.clusters_threshold not in CLUSTERS_THRESHOLDS:
            raise ConfigError(
                f"{self.id}: clusters_threshold must be one of {', '.join(map(str, CLUSTERS_THRESHOLDS))}, got {self.clusters_threshold!r}"
            )
        object.__setattr__(self, "clusters_threshold", float(self.clusters_threshold))

    @property
    def crawl(self) -> str:
        return crawl_id(self.id)

    def with_overrides(self, **changes: Any) -> SnapshotConfig:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def _expand(value: Any, env: dict[str, str]) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match) -> str:
            name, default = m.group(1), m.group(2)
            if env.get(name):
                return env[name]
            if default is None:
                raise ConfigError(f"environment variable {name} is not set (used in the snapshot registry)")
            return _expand(default, env)

        return _ENV_RE.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, env) for v in value]
    if isinstance(value, dict):
        return {k: _expand(v, env) for k, v in value.items()}
    return value


def load_registry(path: str | os.PathLike | None = None, env: dict[str, str] | None = None) -> dict[str, SnapshotConfig]:
    """Load the registry: ``{snapshot id: SnapshotConfig}`` in file order."""
    path = Path(path or os.environ.get("RPJ_REGISTRY") or DEFAULT_REGISTRY)
    env = dict(os.environ if env is None else env)
    env.setdefault("RPJ_HOME", str(REPO_ROOT))
    import yaml  # here, not at module level: ~25 ms that importing a stage does not pay

    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ConfigError(f"snapshot registry {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"snapshot registry {path} is not valid YAML: {' '.join(str(exc).split())}") from None
    defaults = data.get("defaults", {})
    known = {f.name for f in fields(SnapshotConfig)}
    out: dict[str, SnapshotConfig] = {}
    if not isinstance(data, dict) or not isinstance(defaults, dict) or not isinstance(data.get("snapshots", []), list):
        raise ConfigError(f"{path}: expected a mapping with 'defaults' (a mapping) and 'snapshots' (a list)")
    required = [f.name for f in fields(SnapshotConfig) if f.default is MISSING and f.default_factory is MISSING]
    for entry in data.get("snapshots", []):
        if not isinstance(entry, dict):
            raise ConfigError(f"{path}: every snapshot entry must be a mapping, got {entry!r}")
        merged = {**defaults, **entry}
        unknown = set(merged) - known
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)} for snapshot {entry.get('id')!r}")
        missing = [key for key in required if key not in merged]
        if missing:
            raise ConfigError(
                f"{path}: snapshot {entry.get('id')!r} has no {', '.join(missing)} (set it in 'defaults' or in the entry)"
            )
        cfg = SnapshotConfig(**_expand(merged, env))
        if cfg.id in out:
            raise ConfigError(f"{path}: snapshot {cfg.id} listed twice")
        out[cfg.id] = cfg
    _check_release_dedup(path, out)
    return out


def release_snapshots(registry: dict[str, SnapshotConfig], storage_root: str) -> list[str]:
    """The snapshots of the release under ``storage_root``: the registry's release-scope entries
    there (exact dedup runs across them), newest first."""
    return sorted(
        (c.id for c in registry.values() if c.dedup_scope == "release" and c.storage_root == storage_root), reverse=True
    )


def _check_release_dedup(path: Path, registry: dict[str, SnapshotConfig]) -> None:
    """Release-scope snapshots sharing a storage root are deduplicated together: their exact-dedup
    settings must agree."""
    by_root: dict[str, SnapshotConfig] = {}
    for cfg in registry.values():
        if cfg.dedup_scope != "release":
            continue
        first = by_root.setdefault(cfg.storage_root, cfg)
        for key in ("dedup_partitions", "dedup_memory_budget", "dedup_queue"):
            if getattr(cfg, key) != getattr(first, key):
                raise ConfigError(
                    f"{path}: snapshots {first.id} and {cfg.id} are deduplicated together (dedup_scope release, "
                    f"same storage_root) but differ in {key} ({getattr(first, key)!r} vs {getattr(cfg, key)!r}): set it in 'defaults'"
                )


def snapshots_released_between(snapshots: list[str], start: dt.datetime | dt.date, end: dt.datetime | dt.date) -> list[str]:
    """Snapshot ids whose release date (Monday of their ISO week) lies in ``[start, end)``.

    This is the monthly DAG's mapping from a data interval to the crawls to process.
    """
    start_d = start.date() if isinstance(start, dt.datetime) else start
    end_d = end.date() if isinstance(end, dt.datetime) else end
    return sorted(s for s in snapshots if start_d <= snapshot_week_start(s) < end_d)
