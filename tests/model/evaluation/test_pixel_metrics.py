"""Pixel AUROC and AUPRO (algan.model.evaluation.pixel_metrics) on hand-computed, perfect, random and sklearn-checked
cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from algan.model.evaluation.pixel_metrics import PixelScoreCollector, aupro, pixel_auroc, upsample_maps

# Two 1x4 images. Image A: defect region {A0, A1} (one component, 2 px); image B: defect region {B3} (1 px).
# 2 regions, 5 defect-free pixels (A2, A3, B0, B1, B2).
MAPS = np.array([[[0.9, 0.3, 0.5, 0.1]], [[0.2, 0.3, 0.6, 0.7]]])
MASKS = np.array([[[1, 1, 0, 0]], [[0, 0, 0, 1]]], bool)
# Thresholds (distinct scores, descending) -> (FPR, PRO); PRO = mean over the 2 regions of the covered fraction:
#   0.9: A0            -> FPR 0/5,  PRO (1/2 + 0)/2 = 0.25
#   0.7: + B3          -> FPR 0/5,  PRO (1/2 + 1)/2 = 0.75
#   0.6: + B2 (normal) -> FPR 1/5 = 0.2, PRO 0.75
#   0.5: + A2 (normal) -> FPR 0.4, PRO 0.75
#   0.3: + A1 (defect) and B1 (normal, tied) -> FPR 0.6, PRO 1.0   (the tie gives a sloped segment 0.4 -> 0.6)
#   0.2: + B0 -> FPR 0.8; 0.1: + A3 -> FPR 1.0
# Curve from (0, 0): (0, .25) (0, .75) (.2, .75) (.4, .75) (.6, 1) (.8, 1) (1, 1).
# fpr_limit 0.3: area 0.3 * 0.75 = 0.225                                  -> AUPRO 0.225 / 0.3 = 0.75
# fpr_limit 0.5: 0.4 * 0.75 + 0.1 * (0.75 + 0.875) / 2 = 0.38125 (PRO at FPR 0.5 interpolated: 0.875)
#                                                                         -> AUPRO 0.38125 / 0.5 = 0.7625
# fpr_limit 1.0: 0.3 + 0.2 * (0.75 + 1) / 2 + 0.4 * 1 = 0.875             -> AUPRO 0.875


@pytest.mark.parametrize(("limit", "expected"), [(0.3, 0.75), (0.5, 0.7625), (1.0, 0.875)])
def test_aupro_hand_computed(limit, expected):
    assert aupro(MAPS, MASKS, fpr_limit=limit) == pytest.approx(expected, abs=1e-9)


def test_pro_curve_points_hand_computed():
    c = PixelScoreCollector()
    c.add(MAPS, MASKS)
    fpr, pro, thr = c.pro_curve()
    assert c.n_regions == 2 and c.n_images == 2
    np.testing.assert_allclose(thr, [0.9, 0.7, 0.6, 0.5, 0.3, 0.2, 0.1], atol=1e-6)
    np.testing.assert_allclose(fpr, [0, 0, 0, 0.2, 0.4, 0.6, 0.8, 1.0], atol=1e-12)
    np.testing.assert_allclose(pro, [0, 0.25, 0.75, 0.75, 0.75, 1.0, 1.0, 1.0], atol=1e-12)
    # the same data added one image at a time (streaming) gives the same curve
    c2 = PixelScoreCollector()
    for m, k in zip(MAPS, MASKS, strict=True):
        c2.add(m, k)
    np.testing.assert_allclose(c2.pro_curve()[1], pro)


def test_regions_are_8_connected_components_and_weighted_equally():
    # one image: a 1-px region and a diagonal 2-px region (8-connected -> one region) -> 2 regions.
    masks = np.zeros((1, 4, 4), bool)
    masks[0, 0, 0] = True
    masks[0, 2, 2] = masks[0, 3, 3] = True
    maps = np.zeros((1, 4, 4))
    maps[0, 0, 0] = 1.0  # only the small region detected: PRO 1/2 at FPR 0
    c = PixelScoreCollector()
    c.add(maps, masks)
    assert c.n_regions == 2
    fpr, pro, _ = c.pro_curve()
    assert (fpr[1], pro[1]) == (0.0, 0.5)  # a pixel-weighted overlap would give 1/3


def _blobs(seed: int, n: int = 6, size: int = 48):
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, size, size), bool)
    for i in range(1, n):  # image 0 is normal
        for _ in range(rng.integers(1, 4)):
            y, x, r = rng.integers(4, size - 4), rng.integers(4, size - 4), rng.integers(2, 6)
            yy, xx = np.ogrid[:size, :size]
            masks[i] |= (yy - y) ** 2 + (xx - x) ** 2 <= r * r
    return masks, rng


def test_perfect_map_gives_one_and_random_map_about_half_the_limit():
    masks, rng = _blobs(0)
    perfect = masks + 0.1 * rng.random(masks.shape)  # every defect pixel above every normal one
    assert aupro(perfect, masks) == pytest.approx(1.0, abs=1e-12)
    assert pixel_auroc(perfect, masks) == 1.0
    inverted = -perfect
    assert aupro(inverted, masks) == 0.0
    # uniform random scores: PRO(t) ~ FPR(t), so the area up to L is ~L^2/2 and AUPRO ~L/2
    masks, rng = _blobs(1, n=20, size=64)
    noise = rng.random(masks.shape)
    for limit in (0.3, 0.1):
        assert aupro(noise, masks, fpr_limit=limit) == pytest.approx(limit / 2, abs=0.02 * limit / 0.3 + 0.005)
    assert pixel_auroc(noise, masks) == pytest.approx(0.5, abs=0.03)


def test_pixel_auroc_equals_sklearn_and_subsampling_is_deterministic_and_close():
    masks, rng = _blobs(2, n=8, size=40)
    maps = masks * 0.8 + rng.normal(size=masks.shape)
    exact = roc_auc_score(masks.ravel(), maps.ravel())
    assert pixel_auroc(maps, masks) == pytest.approx(exact, abs=1e-12)
    assert pixel_auroc(maps, masks.astype(np.uint8) * 255) == pytest.approx(exact, abs=1e-12)  # {0, 255} masks
    # keep ~1/4 of the defect-free pixels: a deterministic estimate near the exact value
    cap = masks.size // 4
    a1, a2 = pixel_auroc(maps, masks, max_pixels=cap), pixel_auroc(maps, masks, max_pixels=cap)
    assert a1 == a2 and a1 != exact and a1 == pytest.approx(exact, abs=0.01)
    c = PixelScoreCollector(masks.size, cap)
    c.add(maps, masks)
    assert c.keep_rate == pytest.approx(0.25, abs=1e-3)
    assert aupro(maps, masks, max_pixels=cap) == pytest.approx(aupro(maps, masks), abs=0.01)


def test_shape_and_value_errors_are_one_line():
    maps = np.zeros((2, 4, 4))
    masks = np.zeros((2, 4, 4), bool)
    masks[1, 0, 0] = True
    for bad_maps, bad_masks, pattern in [
        (np.zeros((2, 2, 2)), masks, r"differ in shape.*upsample_maps"),
        (np.zeros((2, 4, 4, 1)), masks, r"shape \(N, H, W\)"),
        (np.full((2, 4, 4), np.nan), masks, "NaN"),
    ]:
        with pytest.raises(ValueError, match=pattern) as exc:
            aupro(bad_maps, bad_masks)
        assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match="at least one defect pixel"):
        pixel_auroc(maps, np.zeros_like(masks))
    with pytest.raises(ValueError, match="defect-free pixels"):
        aupro(maps, np.ones_like(masks))
    with pytest.raises(ValueError, match=r"fpr_limit must lie in \(0, 1\]"):
        aupro(maps, masks, fpr_limit=0.0)


def test_upsample_maps_keeps_cells_on_their_blocks():
    maps = np.zeros((1, 4, 4), np.float32)
    maps[0, 1, 2] = 1.0  # cell (1, 2) covers pixels [8, 16) x [16, 24) of a 32x32 input
    up = upsample_maps(maps, (32, 32))
    assert up.shape == (1, 32, 32) and up.dtype == np.float32
    iy, ix = np.unravel_index(np.argmax(up[0]), (32, 32))
    assert 8 <= iy < 16 and 16 <= ix < 24
    assert up[0, 8:16, 16:24].mean() > up[0].mean() * 5
    assert upsample_maps(maps, (4, 4)) is not None and np.array_equal(upsample_maps(maps, (4, 4)), maps)
    with pytest.raises(ValueError, match=r"\(N, h, w\)"):
        upsample_maps(np.zeros((4, 4)), (8, 8))


def _brute_force_aupro(maps, masks, limit):
    """Reference: for every distinct score t, PRO(t) from scipy.ndimage.label regions and FPR(t), then the area
    under the polyline segment by segment, the last segment cut at ``limit``."""
    from scipy import ndimage

    regions = []
    for m, k in zip(maps, masks, strict=True):
        lab, n = ndimage.label(k, structure=np.ones((3, 3)))
        regions += [m[lab == r] for r in range(1, n + 1)]
    normal = maps[~masks]
    pts = [(0.0, 0.0)] + [(np.mean(normal >= t), np.mean([np.mean(r >= t) for r in regions]))
                          for t in np.unique(maps)[::-1]]
    area = 0.0
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:], strict=True):
        if x0 >= limit:
            break
        if x1 > limit:
            x1, y1 = limit, y0 + (y1 - y0) * (limit - x0) / (x1 - x0)
        area += (x1 - x0) * (y0 + y1) / 2
    return area / limit


def test_aupro_matches_a_brute_force_reference_with_ties():
    masks, rng = _blobs(3, n=5, size=24)
    maps = masks * 0.7 + rng.random(masks.shape)
    tied = rng.random(masks.shape) < 0.5
    maps[tied] = np.round(maps[tied], 1)  # ties of normal and defect pixels (sloped segments) and unique scores
    for limit in (0.3, 0.05, 1.0):
        assert aupro(maps, masks, fpr_limit=limit) == pytest.approx(_brute_force_aupro(maps, masks, limit), abs=1e-9)


def test_pixel_metrics_and_masks_need_no_torch():
    import subprocess
    import sys

    code = ("import sys, algan.model.evaluation.pixel_metrics, algan.data.datasets\n"
            "assert not [m for m in sys.modules if m == 'torch' or m.startswith('torch.')]\nprint('ok')")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
