"""Durability of names: a directory fsync after a rename, create or delete in it."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(directory: Path) -> None:
    # Without this the rename itself may be lost on power failure, though the data is safe.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
