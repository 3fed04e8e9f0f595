"""A file camera never opens with a stream camera's FFmpeg demuxer options (OpenCV reads them from the
process-wide environment at open time; nobuffer/low_delay on a file drops or garbles frames)."""

from __future__ import annotations

import os
import threading
import time

from algan.edge.capture.sources import FFMPEG_OPTIONS_ENV, VideoSource


class _Cap:
    def __init__(self) -> None:
        self.opened = True

    def isOpened(self) -> bool:  # noqa: N802 - OpenCV's name
        return self.opened

    def set(self, *args) -> bool:
        return True

    def get(self, *args) -> float:
        return 25.0

    def release(self) -> None:
        self.opened = False


def test_file_open_never_sees_stream_options(tmp_path):
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not decoded by the stand-in capture")
    seen: dict[str, str | None] = {}
    stream_inside = threading.Event()

    def slow_stream_capture(source, *args):
        seen["stream"] = os.environ.get(FFMPEG_OPTIONS_ENV)
        stream_inside.set()
        time.sleep(0.3)  # a stream open blocks (up to open_timeout_s) with the options set
        return _Cap()

    def file_capture(source, *args):
        seen["file"] = os.environ.get(FFMPEG_OPTIONS_ENV)
        return _Cap()

    t = threading.Thread(target=VideoSource, args=("rtsp://127.0.0.1:1/x", "stream"),
                         kwargs={"capture": slow_stream_capture})
    t.start()
    assert stream_inside.wait(5)
    VideoSource(str(video), "file", capture=file_capture)  # opened while the stream open is in progress
    t.join(5)
    assert seen["stream"] and "low_delay" in seen["stream"]
    assert seen["file"] is None
    assert FFMPEG_OPTIONS_ENV not in os.environ
