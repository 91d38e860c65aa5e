"""Versioned CCNet models: build (sample corpora), install from a URL, and the artifacts DAG."""

import functools
import http.server
import json
import threading

import pytest
from airflow_env import airflow, airflow_env

from rpj_tasks.ccnet import models
from rpj_tasks.ccnet.lm import PerplexityScorer, load_cutoffs
from rpj_tasks.core import layout, storage
from rpj_tasks.core.config import load_registry
from rpj_tasks.sample.setup import sample_corpora


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    cfg = load_registry()["2000-01"].with_overrides(storage_root=(tmp / "data").as_uri(), languages=["en", "fr"])
    corpora, calibration = sample_corpora(cfg)
    out = layout.models_url(cfg.storage_root, "v-test")
    entries = [
        models.build_language(lang, corpora[lang], out, vocab_size=models.SAMPLE_VOCAB_SIZE, calibration_url=calibration[lang])
        for lang in cfg.languages
    ]
    manifest = models.finalize_built(out, entries)
    return tmp, cfg, out, manifest


def test_built_manifest_and_calibrated_cutoffs(built):
    _, _, out, manifest = built
    assert models.exists(out)
    assert manifest["kind"] == "built" and manifest["cutoffs_source"] == "calibration"
    assert set(manifest["languages"]) == {"en", "fr"}
    for entry in manifest["languages"].values():
        assert set(entry["sha256"]) == {"sp", "lm"} and entry["calibration_documents"] > 50
    cutoffs = load_cutoffs(storage.join(out, "cutoff.csv"))
    for p_head, p_tail in cutoffs.values():
        assert 0 < p_head < p_tail
    loaded = models.CCNetModels.load(out, ["en"])
    assert loaded.scorer("en").perplexity("This is a short English test sentence.") > 0
    with pytest.raises(models.ModelsError, match="no model for languages"):
        models.CCNetModels.load(out, ["de"])


def test_a_models_manifest_cannot_point_outside_its_version(built, tmp_path):
    """The manifest names the model files; a name that leaves the version's folder is refused."""
    from rpj_tasks.core.errors import UnsafePathError

    _, _, out, manifest = built
    hostile = tmp_path / "hostile"
    hostile.mkdir()
    bad = json.loads(json.dumps(manifest))
    bad["languages"]["en"]["lm"] = "../../../../../etc/passwd"
    (hostile / "MANIFEST.json").write_text(json.dumps(bad))
    with pytest.raises(UnsafePathError, match=r"MANIFEST.json '(\.\./)+etc/passwd'"):
        models.CCNetModels.load(hostile.as_uri(), ["en"])


def test_install_official_models_from_http(built, tmp_path):
    """Serve files named like cc_net's (`{lang}.sp.model`, `{lang}.arpa.bin`) over HTTP and install them."""
    tmp, _, out, _ = built
    src = tmp_path / "official"
    src.mkdir()
    local_out = storage.fs_and_path(out)[1]
    for lang in ("en", "fr"):
        (src / f"{lang}.sp.model").write_bytes(open(f"{local_out}/{lang}.sp.model", "rb").read())
        (src / f"{lang}.arpa.bin").write_bytes(open(f"{local_out}/{lang}.arpa", "rb").read())
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(src))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        target = (tmp_path / "data" / "artifacts" / "ccnet" / "official").as_uri()
        manifest = models.install_models(url.replace("http://", "http://user:s3cr3t@"), ["en", "fr"], target)
        with pytest.raises(models.ModelsError, match="de.sp.model"):
            models.install_models(url, ["de"], (tmp_path / "other").as_uri())
    finally:
        server.shutdown()
    assert manifest["kind"] == "installed" and manifest["languages"]["en"]["lm"] == "en.arpa.bin"
    assert "s3cr3t" not in (tmp_path / "data" / "artifacts" / "ccnet" / "official" / "MANIFEST.json").read_text()
    cutoffs = load_cutoffs(storage.join(target, "cutoff.csv"))
    assert cutoffs["en"] == (340.0, 520.0)  # cc_net's own cutoffs come with installed models
    text = "Ceci est une phrase de test en français, avec quelques mots."
    installed = PerplexityScorer(storage.join(target, "fr.sp.model"), storage.join(target, "fr.arpa.bin"))
    original = PerplexityScorer(storage.join(out, "fr.sp.model"), storage.join(out, "fr.arpa"))
    assert installed.perplexity(text) == original.perplexity(text)


def test_prep_artifacts_dag_builds_sample_models(tmp_path):
    env = airflow_env(tmp_path)
    assert airflow(env, "db", "migrate").returncode == 0
    conf = {"source": "sample", "version": "dag-built", "languages": ["en", "de"]}
    proc = airflow(env, "dags", "test", "rpv2_prep_artifacts", "-c", json.dumps(conf))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    manifest = json.loads((tmp_path / "data" / "artifacts" / "ccnet" / "dag-built" / "MANIFEST.json").read_text())
    assert set(manifest["languages"]) == {"en", "de"} and manifest["cutoffs_source"] == "calibration"


def test_prep_artifacts_dag_builds_signal_artifacts(tmp_path):
    """signals_source=build from file:// word lists, a reference corpus and a (tiny) CCNet documents tree."""
    import gzip

    from rpj_tasks.sample.setup import WORDLISTS

    docs_dir = tmp_path / "data" / "documents" / "2000-01" / "0000"
    docs_dir.mkdir(parents=True)
    lines = [
        json.dumps({"raw_content": f"web page number {i} with some words about shops and prices {i * 7}", "bucket": b})
        for i, b in enumerate(["head", "middle", "tail"] * 30)
    ]
    for bucket in ("head", "middle", "tail"):
        (docs_dir / f"en_{bucket}.json.gz").write_bytes(gzip.compress("\n".join(lines).encode(), mtime=0))
    corpus = tmp_path / "wiki.txt"
    corpus.write_text("\n".join(f"the article {i} describes a city and its history in the region" for i in range(90)))
    conf = {
        "source": "none",
        "signals_source": "build",
        "signals_version": "sig-test",
        "signals_config": {
            "langs": ["en"],
            "stopwords_url_template": (WORDLISTS / "stopwords").as_uri() + "/{lang}.json",
            "ldnoobw_url_template": (WORDLISTS / "ldnoobw").as_uri() + "/{lang}.txt",
            "ccnet": {"documents_root": (tmp_path / "data" / "documents").as_uri(), "snapshots": ["2000-01"]},
            "corpora": {"en": {"wikipedia": corpus.as_uri()}},
            "dsir_num_samples": 50,
            "classifier_num_samples": 50,
        },
    }
    env = airflow_env(tmp_path)
    assert airflow(env, "db", "migrate").returncode == 0
    proc = airflow(env, "dags", "test", "rpv2_prep_artifacts", "-c", json.dumps(conf))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = tmp_path / "data" / "artifacts" / "signals" / "sig-test"
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["hash_mode"] == "cpython-seed42"
    assert (out / "stopwords" / "en.json").read_bytes() == (WORDLISTS / "stopwords" / "en.json").read_bytes()
    assert (out / "dsir" / "en" / "wikipedia.en.10000.counts.npy").exists()
    assert (out / "classifiers" / "en" / "palm.model.bin").exists()
    assert not (tmp_path / "data" / "artifacts" / "ccnet").exists()

    # signals_source=install: published (reference-layout) artifacts copied under another version
    from test_signal_artifacts import reference_layout

    from rpj_tasks.sample.setup import WORDLISTS as lists

    files = reference_layout(tmp_path / "published", lists)  # the bundled lists stand in for shared/data
    conf = {
        "source": "none",
        "signals_source": "install",
        "signals_version": "rpv2-official",
        "languages": ["en"],
        "signals_install_url": (tmp_path / "published").as_uri(),
        "signals_config": {"stopwords_url_template": (lists / "stopwords").as_uri() + "/{lang}.json"},
    }
    proc = airflow(env, "dags", "test", "rpv2_prep_artifacts", "-c", json.dumps(conf))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    out = tmp_path / "data" / "artifacts" / "signals" / "rpv2-official"
    manifest = json.loads((out / "MANIFEST.json").read_text())
    assert manifest["installed_from"] == conf["signals_install_url"] and manifest["langs"] == ["en"]
    assert (out / "dsir/en/wikipedia.en.10000.counts.npy").read_bytes() == files["dsir/en/wikipedia.en.10000.counts.npy"]
    assert (out / "ldnoobw/en.txt").read_bytes() == files["bad_words/en.txt"]
