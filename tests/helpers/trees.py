"""What a storage root holds, for comparing runs: file digests and leftover temp files."""

from __future__ import annotations

import hashlib
from pathlib import Path


def digests(root: Path, *components: str) -> dict[str, str]:
    """``{relative path: sha256}`` of every file below ``root/<component>`` for each component."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for c in components
        for p in sorted((root / c).rglob("*"))
        if p.is_file()
    }


def temp_files(root: Path, *components: str) -> list[str]:
    """Leftover temporary files (``.<name>.tmp-<tag>``, see rpj_tasks.core.storage.atomic_write)
    below ``root/<component>`` (below ``root`` itself without components)."""
    bases = [root / c for c in components] or [root]
    return [str(p.relative_to(root)) for base in bases for p in base.rglob(".*") if ".tmp-" in p.name]
