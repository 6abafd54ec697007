"""Confined, atomic file output: the one place where the CLI, the recorder and ``~/save_meshes`` write.

- ``check_id``: object ids become file names, so they are limited to a safe character set.
- ``atomic_write``: a file appears complete or not at all (temporary name in the same folder, then
  ``os.replace``), and a symlink at the destination is replaced, never followed.
- ``inside``: a relative path named by an input file (scene.json) that must stay in its folder.
- ``confined_folder``: a folder asked for by a caller (a ROS service) that must stay under a root.
- ``writable_folder``: an output folder checked before any work is done.
"""
from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path, PurePath

ID_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
ID_MAX_LENGTH = 64
# Every temporary or staged file this module's users create starts with this; leftovers of a killed
# run are recognised (and removed by the next complete write) by it.
TEMP_PREFIX = ".amodal3d-"


class UnsafePathError(ValueError):
    """A path or name that would read or write outside the folder it is confined to."""


def check_id(value) -> str:
    """``value`` if it is a safe object id (it names files); else UnsafePathError saying why."""
    if not isinstance(value, str):
        raise UnsafePathError(f"must be a string, got {type(value).__name__}")
    if not value:
        raise UnsafePathError("must not be empty")
    if len(value) > ID_MAX_LENGTH:
        raise UnsafePathError(f"is {len(value)} characters long, at most {ID_MAX_LENGTH} allowed")
    if not ID_PATTERN.fullmatch(value):
        raise UnsafePathError("may only hold letters, digits, '_', '.' and '-', and not start with '.' or '-'")
    return value


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` so that ``path`` holds the old content or the new one, never a part.

    A symlink at ``path`` is replaced by the file (rename never follows the destination), and the
    temporary file is created exclusively and without following links.
    """
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    tmp = path.with_name(f"{TEMP_PREFIX}tmp-{secrets.token_hex(6)}-{path.name}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())  # the content is on disk before the name points at it
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def remove_leftovers(folder: Path, keep: set[Path] = frozenset()) -> None:
    """Delete temporary/staged files of earlier (killed) writes in ``folder``, except ``keep``."""
    if not folder.is_dir():
        return
    for entry in folder.iterdir():
        if entry.name.startswith(TEMP_PREFIX) and entry not in keep and not entry.is_dir():
            entry.unlink(missing_ok=True)


def inside(root: Path, relative, what: str = "path") -> Path:
    """``root / relative`` resolved (symlinks followed) if it stays inside ``root``; else UnsafePathError."""
    if not isinstance(relative, str) or not relative:
        raise UnsafePathError(f"must be a non-empty relative path, got {relative!r}")
    if PurePath(relative).is_absolute():
        raise UnsafePathError(f"'{relative}' is absolute: {what}s must be relative to {root}")
    root_real = Path(root).resolve()
    target = (root_real / relative).resolve()
    if target == root_real or not target.is_relative_to(root_real):
        raise UnsafePathError(f"'{relative}' leads outside {root} (after '..' and symlinks)")
    return target


def confined_folder(root: str | Path, requested: str) -> Path:
    """The absolute folder for a caller's ``requested`` sub-folder of ``root`` ('' = ``root`` itself).

    Absolute requests are accepted only when they lie under ``root`` (e.g. a folder this function
    returned before); '..', '~' and symlinks that lead out of ``root`` are refused. Missing folders
    are created; the folder is checked again after that, so a link planted meanwhile is caught.
    """
    root = Path(root).expanduser().absolute()
    root.mkdir(parents=True, exist_ok=True)
    root_real = root.resolve()
    if requested.startswith("~"):
        raise UnsafePathError(f"'{requested}': '~' is not expanded; give a folder relative to {root}")
    folder = Path(requested) if Path(requested).is_absolute() else root / requested
    for _ in range(2):  # before and after creating it
        real = folder.resolve()
        if not (real == root_real or real.is_relative_to(root_real)):
            raise UnsafePathError(f"'{requested}' leads outside the save root {root} (after '..' and symlinks)")
        real.mkdir(parents=True, exist_ok=True)
    return real


def writable_folder(folder: str | Path, what: str) -> Path:
    """``folder``, created if missing, if it is a folder that can be written; else ValueError naming ``what``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UnsafePathError(f"{what} {folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UnsafePathError(f"{what} {folder}: cannot be created ({exc.strerror})") from exc
    # os.access alone says yes to root; a folder without any write permission bit is read-only by intent.
    if not os.access(folder, os.W_OK | os.X_OK) or not stat.S_IMODE(folder.stat().st_mode) & 0o222:
        raise UnsafePathError(f"{what} {folder}: folder is not writable")
    return folder
