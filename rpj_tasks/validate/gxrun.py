"""Great Expectations 1.x, offline and quiet: load the suites of ``expectations/``, run them on
pandas DataFrames in an ephemeral context, build Data Docs into a local directory.

Offline: GX 1.24 sends no usage statistics (its analytics client is gone), and the context is made
with ``analytics_enabled=False`` and ``GX_ANALYTICS_ENABLED=false`` anyway; the ephemeral context
has in-memory stores only (no ``gx/`` folder, no cloud), and the only files it writes are the Data
Docs site below the directory it is given.  ``tests/validate`` runs a validation with every socket
connection refused.  Quiet: GX's loggers are set to ERROR and its progress bars are off.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from rpj_tasks.core.errors import ConfigError

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

#: The suites, in the order they run; ``snapshot`` runs in :func:`rpj_tasks.validate.stage.validate_snapshot`.
SHARD_SUITES: tuple[str, ...] = ("documents", "quality_signals", "minhash", "duplicates", "clusters", "tokens", "files")
SNAPSHOT_SUITE = "snapshot"
#: The row-locating columns a failure reports.
INDEX_COLUMNS = {"files": ["file"], SNAPSHOT_SUITE: ["shard"]}
DEFAULT_INDEX = ["file", "line"]


def expectations_dir() -> Path:
    """``expectations/`` of the checkout (``RPJ_EXPECTATIONS_DIR`` overrides it)."""
    return Path(os.environ.get("RPJ_EXPECTATIONS_DIR") or Path(__file__).resolve().parents[2] / "expectations")


def load_suite(name: str) -> dict[str, Any]:
    """A suite's JSON: ``{"name", "expectations": [{"type", "kwargs", "meta"}]}``."""
    path = expectations_dir() / f"{name}.json"
    try:
        suite = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ConfigError(f"expectation suite {path} does not exist") from exc
    if suite.get("name") != name or not isinstance(suite.get("expectations"), list):
        raise ConfigError(f"{path}: expected a GX 1.x suite {{'name': {name!r}, 'expectations': [...]}}")
    return suite


def rule_meta(suite: dict[str, Any], column: str) -> dict[str, Any]:
    """The ``meta`` of the suite's expectation on ``column`` (e.g. the bounds of a derived rule)."""
    for exp in suite["expectations"]:
        if exp["kwargs"].get("column") == column:
            return exp.get("meta", {})
    return {}


def columns_of(suite: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for exp in suite["expectations"]:
        for key in ("column", "column_A", "column_B"):
            if key in exp["kwargs"] and exp["kwargs"][key] not in out:
                out.append(exp["kwargs"][key])
    return out


def quiet() -> None:
    for name in ("great_expectations", "great_expectations.core", "great_expectations.data_context"):
        logging.getLogger(name).setLevel(logging.ERROR)


def describe(kwargs: dict[str, Any]) -> str:
    """The columns an expectation checks, e.g. ``nlines, raw_content_lines`` or ``language_score``."""
    cols = [kwargs[k] for k in ("column", "column_A", "column_B") if k in kwargs]
    cond = kwargs.get("row_condition")
    if isinstance(cond, dict) and cond.get("type") == "comparison":  # a GX Condition, as the suites write it
        cond = f"{cond['column']['name']} {cond['operator']} {cond['parameter']!r}"
    cond = f" where {cond}" if cond else ""
    return ", ".join(cols) + cond


class Runner:
    """One ephemeral GX context with a Data Docs site in ``docs_dir``; :meth:`run` validates one
    DataFrame with one suite and keeps the result for the site; :meth:`build_docs` writes it."""

    def __init__(self, docs_dir: str, parameters: dict[str, Any]) -> None:
        quiet()
        import great_expectations as gx
        from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults, ProgressBarsConfig

        self.gx = gx
        self.docs_dir, self.parameters = docs_dir, parameters
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            analytics_enabled=False,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            data_docs_sites={
                "rpj": {
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": docs_dir},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                }
            },
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        self.source = self.context.data_sources.add_pandas("rpj")

    def run(self, suite_json: dict[str, Any], frame: Any, run_name: str) -> list[dict[str, Any]]:
        """Validate ``frame`` with the suite; per expectation ``{type, kwargs, meta, success, result}``."""
        import pandas as pd
        from great_expectations.core.expectation_suite import ExpectationSuite
        from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

        gx = self.gx
        name = suite_json["name"]
        frame = frame.copy()
        for column in columns_of(suite_json):  # an empty table still has every column the suite names
            if column not in frame.columns:
                frame[column] = pd.Series([None] * len(frame), dtype=object)
        configs = [
            ExpectationConfiguration(type=e["type"], kwargs=e["kwargs"], meta={**(e.get("meta") or {}), "index": i})
            for i, e in enumerate(suite_json["expectations"])
        ]
        suite = ExpectationSuite(name=f"{name}", expectations=configs)
        if len(suite.expectations) != len(configs):  # GX logs and drops an expectation it cannot build
            raise ConfigError(
                f"expectation suite {name}: only {len(suite.expectations)} of {len(configs)} expectations are valid GX 1.x"
            )
        suite = self.context.suites.add_or_update(suite)
        asset = self.source.add_dataframe_asset(f"{name}:{run_name}")
        batch = asset.add_batch_definition_whole_dataframe("table")
        vd = self.context.validation_definitions.add(gx.ValidationDefinition(name=f"{name}:{run_name}", data=batch, suite=suite))
        checkpoint = self.context.checkpoints.add(
            gx.Checkpoint(
                name=f"{name}:{run_name}",
                validation_definitions=[vd],
                actions=[],
                result_format={
                    "result_format": "COMPLETE",
                    "unexpected_index_column_names": INDEX_COLUMNS.get(name, DEFAULT_INDEX),
                    "partial_unexpected_count": 20,
                },
            )
        )
        result = checkpoint.run(batch_parameters={"dataframe": frame}, expectation_parameters=self.parameters)
        out = []
        for vr in result.run_results.values():
            for r in vr.results:
                cfg = r.expectation_config
                info = r.exception_info or {}
                index = int(((cfg.meta if cfg is not None else None) or {})["index"])
                source = suite_json["expectations"][index]  # the suite's own kwargs, as written
                out.append(
                    {
                        "index": index,
                        "type": source["type"],
                        "kwargs": dict(source["kwargs"]),
                        "meta": dict(source.get("meta") or {}),
                        "success": bool(r.success),
                        "result": dict(r.result or {}),
                        "exception": info.get("exception_message") if info.get("raised_exception") else None,
                    }
                )
        out.sort(key=lambda e: int(e["index"]))  # the suite's order
        return out

    def build_docs(self) -> str:
        """Write the Data Docs site (every validation run so far); the local ``index.html``."""
        self.context.build_data_docs(site_names=["rpj"])
        return os.path.join(self.docs_dir, "index.html")
