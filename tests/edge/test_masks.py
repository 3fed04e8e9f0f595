"""The predicted defect mask, torch-free: the pixel threshold's false-positive rate on new normals, Prediction.mask,
no mask or region below the image threshold, mask contours in overlays, where the runtime finds the pixel threshold
(bundle, graph metadata, fallback), algan-predict --save-masks and the report."""

from __future__ import annotations

import csv
import json

import cv2
import numpy as np
import pytest
from mapkit import grey_frame, make_map_bundle, write_frames

from algan.contract import DEFAULT_PIXEL_FPR, CalibrationSection, pixel_threshold
from algan.runtime.maps import MASK_ON, REGION_COLOUR, draw_overlay, mask_contours, mask_from_map

ROI = [40, 20, 128, 128]  # in a 200x300 frame; 64x64 model input, 16x16 map: a cell is 8x8 frame pixels
SPOT = (88, 52, 16, 16)  # inside the ROI, on the cell grid


def smooth_normal_maps(n: int, seed: int, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    """Exchangeable normal maps: Gaussian noise smoothed like the heads' maps (spatially correlated cells)."""
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(n, *shape)).astype(np.float32)
    return np.stack([cv2.GaussianBlur(m, (0, 0), 1.0) for m in raw]) * 3.0 + 5.0


@pytest.mark.parametrize("target", [0.01, DEFAULT_PIXEL_FPR, 0.002])
def test_the_pixel_threshold_gives_the_stated_pixel_fpr_on_new_normals(target):
    """The threshold set on 300 normal maps, applied to 300 new ones through the mask (upsampled to ROI pixels):
    the share of mask pixels on the new normals is the stated rate (within 30 %, spatially correlated pixels)."""
    calib, new = smooth_normal_maps(300, 1), smooth_normal_maps(300, 2)
    rule = pixel_threshold(calib, target)
    assert rule.resolved and rule.threshold == pytest.approx(np.quantile(calib, 1 - target), rel=0.02)
    # the calibrated map scale of a bundle with center 0, threshold 1: the level is the raw threshold
    level = CalibrationSection(center=0.0, threshold=1.0, pixel_threshold=rule.threshold).pixel_level
    assert level == pytest.approx(rule.threshold)
    masks = np.stack([mask_from_map(m, (128, 128), level) for m in new])
    assert masks.dtype == np.uint8 and set(np.unique(masks)) <= {0, MASK_ON}
    achieved = float((masks > 0).mean())
    assert target * 0.7 <= achieved <= target * 1.3, (target, achieved)
    # per map cell, too
    assert target * 0.7 <= float((new >= rule.threshold).mean()) <= target * 1.3


def test_pixel_level_on_the_calibrated_scale_and_its_fallback():
    cal = CalibrationSection(center=2.0, threshold=6.0, pixel_threshold=4.0)
    assert cal.pixel_level == pytest.approx(0.5)  # (4 - 2) / (6 - 2)
    assert CalibrationSection(center=2.0, threshold=6.0).pixel_level == 1.0  # old bundle: the image threshold's level


def test_prediction_mask_shape_dtype_area_and_none_below_the_threshold(tmp_path):
    import algan

    # center 0, threshold 1: the stand-in's raw map (|grey - 128| / 64) is the calibrated map; the pixel threshold
    # at 1.5 keeps the cells of a white spot (about 1.98)
    bundle = make_map_bundle(tmp_path / "b", roi=ROI, pixel_threshold=1.5)
    inf = algan.Inferencer(bundle)
    assert inf.pixel_threshold == pytest.approx(1.5)
    frame = grey_frame((200, 300), spot=SPOT)
    p = inf.predict(frame)
    assert p.is_anomalous and p.pixel_threshold == pytest.approx(1.5)
    assert p.mask is not None and p.mask.shape == (128, 128) and p.mask.dtype == np.uint8  # ROI size (h, w)
    assert set(np.unique(p.mask)) == {0, MASK_ON}
    ys, xs = np.nonzero(p.mask)
    x, y, w, h = SPOT
    rx, ry = ROI[:2]
    # the mask lies on the spot (ROI coordinates), the bilinear fringe at most one cell's half inside it
    assert xs.min() >= x - rx and xs.max() < x - rx + w and ys.min() >= y - ry and ys.max() < y - ry + h
    assert (p.mask[y - ry + 4 : y - ry + 12, x - rx + 4 : x - rx + 12] == MASK_ON).all()
    assert p.region is not None and p.region.area == int(np.count_nonzero(p.mask))
    assert p.region.box == SPOT and p.to_dict()["region"]["area"] == p.region.area
    # a normal frame (a faint spot below the image threshold): the map stays, no region, no mask, no outline
    faint = grey_frame((200, 300), spot=SPOT, value=160)  # cells 0.5
    q = inf.predict(faint)
    assert not q.is_anomalous and q.anomaly_map is not None
    assert q.mask is None and q.region is None and q.to_dict()["region"] is None
    over = inf.overlay(faint, q)
    red = (over[..., 2] > 200) & (over[..., 1] < 60) & (over[..., 0] < 60)
    assert not red.any()


def red_pixels(img: np.ndarray) -> np.ndarray:
    b, g, r = (img[..., i].astype(int) for i in range(3))
    return (r == REGION_COLOUR[2]) & (g == REGION_COLOUR[1]) & (b == REGION_COLOUR[0])


def test_overlay_outlines_the_mask_contours_where_the_mask_is():
    frame = np.full((240, 320, 3), 128, np.uint8)
    roi = (30, 20, 200, 160)
    mask = np.zeros((160, 200), np.uint8)
    cv2.circle(mask, (60, 70), 25, MASK_ON, cv2.FILLED)
    mask[100:140, 130:190] = MASK_ON
    out = draw_overlay(frame, None, roi, mask=mask)
    red = red_pixels(out)
    # the mask's boundary in frame pixels (ROI offset), and the distance of every pixel to it
    full = np.zeros(frame.shape[:2], np.uint8)
    full[20:180, 30:230] = mask
    edge = full - cv2.erode(full, np.ones((3, 3), np.uint8))
    dist = cv2.distanceTransform((edge == 0).astype(np.uint8), cv2.DIST_L2, 3)
    assert red.any()
    assert dist[red].max() <= 2.5  # every red pixel lies on the outline (thickness 2 at this size)
    red_dist = cv2.distanceTransform((~red).astype(np.uint8), cv2.DIST_L2, 3)
    assert red_dist[edge > 0].max() <= 1.5  # and the whole outline is drawn
    # the mask's inside and the rest of the frame (but the ROI's white frame) keep their pixels
    inside = cv2.erode(full, np.ones((7, 7), np.uint8)) > 0
    roi_line = np.zeros(frame.shape[:2], np.uint8)
    cv2.rectangle(roi_line, (30, 20), (229, 179), 1, 1)
    assert (out[inside] == 128).all() and (out[(dist > 4) & (roi_line == 0)] == 128).all()
    # the contours are in frame pixels: two blobs
    assert len(mask_contours(mask, roi[:2])) == 2
    with pytest.raises(ValueError, match="mask has shape"):
        draw_overlay(frame, None, roi, mask=np.zeros((10, 10), np.uint8))


def test_pixel_level_from_the_bundle_the_graph_or_the_fallback(tmp_path):
    from algan.runtime.runners.calibration import PIXEL_LEVEL_FALLBACK, pixel_level

    # the bundle's pixel threshold (raw) on its current calibration: (3 - 1) / (5 - 1)
    b = make_map_bundle(tmp_path / "a", center=1.0, threshold=5.0, pixel_threshold=3.0, graph_pixel_threshold=0.9)
    assert pixel_level(b) == (pytest.approx(0.5), f"the pixel threshold of {b / 'algan.json'}")
    # only the graph has one (calibrated on its export calibration 0, 1), the bundle was re-calibrated to (1, 5):
    # raw 0.9 -> (0.9 - 1) / 4
    g = make_map_bundle(tmp_path / "g", center=1.0, threshold=5.0, graph_pixel_threshold=0.9)
    level, source = pixel_level(g)
    assert level == pytest.approx(-0.025, abs=1e-6) and "graph" in source
    assert pixel_level(g / "model.onnx")[0] == pytest.approx(-0.025, abs=1e-6)
    same = make_map_bundle(tmp_path / "s", graph_pixel_threshold=0.9)  # not re-calibrated: the graph's own value
    assert pixel_level(same)[0] == pytest.approx(0.9)
    # neither: the image threshold's level, said so
    old = make_map_bundle(tmp_path / "o")
    assert pixel_level(old) == (1.0, PIXEL_LEVEL_FALLBACK)


def test_predict_save_masks_writes_frame_sized_pngs_and_the_report_shows_them(tmp_path, capsys):
    from algan.cli.predict import main, predict

    bundle = make_map_bundle(tmp_path / "b", roi=ROI, pixel_threshold=1.5)
    frames = [grey_frame((200, 300)), grey_frame((200, 300), spot=SPOT)]
    write_frames(tmp_path / "in" / "good", frames[:1], "n")
    write_frames(tmp_path / "in" / "spot", frames[1:], "d")
    res = predict(bundle, tmp_path / "in", tmp_path / "out", save_masks=True)
    assert res["masks"] == str(tmp_path / "out" / "masks")
    defect = cv2.imread(str(tmp_path / "out" / "masks" / "spot" / "d000.png"), cv2.IMREAD_UNCHANGED)
    normal = cv2.imread(str(tmp_path / "out" / "masks" / "good" / "n000.png"), cv2.IMREAD_UNCHANGED)
    assert defect.shape == normal.shape == (200, 300) and defect.dtype == np.uint8
    assert not normal.any()  # below the threshold: an all-zero mask
    x, y, w, h = SPOT
    assert (defect[y + 4 : y + 12, x + 4 : x + 12] == MASK_ON).all()
    assert np.count_nonzero(defect) == np.count_nonzero(defect[y : y + h, x : x + w])  # nothing off the spot
    with open(tmp_path / "out" / "predictions.csv", newline="") as f:
        rows = {r["file"]: r for r in csv.DictReader(f)}
    assert int(rows["spot/d000.png"]["mask_area"]) == np.count_nonzero(defect)
    assert rows["good/n000.png"]["mask_area"] == "" and rows["good/n000.png"]["box_x"] == ""
    html = (tmp_path / "out" / "report.html").read_text()
    assert html.count("class='mask'") == 1 and f"mask {np.count_nonzero(defect)} px" in html
    # the overlay of the defect has the red outline around the spot, the normal one none
    ov = cv2.imread(str(tmp_path / "out" / "overlays" / "spot" / "d000.jpg"))
    assert ((ov[..., 2] > 200) & (ov[..., 1] < 80) & (ov[..., 0] < 80))[y - 3 : y + h + 3, x - 3 : x + w + 3].any()
    # -q: the same files, no summary line and no progress
    capsys.readouterr()
    assert main([str(bundle), str(tmp_path / "in"), "--out", str(tmp_path / "quiet"), "--save-masks", "-q"]) == 0
    out = capsys.readouterr()
    assert out.out == "" and "scoring" not in out.err
    assert (tmp_path / "quiet" / "masks" / "spot" / "d000.png").is_file()
    # a score-only model: one line, exit 2
    score_only = make_map_bundle(tmp_path / "s", maps=False)
    assert main([str(score_only), str(tmp_path / "in"), "--out", str(tmp_path / "o2"), "--save-masks"]) == 2


def test_region_json_carries_the_mask_area_only_when_a_mask_was_made():
    from algan.runtime.maps import Region

    r = Region((1, 2, 3, 4), (2, 3), 1.5, 1.0)
    assert "area" not in r.to_dict()
    assert json.loads(json.dumps(Region((1, 2, 3, 4), (2, 3), 1.5, 1.0, 7).to_dict()))["area"] == 7
