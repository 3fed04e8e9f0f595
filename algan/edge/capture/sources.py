"""Camera sources: OpenCV ``VideoCapture`` (V4L2 devices, files, RTSP/HTTP streams, GStreamer pipelines) and image
folders (read once, or watched for new files).

A source's :meth:`Source.read` returns one raw uint8 BGR frame ``(H, W, 3)``, a :class:`Corrupt` marker (the frame
exists but cannot be decoded), :data:`NO_FRAME` (nothing new yet: a watched folder is idle) or ``None`` (end of a
file, or a failed read of a live source). The per-camera thread that drives a source lives in
:mod:`algan.edge.capture.camera`; the pacing and frame-rate rules it applies are the pure classes :class:`FrameGate` and
:class:`Pacer` here.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from algan.contract import IMAGE_SUFFIXES, image_skip_reason, list_images  # the one rule for images of a folder
from algan.edge.capture.journal import FolderJournal
from algan.edge.config import CameraConfig
from algan.edge.errors import SourceError
from algan.edge.logs import redact
from algan.runtime.preprocess import MIN_IMAGE_SIDE, ImageReadError, decode_image  # noqa: F401 (MIN_IMAGE_SIDE re-exported)

log = logging.getLogger(__name__)

#: Suffixes of files still being written by a copy tool or browser; a watched folder never reads them.
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", "~")
#: Environment variable OpenCV's FFmpeg backend reads its demuxer options from, at ``VideoCapture`` open time.
FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
#: Serialises FFmpeg opens: streams set :data:`FFMPEG_OPTIONS_ENV` (process-wide), files must not see it.
_ENV_LOCK = threading.Lock()


class Corrupt:
    """Marker returned by :meth:`Source.read` for a frame that exists but cannot be decoded."""

    def __init__(self, reason: str, incomplete: bool = False) -> None:
        self.reason = reason
        self.incomplete = incomplete  # empty or cut short: a writer may still be writing it


class NoFrame:
    """Type of :data:`NO_FRAME`: the source is healthy but has nothing new yet (e.g. a watched folder is idle)."""

    def __repr__(self) -> str:
        return "NO_FRAME"


NO_FRAME = NoFrame()

ReadResult = np.ndarray | Corrupt | NoFrame | None


class Source(Protocol):
    """A frame source.

    Attributes:
        fps: native frame rate (frames/s) when known (video files, most cameras), else ``None``.
    """

    fps: float | None

    def read(self) -> ReadResult:
        """Next raw uint8 BGR frame (H, W, 3), :class:`Corrupt`, :data:`NO_FRAME`, or ``None`` (end / failed read)."""

    @property
    def last_name(self) -> str | None:
        """File name of the image the last :meth:`read` returned (image folders), else ``None``."""

    def acker(self) -> Callable[[], None] | None:
        """What records the last :meth:`read` as scored (a watched folder's journal), else ``None``."""

    def close(self) -> None:
        """Release the source (idempotent)."""


def ffmpeg_capture_options(rtsp_transport: str = "tcp", low_delay: bool = True) -> str:
    """The value of ``OPENCV_FFMPEG_CAPTURE_OPTIONS`` for a network stream: ``key;value`` pairs joined by ``|``.

    Example:
        >>> ffmpeg_capture_options("tcp", low_delay=True)
        'rtsp_transport;tcp|fflags;nobuffer|flags;low_delay'
    """
    opts = [f"rtsp_transport;{rtsp_transport}"]
    if low_delay:
        opts += ["fflags;nobuffer", "flags;low_delay"]
    return "|".join(opts)


@functools.lru_cache(maxsize=1)
def gstreamer_available() -> bool:
    """Whether this OpenCV build has the GStreamer backend (pip's opencv-python wheels do not)."""
    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GStreamer:"):
            return "YES" in line.split(":", 1)[1]
    return False


def _capture_fps(cap: Any) -> float | None:
    try:
        fps = float(cap.get(cv2.CAP_PROP_FPS))
    except (TypeError, ValueError, cv2.error):
        return None
    return fps if 0 < fps < 1000 else None


class VideoSource:
    """OpenCV ``VideoCapture`` on a file, a device index/path, a stream URL or a GStreamer pipeline.

    Args:
        source: file path, device index or ``/dev/videoN``, URL, or pipeline text (ending in ``appsink``).
        kind: ``file``, ``device``, ``stream`` or ``gstreamer``.
        rtsp_transport: stream only: ``tcp`` or ``udp`` (FFmpeg ``rtsp_transport``).
        low_delay: stream only: FFmpeg ``fflags nobuffer`` + ``flags low_delay``.
        open_timeout_s: stream only: ``CAP_PROP_OPEN_TIMEOUT_MSEC`` (seconds).
        read_timeout_s: stream only: ``CAP_PROP_READ_TIMEOUT_MSEC`` (seconds), so a silent server cannot hang the
            reader for minutes.
        capture: ``cv2.VideoCapture``-like factory (tests inject fakes), called as ``capture(target)`` or
            ``capture(target, api, params)``.

    Raises:
        SourceError: the file does not exist, OpenCV lacks GStreamer, or OpenCV cannot open the source.
    """

    def __init__(
        self,
        source: int | str,
        kind: str,
        *,
        rtsp_transport: str = "tcp",
        low_delay: bool = True,
        open_timeout_s: float = 10.0,
        read_timeout_s: float = 5.0,
        capture: Callable[..., Any] = cv2.VideoCapture,
    ) -> None:
        self.kind = kind
        if kind == "file" and not Path(str(source)).is_file():
            raise SourceError(f"video file {redact(str(source))} does not exist; fix the camera's source path")
        if kind == "device":
            target: int | str = int(source) if isinstance(source, int) or str(source).isdigit() else str(source)
            cap = capture(target, cv2.CAP_V4L2) if isinstance(target, str) else capture(target)
            if cap.isOpened():
                cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # keep the driver queue short: newest frames, low latency
        elif kind == "stream":
            t_open = time.monotonic()
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(open_timeout_s * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(read_timeout_s * 1000)]
            with _ENV_LOCK:
                before = os.environ.get(FFMPEG_OPTIONS_ENV)
                os.environ[FFMPEG_OPTIONS_ENV] = ffmpeg_capture_options(rtsp_transport, low_delay)
                try:
                    cap = capture(str(source), cv2.CAP_FFMPEG, params)
                finally:
                    if before is None:
                        os.environ.pop(FFMPEG_OPTIONS_ENV, None)
                    else:
                        os.environ[FFMPEG_OPTIONS_ENV] = before
        elif kind == "gstreamer":
            if capture is cv2.VideoCapture and not gstreamer_available():
                msg = (
                    "this OpenCV build has no GStreamer backend (pip's opencv-python wheels lack it); use the "
                    "system OpenCV (apt install python3-opencv, or JetPack's on a Jetson) or kind: stream"
                )
                raise SourceError(msg)
            cap = capture(str(source), cv2.CAP_GSTREAMER)
        else:
            # a file decoded with a stream's demuxer options (nobuffer, low_delay) loses or garbles frames, and
            # OpenCV reads them from the process-wide environment at open time: open files without them, never
            # while a stream camera's open has them set (that open is bounded by its open_timeout_s)
            with _ENV_LOCK:
                before = os.environ.pop(FFMPEG_OPTIONS_ENV, None)
                try:
                    cap = capture(str(source))
                finally:
                    if before is not None:
                        os.environ[FFMPEG_OPTIONS_ENV] = before
        if not cap.isOpened():
            cap.release()
            hint = {
                "file": "not a video format OpenCV/FFmpeg decodes",
                "device": "no such camera, or it is busy / not permitted (check /dev/video* and the video group)",
                "stream": f"unreachable or silent for {open_timeout_s:g} s; check the URL, credentials and network",
                "gstreamer": "the pipeline does not start; test it with gst-launch-1.0 and end it in appsink",
            }.get(kind, "OpenCV cannot open it")
            if kind == "stream" and time.monotonic() - t_open < 0.8 * open_timeout_s:
                hint = _stream_failed_at_once(str(source), time.monotonic() - t_open)
            raise SourceError(f"cannot open {kind} source {redact(str(source))}: {hint}")
        self._cap = cap
        self.fps = _capture_fps(cap)

    def read(self) -> ReadResult:
        try:
            ok, frame = self._cap.read()
        except cv2.error as e:  # a broken stream can make the decoder raise instead of returning False
            return Corrupt(f"decoder error: {str(e).strip().splitlines()[-1][:200]}")
        return frame if ok and frame is not None else None

    @property
    def last_name(self) -> str | None:
        """``None``: a video frame has no file name."""
        return None

    def acker(self) -> Callable[[], None] | None:
        """``None``: video frames are not journalled."""
        return None

    def close(self) -> None:
        self._cap.release()


#: default TCP ports of the stream schemes, for telling a refused connection from a wrong path or credentials
_STREAM_PORTS = {"rtsp": 554, "rtsps": 322, "rtmp": 1935, "http": 80, "https": 443, "srt": None, "udp": None,
                 "tcp": None}


def _stream_failed_at_once(url: str, elapsed: float) -> str:
    """The hint for a stream open that failed well before its timeout: a refused TCP connection (probed once), or a
    server that answered but did not give a stream (path, credentials, codec)."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port or _STREAM_PORTS.get(parts.scheme.lower())
    except ValueError:
        host, port = None, None
    if host and port:
        import socket

        try:
            with socket.create_connection((host, port), timeout=1.0):
                reason = None
        except OSError as e:
            reason = e.strerror or type(e).__name__
        if reason is not None:
            return (f"connection to {host}:{port} failed at once ({reason}); is the camera/server running and the "
                    "port right?")
    return (f"the server answered but gave no stream within {elapsed:.1f} s; check the URL path, credentials and "
            "codec")


def decode_image_file(path: Path, data: bytes | None = None) -> np.ndarray | Corrupt:
    """Read and decode one image file of a folder source with the checked decoder
    (:func:`algan.runtime.preprocess.decode_image`, the one training and calibration use), refusing what must not be
    scored.

    Refused (a :class:`Corrupt` whose reason names the file): an empty file, a JPEG without its end-of-image marker
    (``FF D9``, trailing zero padding allowed) or a PNG without its ``IEND`` chunk (both: a file cut short, which
    libjpeg/libpng would otherwise decode partially, grey below the cut), a file OpenCV cannot decode, and an image
    smaller than :data:`~algan.runtime.preprocess.MIN_IMAGE_SIDE` pixels on a side.

    Args:
        path: the image file.
        data: its bytes when already read (fuzz tests), else read here.

    Returns:
        uint8 BGR ``(H, W, 3)`` (grayscale expanded), or :class:`Corrupt`.
    """
    try:
        return decode_image(path, data)
    except ImageReadError as e:
        return Corrupt(str(e), incomplete=e.incomplete)


def _is_partial(name: str) -> bool:
    return name.startswith(".") or name.lower().endswith(PARTIAL_SUFFIXES)


class FolderSource:
    """Image files of a folder in name order; undecodable files come back as :class:`Corrupt`.

    Without ``watch`` the folder is listed once at open and the source ends after its last file. With ``watch`` it
    never ends: each :meth:`read` rescans (at most every ``poll_s``) and returns new files once they are complete,
    i.e. their size (> 0) and mtime stayed the same for ``settle_s`` seconds; names starting with ``.`` or ending
    in :data:`PARTIAL_SUFFIXES` are skipped. It returns :data:`NO_FRAME` while idle and ``None`` when the folder
    disappears (the reader then reopens it with backoff). Files already in the folder at open are read too, except
    those a ``journal`` says were scored before (same name, size and mtime): a restarted daemon goes on where it
    stopped instead of scoring the whole inbox again. Memory stays bounded: names are forgotten once the files are
    gone (the journal too, at open).

    Watching, a file refused as incomplete (empty, or a JPEG/PNG cut short: its writer paused longer than
    ``settle_s``) is not reported at once: it is read again after each change of its size or mtime (once settled
    again), and reported as :class:`Corrupt` only when it stayed unchanged for ``incomplete_wait_s``; a reported
    file is looked at again if it changes later.

    Args:
        folder: the directory.
        watch: keep watching for new files.
        settle_s: watch: how long a new file must stay unchanged before it is read (seconds).
        poll_s: watch: shortest time between two directory scans (seconds).
        clock: monotonic clock (seconds); tests pass a fake.
        journal: watch: the folder's :class:`~algan.edge.capture.journal.FolderJournal`; after each :meth:`read`,
            :meth:`acker` gives the callable that records the file as scored. ``None`` = no memory across runs.
        incomplete_wait_s: watch: how long an incomplete file must stay unchanged before it is reported (seconds).

    Raises:
        SourceError: the folder does not exist, or (without ``watch``) holds no image files.
    """

    fps: float | None = None

    def __init__(
        self,
        folder: str | Path,
        watch: bool = False,
        settle_s: float = 0.5,
        poll_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        journal: FolderJournal | None = None,
        incomplete_wait_s: float = 30.0,
    ) -> None:
        self.path = Path(folder)
        if not self.path.is_dir():
            raise SourceError(f"image folder {self.path} does not exist; fix the camera's source path")
        self.watch = watch
        self.settle_s = float(settle_s)
        self.poll_s = float(poll_s)
        self._clock = clock
        self._ready: deque[tuple[Path, int, int]] = deque()  # (path, size, mtime_ns)
        self._last: tuple[str, int, int] | None = None  # the file the last read() returned
        self.journal = journal if watch else None
        self.incomplete_wait_s = float(incomplete_wait_s)
        self._seen: set[str] = set()
        self._reported: set[tuple[str, int, int]] = set()  # (name, size, mtime_ns) reported incomplete, unchanged
        self._skipped: set[str] = set()  # names that are not images of the set (image_skip_reason)
        self._said_skipped = False
        self._pending: dict[str, tuple[int, int, float]] = {}  # name -> (size, mtime_ns, unchanged since)
        self._incomplete: dict[str, tuple[int, int, float]] = {}  # refused as incomplete: (size, mtime_ns, give up)
        self._final: set[str] = set()  # incomplete files handed to read() to be reported now
        self._last_scan = -float("inf")
        self._closed = False
        if not watch:
            listing = list_images(self.path)
            files = listing.images
            if (line := listing.skipped_line()) is not None:
                log.warning("image folder %s: %s", self.path, line)
            if not files:
                exts = " ".join(sorted(IMAGE_SUFFIXES))
                raise SourceError(f"image folder {self.path} holds no image files ({exts}); fix the camera's source "
                                  "path (or set watch: true to wait for files)")
            self._ready.extend((p, 0, 0) for p in files)
        elif self.journal is not None:
            try:
                forgotten = self.journal.keep_only(e.name for e in os.scandir(self.path))
            except OSError:
                forgotten = 0
            log.info("watched folder %s: %d files scored before are skipped (journal %s; %d gone files forgotten)",
                     self.path, len(self.journal), self.journal.path, forgotten)

    def _scan(self) -> bool:
        """Move complete new files to the ready queue; False when the folder is gone."""
        now = self._clock()
        self._last_scan = now
        try:
            entries = list(os.scandir(self.path))
        except OSError:
            return False
        names: set[str] = set()
        ready: list[str] = []
        final: list[str] = []
        all_names = {e.name for e in entries}
        skipped = 0
        for e in entries:
            name = e.name
            if _is_partial(name):
                continue
            if image_skip_reason(name, all_names) is not None:
                skipped += name not in self._skipped
                self._skipped.add(name)
                continue
            names.add(name)
            if name in self._seen:
                continue
            try:
                st = e.stat()
            except OSError:
                continue
            if not e.is_file():
                continue
            key = (st.st_size, st.st_mtime_ns)
            if (name, *key) in self._reported:
                continue  # reported as incomplete: looked at again only once it changes
            if self.journal is not None and self.journal.done_before(name, *key):
                self._seen.add(name)  # scored (or reported) by an earlier run
                continue
            inc = self._incomplete.get(name)
            if inc is not None and inc[:2] == key:
                if now >= inc[2]:
                    final.append(name)
                continue
            old = self._pending.get(name)
            if old is None or old[:2] != key:
                self._pending[name] = (*key, now)
                old = self._pending[name]
            if now - old[2] >= self.settle_s:  # an empty file too: read (then refused as incomplete) once settled
                ready.append(name)
        for name in sorted(ready):
            size, mtime_ns, _ = self._pending.pop(name)
            self._incomplete.pop(name, None)
            self._seen.add(name)
            self._ready.append((self.path / name, size, mtime_ns))
        for name in sorted(final):
            size, mtime_ns, _ = self._incomplete.pop(name)
            self._final.add(name)
            self._seen.add(name)
            self._ready.append((self.path / name, size, mtime_ns))
        if skipped and not self._said_skipped:  # said once per source
            self._said_skipped = True
            log.warning("watched folder %s: skipping %d files that are not images of the set (masks, hidden files, "
                        "other suffixes)", self.path, skipped)
        self._skipped &= all_names
        self._seen &= names  # forget deleted files: memory bounded by the folder's contents
        self._reported = {r for r in self._reported if r[0] in names}
        for table in (self._pending, self._incomplete):
            for name in list(table):
                if name not in names:
                    del table[name]
        return True

    def read(self) -> ReadResult:
        if self._closed:
            return None
        if not self._ready and self.watch:
            if self._clock() - self._last_scan < self.poll_s:
                return NO_FRAME
            if not self._scan():
                return None
            if not self._ready:
                return NO_FRAME
        while self._ready:
            p, size, mtime_ns = self._ready.popleft()
            self._last = (p.name, size, mtime_ns)
            img = decode_image_file(p)
            if not (self.watch and isinstance(img, Corrupt) and img.incomplete):
                return img
            self._seen.discard(p.name)
            if p.name in self._final:  # unchanged for incomplete_wait_s: reported (and journalled) now
                self._final.discard(p.name)
                self._reported.add((p.name, size, mtime_ns))
                return img
            log.debug("%s; read again when it changes (reported if unchanged for %g s)", img.reason,
                      self.incomplete_wait_s)
            self._incomplete[p.name] = (size, mtime_ns, self._clock() + self.incomplete_wait_s)
        self._last = None
        return NO_FRAME if self.watch else None

    @property
    def last_name(self) -> str | None:
        """File name of the image the last :meth:`read` returned (``None`` before the first)."""
        return self._last[0] if self._last is not None else None

    def acker(self) -> Callable[[], None] | None:
        """The callable that records the file of the last :meth:`read` as scored in the journal (call it once the
        frame's score is published, or at once for a file that cannot be scored); ``None`` without a journal."""
        if self.journal is None or self._last is None:
            return None
        journal, (name, size, mtime_ns) = self.journal, self._last
        return lambda: journal.add(name, size, mtime_ns)

    def close(self) -> None:
        self._closed = True
        self._ready.clear()


def check_sources(cameras: list[CameraConfig]) -> None:
    """Refuse at start what a camera's reader would fail on at once: a file or (unwatched) folder source that does
    not exist, or a folder without image files. Live sources and watched folders are not checked: they are retried
    (a camera plugged in or a share mounted later).

    Raises:
        SourceError: one line naming the camera, the path and the fix.
    """
    for cam in cameras:
        if cam.is_live or cam.watch or cam.resolved_kind not in ("file", "folder"):
            continue
        path = Path(str(cam.source))
        if not path.exists():
            what = "folder" if cam.resolved_kind == "folder" else "file"
            raise SourceError(f"cameras.{cam.name}.source: {what} {path} does not exist; fix the camera's source "
                              "path (relative paths are resolved next to the config file)")
        if path.is_dir():
            try:
                has = bool(list_images(path).images)
            except OSError as e:
                raise SourceError(f"cameras.{cam.name}.source: cannot list folder {path} ({e.strerror or e}); "
                                  "make it readable for the daemon's user") from None
            if not has:
                raise SourceError(f"cameras.{cam.name}.source: folder {path} holds no image files; fix the path or "
                                  "set watch: true to wait for files")
        elif not os.access(path, os.R_OK):
            raise SourceError(f"cameras.{cam.name}.source: file {path} is not readable for this user; fix its "
                              "permissions")


def open_source(cam: CameraConfig, capture: Callable[..., Any] = cv2.VideoCapture,
                journal: FolderJournal | None = None) -> Source:
    """Open a camera's source according to its (resolved) kind; a path to a directory is a folder source.

    Args:
        cam: camera config.
        capture: ``cv2.VideoCapture``-like factory (tests inject fakes).
        journal: a watched folder's read journal (see :class:`FolderSource`); ignored for other sources.

    Raises:
        SourceError: one-line reason when it cannot be opened.
    """
    kind = cam.resolved_kind
    if kind == "folder" or (kind == "file" and Path(str(cam.source)).is_dir()) or cam.watch:
        return FolderSource(str(cam.source), watch=cam.watch, settle_s=cam.settle_s, journal=journal,
                            incomplete_wait_s=cam.incomplete_wait_s)
    return VideoSource(
        cam.source,
        kind,
        rtsp_transport=cam.rtsp_transport,
        low_delay=cam.low_delay,
        open_timeout_s=cam.open_timeout_s,
        read_timeout_s=cam.read_timeout_s,
        capture=capture,
    )


class FrameGate:
    """Target frame rate by skipping: keeps a frame when its time reached the next slot. Pure.

    Times are source time for files (frame number / native fps, so a replay keeps the same frames every run) and
    capture time (monotonic seconds) for live sources.

    Args:
        fps: target frames/s, or ``None`` to keep every frame.

    Example:
        >>> g = FrameGate(10.0)
        >>> [g.keep(i / 30) for i in range(7)]
        [True, False, False, True, False, False, True]
    """

    def __init__(self, fps: float | None) -> None:
        self.period = 1.0 / fps if fps else 0.0
        self._next: float | None = None

    def keep(self, t: float) -> bool:
        """Whether the frame at time ``t`` (seconds) is passed on."""
        if self.period <= 0:
            return True
        eps = 1e-9
        if self._next is None or t >= self._next + self.period - eps:
            self._next = t + self.period  # first frame, or a gap longer than a slot: resynchronise
            return True
        if t >= self._next - eps:
            self._next += self.period
            return True
        return False


class Pacer:
    """Paces a replay at ``fps``: frame ``n`` (from 0) is released at ``start + n / fps``.

    Args:
        fps: release rate (frames/s); ``None`` = no pacing.
        clock: monotonic clock (seconds).
    """

    def __init__(self, fps: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        self.fps = fps
        self._clock = clock
        self._start: float | None = None
        self._n = 0

    def delay(self) -> float:
        """Seconds to wait before reading the next frame (0 when due or without pacing); counts the frame."""
        if not self.fps:
            return 0.0
        now = self._clock()
        if self._start is None:
            self._start = now
        due = self._start + self._n / self.fps
        self._n += 1
        if now - due > 1.0:  # fell behind by more than a second (slow model): do not burst to catch up
            self._start, self._n = now, 1
            return 0.0
        return max(0.0, due - now)
