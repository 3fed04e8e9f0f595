"""Camera sources (OpenCV VideoCapture, image folders) and the per-camera reader thread.

A source yields raw uint8 BGR frames; :class:`CameraReader` prepares them with
:func:`algan.data.preprocess.prepare_frame` (the same crop+resize as training) and feeds a
:class:`~algan.edge.hub.FrameHub`. A source that cannot be opened, a corrupt frame or a dead camera is logged and
counted; it never stops the other cameras.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from algan.data.preprocess import ImageReadError, prepare_frame, read_image
from algan.edge.config import CameraConfig
from algan.edge.errors import SourceError
from algan.edge.hub import Frame, FrameHub

log = logging.getLogger(__name__)

#: File name suffixes a folder source reads (case-insensitive); other files are ignored.
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm"})
#: Open/read timeout for network streams (milliseconds), so a dead RTSP server cannot hang a reader for minutes.
STREAM_TIMEOUT_MS = 5000


class Corrupt:
    """Marker returned by :meth:`Source.read` for a frame that exists but cannot be decoded."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


class Source(Protocol):
    """A frame source. ``read`` returns a uint8 BGR frame (H, W, 3), a :class:`Corrupt` marker, or ``None`` at the end
    (file exhausted, camera died)."""

    def read(self) -> np.ndarray | Corrupt | None: ...

    def close(self) -> None: ...


class VideoSource:
    """OpenCV ``VideoCapture`` on a file, a device index/path or a stream URL.

    Raises:
        SourceError: when the file does not exist or OpenCV cannot open the source.
    """

    def __init__(self, source: int | str, kind: str) -> None:
        if kind == "file" and not Path(str(source)).is_file():
            raise SourceError(f"video file {source} does not exist; fix the camera's source path")
        if kind == "device":
            target: int | str = int(source) if isinstance(source, int) or str(source).isdigit() else str(source)
            cap = cv2.VideoCapture(target)
        elif kind == "stream":
            ms = STREAM_TIMEOUT_MS
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC, ms]
            cap = cv2.VideoCapture(str(source), cv2.CAP_FFMPEG, params)
        else:
            cap = cv2.VideoCapture(str(source))
        if not cap.isOpened():
            cap.release()
            hint = {
                "file": "not a video format OpenCV/FFmpeg decodes",
                "device": "no such camera, or it is busy / not permitted (check /dev/video* and the video group)",
                "stream": f"unreachable or silent for {STREAM_TIMEOUT_MS / 1000:.0f} s; check the URL and network",
            }[kind]
            raise SourceError(f"cannot open {kind} source {source}: {hint}")
        self._cap = cap

    def read(self) -> np.ndarray | Corrupt | None:
        ok, frame = self._cap.read()
        return frame if ok and frame is not None else None

    def close(self) -> None:
        self._cap.release()


class FolderSource:
    """Image files of a folder in sorted (name) order; undecodable files come back as :class:`Corrupt`.

    Raises:
        SourceError: when the folder does not exist or holds no image files.
    """

    def __init__(self, folder: str | Path) -> None:
        path = Path(folder)
        if not path.is_dir():
            raise SourceError(f"image folder {path} does not exist; fix the camera's source path")
        self._files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self._files:
            exts = " ".join(sorted(IMAGE_SUFFIXES))
            raise SourceError(f"image folder {path} holds no image files ({exts}); fix the camera's source path")
        self._pos = 0

    def read(self) -> np.ndarray | Corrupt | None:
        if self._pos >= len(self._files):
            return None
        p = self._files[self._pos]
        self._pos += 1
        try:
            return read_image(p)
        except ImageReadError as e:
            return Corrupt(str(e))

    def close(self) -> None:
        self._pos = len(self._files)


def open_source(cam: CameraConfig) -> Source:
    """Open a camera's source according to its (resolved) kind; a path to a directory is a folder source.

    Raises:
        SourceError: one-line reason when it cannot be opened.
    """
    kind = cam.resolved_kind
    if kind == "folder" or (kind == "file" and Path(str(cam.source)).is_dir()):
        return FolderSource(str(cam.source))
    return VideoSource(cam.source, kind)


@dataclass
class CameraCounters:
    """Counters of one camera, written by its reader thread only (read by the stats code)."""

    status: str = "starting"  # starting | online | offline | finished | failed
    read: int = 0  # frames taken from the source (including corrupt ones)
    corrupt: int = 0  # frames skipped because they could not be decoded or prepared
    reconnects: int = 0  # times a live source was reopened after failing or dying


class CameraReader(threading.Thread):
    """Reads one camera in its own thread and feeds prepared frames into the hub.

    Args:
        cam: camera config.
        size: model input ``(height, width)`` in pixels.
        hub: destination of prepared frames (the camera must not be registered yet; this does it).
        stop: shared stop event.
        on_status: called from this thread with ``(camera, status)`` when the status changes
            (``online``, ``offline``, ``finished``, ``failed``).
        open_fn: source factory (tests inject fakes).
    """

    def __init__(
        self,
        cam: CameraConfig,
        size: tuple[int, int],
        hub: FrameHub,
        stop: threading.Event,
        on_status: Callable[[str, str], None],
        open_fn: Callable[[CameraConfig], Source] = open_source,
    ) -> None:
        super().__init__(name=f"camera-{cam.name}", daemon=True)
        self.cam = cam
        self.size = size
        self.hub = hub
        self.stop = stop
        self.on_status = on_status
        self.open_fn = open_fn
        self.counters = CameraCounters()
        self._index = 0
        capacity = cam.queue_size or (1 if cam.is_live else 16)
        hub.register(cam.name, capacity, live=cam.is_live)

    def _set_status(self, status: str) -> None:
        if status != self.counters.status:
            self.counters.status = status
            self.on_status(self.cam.name, status)

    def run(self) -> None:
        name = self.cam.name
        try:
            while not self.stop.is_set():
                try:
                    src = self.open_fn(self.cam)
                except SourceError as e:
                    log.error("camera %s: %s", name, e)
                    if not self.cam.is_live:
                        self._set_status("failed")
                        return
                    self._set_status("offline")
                    self.stop.wait(self.cam.reconnect_interval_s)
                    self.counters.reconnects += 1
                    continue
                self._set_status("online")
                log.info("camera %s: opened %s", name, self.cam.source)
                try:
                    outcome = self._pump(src)
                finally:
                    src.close()
                if outcome == "failed":
                    self._set_status("failed")
                    return
                if not self.cam.is_live:
                    log.info("camera %s: source exhausted after %d frames", name, self._index)
                    self._set_status("finished")
                    return
                if self.stop.is_set():
                    return
                log.warning("camera %s: source stopped delivering frames; reopening in %.0f s", name,
                            self.cam.reconnect_interval_s)
                self._set_status("offline")
                self.stop.wait(self.cam.reconnect_interval_s)
                self.counters.reconnects += 1
        except Exception:  # a bug in one reader must not take the daemon down silently
            log.exception("camera %s: reader crashed", name)
            self._set_status("failed")
        finally:
            self.hub.close(name)

    def _pump(self, src: Source) -> str:
        """Read until the source ends, the stop event is set, or the ROI proves invalid ("failed")."""
        name, roi = self.cam.name, self.cam.roi
        while not self.stop.is_set():
            raw = src.read()
            if raw is None:
                return "ended"
            t_mono, t_wall = time.monotonic(), time.time()
            index = self._index
            self._index += 1
            self.counters.read += 1
            if isinstance(raw, Corrupt):
                self.counters.corrupt += 1
                log.warning("camera %s: frame %d skipped: %s", name, index, raw.reason)
                continue
            if roi is not None and raw.ndim >= 2:
                x, y, w, h = roi
                if x + w > raw.shape[1] or y + h > raw.shape[0]:
                    log.error("camera %s: roi %s does not fit in the %dx%d frame; fix the camera's roi setting",
                              name, list(roi), raw.shape[1], raw.shape[0])
                    return "failed"
            try:
                image = prepare_frame(raw, self.size, roi)
            except ValueError as e:
                self.counters.corrupt += 1
                log.warning("camera %s: frame %d skipped: %s", name, index, e)
                continue
            if not self.hub.put(Frame(name, index, image, t_mono, t_wall), self.stop):
                return "stopped"
        return "stopped"
