"""The per-camera reader thread: preparation, corrupt frames, fps, loop/pacing, reconnects and the stale watchdog."""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest
from edgekit import DARK, make_folder, make_video

from algan.edge.capture.camera import CameraReader
from algan.edge.capture.hub import FrameHub
from algan.edge.capture.sources import Corrupt, open_source
from algan.edge.config import CameraConfig
from algan.edge.errors import SourceError


def drain(hub: FrameHub):
    return [(f.index, f.image.shape) for f in iter(lambda: hub.get(0), None)]


def run_reader(cam: CameraConfig, open_fn=open_source, size=(16, 16), timeout=10.0):
    hub, stop, statuses = FrameHub(), threading.Event(), []
    reader = CameraReader(cam, size, hub, stop, lambda c, s: statuses.append(s), open_fn=open_fn)
    reader.start()
    reader.join(timeout)
    return hub, reader, statuses


def wait_until(pred, timeout=5.0):
    end = time.monotonic() + timeout
    while not pred() and time.monotonic() < end:
        time.sleep(0.01)
    return pred()


def test_video_file_all_frames_prepared(tmp_path):
    video = make_video(tmp_path / "v.mp4", [DARK] * 12)
    cam = CameraConfig(name="c", source=str(video), queue_size=64)
    hub, reader, statuses = run_reader(cam)
    assert drain(hub) == [(i, (16, 16, 3)) for i in range(12)]
    assert statuses == ["online", "finished"] and reader.counters.read == 12


def test_folder_sorted_and_corrupt_counted(tmp_path):
    folder = make_folder(tmp_path / "f", [DARK] * 4, corrupt=[1])
    (folder / "notes.txt").write_text("ignored")
    hub, reader, _ = run_reader(CameraConfig(name="c", source=str(folder)))
    assert [i for i, _ in drain(hub)] == [0, 2, 3]
    assert reader.counters.corrupt == 1 and reader.counters.read == 4


def test_roi_that_does_not_fit_fails_the_camera(tmp_path):
    folder = make_folder(tmp_path / "f", [DARK] * 2, size=32)
    hub, reader, statuses = run_reader(CameraConfig(name="c", source=str(folder), roi=(16, 16, 32, 32)))
    assert drain(hub) == [] and statuses == ["online", "failed"]


def test_file_fps_skips_by_source_time(tmp_path):
    video = make_video(tmp_path / "v.mp4", [DARK] * 12, fps=20.0)
    hub, reader, _ = run_reader(CameraConfig(name="c", source=str(video), fps=10, queue_size=64))
    assert [i for i, _ in drain(hub)] == [0, 2, 4, 6, 8, 10], "the same frames on every replay"
    assert reader.counters.skipped == 6


def test_loop_and_realtime_replay(tmp_path):
    folder = make_folder(tmp_path / "f", [DARK] * 3)
    cam = CameraConfig(name="c", source=str(folder), loop=True, replay_fps=50, queue_size=64)
    hub, stop = FrameHub(), threading.Event()
    reader = CameraReader(cam, (8, 8), hub, stop, lambda c, s: None)
    t0 = time.monotonic()
    reader.start()
    assert wait_until(lambda: reader.counters.read >= 10)
    elapsed = time.monotonic() - t0
    stop.set()
    reader.join(5)
    assert elapsed >= 9 / 50 * 0.9, "paced at replay_fps"
    assert reader.counters.loops >= 3 and [i for i, _ in drain(hub)][:10] == list(range(10))


class FlakyLive:
    """A live source that delivers two frames and a corrupt one, then only failed reads (a dead camera)."""

    opened = 0

    def __init__(self, cam):
        FlakyLive.opened += 1
        self.fps = None
        self.items = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), Corrupt("bad")]

    def read(self):
        return self.items.pop(0) if self.items else None

    last_name = None

    def acker(self):
        return None

    def close(self):
        pass


def test_stale_live_source_is_reopened_and_indices_go_on():
    FlakyLive.opened = 0
    hub, stop, statuses = FrameHub(), threading.Event(), []
    cam = CameraConfig(name="live", source=0, reconnect_interval_s=0.02, stale_timeout_s=0.1, queue_size=100)
    reader = CameraReader(cam, (8, 8), hub, stop, lambda c, s: statuses.append(s), open_fn=FlakyLive)
    reader.start()
    assert wait_until(lambda: FlakyLive.opened >= 3)
    stop.set()
    reader.join(5)
    assert not reader.is_alive()
    c = reader.counters
    assert c.reconnects >= 2 and c.stale >= 2 and c.corrupt >= 2 and c.read_failures > 0
    assert statuses[:3] == ["online", "offline", "online"]
    assert [i for i, _ in drain(hub)][:4] == [0, 1, 3, 4]  # indices keep counting across reconnects


def test_reopen_backoff_doubles_up_to_max_and_resets_after_frames():
    attempts: list[float] = []

    def never_opens(cam):
        attempts.append(time.monotonic())
        raise SourceError("cannot open stream source rtsp://x: unreachable")

    hub, stop, statuses = FrameHub(), threading.Event(), []
    cam = CameraConfig(name="net", source="rtsp://x", reconnect_interval_s=0.05, reconnect_max_s=0.2)
    reader = CameraReader(cam, (8, 8), hub, stop, lambda c, s: statuses.append(s), open_fn=never_opens)
    reader.start()
    assert wait_until(lambda: len(attempts) >= 6, timeout=5)
    stop.set()
    reader.join(5)
    gaps = np.diff(attempts[:6])
    assert gaps[0] >= 0.045 and gaps[1] >= 0.09 and gaps[2] >= 0.18, gaps
    assert all(g < 0.5 for g in gaps), "capped at reconnect_max_s"
    assert statuses == ["offline"] and reader.counters.reconnects >= 5


def test_missing_file_fails_only_that_camera(tmp_path):
    hub, reader, statuses = run_reader(CameraConfig(name="c", source=str(tmp_path / "gone.mp4")))
    assert statuses == ["failed"] and hub.exhausted()


def _nice_of_this_thread() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
@pytest.mark.parametrize("steps", [0, 3, 10])
def test_reader_thread_runs_reader_nice_steps_nicer(tmp_path, steps):
    # the source is opened in the reader thread after its priority was lowered: what it sees is the reader's nice
    base = _nice_of_this_thread()
    seen = []
    video = make_video(tmp_path / "v.mp4", [DARK] * 2)

    def open_fn(cam):
        seen.append(_nice_of_this_thread())
        return open_source(cam)

    hub, reader, statuses = run_reader(CameraConfig(name="c", source=str(video), reader_nice=steps), open_fn=open_fn)
    assert seen == [min(19, base + steps)] and statuses == ["online", "finished"]
    assert _nice_of_this_thread() == base  # the daemon's own threads keep their priority
    assert len(drain(hub)) == 2


def test_reader_nice_outside_0_to_19_is_refused():
    with pytest.raises(ValueError, match="reader_nice"):
        CameraConfig(name="c", source="v.mp4", reader_nice=20)
    with pytest.raises(ValueError, match="reader_nice"):
        CameraConfig(name="c", source="v.mp4", reader_nice=-1)
