"""File helpers of the bundle contract: the one hash (:func:`file_sha256`), the one timestamp format
(:func:`utc_iso`) and durable writes (a reader sees the old or the new file or directory, never half of it)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in ``chunk``-byte blocks (default 1 MiB).

    Raises:
        OSError: the file cannot be read.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_iso(ts: float, *, basic: bool = False) -> str:
    """A Unix time (seconds, float) as UTC ISO 8601 with milliseconds (rounded) and ``Z``: the one timestamp format of
    manifests, MQTT payloads and log lines, e.g. ``2026-11-30T01:02:03.456Z``; ``basic=True`` gives the ISO 8601
    basic form without separators, for file names, e.g. ``20261130T010203.456Z``."""
    s, ms = divmod(int(round(ts * 1000.0)), 1000)
    t = time.gmtime(s)
    if basic:
        return f"{t.tm_year:04d}{t.tm_mon:02d}{t.tm_mday:02d}T{t.tm_hour:02d}{t.tm_min:02d}{t.tm_sec:02d}.{ms:03d}Z"
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d}Z"


def utc_now_iso() -> str:
    """The current time as :func:`utc_iso`."""
    return utc_iso(time.time())


# -- durable writes ---------------------------------------------------------------------------------------------
def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` a file or directory so that its contents (a directory: its entries) survive a power cut; silently
    skipped where the platform cannot open or sync it (e.g. directories on Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def replace_directory(tmp: str | os.PathLike[str], final: str | os.PathLike[str]) -> Path:
    """Atomically put the finished directory ``tmp`` in place of ``final`` (same file system).

    Every file below ``tmp`` and ``tmp`` itself are fsynced first; an existing ``final`` is renamed to
    ``.<name>.old`` beside it, ``tmp`` renamed to ``final``, the parent directory fsynced, and the old copy removed.
    A crash leaves either the old or the new directory at ``final`` (or, between the two renames, the old one at
    ``.<name>.old``), never a half-written one.

    Returns:
        ``final`` as a Path.

    Raises:
        OSError: a rename failed (``tmp`` is left for the caller to remove).
    """
    tmp, final = Path(tmp), Path(final)
    for dirpath, _, files in os.walk(tmp):
        for name in files:
            fsync_path(Path(dirpath) / name)
        fsync_path(dirpath)
    if final.exists():
        old = final.with_name(f".{final.name}.old")
        if old.exists():
            shutil.rmtree(old)
        final.rename(old)
        tmp.rename(final)
        fsync_path(final.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)
        fsync_path(final.parent)
    return final


@contextmanager
def atomic_directory(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a directory under a temporary name beside ``final`` and swap it in with :func:`replace_directory` when
    the ``with`` block succeeds; on any exception the temporary directory is removed and ``final`` is untouched.

    Example::

        with atomic_directory(out) as tmp:
            (tmp / MANIFEST_FILE).write_text(...)
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp"))
    try:
        yield tmp
        replace_directory(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


#: modes of bundle directories and files: a bundle holds nothing secret and is often trained as one user and run as
#: another (the service's User=), so it is world-readable whatever the umask (mkstemp/mkdtemp would give 0600/0700)
BUNDLE_DIR_MODE = 0o755
BUNDLE_FILE_MODE = 0o644


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file beside it (mode :data:`BUNDLE_FILE_MODE`) renamed over it:
    a reader sees the old or the new contents, never half of them.

    Raises:
        OSError: the directory is not writable (nothing is left behind).
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, BUNDLE_FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
