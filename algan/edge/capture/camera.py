"""One reader thread per camera: open, read, prepare, hand over; reopen dead or stale sources with backoff.

:class:`CameraReader` drives a :class:`~algan.edge.capture.sources.Source`, prepares frames with
:func:`algan.runtime.preprocess.prepare_frame` (the same crop + resize as training) and feeds a
:class:`~algan.edge.capture.hub.FrameHub`:

* live sources (devices, streams, GStreamer) never block: the hub keeps the newest frame and counts drops;
  files and folders block when the hub is full (no frame is ever dropped);
* a corrupt frame or unreadable image is skipped and counted, never fatal;
* stale-frame watchdog: a live source whose reads fail, or deliver only corrupt frames, for
  ``stale_timeout_s`` seconds is released and reopened; waits between reopen attempts double from
  ``reconnect_interval_s`` up to ``reconnect_max_s`` and reset after the next good frame. A watched folder that
  disappears is reopened the same way. (A ``read()`` that hangs inside OpenCV is bounded by the stream read
  timeout; the daemon's systemd watchdog covers the rest, since WATCHDOG=1 stops when no frame flows.)
* status changes (``online``, ``offline``, ``finished``, ``failed``) go to a callback; the daemon publishes them.
* target fps (:class:`~algan.edge.capture.sources.FrameGate`) and replay pacing
  (:class:`~algan.edge.capture.sources.Pacer`).
* with ``reader_nice`` > 0 the reader thread runs that many steps nicer than the daemon
  (:func:`lower_thread_priority`): on a box that runs nothing else it decodes in the gaps of the inference threads
  instead of delaying them (any other busy process starves it, hence off by default).

A dead camera only ends its own thread: the other cameras never notice.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from algan.edge.capture.hub import Frame, FrameHub
from algan.edge.capture.sources import Corrupt, FrameGate, NoFrame, Pacer, Source, open_source
from algan.edge.config import CameraConfig
from algan.edge.errors import SourceError
from algan.edge.logs import redact
from algan.runtime.preprocess import prepare_frame
from algan.runtime.tiling import TileSpec, prepare_tiles

log = logging.getLogger(__name__)

#: Pause after a failed read of a live source before trying again (seconds).
RETRY_S = 0.02
#: Pause while a watched folder has nothing new (seconds); also bounds how often the folder is scanned.
IDLE_S = 0.1
#: Native frame rate assumed for a realtime replay whose source does not say (frames/s).
DEFAULT_REPLAY_FPS = 25.0


def lower_thread_priority(steps: int) -> int | None:
    """Make the calling thread ``steps`` nice steps nicer (at most 19). On Linux the nice value is per thread, and the
    threads it starts afterwards (FFmpeg's decoder threads) inherit it; raising it needs no privilege.

    Returns:
        The thread's nice value now, or ``None`` when unchanged (``steps`` <= 0, not Linux, or refused: logged at
        debug level, the reader runs on at the daemon's priority).
    """
    if steps <= 0 or not sys.platform.startswith("linux"):
        return None
    tid = threading.get_native_id()
    try:
        nice = min(19, os.getpriority(os.PRIO_PROCESS, tid) + int(steps))
        os.setpriority(os.PRIO_PROCESS, tid, nice)
    except OSError as e:
        log.debug("cannot lower the priority of thread %d: %s", tid, e)
        return None
    return nice


@dataclass
class CameraCounters:
    """Counters of one camera, written by its reader thread only (read by the stats code).

    Attributes:
        status: ``starting`` | ``online`` | ``offline`` | ``finished`` | ``failed``.
        read: frames taken from the source (including corrupt and skipped ones).
        corrupt: frames skipped because they could not be decoded or prepared.
        skipped: frames skipped to meet the camera's target ``fps``.
        read_failures: failed reads of a live source (no frame returned).
        reconnects: times the source was reopened after failing, dying or going stale.
        stale: times the stale-frame watchdog fired.
        loops: times a looped replay started again.
        last_frame: monotonic time of the last good frame (seconds), ``None`` before the first.
    """

    status: str = "starting"
    read: int = 0
    corrupt: int = 0
    skipped: int = 0
    read_failures: int = 0
    reconnects: int = 0
    stale: int = 0
    loops: int = 0
    last_frame: float | None = None


class CameraReader(threading.Thread):
    """Reads one camera in its own thread and feeds prepared frames into the hub.

    Args:
        cam: camera config.
        size: model input ``(height, width)`` in pixels.
        hub: destination of prepared frames (the camera must not be registered yet; this does it).
        stop: shared stop event.
        on_status: called from this thread with ``(camera, status)`` when the status changes.
        open_fn: source factory (tests inject fakes).
        clock: monotonic clock (seconds).
        keep_raw: also hand over the full frame (``Frame.raw``, for full-frame alarm snapshots).
        tiling: a tiled model's grid (:class:`algan.runtime.tiling.TileSpec`): frames are handed over as their tiles
            (:func:`algan.runtime.tiling.prepare_tiles`), else resized whole.
    """

    def __init__(
        self,
        cam: CameraConfig,
        size: tuple[int, int],
        hub: FrameHub,
        stop: threading.Event,
        on_status: Callable[[str, str], None],
        open_fn: Callable[[CameraConfig], Source] = open_source,
        clock: Callable[[], float] = time.monotonic,
        keep_raw: bool = False,
        tiling: TileSpec | None = None,
    ) -> None:
        super().__init__(name=f"camera-{cam.name}", daemon=True)
        self.keep_raw = keep_raw
        self.tiling = tiling
        self.cam = cam
        self.size = size
        self.hub = hub
        self.stop = stop
        self.on_status = on_status
        self.open_fn = open_fn
        self.clock = clock
        self.counters = CameraCounters()
        self._index = 0
        self._backoff = cam.reconnect_interval_s
        capacity = cam.queue_size or (1 if cam.is_live else 16)
        hub.register(cam.name, capacity, live=cam.is_live)

    def _set_status(self, status: str) -> None:
        if status != self.counters.status:
            self.counters.status = status
            self.on_status(self.cam.name, status)

    def _wait_backoff(self) -> None:
        """Wait the current backoff (interruptible by stop), then double it up to ``reconnect_max_s``."""
        self.stop.wait(self._backoff)
        self.counters.reconnects += 1
        self._backoff = min(self._backoff * 2.0, self.cam.reconnect_max_s)

    def run(self) -> None:
        name = self.cam.name
        # reader_nice > 0: decoding and resizing give way to the inference threads (ONNX Runtime's intra-op pool
        # sleeps between its parallel sections; a reader at the same priority can delay its wake-ups)
        lower_thread_priority(self.cam.reader_nice)
        try:
            while not self.stop.is_set():
                try:
                    src = self.open_fn(self.cam)
                except SourceError as e:
                    if not self.cam.endless:
                        log.error("camera %s: %s", name, e)
                        self._set_status("failed")
                        return
                    log.error("camera %s: %s; retrying in %.1f s", name, e, self._backoff)
                    self._set_status("offline")
                    self._wait_backoff()
                    continue
                self._set_status("online")
                log.info("camera %s: opened %s", name, redact(str(self.cam.source)))
                try:
                    outcome = self._pump(src)
                finally:
                    src.close()
                if outcome == "failed":
                    self._set_status("failed")
                    return
                if self.stop.is_set() or outcome == "stopped":
                    return
                if outcome == "ended" and self.cam.loop:
                    self.counters.loops += 1
                    continue
                if outcome == "ended" and not self.cam.endless:
                    log.info("camera %s: source exhausted after %d frames", name, self._index)
                    self._set_status("finished")
                    return
                why = "no frame" if outcome == "stale" else "source ended"
                if outcome == "stale":
                    self.counters.stale += 1
                    why = f"no frame for {self.cam.stale_timeout_s:g} s"
                log.warning("camera %s: %s; released, reopening in %.1f s", name, why, self._backoff)
                self._set_status("offline")
                self._wait_backoff()
        except Exception:  # a bug in one reader must not take the daemon down silently
            log.exception("camera %s: reader crashed", name)
            self._set_status("failed")
        finally:
            self.hub.close(name)

    def _replay_fps(self, src: Source) -> float | None:
        cam = self.cam
        if cam.replay_fps:
            return cam.replay_fps
        if cam.realtime:
            if src.fps is None:
                log.warning("camera %s: source has no frame rate; realtime replay at %g frames/s (set replay_fps)",
                            cam.name, DEFAULT_REPLAY_FPS)
            return src.fps or DEFAULT_REPLAY_FPS
        return None

    def _pump(self, src: Source) -> str:
        """Read until the source ends ("ended"), goes stale ("stale"), the stop event is set ("stopped"), or the
        ROI proves invalid ("failed")."""
        cam = self.cam
        name, roi, live = cam.name, cam.roi, cam.is_live
        pacer = Pacer(None if live else self._replay_fps(src), self.clock)
        gate = FrameGate(cam.fps)
        native = None if live else (self._replay_fps(src) or src.fps)
        if cam.fps and not live and native is None:
            log.warning("camera %s: fps needs the source's frame rate, which a folder lacks; set replay_fps", name)
            gate = FrameGate(None)
        n_src = 0  # frames read from this opening (source time for the fps gate)
        last_good = self.clock()
        while not self.stop.is_set():
            wait = pacer.delay()
            if wait > 0 and self.stop.wait(wait):
                return "stopped"
            raw = src.read()
            now = self.clock()
            ack = src.acker()  # a watched folder's journal entry for this file
            if raw is None or isinstance(raw, NoFrame):
                if live and now - last_good >= cam.stale_timeout_s:
                    return "stale"
                if raw is None and not live:
                    return "ended"
                if raw is None:
                    self.counters.read_failures += 1
                self.stop.wait(RETRY_S if raw is None else IDLE_S)
                continue
            t_wall = time.time()
            index = self._index
            self._index += 1
            self.counters.read += 1
            t_src = n_src / native if native else now
            n_src += 1
            if isinstance(raw, Corrupt):
                self.counters.corrupt += 1
                log.warning("camera %s: frame %d skipped: %s", name, index, raw.reason)
                if ack is not None:
                    ack()  # nothing to score in it: not read again after a restart
                if live and now - last_good >= cam.stale_timeout_s:
                    return "stale"
                continue
            if not gate.keep(t_src):
                self.counters.skipped += 1
                last_good = now
                if ack is not None:
                    ack()
                continue
            if roi is not None and raw.ndim >= 2:
                x, y, w, h = roi
                if x + w > raw.shape[1] or y + h > raw.shape[0]:
                    log.error("camera %s: roi %s does not fit in the %dx%d frame; fix the camera's roi setting",
                              name, list(roi), raw.shape[1], raw.shape[0])
                    return "failed"
            roi_hw = None
            try:
                if self.tiling is not None:
                    image, roi_hw = prepare_tiles(raw, self.size, roi, self.tiling)
                else:
                    image = prepare_frame(raw, self.size, roi)
            except ValueError as e:
                self.counters.corrupt += 1
                log.warning("camera %s: frame %d skipped: %s", name, index, e)
                if ack is not None:
                    ack()
                continue
            last_good = now
            self.counters.last_frame = now
            self._backoff = cam.reconnect_interval_s  # frames flow again: the next failure starts a fresh backoff
            frame = Frame(name, index, image, now, t_wall, ack, raw if self.keep_raw else None,
                          src.last_name, roi_hw)
            if not self.hub.put(frame, self.stop):
                return "stopped"
        return "stopped"
