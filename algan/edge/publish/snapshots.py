"""Alarm snapshots: a JPEG of each alarm's peak frame, with retention by count and by age.

The daemon draws the snapshot (the full camera frame, heat map over the ROI, region outlined:
:func:`algan.runtime.maps.draw_overlay`) and the alarm event carries the file's name (relative to the directory), or
``null`` when no file was written for it (snapshots off, or the write failed).

:func:`expired` is the pure retention policy; :class:`SnapshotStore` is the thin I/O around it (encode, atomic
write, prune). :class:`PeakSnapshots` is the pure choice of which frame's snapshot is written, and when. One file
per alarm episode, named ``<camera>__<UTC time of the raise>__<alarm id>.jpg``; when the peak rises after the
raise, the same file is rewritten at the clear, so it always shows the episode's peak. Only files with that name
pattern are ever deleted, so pointing ``alarm.snapshots.dir`` at a shared folder is safe.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

import cv2
import numpy as np

from algan.contract import utc_iso
from algan.edge.state import make_private_dir, write_private
from algan.runtime.inference import Prediction
from algan.runtime.maps import Region

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


@dataclass(frozen=True)
class Snapshot:
    """A frame that may become an alarm's snapshot: its pixels (the full camera frame, or the model input when the
    reader handed over no full frame) and the :class:`~algan.runtime.inference.Prediction` of its runner output
    (score, map cells, ROI in those pixels, threshold; the region is computed when the snapshot is drawn)."""

    image: np.ndarray
    prediction: Prediction


def snapshot_name(camera: str, raised_ts: float, alarm_id: str) -> str:
    """File name of an episode's snapshot, e.g. ``cam1__20261130T010203.456Z__3f2a....jpg``."""
    return f"{camera}__{utc_iso(raised_ts, basic=True)}__{alarm_id}.jpg"


T = TypeVar("T")


@dataclass(frozen=True)
class SnapshotPlan(Generic[T]):
    """What to do for one alarm event (see :meth:`PeakSnapshots.plan`).

    Attributes:
        raised: the event raises the alarm (else it clears it).
        peak_frame: the episode's peak frame so far.
        candidate: the kept peak frame, ``None`` when it was not kept.
        name: the snapshot's file name.
        redraw: compute the region from :attr:`candidate` and write the snapshot now; else the event carries
            :attr:`name` and :attr:`region` as they are (written at the raise, the peak did not rise since).
        region: the region of the raise's snapshot (when not :attr:`redraw`).
    """

    raised: bool
    peak_frame: int
    candidate: T | None
    name: str | None
    redraw: bool
    region: Region | None = None


class PeakSnapshots(Generic[T]):
    """Per camera, the frames that may still become an alarm's peak frame, and the open alarm's snapshot; pure.

    The caller keeps each scored frame's pixels with :meth:`offer` (only the alarm tracker's snapshot candidates are
    held: at most ``raise_window`` before a raise, one while alarmed), asks :meth:`plan` at an alarm event what to
    write, writes it, and reports back with :meth:`settle`. At the raise the peak frame's snapshot is written; at
    the clear it is written again only when the peak rose after the raise (else the raise's file and region stand).
    """

    def __init__(self) -> None:
        self._frames: dict[str, dict[int, T]] = {}
        #: camera -> (the episode's file name, given at the raise; whether it was written; its peak frame; region)
        self._open: dict[str, tuple[str, bool, int, Region | None]] = {}

    def offer(self, camera: str, index: int, item: T, candidates: Collection[int],
              peak_frame: int | None = None) -> T | None:
        """Hold frame ``index`` of ``camera`` if it is a candidate (or the event's ``peak_frame``), drop the frames
        that are no longer candidates.

        Returns:
            The held item of ``peak_frame`` (an event's peak), ``None`` when it was not held or no event.
        """
        frames = self._frames.setdefault(camera, {})
        if index in candidates or index == peak_frame:
            frames[index] = item
        found = frames.get(peak_frame) if peak_frame is not None else None
        for i in [i for i in frames if i not in candidates]:
            del frames[i]
        return found

    def held(self, camera: str) -> list[int]:
        """Frame indices held for ``camera``, ascending."""
        return sorted(self._frames.get(camera, {}))

    def plan(self, camera: str, raised: bool, peak_frame: int, candidate: T | None, name: str) -> SnapshotPlan[T]:
        """What to write for an alarm event of ``camera`` whose peak is ``peak_frame`` (``candidate``: its held
        item); ``name`` is the file name of this episode (:func:`snapshot_name` of the raise's time). At a clear the
        raise's name is kept, also when the raise's write failed and the clear writes the file; ``name`` is used only
        for a clear whose raise was not seen."""
        if raised:
            return SnapshotPlan(True, peak_frame, candidate, name, redraw=True)
        episode, written, saved, region = self._open.pop(camera, (name, False, -1, None))
        if candidate is not None and peak_frame != saved:
            return SnapshotPlan(False, peak_frame, candidate, episode, redraw=True)
        return SnapshotPlan(False, peak_frame, candidate, episode if written else None, redraw=False, region=region)

    def settle(self, camera: str, plan: SnapshotPlan[T], written: bool, region: Region | None) -> str | None:
        """Record the outcome of ``plan`` (``written``: the file was written; ``region``: the event's region).

        Returns:
            The snapshot file name the event carries: the file written now (``None`` when it was not: snapshots
            off, no kept frame, or a failed write), or for a clear that did not redraw, the raise's file (or
            ``None``).
        """
        if plan.raised:
            assert plan.name is not None
            self._open[camera] = (plan.name, written, plan.peak_frame, region)
        if plan.redraw:
            return plan.name if written else None
        return plan.name


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
