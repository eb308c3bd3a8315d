"""Checkpoint folders: written atomically, verified by checksums, newest intact one found.

A checkpoint is a folder ``<directory>/step_<8 digits>`` whose last file, ``meta.json``,
records the step, what kind of weights it holds and the sha256 of every other file.

* Writing (`write_atomically`): everything goes into a hidden temporary sibling, every
  file and folder is fsynced, and only then is the folder renamed into place, so a crash
  at any point leaves the complete checkpoint or none. Leftovers of crashed writes are
  hidden (dot-prefixed), ignored when reading and removed by the next write.
* Reading (`latest_intact`): checkpoints are tried newest first; one whose meta.json is
  missing, empty or unreadable, or whose files do not match their checksums (truncated,
  emptied, a flipped byte), is skipped with a warning naming it and why, and the next
  older one is used. Damaged data is detected, never loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Callable

from trainers.run.durable import fsync_directory, fsync_tree

CHECKPOINT_PREFIX = "step_"
BEST_NAME = "best"
META = "meta.json"
FORMAT = 2
_TEMP_PREFIX = ".tmp-"
_HASH_CHUNK = 1 << 20


class CheckpointWriteError(OSError):
    """A checkpoint or policy folder could not be written (a full disk, an I/O error); the
    folder as it was before, and every earlier checkpoint, are untouched."""


class DamagedCheckpoint(ValueError):
    """A checkpoint folder whose contents do not match its meta.json."""


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step:08d}"


def checkpoint_step(path) -> int:
    """The training step a checkpoint was saved at."""
    return int(Path(path).name[len(CHECKPOINT_PREFIX):])


def write_atomically(folder, fill: Callable[[Path], dict]) -> Path:
    """Create `folder` atomically: `fill(staging)` writes the files and returns meta fields.

    The meta.json written last holds those fields, the format version and the sha256 of
    every file `fill` wrote. An existing `folder` is replaced (moved aside first: a
    rename cannot replace a non-empty folder).
    """
    folder = Path(folder)
    parent = folder.parent
    parent.mkdir(parents=True, exist_ok=True)
    for leftover in parent.glob(f"{_TEMP_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{folder.name}-", dir=parent))
    try:
        staging.chmod(0o755)  # mkdtemp makes it private; a checkpoint is an ordinary folder
        try:
            meta = dict(fill(staging))
            meta["format"] = FORMAT
            meta["files"] = {str(path.relative_to(staging)): file_sha256(path) for path in _files(staging)}
            (staging / META).write_text(json.dumps(meta, indent=1, sort_keys=True))
            fsync_tree(staging)
        except OSError as error:
            raise CheckpointWriteError(
                f"could not write {folder} ({error.__class__.__name__}: {str(error).strip()}; is the disk full?); "
                f"nothing was replaced"
            ) from error
        if folder.exists():
            stale = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}old-", dir=parent))
            os.replace(folder, stale / folder.name)
        os.rename(staging, folder)
        fsync_directory(parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for leftover in parent.glob(f"{_TEMP_PREFIX}old-*"):
        shutil.rmtree(leftover, ignore_errors=True)
    return folder


def torch_save(obj, path) -> None:
    """`torch.save`, with a failed write raised as the OSError it is: torch's zip writer
    reports a full disk as a RuntimeError ("unexpected pos ..."), which `write_atomically`
    would otherwise not tell from a bug."""
    import torch

    try:
        torch.save(obj, path)
    except RuntimeError as error:
        raise OSError(f"writing {path} failed: {str(error).strip()}") from error


def read_meta(folder) -> dict:
    """The checked meta.json of `folder`; DamagedCheckpoint if it or any listed file is bad."""
    folder = Path(folder)
    try:
        meta = json.loads((folder / META).read_text())
    except (OSError, ValueError) as error:
        raise DamagedCheckpoint(f"{folder}: unreadable {META} ({error.__class__.__name__}: {error})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("files"), dict):
        raise DamagedCheckpoint(f"{folder}: {META} lists no files (written by an older version?)")
    for name, expected in meta["files"].items():
        path = folder / name
        if not path.is_file():
            raise DamagedCheckpoint(f"{folder}: {name} is missing")
        if file_sha256(path) != expected:
            raise DamagedCheckpoint(f"{folder}: {name} does not match its checksum (truncated or corrupted)")
    return meta


def list_checkpoints(directory) -> list[Path]:
    """Checkpoint folders in `directory` that have a meta.json, oldest first (by step)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    found = [
        child
        for child in directory.iterdir()
        if child.name.startswith(CHECKPOINT_PREFIX)
        and child.name[len(CHECKPOINT_PREFIX):].isdigit()
        and (child / META).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def latest_intact(directory) -> Path | None:
    """The newest checkpoint whose checksums verify; damaged newer ones are skipped with a warning."""
    for path in reversed(list_checkpoints(directory)):
        try:
            read_meta(path)
        except DamagedCheckpoint as error:
            warnings.warn(f"skipping damaged checkpoint: {error}", stacklevel=2)
            continue
        return path
    return None


def prune(directory, keep_last: int) -> None:
    """Delete all but the newest `keep_last` step checkpoints (the best one is not a step)."""
    if keep_last < 1:
        raise ValueError(f"keep_last must be at least 1, got {keep_last}")
    for old in list_checkpoints(directory)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)


def file_sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())
