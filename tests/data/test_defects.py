"""Synthetic defects (algan.data.defects): masks are exactly the changed pixels, sizes span the range, seeded."""

from __future__ import annotations

import numpy as np
import pytest

from algan.data.defects import (
    DEFECT_KINDS,
    LOCAL_KINDS,
    MAX_AREA_FRACTION,
    MIN_TEXTURE_FRACTION,
    TEXTURE_KINDS,
    cutpaste,
    make_defect,
    perlin_noise,
    synthesize_defects,
    synthesize_families,
    texture_change,
)


def _normals(n: int = 6, size: int = 96, grey: bool = False) -> np.ndarray:
    rng = np.random.default_rng(3)
    base = rng.integers(60, 190, (n, size, size, 1 if grey else 3)).astype(np.uint8)
    return np.repeat(base, 3, axis=-1) if grey else base


@pytest.mark.parametrize("kind", DEFECT_KINDS)
def test_mask_is_exactly_the_changed_pixels(kind):
    imgs = _normals()
    for seed in range(8):
        out, mask = make_defect(imgs[0], kind, list(imgs[1:]), np.random.default_rng(seed))
        assert out.shape == imgs[0].shape and out.dtype == np.uint8 and mask.dtype == bool
        np.testing.assert_array_equal(out[~mask], imgs[0][~mask])  # nothing changes outside the mask
        assert np.all(np.any(out[mask] != imgs[0][mask], axis=-1))  # every mask pixel changed
        assert mask.sum() >= 4


def test_cutpaste_rectangle_pastes_the_source_patch_where_the_mask_is():
    img = np.full((64, 64, 3), 40, np.uint8)
    src = np.full((64, 64, 3), 220, np.uint8)
    rects = 0
    for seed in range(12):
        out, mask = cutpaste(img, src, np.random.default_rng(seed))
        ys, xs = np.nonzero(mask)
        box = (ys.max() - ys.min() + 1) * (xs.max() - xs.min() + 1)
        assert out[mask].min() > 150  # the pasted pixels come from the bright source (jitter at most ~15 %)
        np.testing.assert_array_equal(out[~mask], img[~mask])
        rects += int(box == mask.sum())  # the rectangle variant fills its box; the scar is a rotated strip
    assert 2 <= rects <= 10


def test_grey_images_get_grey_defects():
    imgs = _normals(grey=True)
    d = synthesize_defects(imgs, 3, seed=1)
    assert np.array_equal(d.images[..., 0], d.images[..., 1]) and np.array_equal(d.images[..., 1], d.images[..., 2])


def test_sizes_span_a_few_pixels_to_a_tenth_of_the_image():
    imgs = _normals(n=10, size=128)
    d = synthesize_defects(imgs, 6, seed=0)
    areas = d.masks.reshape(len(d.masks), -1).sum(1)
    assert areas.min() < 60, areas.min()
    assert areas.max() > 0.03 * 128 * 128
    assert np.median(areas) < MAX_AREA_FRACTION * 128 * 128
    assert sorted(set(d.kinds)) == sorted(LOCAL_KINDS)
    assert np.array_equal(d.source, np.tile(np.arange(10), 6))


def test_texture_changes_cover_a_large_region_and_both_families_are_drawn():
    imgs = _normals(n=8, size=96)
    d = synthesize_families(imgs, 2, seed=0)
    assert len(d.images) == 32 and d.kinds[:16] == [LOCAL_KINDS[j % 6] for j in range(16)]
    assert d.kinds[16:] == [TEXTURE_KINDS[j % 4] for j in range(16)]
    frac = d.masks[16:].reshape(16, -1).mean(1)
    assert frac.min() >= MIN_TEXTURE_FRACTION and np.median(frac) > 0.1  # a tenth to half of the image
    for img, mask, src in zip(d.images, d.masks, d.source, strict=True):
        np.testing.assert_array_equal(img[~mask], imgs[src][~mask])
    # the texture family is its own stream: the local marks are those of synthesize_defects alone
    np.testing.assert_array_equal(d.images[:16], synthesize_defects(imgs, 2, seed=0).images)
    with pytest.raises(ValueError, match="unknown texture kind"):
        texture_change(imgs[0], "spot", np.random.default_rng(0))


def test_deterministic_for_a_seed():
    imgs = _normals()
    a, b, c = (synthesize_defects(imgs, 2, seed=s) for s in (5, 5, 6))
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.masks, b.masks)
    assert not np.array_equal(a.masks, c.masks)


def test_perlin_noise_shape_range_and_smoothness():
    n = perlin_noise((50, 70), (3, 4), np.random.default_rng(0))
    assert n.shape == (50, 70) and n.dtype == np.float32
    assert -1.01 <= n.min() < 0 < n.max() <= 1.01
    assert np.abs(np.diff(n, axis=1)).max() < 0.3  # gradient noise is smooth at a few cells per image


def test_bad_input_is_refused():
    imgs = _normals()
    with pytest.raises(ValueError, match="unknown defect kind"):
        make_defect(imgs[0], "dent", [], np.random.default_rng(0))
    with pytest.raises(ValueError, match="other normal image"):
        make_defect(imgs[0], "cutpaste", [], np.random.default_rng(0))
    with pytest.raises(ValueError, match=">= 2 normal images"):
        synthesize_defects(imgs[:1])
