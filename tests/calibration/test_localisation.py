"""Localisation figures of anomaly maps on constructed maps: border peaks, peak hits, region-box IoU."""

from __future__ import annotations

import numpy as np
import pytest

from algan.calibration.localisation import (
    box_iou,
    is_border_peak,
    localisation_metrics,
    mask_boxes,
    peak_hits_mask,
    region_box_iou,
)


def _map(peak: tuple[int, int], size: int = 28, value: float = 3.0) -> np.ndarray:
    a = np.zeros((size, size), np.float32)
    a[peak] = value
    return a


def test_box_iou_and_mask_boxes():
    assert box_iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert box_iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert box_iou((0, 0, 10, 10), (20, 20, 5, 5)) == 0.0
    assert box_iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0
    m = np.zeros((20, 20), bool)
    m[2:5, 3:9] = True
    m[12:14, 12:20] = True
    assert sorted(mask_boxes(m)) == [(3, 2, 6, 3), (12, 12, 8, 2)]
    assert mask_boxes(np.zeros((4, 4), bool)) == []


def test_border_peak_in_frame_pixels():
    # a 28-cell map on a 300 x 300 frame: a cell is 10.7 px, its centre 5.4 px from the cell's edge
    assert is_border_peak(_map((0, 14)), (300, 300))  # top row: centre at y = 5 < 8
    assert is_border_peak(_map((14, 27)), (300, 300))  # right column: x = 294 >= 292
    assert not is_border_peak(_map((1, 14)), (300, 300))  # second row: y = 16
    assert not is_border_peak(_map((14, 14)), (300, 300))
    # on a 56-px frame a cell is 2 px: rows 0-3 and 24-27 are within 8 px of the edge
    assert is_border_peak(_map((3, 14)), (56, 56)) and not is_border_peak(_map((4, 14)), (56, 56))


def test_peak_hit_and_region_iou():
    mask = np.zeros((112, 112), bool)
    mask[40:60, 48:72] = True  # cells 10-14 x 12-17 at 4 px per cell
    assert peak_hits_mask(_map((12, 14)), mask)
    assert not peak_hits_mask(_map((2, 2)), mask)
    # the region of a map raised exactly on the defect's cells is the defect's box
    a = np.zeros((28, 28), np.float32)
    a[10:15, 12:18] = 2.0
    assert region_box_iou(a, mask) == pytest.approx(1.0)
    # a region four times the defect's area: IoU 1/4
    b = np.zeros((28, 28), np.float32)
    b[10:20, 12:24] = 2.0
    assert region_box_iou(b, mask) == pytest.approx(480 / 1920)


def test_localisation_metrics_counts_normals_defects_and_flags():
    size = 112
    maps, labels, masks = [], [], []
    for i in range(8):  # normals: peaks on the border for 3 of 8
        maps.append(_map((0, 5 + i)) if i < 3 else _map((8 + i, 10)))
        labels.append(0)
        masks.append(np.zeros((size, size), bool))
    defect = np.zeros((size, size), bool)
    defect[40:60, 48:72] = True
    on = np.zeros((28, 28), np.float32)
    on[10:15, 12:18] = 2.0
    for peak_on in (True, True, True, False):  # 3 of 4 defects peak on the defect
        maps.append(on if peak_on else _map((25, 2)))
        labels.append(1)
        masks.append(defect)
    flagged = np.array([False] * 8 + [True, True, False, True])
    out = localisation_metrics(np.stack(maps), np.array(labels), np.stack(masks), flagged)
    assert out["border_peak_fraction"] == pytest.approx(3 / 8)
    assert out["peak_hit_rate"] == pytest.approx(3 / 4)
    assert out["peak_hit_rate_flagged"] == pytest.approx(2 / 3)
    assert out["n_flagged_defects"] == 3
    # IoUs of the flagged: 1, 1 and 0 (a one-cell box far from the defect): median 1
    assert out["region_iou"] == pytest.approx(1.0)
    assert "mask_f1" not in out  # the mask's F1 is algan.model.evaluation.pixel_metrics.MaskF1
    # without masks: only the border fraction
    no_masks = localisation_metrics(np.stack(maps), np.array(labels))
    assert no_masks["border_peak_fraction"] == pytest.approx(3 / 8) and no_masks["peak_hit_rate"] is None
    with pytest.raises(ValueError, match="need maps"):
        localisation_metrics(np.stack(maps), np.array(labels[:-1]))
