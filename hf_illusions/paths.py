"""Where results may be written: checked before any work, so a long run never dies at its last step.

Every command that writes (data build, simplify, evaluate, verify --out, train, reproduce) calls
:func:`check_output_path` first: an existing output is never replaced silently (``overwrite``),
and a path that cannot be created fails in a second rather than after minutes of fitting.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hf_illusions.errors import PathError


def check_output_path(
    path: str | Path, overwrite: bool = False, arg: str = "out", kind: str = "folder", reuse: bool = False
) -> Path:
    """Return ``path`` if it may be written, else raise :class:`PathError` naming ``arg``.

    Args:
        path: the file or folder about to be written.
        overwrite: an existing ``path`` may be replaced.
        arg: how the caller names the argument in messages (``"--out"`` on the command line).
        kind: ``"folder"`` or ``"file"``; an existing path of the other kind is always an error.
        reuse: an existing folder is fine (resumable outputs such as ``reproduce``'s report).
    """
    path = Path(path)
    if path.exists():
        if (kind == "folder") != path.is_dir():
            raise PathError(f"{arg} {str(path)!r} exists and is not a {kind}")
        if not (overwrite or reuse):
            flag = "--overwrite" if arg.startswith("--") else "overwrite=True"
            raise PathError(f"{arg} {str(path)!r} already exists; pass {flag} to replace it")
    ancestor = path if path.is_dir() else path.parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise PathError(f"{arg} {str(path)!r} cannot be created: {str(ancestor)!r} is a file, not a folder")
    if not _writable(ancestor):
        raise PathError(f"{arg} {str(path)!r} is not writable (no write permission in {str(ancestor)!r})")
    return path


def _writable(folder: Path) -> bool:
    """Try it: ``os.access`` says yes to root even on read-only mounts and pseudo file systems."""
    if not os.access(folder, os.W_OK | os.X_OK):
        return False
    try:
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".hf-illusions-write-test-")
    except OSError:
        return False
    os.close(fd)
    os.unlink(probe)
    return True


__all__ = ["check_output_path"]
