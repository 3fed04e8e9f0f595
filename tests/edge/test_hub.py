"""FrameHub: back-pressure for files, drop-oldest for live sources, round-robin consumption."""

from __future__ import annotations

import threading
import time

import numpy as np

from algan.edge.capture.hub import Frame, FrameHub

IMG = np.zeros((2, 2, 3), np.uint8)


def frame(cam: str, i: int) -> Frame:
    return Frame(cam, i, IMG, 0.0, 0.0)


def test_live_keeps_newest_and_counts_drops():
    hub = FrameHub()
    hub.register("live", capacity=2, live=True)
    stop = threading.Event()
    for i in range(5):
        assert hub.put(frame("live", i), stop)
    assert hub.dropped["live"] == 3
    assert [hub.get(0).index for _ in range(2)] == [3, 4]
    assert hub.get(0) is None


def test_file_blocks_until_consumed_and_stops_on_event():
    hub = FrameHub()
    hub.register("file", capacity=1, live=False)
    stop = threading.Event()
    hub.put(frame("file", 0), stop)
    done = []
    t = threading.Thread(target=lambda: done.append(hub.put(frame("file", 1), stop)))
    t.start()
    time.sleep(0.15)
    assert not done, "second put must wait for room"
    assert hub.get(0).index == 0
    t.join(2)
    assert done == [True] and hub.dropped["file"] == 0
    t2 = threading.Thread(target=lambda: done.append(hub.put(frame("file", 3), stop)))
    t2.start()
    stop.set()
    t2.join(2)
    assert done[-1] is False


def test_round_robin_and_exhaustion():
    hub = FrameHub()
    stop = threading.Event()
    for cam in ("a", "b"):
        hub.register(cam, capacity=8, live=False)
    for i in range(3):
        hub.put(frame("a", i), stop)
    hub.put(frame("b", 0), stop)
    order = [(f.camera, f.index) for f in iter(lambda: hub.get(0), None)]
    assert order == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    assert not hub.exhausted()
    hub.close("a")
    hub.close("b")
    assert hub.exhausted() and hub.depth() == 0
