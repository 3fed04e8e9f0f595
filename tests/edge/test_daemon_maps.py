"""The daemon with a two-output (stand-in) model against a real broker: regions in frame pixels, full-frame
snapshots (file and retained topic), file names in a folder's score messages, score throttling, the bundle's ROI;
and algan-predict's CSV/report for the same frames."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from edgekit import edge_config, run_cli, run_edge, write_config
from mapkit import grey_frame, make_map_bundle, write_frames

pytestmark = [pytest.mark.broker]

ROI = [40, 20, 128, 128]  # in a 200x300 frame; 64x64 model input, 16x16 map: a cell is 8x8 frame pixels
SPOT = (88, 52, 16, 16)  # inside the ROI, on the cell grid: cells (4..5, 6..7)


def frames() -> list[np.ndarray]:
    """6 normal, 4 with a white spot in the ROI, 6 normal; plus a spot outside the ROI (invisible) in frame 2."""
    out = [grey_frame((200, 300)) for _ in range(16)]
    for i in range(6, 10):
        out[i] = grey_frame((200, 300), spot=SPOT)
    out[2] = grey_frame((200, 300), spot=(250, 170, 30, 20))
    return out


def test_daemon_alarm_region_snapshot_and_folder_names(tmp_path, mqtt_broker, mqtt_collector):
    bundle = make_map_bundle(tmp_path / "model", roi=ROI)  # the camera has no roi: the bundle's is used
    folder = tmp_path / "inbox"
    write_frames(folder, frames())
    col = mqtt_collector()
    snaps = tmp_path / "snaps"
    cfg = edge_config(bundle, mqtt_broker, [{"name": "cam1", "source": str(folder)}],
                      alarm={"raise_frames": 2, "clear_frames": 2, "snapshots": {"dir": str(snaps), "mqtt": True}},
                      mqtt={"score_every_n": 4})
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg), timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert col.wait_for(lambda ms: ms and ms[-1].topic.endswith("/status") and ms[-1].payload == "offline")

    scores = [json.loads(m.payload) for m in col.on("cam1/score")]
    # every 4th frame, plus the decision changes (frame 6 up, frame 10 down); each names its file
    assert [s["frame"] for s in scores] == [0, 4, 6, 10, 14]
    assert [s["file"] for s in scores] == [f"f{i:03d}.png" for i in (0, 4, 6, 10, 14)]
    assert scores[0]["score"] == 0.0 and scores[2]["score"] == pytest.approx(127 / 64, abs=1e-6)

    raised, cleared = col.events("cam1/alarm")
    assert raised["state"] == "raised" and cleared["state"] == "cleared" and raised["peak_frame"] == 6
    box = SPOT
    # the mask (the map upsampled to the ROI, at the fallback level 1.0: the stand-in bundle has no pixel threshold)
    # covers the spot less its bilinear fringe: 16x16 box, the 1.0 crossing half a pixel inside each edge
    assert 200 <= raised["region"].pop("area") <= 16 * 16
    cleared["region"].pop("area")
    assert raised["region"] == {"box": list(box), "peak": [box[0] + 4, box[1] + 4],
                                "peak_score": pytest.approx(127 / 64, abs=1e-6), "level": 1.0}
    assert cleared["region"] == raised["region"] and cleared["snapshot"] == raised["snapshot"]
    # the snapshot: a file name in the snapshots dir, the FULL frame, heat inside the ROI only, region in red
    img = cv2.imread(str(snaps / raised["snapshot"]))
    assert img.shape == (200, 300, 3)
    assert (np.abs(img[150:, 200:].astype(int) - 128) <= 3).all()  # outside the ROI: the frame (JPEG noise)
    x, y, w, h = box
    b, g, r = img[y, x + w // 2].astype(int)
    assert r > 200 and g < 60 and b < 60
    # the snapshot topic: the very bytes of the file (encoded once), live (not flagged retained) ...
    (snap_msg,) = col.on("cam1/snapshot")
    assert snap_msg.retain is False and snap_msg.raw == (snaps / raised["snapshot"]).read_bytes()
    # ... and retained: a subscriber that comes after the daemon stopped still gets it, flagged retained
    late = mqtt_collector("algan/+/cam1/snapshot")
    assert late.wait_for(lambda ms: len(ms) == 1)
    assert late.messages[0].retain is True and late.messages[0].raw == snap_msg.raw

    # offline: algan-predict on the same folder gives the same region for the peak frame
    run = run_cli("algan.cli.predict", str(bundle), str(folder), "--out", str(tmp_path / "pred"))
    assert run.returncode == 0, run.stderr
    with open(tmp_path / "pred" / "predictions.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    peak = rows["f006.png"]
    assert [int(peak[k]) for k in ("box_x", "box_y", "box_w", "box_h")] == list(box)
    assert peak["decision"] == "anomalous" and rows["f002.png"]["decision"] == "normal"
    assert float(peak["score"]) == pytest.approx(127 / 64, abs=1e-6)


def test_camera_roi_that_differs_from_the_bundle_is_warned_about(tmp_path, mqtt_broker):
    bundle = make_map_bundle(tmp_path / "model", roi=ROI)
    folder = tmp_path / "inbox"
    write_frames(folder, frames()[:3])
    cfg = edge_config(bundle, mqtt_broker, [{"name": "cam1", "source": str(folder), "roi": [0, 0, 64, 64]}])
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg), timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "camera cam1: roi [0, 0, 64, 64] differs from the roi [40, 20, 128, 128]" in res.stderr


def test_predict_cli_folder_labels_report_and_errors(tmp_path):
    bundle = make_map_bundle(tmp_path / "model", size=(64, 64))
    data = tmp_path / "data"
    write_frames(data / "good", [grey_frame((80, 80)) for _ in range(3)])
    write_frames(data / "spot", [grey_frame((80, 80), spot=(20, 20, 10, 10)) for _ in range(2)])
    (data / "spot" / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "pred"
    run = run_cli("algan.cli.predict", str(bundle), str(data), "--out", str(out))
    assert run.returncode == 0, run.stderr
    assert "scored 5 images: 2 anomalous" in run.stdout
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["file"], r["decision"], r["class"]) for r in rows] == [
        ("good/f000.png", "normal", "good"), ("good/f001.png", "normal", "good"), ("good/f002.png", "normal", "good"),
        ("spot/broken.png", "unreadable", "spot"), ("spot/f000.png", "anomalous", "spot"),
        ("spot/f001.png", "anomalous", "spot")]
    html = (out / "report.html").read_text()
    # 5 overlays and the masks of the 2 anomalous images
    assert html.count("data:image/jpeg;base64,") == 7 and html.count("class='mask'") == 2
    assert "<td>spot</td><td>defective</td><td>2</td><td>2</td>" in html
    assert "threshold 1: 2 above, 3 below" in html
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg"))[:1] == ["overlays/good/f000.jpg"]
    bad = run_cli("algan.cli.predict", str(bundle), str(tmp_path / "nope"))
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "does not exist" in bad.stderr
    bad = run_cli("algan.cli.predict", str(bundle), str(data), "--roi", "1,2,3")
    assert bad.returncode == 2 and "x,y,width,height" in bad.stderr
    bad = run_cli("algan.cli.predict", str(tmp_path), str(data))
    assert bad.returncode == 2 and "is not a model bundle (no algan.json)" in bad.stderr
