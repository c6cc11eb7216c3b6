"""Paths: where results may be written, and how reports and cards print the paths they name.

Every command that writes (data build, simplify, evaluate, verify --out, train, reproduce) calls
:func:`check_output_path` first: an existing output is never replaced silently (``overwrite``),
and a path that cannot be created fails in a second rather than after minutes of fitting.

Reports and cards are read on other machines (committed, pushed to the Hub), so they never print
an absolute path of the machine that made them: :func:`portable_path` and :func:`portable_text`
turn such paths into paths relative to the repository (the working directory) or to the folder
the report or card lives in.
"""

from __future__ import annotations

import os
import re
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


def _relative_to(path: str, root: str) -> str | None:
    """``path`` relative to ``root`` if it lies under it (plain and symlink-resolved spellings), else None."""
    for spell in (os.path.abspath, os.path.realpath):
        p, r = spell(path), spell(root)
        if p == r or p.startswith(r.rstrip(os.sep) + os.sep):
            return Path(os.path.relpath(p, r)).as_posix()
    return None


def portable_path(path: str | Path, start: str | Path | None = None) -> str:
    """``path`` as a report or card prints it: never an absolute path of this machine.

    A path under the working directory (the repository, where every command is run from) is
    given relative to it (``checkpoints/dyck``). Any other absolute path is given relative to
    ``start`` — the folder of the report or card that names it — so it still resolves from
    there (``../model``); without ``start``, relative to the working directory. Relative inputs
    that name no existing file (a Hub id such as ``gpt2`` or ``user/model``) are returned as given.
    """
    text = os.fspath(path)
    if not os.path.isabs(text) and not os.path.exists(text):
        return Path(text).as_posix() if text else text
    inside = _relative_to(text, os.getcwd())
    if inside is not None:
        return inside
    try:
        return Path(os.path.relpath(os.path.abspath(text), os.path.abspath(start or os.getcwd()))).as_posix()
    except ValueError:  # another drive (Windows): nothing relative exists
        return Path(text).name


#: an absolute POSIX path inside free text: not part of a URL (``https://…``) or of a relative path
_ABSOLUTE_IN_TEXT = re.compile(r"(?<![\w.:/~-])/[\w.+@~-]+(?:/[\w.+@~-]*)*")


def portable_text(text: str, start: str | Path | None = None) -> str:
    """``text`` (a command line, a "results from …" note) with every absolute path made portable.

    Only tokens whose first component exists on this machine (``/work/…``, ``/tmp/…``) count as
    paths, so a slash in prose is left alone; each is rewritten by :func:`portable_path`.
    """

    def replace(match: re.Match) -> str:
        token = match.group(0)
        first = token.split("/")[1]
        return portable_path(token, start) if os.path.exists("/" + first) else token

    return _ABSOLUTE_IN_TEXT.sub(replace, text)


__all__ = ["check_output_path", "portable_path", "portable_text"]
