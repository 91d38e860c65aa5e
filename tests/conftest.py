import os
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


_MARKERS_BY_MODULE = {"test_s3": ("s3",), "test_deploy_s3": ("s3",), "test_commit_stages": ("slow",)}


def pytest_collection_modifyitems(config, items):
    """Markers for the slow suites, so that e.g. ``-m "not airflow and not slow"`` runs the fast tests."""
    for item in items:
        path = Path(str(item.fspath))
        if "airflow" in path.parts:
            item.add_marker(pytest.mark.airflow)
        for name in _MARKERS_BY_MODULE.get(path.stem, ()):
            item.add_marker(getattr(pytest.mark, name))
