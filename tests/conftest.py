import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The third-party fixtures (tests/fixtures/, see its README and LICENSES); RPJ_SHARED_DATA overrides."""
    env = os.environ.get("RPJ_SHARED_DATA")
    path = Path(env) if env else REPO / "tests" / "fixtures"
    if not path.is_dir():
        raise RuntimeError(f"test fixtures not found at {path} (RPJ_SHARED_DATA={env!r})")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_data_dir()


def pytest_configure(config: pytest.Config) -> None:
    """``RPJ_CACHE_DIR`` (classifier checks, the Unicode bitmap, the gammaln table, remote model
    copies) is a fresh temporary folder per session, inherited by the processes the tests start and
    removed at the end: no test reads or fills ``~/.cache/rpj`` or the cache ``scripts/env.sh``
    names, so every session starts cold.  A test that sets its own (``monkeypatch.setenv``) wins
    for its duration."""
    folder = tempfile.mkdtemp(prefix="rpj-test-cache-")
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    os.environ["RPJ_CACHE_DIR"] = folder


_MARKERS_BY_MODULE = {"test_s3": ("s3",), "test_deploy_s3": ("s3",), "test_commit_stages": ("slow",)}


def pytest_collection_modifyitems(config, items):
    """Markers for the slow suites, so that e.g. ``-m "not airflow and not slow"`` runs the fast tests."""
    for item in items:
        path = Path(str(item.fspath))
        if "airflow" in path.parts:
            item.add_marker(pytest.mark.airflow)
        for name in _MARKERS_BY_MODULE.get(path.stem, ()):
            item.add_marker(getattr(pytest.mark, name))
