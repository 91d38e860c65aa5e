"""Every engine module imports on its own, first, in a fresh interpreter (an import cycle shows up
only for some orders; a task process imports whatever its task needs first), and the engine never
imports Airflow."""

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
