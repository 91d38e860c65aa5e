"""A throw-away Airflow installation for tests: its own AIRFLOW_HOME, SQLite DB and storage root."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def base_env(tmp: Path, **extra: str) -> dict[str, str]:
    """The caller's environment without AIRFLOW_*/RPJ_* settings, the project's venv first on PATH,
    and the sample's locations (storage root, mirror, cache) in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_", "AIRFLOW__", "RPJ_"))}
    env.update(
        {
            "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
            "RPJ_HOME": str(REPO),
            "RPJ_STORAGE_ROOT": (tmp / "data").as_uri(),
            "RPJ_SAMPLE_SOURCE": (tmp / "mirror").as_uri(),
            "RPJ_CACHE_DIR": str(tmp / "cache"),
        }
    )
    env.update(extra)
    return env


def airflow_env(tmp: Path, **extra: str) -> dict[str, str]:
    """:func:`base_env` plus a throw-away Airflow (its own home, SQLite DB) for ``airflow`` commands."""
    home = tmp / "airflow_home"
    home.mkdir(parents=True, exist_ok=True)
    return base_env(
        tmp,
        AIRFLOW_HOME=str(home),
        AIRFLOW__CORE__DAGS_FOLDER=str(REPO / "dags"),
        AIRFLOW__CORE__PLUGINS_FOLDER=str(REPO / "plugins"),
        AIRFLOW__CORE__LOAD_EXAMPLES="False",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=f"sqlite:///{home}/airflow.db",
        **extra,
    )


def airflow(env: dict[str, str], *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "airflow"), *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
