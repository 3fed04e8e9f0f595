"""Permissions and ownership of the daemon's state: the outbox, the folder journals and the alarm snapshots are
private to the daemon's user (directories 0700, files 0600), whatever the umask (the systemd unit sets ``UMask=0077``
as well).

Only directories and files this module creates get the mode; an existing directory (e.g. systemd's
``StateDirectory=``, or a folder the operator chose) keeps the mode it has.

One daemon per state directory: :class:`StateLock` holds an exclusive ``fcntl.flock`` on ``algan-edge.lock`` in it
for the daemon's lifetime (the kernel releases it when the process ends, even on SIGKILL); the file holds the PID.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from algan.edge.errors import StateLockError

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


#: the lock file in a state directory
LOCK_NAME = "algan-edge.lock"


class StateLock:
    """An exclusive ``fcntl.flock`` on a state directory's :data:`LOCK_NAME` (created 0600, holding our PID).

    Args:
        directory: the state directory (created 0700 when missing).

    Raises:
        StateLockError: another process holds it (one line naming its PID and how to fix it).
        OSError: the directory or the lock file cannot be created.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = make_private_dir(directory)
        self.path = self.directory / LOCK_NAME
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = os.read(fd, 32).decode("ascii", "replace").strip() or "unknown"
            finally:
                os.close(fd)
            msg = (f"state directory {self.directory} is in use by another algan-edge (PID {holder}); stop that one, "
                   "or give this config its own device_id or mqtt.outbox.path")
            raise StateLockError(msg) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd: int | None = fd

    def release(self) -> None:
        """Unlock (idempotent; the file stays, empty of meaning once unlocked)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
