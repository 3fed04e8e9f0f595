"""Anomaly maps on the edge: runners' second output, calibration re-map of maps, regions in frame pixels, overlays,
the torch-free Inferencer, score throttling."""

from __future__ import annotations

import subprocess
import sys

import cv2
import numpy as np
import pytest
from mapkit import GREY, grey_frame, make_map_bundle, make_map_model

from algan.edge.publish.messages import ScoreThrottle
from algan.runtime.errors import ModelError
from algan.runtime.maps import Region, draw_overlay, encode_jpeg, label_box, parse_roi, region_from_map
from algan.runtime.runners.base import RunnerOutput
from algan.runtime.runners.onnx import OnnxRuntimeRunner


def test_onnx_runner_returns_maps_and_scores_only_graphs_still_work(tmp_path):
    two = OnnxRuntimeRunner(make_map_model(tmp_path / "two.onnx"))
    one = OnnxRuntimeRunner(make_map_model(tmp_path / "one.onnx", maps=False))
    imgs = np.stack([grey_frame((64, 64), spot=(8, 12, 4, 4)), grey_frame((64, 64))])
    out = two.run(imgs)
    assert two.has_maps and two.map_size == (16, 16) and out.maps is not None and out.maps.shape == (2, 16, 16)
    assert out.maps.dtype == np.float32 and out.scores.dtype == np.float32
    # the spot (white, 4x4 px) fills map cell (3, 2): (255 - 128) / 64
    assert out.maps[0, 3, 2] == pytest.approx(127 / 64) and out.maps[0].sum() == pytest.approx(127 / 64)
    assert np.array_equal(out.scores, out.maps.max(axis=(1, 2))) and np.array_equal(two(imgs), out.scores)
    assert not one.has_maps and one.map_size is None and one.run(imgs).maps is None
    assert np.array_equal(one(imgs), out.scores)


def test_every_backend_implements_the_whole_runner_protocol():
    """No optional members: every backend class has each member of :class:`Runner` (the daemon and the Inferencer
    call them without getattr), and a runner missing one is not a Runner."""
    import importlib

    from algan.runtime.runners.base import BACKENDS, Runner

    members = {"input_size", "backend", "model_id", "has_maps", "map_size", "run", "close"}
    assert members <= set(dir(Runner))
    for backend, (module, cls, _) in BACKENDS.items():
        if backend == "torch":
            pytest.importorskip("torch")
        klass = getattr(importlib.import_module(module), cls)
        assert members <= set(dir(klass)), f"{cls} lacks {sorted(members - set(dir(klass)))}"

    class NoClose:
        input_size, backend, model_id, has_maps, map_size = (4, 4), "x", "x", False, None

        def run(self, images):
            return RunnerOutput(np.zeros(len(images), np.float32))

    assert not isinstance(NoClose(), Runner)


def test_recalibration_remaps_maps_with_the_scores(tmp_path):
    # graph exported with center 0, scale 1; the bundle was re-calibrated to center 0, threshold 2 -> halved
    bundle = make_map_bundle(tmp_path / "b", threshold=2.0)
    out = OnnxRuntimeRunner(bundle).run(grey_frame((64, 64), spot=(0, 0, 4, 4))[None])
    assert out.scores[0] == pytest.approx(127 / 128) and out.maps is not None
    assert out.maps[0, 0, 0] == pytest.approx(127 / 128) and out.maps.max() == out.scores[0]


def test_contract_rejects_a_bad_map_output(tmp_path):
    import onnx

    path = make_map_model(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    model.graph.output[1].name = "heatmap"
    model.graph.node[-1].output[0] = "heatmap"
    onnx.save(model, str(path))
    with pytest.raises(ModelError, match=r"outputs are \['scores', 'heatmap'\]"):
        OnnxRuntimeRunner(path)


def test_region_box_and_peak_in_frame_pixels():
    amap = np.zeros((8, 8), np.float32)
    amap[2:4, 5:7] = 1.5  # component: rows 2-3, cols 5-6
    amap[3, 6] = 3.0
    amap[7, 0] = 1.2  # a smaller component
    # the model input came from the ROI x=100, y=50, 160x80 of the frame: a cell is 20x10 frame pixels
    r = region_from_map(amap, (100, 50, 160, 80), level=1.0)
    assert r.box == (100 + 5 * 20, 50 + 2 * 10, 2 * 20, 2 * 10)
    assert r.peak == (100 + 6 * 20 + 10, 50 + 3 * 10 + 5) and r.peak_score == 3.0 and r.level == 1.5
    assert r.to_dict() == {"box": [200, 70, 40, 20], "peak": [230, 85], "peak_score": 3.0, "level": 1.5}
    # below the threshold: half the peak, around the peak
    low = region_from_map(amap * 0.2, (0, 0, 8, 8), level=1.0)
    assert low.level == pytest.approx(0.3) and low.box == (5, 2, 2, 2)
    mask = np.zeros((200, 300), bool)
    mask[70:90, 200:240] = True
    assert r.overlap(mask) == 1.0


def test_region_box_holds_the_peak_when_a_larger_weaker_blob_lies_elsewhere():
    """The box and the marker of one event name one place: a 3x3 blob just above the level at the left edge and a
    strong 1-cell peak inside; the box is the peak's cell, not the larger blob."""
    amap = np.zeros((8, 8), np.float32)
    amap[0:3, 0:3] = 2.1  # 9 cells, above max(1, peak / 2) = 2.0
    amap[5, 5] = 4.0
    r = region_from_map(amap, (0, 0, 80, 80), level=1.0)
    assert r.level == 2.0 and r.peak == (55, 55)
    assert r.box == (50, 50, 10, 10)
    x, y, w, h = r.box
    assert x <= r.peak[0] < x + w and y <= r.peak[1] < y + h


def test_overlay_blends_only_the_roi_and_outlines_the_region():
    frame = grey_frame((120, 160))
    amap = np.zeros((4, 4), np.float32)
    amap[1, 2] = 2.0
    roi = (40, 20, 80, 80)
    region = region_from_map(amap, roi)
    out = draw_overlay(frame, amap, roi, region)
    assert out.shape == frame.shape and np.array_equal(frame, grey_frame((120, 160)))  # input untouched
    assert np.array_equal(out[:, :39], frame[:, :39])  # outside the ROI: the frame as it was
    assert (out[25:95, 45:115] != GREY).any(axis=2).all()  # inside: heat colours
    x, y, w, h = region.box
    assert tuple(out[y, x + w // 2]) == (0, 0, 255)  # the outline is red


def test_jpeg_size_cap():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    big = encode_jpeg(img, 95)
    small = encode_jpeg(img, 95, max_bytes=20_000)
    assert len(big) > 20_000 >= len(small)
    assert cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR) is not None


def test_parse_roi_errors():
    assert parse_roi("1, 2,30,40") == (1, 2, 30, 40) and parse_roi(None) is None
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,10", "-1,0,5,5"):
        with pytest.raises(ValueError, match="x,y,width,height"):
            parse_roi(bad)


def test_inferencer_any_frame_size_roi_from_bundle(tmp_path):
    import algan

    bundle = make_map_bundle(tmp_path / "b", roi=[40, 20, 128, 128])
    inf = algan.Inferencer(bundle)
    frame = grey_frame((200, 300), spot=(80, 60, 16, 16))  # spot inside the ROI
    p = inf.predict(frame)
    assert isinstance(p, algan.Prediction) and inf.roi == (40, 20, 128, 128)
    assert p.anomaly_map is not None and p.anomaly_map.shape == (128, 128) and p.anomaly_map.dtype == np.float32
    assert p.is_anomalous and p.score == pytest.approx(127 / 64)
    assert isinstance(p.region, Region) and p.region.box == (80, 60, 16, 16)
    # the same crop by hand gives the same score; a list gives a list; an outside spot is invisible
    crop = frame[20:148, 40:168]
    assert algan.Inferencer(bundle, roi="full").predict(crop).score == pytest.approx(p.score)
    outside = grey_frame((200, 300), spot=(250, 170, 20, 20))
    got = inf.predict([frame, outside])
    assert [q.is_anomalous for q in got] == [True, False]
    with pytest.raises(ValueError, match="does not fit"):
        inf.predict(grey_frame((100, 100)))
    assert inf.overlay(frame, p).shape == frame.shape


def test_import_algan_stays_light():
    code = ("import sys, algan\nassert 'onnxruntime' not in sys.modules and 'cv2' not in sys.modules\n"
            "algan.Inferencer\nassert 'torch' not in sys.modules\nprint('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.stdout.strip() == "ok", res.stderr


def test_score_throttle():
    every3 = ScoreThrottle(every_n=3)
    assert [every3.keep(s, 1.0) for s in [0.1] * 7] == [True, False, False, True, False, False, True]
    delta = ScoreThrottle(min_delta=0.1)
    kept = [delta.keep(s, 1.0) for s in [0.1, 0.15, 0.3, 0.35, 1.2, 1.25, 0.5]]
    assert kept == [True, False, True, False, True, False, True]  # 1.2 and 0.5 cross the threshold
    both = ScoreThrottle(every_n=10)
    assert [both.keep(s, 1.0) for s in [0.1, 0.2, 1.5, 1.6]] == [True, False, True, False]


def test_using_roi_crops_training_and_calibration_batches(tmp_path):
    import argparse

    from algan.cli.calibrate import _roi
    from algan.runtime.preprocess import current_roi, load_batch, using_roi

    frame = grey_frame((60, 80), spot=(40, 20, 20, 20))
    path = tmp_path / "f.png"
    cv2.imwrite(str(path), frame)
    with using_roi((40, 20, 20, 20)):
        assert current_roi() == (40, 20, 20, 20)
        inside = load_batch([path], (8, 8))
    assert current_roi() is None
    assert (inside == 255).all() and not (load_batch([path], (8, 8)) == 255).all()
    with using_roi((70, 50, 20, 20)), pytest.raises(ValueError, match="does not fit"):
        load_batch([path], (8, 8))
    # algan-calibrate: the bundle's ROI by default, --roi overrides it (with a warning), 'full' = none
    from algan.contract import parse_manifest

    manifest = parse_manifest({"format_version": 1, "model_id": "m", "calibration": {"center": 0.0, "threshold": 1.0},
                               "roi": [1, 2, 30, 40]})
    assert _roi(argparse.Namespace(roi=None), manifest) == (1, 2, 30, 40)
    assert _roi(argparse.Namespace(roi="0,0,10,10"), manifest) == (0, 0, 10, 10)
    assert _roi(argparse.Namespace(roi="full"), manifest) is None


def test_overlay_region_is_red_only_at_or_above_the_threshold_and_the_label_is_on_a_dark_box():
    frame = grey_frame((120, 240))
    amap = np.zeros((4, 4), np.float32)
    amap[1, 2] = 2.0
    region = region_from_map(amap, (0, 0, 240, 120))
    x, y, w, h = region.box
    hot = draw_overlay(frame, amap, None, region, score=1.2, threshold=1.0)
    cold = draw_overlay(frame, amap, None, region, score=0.4, threshold=1.0)
    assert tuple(hot[y + h - 1, x + w // 2]) == (0, 0, 255)  # anomalous: red outline
    assert tuple(cold[y + h - 1, x + w // 2]) == (170, 170, 170)  # below the threshold: grey outline
    # the score label sits on a filled black box (readable on any frame size): its corner pixel is black
    assert tuple(hot[2, 3]) == (0, 0, 0) and tuple(cold[2, 3]) == (0, 0, 0)
    assert (hot[5:15, 8:60] == (0, 0, 255)).all(axis=2).any()  # red text for an anomalous score


def test_the_score_label_moves_to_the_bottom_when_it_would_hide_the_peak():
    # the demo's crack at the top edge: peak (52, 2) on a 256 x 256 snapshot sat under the label box
    assert label_box((256, 256, 3), (150, 10, 4), (52, 2), 6) == (2, 256 - 2 - 18, 160, 254)
    assert label_box((256, 256, 3), (150, 10, 4), (128, 128), 6) == (2, 1, 160, 19)  # elsewhere: top-left
    assert label_box((256, 256, 3), (150, 10, 4), None, 6) == (2, 1, 160, 19)
    assert label_box((256, 256, 3), (150, 10, 4), (165, 24), 6)[1] > 200  # the marker's arm would reach the box
    frame = grey_frame((256, 256))
    amap = np.zeros((8, 8), np.float32)
    amap[0, 1] = 3.0
    region = region_from_map(amap, (0, 0, 256, 256))
    out = draw_overlay(frame, amap, None, region, score=3.0, threshold=1.0)
    px, py = region.peak
    assert py < 20 and tuple(out[py, px]) == (255, 255, 255)  # the marker's centre stays visible
    assert tuple(out[254, 3]) == (0, 0, 0) and tuple(out[2, 3]) != (0, 0, 0)  # the label box at the bottom


def test_inferencer_refuses_what_is_not_a_frame(tmp_path):
    """model.predict(None) (cv2.imread of a missing file), empty and wrong-dtype arrays: one clear ValueError each
    (issue 24, finding 7)."""
    import algan

    inf = algan.Inferencer(make_map_bundle(tmp_path / "b"), roi="full")
    cases = [
        (None, "is None, not an image: cv2.imread returns None"),
        (np.zeros((0, 0, 3), np.uint8), "is empty"),
        (np.zeros((64, 64, 3), np.float32), "dtype float32, not uint8"),
        (np.zeros((64, 64, 2), np.uint8), "has shape (64, 64, 2)"),
        ([], "empty batch"),
        ([grey_frame((64, 64)), None], "frame 1 is None"),
        ("image.png", "is a str, not an image"),
    ]
    for bad, msg in cases:
        with pytest.raises(ValueError) as err:
            inf.predict(bad)
        assert msg in str(err.value), (bad, err.value)
    assert inf.predict(grey_frame((64, 64))).score == pytest.approx(0.0)
