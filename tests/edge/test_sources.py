"""Camera sources and the reader thread, with real files and injected fake sources."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from edgekit import DARK, make_folder, make_video

from algan.edge.config import CameraConfig
from algan.edge.errors import SourceError
from algan.edge.hub import FrameHub
from algan.edge.sources import CameraReader, Corrupt, FolderSource, VideoSource, open_source


def drain(hub: FrameHub):
    return [(f.index, f.image.shape) for f in iter(lambda: hub.get(0), None)]


def run_reader(cam: CameraConfig, open_fn=open_source, size=(16, 16)):
    hub, stop, statuses = FrameHub(), threading.Event(), []
    reader = CameraReader(cam, size, hub, stop, lambda c, s: statuses.append(s), open_fn=open_fn)
    reader.start()
    reader.join(10)
    return hub, reader, statuses


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


def test_roi_that_does_not_fit_fails_the_camera(tmp_path):
    folder = make_folder(tmp_path / "f", [DARK] * 2, size=32)
    hub, reader, statuses = run_reader(CameraConfig(name="c", source=str(folder), roi=(16, 16, 32, 32)))
    assert drain(hub) == [] and statuses == ["online", "failed"]


class FlakyLive:
    """A live source that delivers two frames, then a corrupt one, then dies."""

    opened = 0

    def __init__(self, cam):
        FlakyLive.opened += 1
        self.items = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8, 3), np.uint8), Corrupt("bad"), None]

    def read(self):
        return self.items.pop(0)

    def close(self):
        pass


def test_live_source_reconnects_after_dying():
    hub, stop, statuses = FrameHub(), threading.Event(), []
    cam = CameraConfig(name="live", source=0, reconnect_interval_s=0.05, queue_size=100)
    reader = CameraReader(cam, (8, 8), hub, stop, lambda c, s: statuses.append(s), open_fn=FlakyLive)
    reader.start()
    end = time.monotonic() + 5
    while FlakyLive.opened < 3 and time.monotonic() < end:
        time.sleep(0.02)
    stop.set()
    reader.join(5)
    assert not reader.is_alive()
    assert reader.counters.reconnects >= 2 and reader.counters.corrupt >= 2
    assert statuses[:3] == ["online", "offline", "online"]
    assert [i for i, _ in drain(hub)][:4] == [0, 1, 3, 4]  # indices keep counting across reconnects
