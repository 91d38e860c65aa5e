"""Every engine module imports on its own, first, in a fresh interpreter (an import cycle shows up
only for some orders; a task process imports whatever its task needs first), and the engine never
imports Airflow."""

import json
import pkgutil
import subprocess
import sys

import pytest

import rpj_tasks

MODULES = sorted(m.name for m in pkgutil.walk_packages(rpj_tasks.__path__, "rpj_tasks.") if not m.name.endswith("_speedups"))
CHECK = "import sys, importlib; importlib.import_module(sys.argv[1]); assert 'airflow' not in sys.modules, 'imports airflow'"


def test_every_module_is_listed():
    assert len(MODULES) > 30 and "rpj_tasks.annotate.artifacts.load" in MODULES


@pytest.mark.parametrize("module", MODULES)
def test_module_imports_first_and_alone(module):
    proc = subprocess.run([sys.executable, "-c", CHECK, module], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


# Heavy libraries the annotation stage imports only where it uses them (start-up cost, issue 17):
# datasketch (pulls in scipy.integrate, ~0.3 s) only for the slow MinHash oracle and the band-layout
# check, scipy.special only to fill the DSIR gammaln table once, pyarrow when parquet is written (core.schema builds
# its Arrow schemas on first access), fsspec on the first storage call, yaml when the registry is read,
# fasttext when a classifier is loaded.
HEAVY = ["datasketch", "scipy", "pyarrow", "fsspec", "yaml", "fasttext"]
LAZY = {"rpj_tasks.annotate.stage": HEAVY, "rpj_tasks.annotate.minhash": HEAVY, "rpj_tasks.core.schema": ["pyarrow"]}
LAZY_CHECK = (
    "import sys, importlib, json; importlib.import_module(sys.argv[1]); "
    "print(json.dumps(sorted(m for m in json.loads(sys.argv[2]) if m in sys.modules)))"
)


@pytest.mark.parametrize("module", sorted(LAZY))
def test_the_annotation_stage_imports_no_heavy_library(module):
    proc = subprocess.run(
        [sys.executable, "-c", LAZY_CHECK, module, json.dumps(LAZY[module])], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == [], f"importing {module} imports {proc.stdout.strip()}"


def test_the_lazy_import_check_can_fail():
    """The check sees a heavy module that was imported (here by hand, before the module under test)."""
    proc = subprocess.run(
        [sys.executable, "-c", "import scipy.special; " + LAZY_CHECK, "json", json.dumps(["scipy", "datasketch"])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout) == ["scipy"]
