"""Camera sources (real files and folders, a stand-in VideoCapture) and the pure pacing / frame-rate rules."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from edgekit import DARK, make_folder, make_video

from algan.edge.capture.sources import (
    FFMPEG_OPTIONS_ENV,
    NO_FRAME,
    Corrupt,
    FolderSource,
    FrameGate,
    Pacer,
    VideoSource,
    ffmpeg_capture_options,
    gstreamer_available,
    open_source,
)
from algan.edge.config import CameraConfig
from algan.edge.errors import SourceError


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_open_errors_are_one_line(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        VideoSource(str(tmp_path / "x.mp4"), "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no image files"):
        FolderSource(tmp_path / "empty")
    notvideo = tmp_path / "n.mp4"
    notvideo.write_bytes(b"garbage")
    with pytest.raises(SourceError, match="cannot open file source"):
        VideoSource(str(notvideo), "file")


def test_video_file_reports_native_fps(tmp_path):
    src = VideoSource(str(make_video(tmp_path / "v.mp4", [DARK] * 3, fps=20.0)), "file")
    assert src.fps == pytest.approx(20.0)
    frames = [src.read() for _ in range(4)]
    src.close()
    assert [f.shape for f in frames[:3]] == [(64, 64, 3)] * 3 and frames[3] is None


class StandInCapture:
    """Stand-in for cv2.VideoCapture that records how it was opened (and the FFmpeg options env at that time)."""

    calls: list = []

    def __init__(self, *args):
        StandInCapture.calls.append((args, os.environ.get(FFMPEG_OPTIONS_ENV)))
        self.opened = True
        self.props = {}

    def isOpened(self):  # noqa: N802 - cv2 naming
        return self.opened

    def set(self, prop, value):
        self.props[prop] = value
        return True

    def get(self, prop):
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def read(self):
        return True, np.zeros((4, 4, 3), np.uint8)

    def release(self):
        self.opened = False


def test_stream_gets_ffmpeg_options_and_timeouts(monkeypatch):
    StandInCapture.calls = []
    monkeypatch.setenv(FFMPEG_OPTIONS_ENV, "user;value")
    cam = CameraConfig(name="c", source="rtsp://10.0.0.5/s", rtsp_transport="tcp", open_timeout_s=3, read_timeout_s=2)
    src = open_source(cam, capture=StandInCapture)
    (args, env_at_open), = StandInCapture.calls
    assert args[0] == "rtsp://10.0.0.5/s" and args[1] == cv2.CAP_FFMPEG
    assert args[2] == [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, 3000, cv2.CAP_PROP_READ_TIMEOUT_MSEC, 2000]
    assert env_at_open == "rtsp_transport;tcp|fflags;nobuffer|flags;low_delay"
    assert os.environ[FFMPEG_OPTIONS_ENV] == "user;value", "the process environment is restored after the open"
    assert src.fps == 30.0 and src.read().shape == (4, 4, 3)
    assert ffmpeg_capture_options("udp", low_delay=False) == "rtsp_transport;udp"


def test_gstreamer_pipeline_and_device_backends():
    StandInCapture.calls = []
    pipeline = "nvarguscamerasrc ! video/x-raw(memory:NVMM) ! nvvidconv ! video/x-raw,format=BGRx ! appsink"
    cam = CameraConfig(name="csi", source=pipeline)
    assert cam.resolved_kind == "gstreamer" and cam.is_live
    open_source(cam, capture=StandInCapture)
    open_source(CameraConfig(name="d", source="/dev/video2"), capture=StandInCapture)
    src = open_source(CameraConfig(name="d0", source=0), capture=StandInCapture)
    assert [c[0] for c in StandInCapture.calls] == [(pipeline, cv2.CAP_GSTREAMER), ("/dev/video2", cv2.CAP_V4L2), (0,)]
    assert src._cap.props == {cv2.CAP_PROP_BUFFERSIZE: 1}


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV has GStreamer")
def test_gstreamer_missing_is_one_line():
    with pytest.raises(SourceError, match="no GStreamer backend") as info:
        open_source(CameraConfig(name="csi", source="videotestsrc ! appsink", kind="gstreamer"))
    assert "\n" not in str(info.value)


def test_folder_once_sorted_with_corrupt_file(tmp_path):
    folder = make_folder(tmp_path / "f", [DARK] * 3, corrupt=[1])
    src = FolderSource(folder)
    items = [src.read() for _ in range(4)]
    assert isinstance(items[0], np.ndarray) and isinstance(items[1], Corrupt) and items[3] is None


def test_watched_folder_reads_only_settled_complete_files(tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    clock = Clock()
    src = FolderSource(folder, watch=True, settle_s=0.5, poll_s=0.0, clock=clock)
    assert src.read() is NO_FRAME
    good = cv2.imencode(".png", np.full((16, 16, 3), 7, np.uint8))[1].tobytes()
    (folder / "b.png").write_bytes(good)
    (folder / "a.png.part").write_bytes(good)  # still being copied: never read under this name
    (folder / ".c.png").write_bytes(good)  # hidden temp file
    (folder / "d.png").write_bytes(good[:10])  # half-written: grows below
    assert src.read() is NO_FRAME, "new files wait settle_s"
    clock.t = 0.3
    with (folder / "d.png").open("ab") as f:
        f.write(good[10:])
    os.utime(folder / "d.png", ns=(10**18, 10**18))  # mtime changes with the append
    clock.t = 0.6
    first = src.read()
    assert isinstance(first, np.ndarray) and first[0, 0, 0] == 7, "b.png settled"
    assert src.read() is NO_FRAME, "d.png changed at 0.3 s: not settled yet"
    (folder / "a.png.part").rename(folder / "a.png")
    clock.t = 1.2
    assert isinstance(src.read(), np.ndarray), "d.png unchanged since 0.6 s: settled"
    assert src.read() is NO_FRAME, "a.png first seen under its final name at 1.2 s"
    clock.t = 1.8
    got = [src.read() for _ in range(2)]
    assert isinstance(got[0], np.ndarray) and got[1] is NO_FRAME
    assert src._seen == {"a.png", "b.png", "d.png"}
    (folder / "b.png").unlink()
    clock.t = 2.0
    src.read()
    assert src._seen == {"a.png", "d.png"}, "names of deleted files are forgotten (bounded memory)"
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    clock.t = 3.0
    assert src.read() is None, "a vanished folder ends the source (the reader reopens it)"


def test_watch_open_errors(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FolderSource(tmp_path / "nope", watch=True)
    (tmp_path / "empty").mkdir()
    assert FolderSource(tmp_path / "empty", watch=True).read() is NO_FRAME


def test_frame_gate_by_source_time():
    gate = FrameGate(10.0)
    kept = [i for i in range(30) if gate.keep(i / 30.0)]
    assert kept == [0, 3, 6, 9, 12, 15, 18, 21, 24, 27]
    gate = FrameGate(10.0)
    assert [gate.keep(t) for t in (0.0, 0.05, 0.5, 0.55, 0.6)] == [True, False, True, False, True], "resync on gap"
    assert all(FrameGate(None).keep(t) for t in (0.0, 0.0, 0.0))


def test_pacer_releases_at_rate_and_never_bursts():
    clock = Clock(100.0)
    pacer = Pacer(10.0, clock)
    assert pacer.delay() == 0.0
    assert pacer.delay() == pytest.approx(0.1)
    clock.t = 100.1
    assert pacer.delay() == pytest.approx(0.1)
    clock.t = 105.0  # the model stalled for seconds: start afresh instead of bursting
    assert pacer.delay() == 0.0 and pacer.delay() == pytest.approx(0.1)
    assert Pacer(None, clock).delay() == 0.0


def _png(value: int) -> bytes:
    return cv2.imencode(".png", np.full((16, 16, 3), value, np.uint8))[1].tobytes()


def _drain(src: FolderSource, clock: Clock, t: float) -> list:
    """Advance the clock past settle_s and read until the source is idle; returns (pixel value, acker) pairs."""
    clock.t = t
    got = []
    while isinstance(item := src.read(), np.ndarray | Corrupt):
        got.append((int(item[0, 0, 0]) if isinstance(item, np.ndarray) else "corrupt", src.acker()))
    assert item is NO_FRAME
    return got


def test_watched_folder_journal_skips_files_scored_before_a_restart(tmp_path):
    from algan.edge.capture.journal import FolderJournal

    folder = tmp_path / "inbox"
    folder.mkdir()
    for i, name in enumerate(("a.png", "b.png", "c.png")):
        (folder / name).write_bytes(_png(10 + i))
    (folder / "d.png").write_bytes(b"not an image")
    journal = FolderJournal(tmp_path / "state" / "cam.journal.sqlite")
    clock = Clock()
    src = FolderSource(folder, watch=True, settle_s=0.5, poll_s=0.0, clock=clock, journal=journal)
    assert src.read() is NO_FRAME
    got = _drain(src, clock, 1.0)
    assert [v for v, _ in got] == [10, 11, 12, "corrupt"]
    got[0][1]()  # a.png scored
    got[3][1]()  # d.png cannot be scored: recorded at once
    # b.png and c.png were read but not scored when the daemon stopped
    src.close()
    journal.close()

    (folder / "a.png").write_bytes(_png(10))  # same bytes, but a new mtime: a rewritten file counts as new
    os.utime(folder / "a.png", ns=(10**18, 10**18))
    journal = FolderJournal(tmp_path / "state" / "cam.journal.sqlite")
    assert len(journal) == 2
    clock = Clock()
    src = FolderSource(folder, watch=True, settle_s=0.5, poll_s=0.0, clock=clock, journal=journal)
    src.read()
    got = _drain(src, clock, 1.0)
    assert [v for v, _ in got] == [10, 11, 12], "unscored and rewritten files are read again"
    for _, ack in got:
        ack()
    src.close()
    journal.close()

    (folder / "c.png").unlink()  # gone files are forgotten at the next open
    journal = FolderJournal(tmp_path / "state" / "cam.journal.sqlite")
    assert len(journal) == 4
    clock = Clock()
    src = FolderSource(folder, watch=True, settle_s=0.5, poll_s=0.0, clock=clock, journal=journal)
    assert len(journal) == 3, "c.png is gone"
    src.read()
    assert _drain(src, clock, 1.0) == [], "everything left was scored before"
    (folder / "e.png").write_bytes(_png(20))
    src.read()
    assert [v for v, _ in _drain(src, clock, 2.0)] == [20], "a new file is read"
    journal.close()


def test_folder_without_journal_has_no_acker_and_the_journal_error_is_one_line(tmp_path):
    from algan.edge.capture.journal import FolderJournal

    folder = make_folder(tmp_path / "f", [DARK] * 2)
    src = FolderSource(folder)
    assert isinstance(src.read(), np.ndarray) and src.acker() is None
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(SourceError, match="cannot open the folder journal .* set resume: false"):
        FolderJournal(blocker / "cam.journal.sqlite")
