"""Alarm snapshots: a JPEG of the frame of each ``raised`` and ``update`` alarm event, with retention by count and by
age.

The daemon draws the snapshot (the full camera frame, heat map over the ROI, region outlined:
:func:`algan.runtime.maps.draw_overlay`) from the very frame whose score and region the event carries, and the event
carries the file's name (relative to the directory), or ``null`` when no file was written for it (snapshots off, or
the write failed). :func:`expired` is the pure retention policy; :class:`SnapshotStore` is the thin I/O around it
(encode, atomic write, prune). Files are named ``<camera>__<UTC time of the event's frame>__<alarm id>.jpg`` (an
``update`` event's id ends in ``-u<frame>``) and never rewritten. Only files with that name pattern are ever
deleted, so pointing ``alarm.snapshots.dir`` at a shared folder is safe.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from algan.contract import utc_iso
from algan.edge.state import make_private_dir, write_private

log = logging.getLogger(__name__)

#: Names of the files this module writes (and the only ones retention deletes).
SNAPSHOT_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*__\d{8}T\d{6}\.\d{3}Z__[0-9A-Za-z_-]+\.jpg")
#: The temporary file a snapshot is written to before its atomic rename (``.<snapshot name>.tmp``).
TEMP_RE = re.compile(r"\.(" + SNAPSHOT_RE.pattern + r")\.tmp")


def expired(files: Iterable[tuple[str, float]], now: float, max_count: int, max_age_s: float | None) -> list[str]:
    """Which snapshots to delete: everything older than ``max_age_s``, then the oldest beyond ``max_count``.

    Args:
        files: ``(name, mtime)`` pairs (mtime in Unix seconds).
        now: current time (Unix seconds).
        max_count: most files kept (>= 0).
        max_age_s: oldest age kept (seconds); ``None`` = no age limit.

    Returns:
        Names to delete, oldest first (ties broken by name).
    """
    ordered = sorted(files, key=lambda f: (f[1], f[0]))
    drop = [name for name, mtime in ordered if max_age_s is not None and now - mtime > max_age_s]
    kept = [name for name, mtime in ordered if name not in set(drop)]
    excess = len(kept) - max(0, max_count)
    if excess > 0:
        drop.extend(kept[:excess])
    order = {name: i for i, (name, _) in enumerate(ordered)}
    return sorted(drop, key=order.__getitem__)


def snapshot_name(camera: str, raised_ts: float, alarm_id: str) -> str:
    """File name of an episode's snapshot, e.g. ``cam1__20261130T010203.456Z__3f2a....jpg``."""
    return f"{camera}__{utc_iso(raised_ts, basic=True)}__{alarm_id}.jpg"


class SnapshotStore:
    """Writes peak-frame JPEGs into one directory and enforces retention.

    Args:
        directory: target directory (created on first use).
        max_count: most snapshots kept (files).
        max_age_s: oldest snapshot kept (seconds); ``None`` = no age limit.
        jpeg_quality: 1-100.
        clock: wall clock (Unix seconds), for age retention.
    """

    def __init__(self, directory: str | Path, max_count: int = 1000, max_age_s: float | None = 7 * 86400.0,
                 jpeg_quality: int = 90, clock=time.time) -> None:  # noqa: ANN001
        self.dir = Path(directory)
        self.max_count = int(max_count)
        self.max_age_s = max_age_s
        self.quality = int(jpeg_quality)
        self.clock = clock
        self.failures = 0
        self._warned = False

    def save(self, name: str, image: np.ndarray) -> str | None:
        """Encode ``image`` (uint8 BGR) as JPEG at :attr:`quality` and write it with :meth:`save_jpeg`.

        Returns:
            As :meth:`save_jpeg`; ``None`` also when the image cannot be encoded (logged once).
        """
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            self._failed(self.dir / name, OSError("JPEG encoding failed"))
            return None
        return self.save_jpeg(name, buf.tobytes())

    def save_jpeg(self, name: str, data: bytes) -> str | None:
        """Write the JPEG bytes ``data`` as ``<dir>/<name>`` atomically (replacing an older version), then prune.

        Returns:
            The absolute path, or ``None`` when it could not be written (logged once, counted in ``failures``;
            never raised: a full disk must not stop the alarms).
        """
        path = self.dir / name
        try:
            make_private_dir(self.dir)  # 0700/0600: alarm images are the daemon's state
            tmp = path.with_name(f".{name}.tmp")
            try:
                write_private(tmp, data)
                os.replace(tmp, path)
            except OSError:
                tmp.unlink(missing_ok=True)  # a full disk leaves no half-written temporary file behind
                raise
        except OSError as e:
            self._failed(path, e)
            return None
        self.prune()
        return str(path.resolve())

    def _failed(self, path: Path, e: OSError) -> None:
        self.failures += 1
        if not self._warned:
            self._warned = True
            log.error("cannot write alarm snapshot %s (%s); fix alarm.snapshots.dir (alarms go on without "
                      "snapshots)", path, e.strerror or e)

    def clean_temp(self) -> list[str]:
        """Delete the temporary files of snapshot writes an earlier run did not finish (killed, or the disk was
        full): only names this class writes (:data:`TEMP_RE`), never another file. Returns the deleted names."""
        try:
            names = [e.name for e in os.scandir(self.dir) if e.is_file() and TEMP_RE.fullmatch(e.name)]
        except OSError:
            return []
        gone = []
        for name in names:
            try:
                (self.dir / name).unlink()
                gone.append(name)
            except OSError as e:
                log.warning("cannot delete the unfinished snapshot %s: %s", self.dir / name, e)
        if gone:
            log.info("deleted %d unfinished snapshot file(s) in %s", len(gone), self.dir)
        return gone

    def prune(self) -> list[str]:
        """Delete snapshots beyond the retention limits; returns the deleted names."""
        try:
            entries = [(e.name, e.stat().st_mtime) for e in os.scandir(self.dir)
                       if e.is_file() and SNAPSHOT_RE.fullmatch(e.name)]
        except OSError:
            return []
        gone = expired(entries, self.clock(), self.max_count, self.max_age_s)
        for name in gone:
            try:
                (self.dir / name).unlink()
            except OSError as e:
                log.warning("cannot delete old alarm snapshot %s: %s", self.dir / name, e)
        return gone
