"""The alarm event's ``snapshot`` through the EdgeApp's frame loop (in process: a stand-in runner with anomaly maps,
a list as publisher, no broker, no cameras): a file name only when that file was written, else null; one file per
raised/update event, drawn from the event's own frame."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from edgekit import edge_config

from algan.edge.alarm import AlarmTracker
from algan.edge.app import EdgeApp
from algan.edge.capture.hub import Frame
from algan.edge.config import parse_config
from algan.runtime.runners.base import RunnerOutput

SCORES = [0.0, 2.0, 3.0, 0.0, 0.0]  # raised at frame 1, update at 2 (3.0 > 1.1 x 2.0), cleared at frame 3


class MapRunner:
    backend = "standin"
    model_id = "maps-1"
    input_size = (8, 8)
    has_maps = True
    map_size = (8, 8)

    def close(self) -> None:
        pass

    def run(self, images: np.ndarray) -> RunnerOutput:
        level = float(images[0, 0, 0, 0]) / 50.0
        cells = np.zeros((1, 8, 8), np.float32)
        cells[0, 2:4, 2:4] = level
        return RunnerOutput(np.array([level], np.float32), cells)


class ListPublisher:
    lost = 0
    outbox = None

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def publish(self, topic, payload, qos=0, retain=False, durable=False) -> None:  # noqa: ANN001
        self.sent.append((topic, payload))

    def flush(self, timeout: float) -> int:
        return 0

    def close(self, timeout: float) -> int:
        return 0


def alarm_events(tmp_path: Path, snapshots: dict | None) -> list[dict]:
    alarm = {"raise_frames": 1, "clear_frames": 1, **({"snapshots": snapshots} if snapshots else {})}
    cfg = edge_config(tmp_path / "model", ("127.0.0.1", 1883), [{"name": "cam1", "source": str(tmp_path)}],
                      alarm=alarm)
    app = EdgeApp(parse_config(cfg))
    app._has_maps, app._model_size = True, (64, 64)
    app.trackers = {"cam1": AlarmTracker("cam1", policy=app.cfg.alarm_policy(app.cfg.cameras[0]))}
    pub = ListPublisher()
    for i, score in enumerate(SCORES):
        image = np.full((64, 64, 3), int(score * 50), np.uint8)
        app._process([Frame("cam1", i, image, 0.0, 1_796_000_000.0 + i, raw=image)], MapRunner(), pub)
    return [json.loads(p) for t, p in pub.sent if t.endswith("/cam1/alarm")]


def test_snapshot_named_when_written(tmp_path):
    import cv2

    raised, update, cleared = alarm_events(tmp_path, {"dir": str(tmp_path / "snaps")})
    assert (raised["state"], update["state"], cleared["state"]) == ("raised", "update", "cleared")
    assert (raised["last_frame"], raised["score"], update["last_frame"], update["score"]) == (1, 2.0, 2, 3.0)
    assert raised["snapshot"] is not None and (tmp_path / "snaps" / raised["snapshot"]).is_file()
    assert update["snapshot"] is not None and update["snapshot"] != raised["snapshot"]
    assert cleared["snapshot"] == update["snapshot"] and cleared["region"] == update["region"]
    assert cleared["reason"] == "normal"
    # each file shows its own frame: the raised one was not rewritten by the later, brighter frame
    raised_img = cv2.imread(str(tmp_path / "snaps" / raised["snapshot"]))
    update_img = cv2.imread(str(tmp_path / "snaps" / update["snapshot"]))
    assert raised_img is not None and update_img is not None
    # a corner away from the outline: brighter in the update's frame (grey 150) than in the raise's (grey 100)
    assert int(update_img[60, 60, 0]) - int(raised_img[60, 60, 0]) >= 15
    assert raised["region"] is not None


@pytest.mark.parametrize("case", ["disabled", "write-fails"])
def test_no_snapshot_named_without_a_file(case, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the snapshots directory should be")
    raised, update, cleared = alarm_events(tmp_path, None if case == "disabled" else {"dir": str(blocker / "snaps")})
    assert raised["state"] == "raised" and cleared["state"] == "cleared"
    assert raised["region"] is not None  # the model's map still gives the region
    assert raised["snapshot"] is None and update["snapshot"] is None and cleared["snapshot"] is None


def test_snapshot_outlines_the_defect_mask_and_the_region_carries_its_area(tmp_path):
    import cv2

    from algan.runtime.maps import Region, draw_overlay, mask_from_map

    alarm = {"raise_frames": 1, "clear_frames": 1, "snapshots": {"dir": str(tmp_path / "snaps")}}
    cfg = edge_config(tmp_path / "model", ("127.0.0.1", 1883), [{"name": "cam1", "source": str(tmp_path)}],
                      alarm=alarm)
    app = EdgeApp(parse_config(cfg))
    app._has_maps, app._model_size, app._pixel_level = True, (64, 64), 1.5  # the bundle's pixel threshold
    app.trackers = {"cam1": AlarmTracker("cam1", policy=app.cfg.alarm_policy(app.cfg.cameras[0]))}
    pub = ListPublisher()
    for i, score in enumerate(SCORES):
        image = np.full((64, 64, 3), int(score * 50), np.uint8)
        app._process([Frame("cam1", i, image, 0.0, 1_796_000_000.0 + i, raw=image)], MapRunner(), pub)
    raised, update, cleared = (json.loads(p) for t, p in pub.sent if t.endswith("/cam1/alarm"))
    assert cleared["snapshot"] == update["snapshot"] and cleared["region"] == update["region"]
    # the update's frame (score 3.0): its cells 2..3 x 2..3 at 3.0, the mask at 1.5 on the upsampled map
    image = np.full((64, 64, 3), 150, np.uint8)
    cells = np.zeros((8, 8), np.float32)
    cells[2:4, 2:4] = 3.0
    mask = mask_from_map(cells, (64, 64), 1.5)
    assert cleared["region"]["area"] == int(np.count_nonzero(mask)) > 0
    snap = cv2.imread(str(tmp_path / "snaps" / cleared["snapshot"])).astype(int)
    r = cleared["region"]
    region = Region(tuple(r["box"]), tuple(r["peak"]), r["peak_score"], r["level"])
    with_mask = draw_overlay(image, cells, None, region, 3.0, 1.0, mask=mask).astype(int)
    box_only = draw_overlay(image, cells, None, region, 3.0, 1.0).astype(int)
    assert not np.array_equal(with_mask, box_only)
    # the JPEG snapshot is the mask-outlined picture, not the boxed one (compared where the two differ)
    where = (with_mask != box_only).any(axis=2)
    d_mask, d_box = np.abs(snap - with_mask)[where].mean(), np.abs(snap - box_only)[where].mean()
    assert d_mask < 0.5 * d_box, (d_mask, d_box)
