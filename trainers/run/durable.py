"""Durable writes: a file or a folder is replaced whole or not at all, and survives a crash.

The pattern, written once: write into a temporary sibling, fsync what was written, rename it
into place (atomic within a filesystem), then fsync the parent folder so the rename itself
is on disk. A kill or an I/O error at any point leaves the previous version whole.
Used by the run directory (``trainers.run.run_dir``), checkpoints (``trainers.run.checkpoints``)
and benchmark sets can use it too.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


def fsync_directory(folder) -> None:
    """Flush a folder's entries (a rename into it) to disk."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(root) -> None:
    """Flush every file and folder under `root` to disk, so a rename publishes durable data."""
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_directory(folder)


def write_text_atomically(path, text: str) -> None:
    """Replace `path` with `text`: temporary sibling, fsync, rename; the old file survives any failure."""
    path = Path(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    fsync_directory(path.parent)
