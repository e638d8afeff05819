"""Checks on output paths made before long work, so a run that cannot write fails first."""

from __future__ import annotations

from pathlib import Path


def file_in_the_way(folder: Path) -> Path | None:
    """The existing file (not folder) at ``folder`` or above it: making ``folder`` would trip on it."""
    for p in (folder, *folder.parents):
        if p.exists():
            return None if p.is_dir() else p
    return None
