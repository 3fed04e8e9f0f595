"""Tiled inference on the host (algan.runtime.tiling): tiles cover the ROI, stitching, overlap averaging, reductions,
the manifest section."""

from __future__ import annotations

import json

import numpy as np
import pytest

from algan.contract import BundleError, parse_manifest
from algan.runtime.tiling import (
    TileSpec,
    parse_tiles,
    prepare_tiles,
    reduce_map,
    reduce_tile_scores,
    stitch_maps,
    stitched_size,
    tile_boxes,
    tile_frame,
    untile,
)


@pytest.mark.parametrize(("h", "w"), [(640, 640), (460, 1130), (333, 517), (64, 64), (7, 9)])
@pytest.mark.parametrize(("rows", "cols", "overlap"), [(1, 1, 0.25), (2, 2, 0.0), (2, 2, 0.25), (3, 3, 0.25),
                                                      (4, 4, 0.5), (1, 3, 0.25), (3, 2, 0.1)])
def test_tiles_cover_the_roi_exactly_with_equal_sizes_and_the_asked_overlap(h, w, rows, cols, overlap):
    if h < rows or w < cols:
        pytest.skip("grid larger than the region")
    spec = TileSpec(rows, cols, overlap)
    boxes = tile_boxes(h, w, spec)
    assert len(boxes) == rows * cols
    covered = np.zeros((h, w), int)
    for x, y, bw, bh in boxes:
        assert x >= 0 and y >= 0 and x + bw <= w and y + bh <= h
        covered[y : y + bh, x : x + bw] += 1
    assert covered.min() >= 1  # every ROI pixel lies in a tile
    assert len({(bw, bh) for _, _, bw, bh in boxes}) == 1  # one tile size (one model input scale)
    _, _, tw, th = boxes[0]
    assert boxes[0][:2] == (0, 0) and boxes[-1][0] + tw == w and boxes[-1][1] + th == h
    if cols > 1 and tw < w:  # neighbours overlap by about the asked share of a tile (integer rounding aside)
        step = boxes[1][0] - boxes[0][0]
        assert abs((tw - step) / tw - overlap) <= 2.0 / tw + 1e-9
    if rows == 1 and cols == 1:
        assert boxes == [(0, 0, w, h)]


def test_one_tile_equal_to_the_frame_stitches_to_the_whole_frame_map_unchanged():
    rng = np.random.default_rng(0)
    amap = rng.random((1, 28, 28), dtype=np.float32)
    one = TileSpec(1, 1)
    out = stitch_maps(amap, (224, 224), one)
    assert out.dtype == np.float32 and np.array_equal(out, amap[0])
    # a ROI of another size than the input: still the tile's own map (the cell density of one tile)
    assert np.array_equal(stitch_maps(amap, (300, 411), one), amap[0])
    # the tiles of a 1x1 grid are the frame resized, as the untiled path prepares it
    from algan.runtime.preprocess import prepare_frame

    frame = rng.integers(0, 256, (300, 411, 3), dtype=np.uint8)
    tiles, shape = prepare_tiles(frame, (64, 64), None, one)
    assert shape == (300, 411) and np.array_equal(tiles[0], prepare_frame(frame, (64, 64)))
    # frame score = the reduction of the (unchanged) map: the same as scoring the whole frame
    res = untile(np.zeros(1), amap, [(300, 411)], one, "topk_mean", 0.05)
    assert res.scores[0] == pytest.approx(np.sort(amap.ravel())[-int(np.ceil(0.05 * 784)):].mean(), rel=1e-6)


def test_overlaps_are_averaged_on_a_constructed_map():
    # a 32x48 ROI in 1x2 tiles overlapping by half: tiles 32x32 at x = 0 and 16; 8x8-cell tile maps -> 8x12 cells,
    # tile 0 on columns 0-7, tile 1 on columns 4-11, both on 4-7
    spec = TileSpec(1, 2, 0.5)
    assert tile_boxes(32, 48, spec) == [(0, 0, 32, 32), (16, 0, 32, 32)]
    maps = np.stack([np.full((8, 8), 1.0, np.float32), np.full((8, 8), 3.0, np.float32)])
    out = stitch_maps(maps, (32, 48), spec)
    assert out.shape == stitched_size((32, 48), spec, (8, 8)) == (8, 12)
    assert np.all(out[:, :4] == 1.0) and np.all(out[:, 4:8] == 2.0) and np.all(out[:, 8:] == 3.0)
    # a 2x2 grid without overlap places each tile's map in its quadrant, cell for cell
    quad = TileSpec(2, 2, 0.0)
    tiles = np.stack([np.full((4, 4), v, np.float32) for v in (1, 2, 3, 4)])
    q = stitch_maps(tiles, (64, 64), quad)
    assert q.shape == (8, 8)
    assert np.all(q[:4, :4] == 1) and np.all(q[:4, 4:] == 2) and np.all(q[4:, :4] == 3) and np.all(q[4:, 4:] == 4)
    # a defect cell in the overlap of all four 3x3 neighbours keeps its place (stitching is shift-exact)
    spec3 = TileSpec(3, 3, 0.25)
    boxes = tile_boxes(640, 640, spec3)
    th = boxes[0][3]
    sh, sw = stitched_size((640, 640), spec3, (th // 4, th // 4))
    assert (sh, sw) == (160, 160)


def test_tile_frame_cuts_the_pixels_of_each_box():
    rng = np.random.default_rng(1)
    roi = rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)
    spec = TileSpec(2, 2, 0.5)
    tiles = tile_frame(roi, spec, (64, 64))  # 96 / 1.5 = 64: no resize, so the tiles are the boxes' pixels
    for tile, (x, y, w, h) in zip(tiles, tile_boxes(96, 96, spec), strict=True):
        assert (w, h) == (64, 64) and np.array_equal(tile, roi[y : y + h, x : x + w])


def test_reductions_match_the_patch_heads_and_image_heads_take_the_max_over_tiles():
    import torch

    from algan.features.patch import MapPostprocess, PatchSpec

    rng = np.random.default_rng(2)
    maps = rng.random((3, 56, 56), dtype=np.float32)
    for reduction in ("max", "topk_mean"):
        post = MapPostprocess(PatchSpec(reduction=reduction, topk=0.02), (224, 224))
        ref = post.reduce(torch.from_numpy(maps)).numpy()
        ours = [reduce_map(m, reduction, 0.02) for m in maps]
        np.testing.assert_allclose(ours, ref, rtol=1e-6)
    assert reduce_tile_scores(np.array([0.1, 0.9, 0.2, 0.3, 0.4, 0.05]), 3).tolist() == pytest.approx([0.9, 0.4])
    assert untile(np.array([0.1, 0.9, 0.2, 0.3]), None, [(10, 10), (10, 10)], TileSpec(1, 2)).maps is None


def test_parse_tiles_and_bad_settings_say_how_to_fix():
    assert parse_tiles("3x4") == TileSpec(3, 4, 0.25)
    assert parse_tiles("2", 0.1) == TileSpec(2, 2, 0.1)
    with pytest.raises(ValueError, match="ROWSxCOLS"):
        parse_tiles("big")
    with pytest.raises(ValueError, match="overlap"):
        TileSpec(2, 2, 0.7)
    with pytest.raises(ValueError, match="at least 1 x 1"):
        TileSpec(0, 2)
    with pytest.raises(ValueError, match="coarser"):
        tile_boxes(3, 100, TileSpec(4, 4))


def test_a_tiled_manifest_round_trips_and_a_bad_section_is_one_line():
    spec = TileSpec(3, 2, 0.2)
    data = {"format_version": 1, "model_id": "m", "calibration": {"center": 0.0, "threshold": 1.0},
            "tiling": spec.to_json()}
    m = parse_manifest(json.loads(json.dumps(data)))
    from algan.runtime.tiling import manifest_tiling

    assert manifest_tiling(m) == spec
    assert m.to_json()["tiling"] == {"grid": [3, 2], "overlap": 0.2}
    assert TileSpec.from_json(m.to_json()["tiling"]) == spec
    assert manifest_tiling(parse_manifest({**data, "tiling": None})) is None
    with pytest.raises(BundleError, match="tiling"):
        parse_manifest({**data, "tiling": {"grid": [3, 0]}})
    with pytest.raises(BundleError, match="tiling"):
        parse_manifest({**data, "tiling": {"grid": [2, 2], "overlap": 0.9}})


def test_an_image_only_head_scores_a_tiled_frame_by_the_max_over_its_tiles():
    import torch

    from algan.model.detector import AnomalyDetector

    class Cast(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.float()

    class MeanPixel(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(1, 2, 3)).unsqueeze(1)

    class First(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x[:, 0]

    det = AnomalyDetector(Cast(), MeanPixel(), torch.nn.Identity(), First(), input_size=(32, 32)).eval()
    frame = np.full((64, 64, 3), 10, np.uint8)
    frame[40:64, 40:64] = 200  # the bottom-right tile (32x32 at 32, 32 with no overlap) is the brightest
    det.tiling = TileSpec(2, 2, 0.0)
    tiles = tile_frame(frame, det.tiling, (32, 32)).astype(np.float64)
    assert det.frame_raw_scores([frame])[0] == pytest.approx(tiles.mean(axis=(1, 2, 3)).max(), rel=1e-6)
    det.tiling = None  # untiled: the whole frame resized to the input
    assert det.frame_raw_scores([frame])[0] < tiles.mean(axis=(1, 2, 3)).max()


def test_candidate_grids_keep_tiles_no_smaller_than_the_input_and_its_aspect():
    from algan.runtime.tiling import candidate_grids

    assert [str(g) for g in candidate_grids((640, 640), (224, 224))] == ["2x2 overlap 0.25", "3x3 overlap 0.25"]
    assert [(g.rows, g.cols) for g in candidate_grids((460, 1130), (224, 224))][:2] == [(1, 2), (1, 3)]
    assert candidate_grids((300, 300), (224, 224)) == []  # not much larger than the input: nothing to gain
    for roi in ((1024, 1024), (460, 1130), (360, 640), (2000, 500)):
        for g in candidate_grids(roi, (224, 224)):
            _, _, tw, th = tile_boxes(*roi, g)[0]
            assert tw >= 224 or th >= 224  # the axis that sets the resolution is never up-sampled
            assert g.n_tiles > 1


def test_large_frame_note_names_the_grids_only_for_frames_much_larger_than_the_input():
    from algan.runtime.tiling import large_frame_note

    pcb = large_frame_note((640, 640), (224, 224))
    assert pcb is not None and "2.9x the model input" in pcb and "--tiles 3x3" in pcb and "2x2, 3x3" in pcb
    wide = large_frame_note((460, 1130), (224, 224))
    assert wide is not None and "1130 x 460 px" in wide and "1x2, 1x3" in wide
    assert large_frame_note((300, 300), (224, 224)) is None  # MTD-sized tiles: tiling would up-sample
    assert large_frame_note((224, 224), (224, 224)) is None


def test_auto_grid_is_the_finest_candidate_of_at_most_nine_tiles():
    from algan.runtime.tiling import MAX_AUTO_TILES, auto_grid

    assert auto_grid((640, 640), (224, 224)) == TileSpec(3, 3, 0.25)  # pcb: 256 px tiles
    ball = auto_grid((460, 1130), (224, 224))  # ballscrew: 2x5 and 2x6 have more than nine tiles
    assert ball is not None and (ball.rows, ball.cols) == (2, 4) and ball.n_tiles <= MAX_AUTO_TILES
    assert auto_grid((256, 256), (224, 224)) is None
    assert auto_grid((300, 300), (224, 224)) is None  # under 1.5x the input


def test_frame_size_is_the_median_roi_of_a_sample(tmp_path):
    import cv2

    from algan.runtime.preprocess import using_roi
    from algan.runtime.tiling import frame_size

    paths = []
    for i, (h, w) in enumerate([(100, 200), (120, 200), (140, 220)]):
        paths.append(tmp_path / f"{i}.png")
        cv2.imwrite(str(paths[-1]), np.zeros((h, w, 3), np.uint8))
    assert frame_size(paths) == (120, 200)
    with using_roi((10, 10, 50, 40)):
        assert frame_size(paths) == (40, 50)
    with pytest.raises(ValueError, match="no images"):
        frame_size([])
