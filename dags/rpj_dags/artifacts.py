"""``rpv2_prep_artifacts``: build or install the versioned artifacts the pipeline needs.

* CCNet perplexity models (``artifacts/ccnet/<version>/``): install cc_net's, or build them from
  reference corpora, or from the offline sample corpora;
* quality-signal artifacts (``artifacts/signals/<signals_version>/``): word lists, UT1 map,
  fastText classifiers and DSIR counts, built from the URLs in ``signals_config``
  (``signals_source=build``) or copied from published RPv2 artifacts (``signals_source=install``).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from airflow.sdk import DAG, Param, dag, get_current_context, task

from rpj_dags.common import DEFAULT_ARGS, START_DATE, whole
from rpj_dags.runtime import configure_storage, engine_task
from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import ConfigError, SnapshotConfig, validate_languages

log = logging.getLogger("rpj.airflow")


def _storage_root(registry: dict[str, SnapshotConfig]) -> str:
    roots = {cfg.storage_root for cfg in registry.values()}
    if len(roots) != 1:
        raise ConfigError(f"rpv2_prep_artifacts needs one storage_root across the registry, found {sorted(roots)}")
    return roots.pop()


def _params(*urls: str) -> dict[str, Any]:
    """Every task's preamble: storage credentials for ``urls``, then the run's Params."""
    configure_storage(*urls)
    return get_current_context()["params"]


def build_artifacts_dag(registry: dict[str, SnapshotConfig]) -> DAG:
    root = _storage_root(registry)
    sample = next((cfg for cfg in registry.values() if cfg.sample), None)

    @dag(
        dag_id="rpv2_prep_artifacts",
        schedule=None,
        start_date=START_DATE,
        catchup=False,
        is_paused_upon_creation=False,  # manual only
        default_args={**DEFAULT_ARGS, "execution_timeout": dt.timedelta(hours=12)},
        tags=["rpv2", "artifacts"],
        render_template_as_native_obj=True,
        params={
            "version": Param(
                "ccnet-official",
                type="string",
                pattern=whole("[A-Za-z0-9][A-Za-z0-9._-]{0,63}"),
                description="Models version: written to artifacts/ccnet/<version>/ (snapshots select it with models_version).",
            ),
            "source": Param(
                "install",
                type="string",
                enum=["install", "build", "sample", "none"],
                description="CCNet models. install: copy official cc_net models; build: train from reference "
                "corpora; sample: build from the offline sample corpus; none: skip.",
            ),
            "languages": Param(
                list(layout.LANGUAGES), type="array", items={"type": "string", "pattern": whole("[a-z]{2,3}")}, minItems=1
            ),
            "official_models_url": Param(
                "", type="string", description="install: URL of a directory with {lang}.sp.model and {lang}.arpa.bin."
            ),
            "cutoffs_url": Param("", type="string", description="install/build: cutoff.csv URL (default: cc_net's for install)."),
            "corpora": Param(
                {},
                type="object",
                description="build: {lang: URL} reference corpus (one document per line, or jsonl with 'text').",
            ),
            "calibration": Param(
                {}, type="object", description="build: {lang: URL} web documents whose perplexity percentiles give the cutoffs."
            ),
            "vocab_size": Param(65536, type="integer", minimum=100),
            "force": Param(False, type="boolean", description="Rebuild even if this version exists."),
            "signals_source": Param(
                "none",
                type="string",
                enum=["none", "build", "install"],
                description="build: quality-signal artifacts from signals_config; install: copy "
                "published RPv2 artifacts from signals_install_url.",
            ),
            "signals_version": Param("rpv2-official", type="string", pattern=whole("[A-Za-z0-9][A-Za-z0-9._-]{0,63}")),
            "signals_config": Param(
                {},
                type="object",
                description=(
                    "build: see rpj_tasks.annotate.artifacts.build.build_signal_artifacts: langs, stopwords_url_template, "
                    "ldnoobw_url_template, ut1_url, ccnet {documents_root, snapshots}, corpora {lang: {dataset: URL}}, "
                    "wikiref_model_url, dsir_num_samples, classifier_num_samples, hash_mode."
                ),
            ),
            "signals_install_url": Param(
                "",
                type="string",
                description=(
                    "install: URL of published RPv2 artifacts laid out as the reference's artifacts_dir "
                    "(bad_words/, bad_urls/, classifiers/, dsir/); languages as in 'languages'; stop words from "
                    "signals_config.stopwords_url_template (default: upstream)."
                ),
            ),
        },
        doc_md=__doc__,
    )
    def prep_artifacts() -> None:
        @task
        @engine_task
        def plan() -> list[dict[str, Any]]:
            from rpj_tasks.ccnet import models

            params = get_current_context()["params"]
            p = _params(root, params["official_models_url"], *params["corpora"].values())
            if p["source"] == "none":
                return []
            langs = validate_languages(p["languages"])
            out = layout.models_url(root, p["version"])
            if models.exists(out) and not p["force"]:
                log.info("models %s already exist at %s; nothing to do (set the force Param to rebuild)", p["version"], out)
                return []
            if p["source"] == "install":
                if not p["official_models_url"]:
                    raise ConfigError("source=install needs official_models_url")
                models.install_models(p["official_models_url"], langs, out, cutoffs_url=p["cutoffs_url"] or None)
                return []
            if p["source"] == "sample":
                if sample is None:
                    raise ConfigError("the registry has no sample snapshot")
                from rpj_tasks.sample.setup import sample_corpora

                corpora, calibration = sample_corpora(sample.with_overrides(languages=langs))
            else:
                corpora, calibration = p["corpora"], p["calibration"]
            missing = [lang for lang in langs if lang not in corpora]
            if missing:
                raise ConfigError(f"no reference corpus URL for {missing}")
            models.begin(out)  # the build_language tasks write; finalize commits the manifest last
            return [{"lang": lang, "corpus": corpora[lang], "calibration": calibration.get(lang)} for lang in langs]

        @task
        @engine_task
        def build_language(job: dict[str, Any]) -> dict[str, Any]:
            from rpj_tasks.ccnet import models

            p = _params(root, job["corpus"])
            vocab = p["vocab_size"] if p["source"] != "sample" else models.SAMPLE_VOCAB_SIZE
            return models.build_language(
                job["lang"],
                job["corpus"],
                layout.models_url(root, p["version"]),
                vocab_size=vocab,
                calibration_url=job["calibration"],
            )

        @task
        @engine_task
        def finalize(entries: Any) -> dict[str, Any] | None:
            from rpj_tasks.ccnet import models

            entries = list(entries)
            if not entries:
                return None
            p = _params(root)
            return models.finalize_built(layout.models_url(root, p["version"]), entries, cutoffs_url=p["cutoffs_url"] or None)

        @task
        @engine_task
        def build_signal_artifacts() -> dict[str, Any] | None:
            from rpj_tasks.annotate.artifacts.build import build_signal_artifacts as build

            p = _params(root)
            if p["signals_source"] == "none":
                log.info("signals_source=none: no quality-signal artifacts requested")
                return None
            out = layout.signal_artifacts_url(root, p["signals_version"])
            if p["signals_source"] == "install":
                from rpj_tasks.annotate.artifacts.build import install_signal_artifacts

                if not p["signals_install_url"]:
                    raise ConfigError("signals_source=install needs signals_install_url")
                configure_storage(root, p["signals_install_url"])
                manifest = install_signal_artifacts(
                    p["signals_install_url"],
                    out,
                    validate_languages(p["languages"]),
                    **{k: v for k, v in p["signals_config"].items() if k == "stopwords_url_template"},
                    force=p["force"],
                )
                return {"url": out, "files": len(manifest["artifacts"])}
            config = dict(p["signals_config"])
            config.setdefault("ccnet", {"documents_root": storage.join(root, "documents"), "snapshots": []})
            if not config["ccnet"].get("snapshots"):
                raise ConfigError("signals_config.ccnet.snapshots must list the snapshots to draw the CCNet sample from")
            manifest = build(config, out, force=p["force"])
            return {"url": out, "files": len(manifest.get("artifacts", manifest))}

        finalize(build_language.expand(job=plan()))
        build_signal_artifacts()

    return prep_artifacts()
