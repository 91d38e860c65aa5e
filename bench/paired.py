"""Shared parts of the side-by-side comparisons with the reference (``compare_*reference.py``).

* :func:`ensure_venv`: a throwaway venv with the reference's packages from the package registry,
  reused while its probe import still works;
* :func:`timed`: one whole process, wall seconds, CPU seconds (user + system of the process and its
  threads and reaped children, from ``wait4``) and peak RSS;
* :func:`ratio_range`, :func:`cpu_model`: formatting and the machine's description.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def ensure_venv(venv: Path, packages: list[str], probe: str) -> Path:
    """The venv's python, created and filled with ``packages`` unless ``probe`` (Python code) already runs there."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", probe]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *packages], check=True)
    subprocess.run(check, check=True)
    return python


def timed(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None, log: Path | None = None) -> dict[str, float]:
    """Run ``cmd`` (output to ``log``, default stderr); wall seconds, CPU seconds (user + system)
    and peak RSS (MB) of the process."""
    start = time.perf_counter()
    with open(log, "ab") if log else open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(
            cmd, stdout=sink if log else sys.stderr, stderr=subprocess.STDOUT if log else None, env=env, cwd=cwd
        )
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{cmd[:3]} failed with exit code {proc.returncode}" + (f" (see {log})" if log else ""))
    return {
        "seconds": round(wall, 2),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
    }


def ratio_range(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown"
