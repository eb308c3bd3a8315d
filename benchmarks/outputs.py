"""Where reports go: one check, shared by every evaluation, run before any model loads."""

from __future__ import annotations

import os
import tempfile


def check_output_path(path: str, option: str) -> None:
    """ValueError unless a report can be written at `path`: called before any model
    loads, so that a long evaluation never ends in a failed write. Creates missing
    parent folders and writes (then removes) a probe file beside `path`."""
    if os.path.isdir(path):
        raise ValueError(f"{option}={path!r} is a directory; give a file path such as {os.path.join(path, 'report.json')!r}")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
        if os.path.exists(path) and not os.access(path, os.W_OK):
            raise PermissionError(f"{path} is read-only")
    except OSError as error:
        raise ValueError(f"{option}={path!r} cannot be written: {error.strerror or error}") from None
