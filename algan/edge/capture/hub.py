"""Frames in flight between camera reader threads and the inference loop.

:class:`FrameHub` keeps one bounded FIFO per camera behind a single condition variable:

* finite sources (files, folders) block the reader when their FIFO is full (back-pressure: no frame is dropped);
* live sources (devices, streams) never block: the oldest frame is dropped and counted, so the newest is kept;
* the consumer takes frames round-robin across cameras, so a fast camera cannot starve a slow one.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Frame:
    """One prepared frame.

    Attributes:
        camera: camera name.
        index: frame index in the camera's source, from 0 (counts every frame read, including dropped/corrupt).
        image: uint8 BGR, shape (H, W, 3) = the model input size, C-contiguous; for a tiled model
            (:mod:`algan.runtime.tiling`) the frame's tiles, (rows * cols, H, W, 3).
        t_mono: capture time, ``time.monotonic()`` seconds (for latency).
        t_wall: capture time, Unix seconds (for message timestamps).
        done: called (main thread) once the frame's score, and its alarm event if any, are handed to the
            publisher; a watched folder's journal records the file then. ``None`` for other sources.
        raw: the full camera frame before ROI crop and resize (uint8, (H, W, 3) or (H, W)) when the daemon keeps
            it for full-frame alarm snapshots, else ``None``.
        source_name: file name of a folder source's image (carried in its score messages), else ``None``.
        roi_hw: ``(height, width)`` of the region the tiles were cut from (tiled models), else ``None``.
    """

    camera: str
    index: int
    image: np.ndarray
    t_mono: float
    t_wall: float
    done: Callable[[], None] | None = None
    raw: np.ndarray | None = None
    source_name: str | None = None
    roi_hw: tuple[int, int] | None = None


class FrameHub:
    """Thread-safe per-camera bounded queues with round-robin consumption.

    Producers call :meth:`register` once, then :meth:`put` per frame and :meth:`close` when they end. The single
    consumer calls :meth:`get`. All methods are safe to call from any thread.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: dict[str, deque[Frame]] = {}
        self._capacity: dict[str, int] = {}
        self._live: dict[str, bool] = {}
        self._open: set[str] = set()
        self._order: list[str] = []
        self._next = 0
        #: frames a live camera dropped because its queue was full (newest kept), per camera
        self.dropped: dict[str, int] = {}
        #: puts of a file/folder camera that had to wait for room (back-pressure on the reader), per camera
        self.waits: dict[str, int] = {}

    def register(self, camera: str, capacity: int, live: bool) -> None:
        """Add a camera with a FIFO of ``capacity`` frames (>= 1); ``live`` selects drop-oldest over blocking."""
        with self._cond:
            self._queues[camera] = deque()
            self._capacity[camera] = max(1, int(capacity))
            self._live[camera] = live
            self._open.add(camera)
            self._order.append(camera)
            self.dropped[camera] = 0
            self.waits[camera] = 0

    def put(self, frame: Frame, stop: threading.Event) -> bool:
        """Queue a frame. Live cameras drop their oldest frame when full; others wait for room.

        Returns:
            ``False`` when ``stop`` was set while waiting (the frame was not queued), else ``True``.
        """
        cam = frame.camera
        with self._cond:
            q = self._queues[cam]
            if self._live[cam]:
                while len(q) >= self._capacity[cam]:
                    q.popleft()
                    self.dropped[cam] += 1
            elif len(q) >= self._capacity[cam]:
                self.waits[cam] += 1
                while len(q) >= self._capacity[cam]:
                    if stop.is_set():
                        return False
                    self._cond.wait(0.1)
            q.append(frame)
            self._cond.notify_all()
            return True

    def close(self, camera: str) -> None:
        """Mark a camera's producer as finished (its queued frames are still delivered)."""
        with self._cond:
            self._open.discard(camera)
            self._cond.notify_all()

    def get(self, timeout: float) -> Frame | None:
        """Take the next frame, round-robin over cameras; ``None`` after ``timeout`` seconds without one."""
        with self._cond:
            frame = self._pop()
            if frame is None and timeout > 0:
                self._cond.wait(timeout)
                frame = self._pop()
            if frame is not None:
                self._cond.notify_all()
            return frame

    def _pop(self) -> Frame | None:
        n = len(self._order)
        for k in range(n):
            cam = self._order[(self._next + k) % n]
            q = self._queues[cam]
            if q:
                self._next = (self._next + k + 1) % n
                return q.popleft()
        return None

    def exhausted(self) -> bool:
        """True when every producer is closed and every queue is empty."""
        with self._cond:
            return not self._open and not any(self._queues.values())

    def depth(self) -> int:
        """Frames currently queued over all cameras."""
        with self._cond:
            return sum(len(q) for q in self._queues.values())

    def depths(self) -> dict[str, int]:
        """Frames currently queued, per camera."""
        with self._cond:
            return {cam: len(q) for cam, q in self._queues.items()}
