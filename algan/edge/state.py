"""Permissions of the daemon's state: the outbox, the folder journals and the alarm snapshots are private to the
daemon's user (directories 0700, files 0600), whatever the umask (the systemd unit sets ``UMask=0077`` as well).

Only directories and files this module creates get the mode; an existing directory (e.g. systemd's
``StateDirectory=``, or a folder the operator chose) keeps the mode it has.
"""

from __future__ import annotations

import os
from pathlib import Path

#: mode of state directories the daemon creates
DIR_MODE = 0o700
#: mode of state files the daemon creates
FILE_MODE = 0o600


def make_private_dir(path: str | Path) -> Path:
    """Create ``path`` and missing parents with mode 0700 (existing ones are left as they are).

    Raises:
        OSError: it cannot be created.
    """
    path = Path(path)
    missing = []
    p = path
    while not p.exists() and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=DIR_MODE)
        except FileExistsError:
            continue
        os.chmod(d, DIR_MODE)  # mkdir's mode is masked by the umask
    return path


def make_private_file(path: str | Path) -> Path:
    """Create ``path`` (and its directory, see :func:`make_private_dir`) with mode 0600 if it does not exist yet, so
    that SQLite (which gives its -wal/-shm files the database's mode) opens a private file.

    Raises:
        OSError: it cannot be created.
    """
    path = Path(path)
    make_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return path
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    return path


def write_private(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a new or truncated file of mode 0600.

    Raises:
        OSError: it cannot be written.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            f.write(data)
    finally:
        if fd >= 0:
            os.close(fd)
