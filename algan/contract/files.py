"""File helpers of the bundle contract: the one hash (:func:`file_sha256`), the one timestamp format
(:func:`utc_iso`), durable writes (a reader sees the old or the new file or directory, never half of it) and the
refusal of output directories whose replacement would destroy a user's files (:func:`check_output_dir`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from algan.contract.names import MANIFEST_FILE


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


class OutputDirError(ValueError):
    """An output directory the program refuses to write: it holds files the program did not create, it contains or
    lies inside the input data, or it holds an earlier output and replacing it was not asked for (``--force``)."""


#: entry names a model bundle may hold (fnmatch patterns): what training, calibration, export and engine builds write
#: there. Anything else in a directory is a user's file, which replacing the directory would delete.
BUNDLE_ENTRY_PATTERNS = ("algan.*", "model.*", "*.safetensors", "*.cache", "calibration_*", ".*.tmp", ".tmp-*")


def is_bundle_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory holding a model bundle's manifest (:data:`MANIFEST_FILE`)."""
    return (Path(path) / MANIFEST_FILE).is_file()


def foreign_entries(path: str | os.PathLike[str], patterns: tuple[str, ...] = BUNDLE_ENTRY_PATTERNS) -> list[str]:
    """Names in directory ``path`` that match none of ``patterns`` (sorted), i.e. entries the program never writes.
    Sub-directories are always foreign."""
    import fnmatch

    out = []
    for e in os.scandir(path):
        if e.is_dir(follow_symlinks=False) or not any(fnmatch.fnmatchcase(e.name, pat) for pat in patterns):
            out.append(e.name)
    return sorted(out)


def _overlaps(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are the same directory or one lies inside the other (both resolved)."""
    return a == b or a in b.parents or b in a.parents


def check_output_dir(out: str | os.PathLike[str], *, force: bool, flag: str = "--out",
                     inputs: dict[str, str | os.PathLike[str] | None] | None = None,
                     kind: str = "model bundle") -> None:
    """Refuse an output directory whose replacement would destroy what the program did not write.

    Accepted: a path that does not exist, an empty directory, and (only with ``force``) an earlier model bundle
    (:func:`is_bundle_dir`) holding nothing but bundle files (:data:`BUNDLE_ENTRY_PATTERNS`).

    Args:
        out: the directory to be written (replaced as a whole by :func:`atomic_directory`).
        force: the user asked to replace an earlier bundle (``--force``).
        flag: the option's name in messages.
        inputs: ``{option name: path}`` of inputs (``--data``, ``--checkpoint``) that must neither contain ``out``
            nor lie inside it; ``None`` values are ignored.

    Raises:
        OutputDirError: one line naming the directory, what it holds and the fix.
    """
    path = Path(out)
    resolved = path.resolve()
    for name, src in (inputs or {}).items():
        if src is None:
            continue
        s = Path(src).resolve()
        if _overlaps(resolved, s):
            where = ("is" if resolved == s else "contains" if resolved in s.parents else "lies inside")
            raise OutputDirError(f"{flag} {path} {where} {name} {src}; writing the {kind} there would replace "
                                 f"the input: choose an {flag} directory outside it")
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise OutputDirError(f"{flag} {path} exists and is not a directory; choose a new directory name")
    if path.is_symlink():
        raise OutputDirError(f"{flag} {path} is a symbolic link; give the directory it points to, or a new name")
    entries = sorted(os.listdir(path))
    if not entries:
        return
    if not is_bundle_dir(path):
        shown = ", ".join(entries[:3]) + (f" (+{len(entries) - 3} more)" if len(entries) > 3 else "")
        raise OutputDirError(f"{flag} {path} is not empty and is not a {kind} (it holds {shown}); nothing was "
                             f"written: choose a new or empty directory")
    foreign = foreign_entries(path)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
        raise OutputDirError(f"{flag} {path} holds an earlier {kind} and files that are not part of one ({shown}); "
                             f"nothing was written: move those files out or choose another directory")
    if not force:
        raise OutputDirError(f"{flag} {path} holds an earlier {kind}; pass --force to replace it, or choose "
                             "another directory")
