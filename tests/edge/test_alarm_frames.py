"""What an alarm tells the operator, through a real broker (issue 24, findings 3 and 4): the raised event's score,
region, snapshot and file all come from the frame that raised it, an ``update`` event (with its own snapshot) follows
when a later frame of the episode peaks higher, and a clean stop (source ended, SIGTERM) closes an open alarm with
``cleared`` and its ``reason`` before the camera goes ``offline``."""

from __future__ import annotations

import signal
import subprocess
import sys

import cv2
import numpy as np
import pytest
from edgekit import edge_config, run_edge, write_config
from mapkit import grey_frame, make_map_bundle, write_frames

pytestmark = [pytest.mark.broker]

ROI = [40, 20, 128, 128]  # in a 200x300 frame; 64x64 model input, 16x16 map: a cell is 8x8 frame pixels
SPOT_A = (56, 36, 16, 16)  # frames 6-7, grey 200: score 72/64 = 1.125
SPOT_B = (120, 100, 16, 16)  # frames 8-9, white: score 127/64 = 1.98 (> 1.1 x 1.125: an update)


def outline_box(path) -> tuple[int, int, int, int]:
    """Bounding box (x, y, w, h) of the red region outline drawn into a snapshot."""
    img = cv2.imread(str(path)).astype(int)
    red = (img[..., 2] > 200) & (img[..., 1] < 70) & (img[..., 0] < 70)
    ys, xs = np.nonzero(red)
    assert len(xs), f"no outline in {path}"
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def inside(box, outer, tol: int = 3) -> bool:
    x, y, w, h = box
    ox, oy, ow, oh = outer
    return ox - tol <= x and oy - tol <= y and x + w <= ox + ow + tol and y + h <= oy + oh + tol


def test_raised_event_box_lies_inside_its_own_snapshot(tmp_path, mqtt_broker, mqtt_collector):
    bundle = make_map_bundle(tmp_path / "model", roi=ROI)
    frames = [grey_frame((200, 300)) for _ in range(16)]
    for i in (6, 7):
        frames[i] = grey_frame((200, 300), spot=SPOT_A, value=200)
    for i in (8, 9):
        frames[i] = grey_frame((200, 300), spot=SPOT_B)
    folder = tmp_path / "inbox"
    write_frames(folder, frames)
    snaps = tmp_path / "snaps"
    col = mqtt_collector()
    cfg = edge_config(bundle, mqtt_broker, [{"name": "cam1", "source": str(folder)}],
                      alarm={"raise_frames": 2, "clear_frames": 2, "snapshots": {"dir": str(snaps)}})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg), timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert col.wait_for(lambda ms: ms and ms[-1].topic.endswith("/status") and ms[-1].payload == "offline")

    raised, update, cleared = col.events("cam1/alarm")
    assert (raised["state"], update["state"], cleared["state"]) == ("raised", "update", "cleared")
    assert len({raised["id"], update["id"], cleared["id"]}) == 1
    # raised: the frame that raised it (the 2nd spot frame), its score, its region, its file, its snapshot
    assert (raised["last_frame"], raised["file"]) == (7, "f007.png")
    assert raised["score"] == pytest.approx(72 / 64, abs=1e-6)
    assert raised["region"]["box"] == list(SPOT_A)
    assert inside(raised["region"]["box"], outline_box(snaps / raised["snapshot"]))
    assert not inside(SPOT_B, outline_box(snaps / raised["snapshot"]))
    # update: the later, higher frame, with its own snapshot file
    assert (update["last_frame"], update["file"]) == (8, "f008.png")
    assert update["score"] == pytest.approx(127 / 64, abs=1e-6) and update["peak"] == update["score"]
    assert update["region"]["box"] == list(SPOT_B) and update["snapshot"] != raised["snapshot"]
    assert inside(update["region"]["box"], outline_box(snaps / update["snapshot"]))
    # cleared by normal frames: the clearing frame's file, the last snapshot and region repeated
    assert cleared["reason"] == "normal" and cleared["file"] == f"f{cleared['last_frame']:03d}.png"
    assert cleared["snapshot"] == update["snapshot"] and cleared["region"] == update["region"]
    assert [m.payload for m in col.on("cam1/state")] == ["normal", "alarm", "normal", "offline"]


def test_source_that_ends_during_an_alarm_clears_it(tmp_path, mqtt_broker, mqtt_collector):
    bundle = make_map_bundle(tmp_path / "model", roi=ROI)
    frames = [grey_frame((200, 300)) for _ in range(4)] + [grey_frame((200, 300), spot=SPOT_B) for _ in range(3)]
    folder = tmp_path / "inbox"
    write_frames(folder, frames)
    col = mqtt_collector()
    cfg = edge_config(bundle, mqtt_broker, [{"name": "cam1", "source": str(folder)}],
                      alarm={"raise_frames": 2, "clear_frames": 2})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg), timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert col.wait_for(lambda ms: ms and ms[-1].topic.endswith("/status") and ms[-1].payload == "offline")
    raised, cleared = col.events("cam1/alarm")
    assert raised["state"] == "raised" and raised["file"] == "f005.png"
    assert cleared["state"] == "cleared" and cleared["reason"] == "source_ended" and cleared["id"] == raised["id"]
    assert cleared["last_frame"] == 6
    assert [m.payload for m in col.on("cam1/state")] == ["normal", "alarm", "normal", "offline"]
    late = mqtt_collector()  # the retained state a dashboard sees afterwards: offline, not alarm
    assert late.wait_for(lambda ms: any(m.topic.endswith("cam1/state") for m in ms), timeout=5)
    assert [m.payload for m in late.on("cam1/state")] == ["offline"]


def test_sigterm_during_an_alarm_clears_it_with_reason_shutdown(tmp_path, mqtt_broker, mqtt_collector):
    from algan.cli.alarms import format_event

    bundle = make_map_bundle(tmp_path / "model", roi=ROI)
    folder = tmp_path / "inbox"
    write_frames(folder, [grey_frame((200, 300), spot=SPOT_B) for _ in range(3)])
    col = mqtt_collector()
    cfg = edge_config(bundle, mqtt_broker, [{"name": "cam1", "source": str(folder), "watch": True}],
                      alarm={"raise_frames": 2, "clear_frames": 2})
    cmd = [sys.executable, "-m", "algan.cli.edge", "run", "--config", str(write_config(tmp_path / "e.yaml", cfg))]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert col.wait_for(lambda ms: any(m.topic.endswith("cam1/alarm") for m in ms), timeout=30)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert col.wait_for(lambda ms: len([m for m in ms if m.topic.endswith("cam1/alarm")]) == 2, timeout=10)
    raised, cleared = col.events("cam1/alarm")
    assert raised["state"] == "raised" and (cleared["state"], cleared["reason"]) == ("cleared", "shutdown")
    assert col.wait_for(lambda ms: [m.payload for m in col.on("cam1/state")][-1:] == ["offline"], timeout=5)
    line = format_event("algan/line1/cam1/alarm", cleared)
    assert "CLEARED" in line and "(shutdown)" in line
