"""Tiled inference on the host: a region of interest cut into a grid of model-size tiles, their maps stitched back.

Small defects on large frames vanish when the whole ROI is resized to the model input (a 640 px board at 224 px
loses a 3 px open). Tiling keeps the resolution: the ROI is cut into ``rows x cols`` overlapping tiles, each tile is
resized to the model input and scored (one batch per frame), and the tiles' anomaly maps are stitched into one map
of the ROI, overlaps averaged; the frame's image score is the head's reduction (``max`` or ``topk_mean``) of the
stitched map. This is anomalib's ``Tiler`` (``tile`` -> model -> ``untile`` with averaged overlaps) done with numpy
and OpenCV on the host, so every runner (torch, ONNX Runtime, TensorRT, Triton) gets the same tiling; the exported
graph stays per tile.

Geometry. A ROI of ``H x W`` pixels and a :class:`TileSpec` ``(rows, cols, overlap)`` give tiles of
``th = ceil(H / (rows - (rows - 1) * overlap))`` by ``tw = ceil(W / (cols - (cols - 1) * overlap))`` pixels (capped at
the ROI) whose origins are spread evenly from 0 to ``H - th`` (``W - tw``): the first tile starts at the ROI's top
left corner, the last ends at its bottom right one, neighbours overlap by about ``overlap`` of a tile. Every ROI
pixel lies in at least one tile (:func:`tile_boxes`).

Stitching. A tile's map of ``(mh, mw)`` cells covers its tile (the map contract of :mod:`algan.contract`), so the
stitched map has the tiles' cell density: ``(round(H * mh / th), round(W * mw / tw))`` cells covering the ROI. Each
tile map is resized (bilinear, :data:`cv2.INTER_LINEAR`) to its footprint in that grid, added, and the sum divided by
the number of tiles covering each cell. A single tile that is the whole ROI gives its own map back unchanged.

Calibration commutes with all of it: the graph's calibration is affine with a positive scale, stitching is a convex
combination of cells, and ``max`` / ``topk_mean`` commute with a positive affine map, so the reduction of a stitched
calibrated map is the calibration of the reduction of the stitched raw map. A tiled bundle is therefore calibrated on
stitched frames (``algan.model.fit``) and the graph keeps one pair of constants.

Image-only heads (the feature variant: one score per tile, no map): the frame score is the maximum over its tiles
(:func:`reduce_tile_scores`): a defect anywhere raises its tile's score.

Torch-free (numpy and OpenCV): the edge runtime imports this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from algan.runtime.preprocess import RESIZE_INTERPOLATION

#: image-score reductions of a stitched map (the patch heads' :data:`algan.features.patch.REDUCTIONS`)
MAP_REDUCTIONS = ("max", "topk_mean")
#: largest overlap fraction between neighbouring tiles (at 0.5 every pixel lies in two tiles per axis already)
MAX_OVERLAP = 0.5
#: default overlap between neighbouring tiles, as a fraction of a tile (anomalib's examples use tile/stride ~ 0.25)
DEFAULT_OVERLAP = 0.25

Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class TileSpec:
    """How a ROI is tiled: a grid of ``rows x cols`` tiles overlapping by ``overlap`` of a tile.

    Attributes:
        rows: tiles down the ROI (>= 1).
        cols: tiles across the ROI (>= 1).
        overlap: share of a tile's height (width) that neighbouring tiles have in common, in ``[0, 0.5]``;
            ignored along an axis with one tile.

    Raises:
        ValueError: a grid below 1 x 1 or an overlap outside ``[0, 0.5]`` (one line, how to fix).
    """

    rows: int
    cols: int
    overlap: float = DEFAULT_OVERLAP

    def __post_init__(self) -> None:
        if int(self.rows) < 1 or int(self.cols) < 1:
            raise ValueError(f"a tile grid needs at least 1 x 1 tiles, got {self.rows} x {self.cols}; "
                             "give e.g. --tiles 2x2")
        if not 0.0 <= float(self.overlap) <= MAX_OVERLAP:
            raise ValueError(f"tile overlap must lie in [0, {MAX_OVERLAP}] (a fraction of a tile), got {self.overlap}")
        object.__setattr__(self, "rows", int(self.rows))
        object.__setattr__(self, "cols", int(self.cols))
        object.__setattr__(self, "overlap", float(self.overlap))

    @property
    def n_tiles(self) -> int:
        """Tiles per frame, ``rows * cols``."""
        return self.rows * self.cols

    def to_json(self) -> dict:
        """The manifest's ``tiling`` section: ``{"grid": [rows, cols], "overlap": fraction}``."""
        return {"grid": [self.rows, self.cols], "overlap": self.overlap}

    @classmethod
    def from_json(cls, d: dict) -> TileSpec:
        """Inverse of :meth:`to_json`. Raises ValueError for a malformed section."""
        grid = d.get("grid")
        if not isinstance(grid, (list, tuple)) or len(grid) != 2:
            raise ValueError(f"tiling.grid must be [rows, cols], got {grid!r}")
        return cls(int(grid[0]), int(grid[1]), float(d.get("overlap", DEFAULT_OVERLAP)))

    def __str__(self) -> str:
        return f"{self.rows}x{self.cols}" + (f" overlap {self.overlap:g}" if self.n_tiles > 1 else "")


def parse_tiles(text: str, overlap: float | None = None) -> TileSpec:
    """``"2x2"`` / ``"3x4"`` (rows x cols) or ``"3"`` (3 x 3), with ``overlap`` (default :data:`DEFAULT_OVERLAP`).

    Raises:
        ValueError: not ``ROWSxCOLS`` of positive integers, or a bad overlap (one line, how to fix).
    """
    m = re.fullmatch(r"\s*(\d+)\s*(?:[xX*]\s*(\d+))?\s*", str(text))
    if m is None:
        raise ValueError(f"--tiles {text!r} is not a tile grid; give ROWSxCOLS, e.g. 2x2 or 3x3")
    rows = int(m.group(1))
    cols = int(m.group(2)) if m.group(2) is not None else rows
    return TileSpec(rows, cols, DEFAULT_OVERLAP if overlap is None else overlap)


def _axis(length: int, n: int, overlap: float) -> tuple[int, list[int]]:
    """Tile length and origins along one axis of ``length`` pixels cut into ``n`` tiles."""
    if n == 1:
        return length, [0]
    size = min(length, math.ceil(length / (n - (n - 1) * overlap) - 1e-9))
    starts = [int(round(i * (length - size) / (n - 1))) for i in range(n)]
    return size, starts


def tile_boxes(height: int, width: int, spec: TileSpec) -> list[Box]:
    """The tiles of a ``height x width`` ROI, row by row: ``(x, y, w, h)`` in ROI pixels, all of one size.

    Raises:
        ValueError: a ROI smaller than the grid (fewer pixels than tiles along an axis).
    """
    if height < spec.rows or width < spec.cols:
        raise ValueError(f"a {width}x{height} region cannot be cut into {spec.rows}x{spec.cols} tiles; "
                         "use a coarser --tiles grid")
    th, ys = _axis(int(height), spec.rows, spec.overlap)
    tw, xs = _axis(int(width), spec.cols, spec.overlap)
    return [(x, y, tw, th) for y in ys for x in xs]


def tile_frame(roi_image: np.ndarray, spec: TileSpec, size: tuple[int, int]) -> np.ndarray:
    """Cut a ROI image into tiles, each resized (``INTER_AREA``, as :func:`~algan.runtime.preprocess.prepare_frame`) to
    the model input.

    Args:
        roi_image: uint8 BGR ``(H, W, 3)``: the frame's region of interest at full resolution.
        spec: the tile grid.
        size: model input ``(height, width)``.

    Returns:
        uint8 ``(rows * cols, height, width, 3)``, tiles row by row (the order of :func:`tile_boxes`).
    """
    h, w = size
    boxes = tile_boxes(roi_image.shape[0], roi_image.shape[1], spec)
    out = np.empty((len(boxes), h, w, 3), dtype=np.uint8)
    for i, (x, y, bw, bh) in enumerate(boxes):
        tile = roi_image[y : y + bh, x : x + bw]
        out[i] = tile if tile.shape[:2] == (h, w) else cv2.resize(tile, (w, h), interpolation=RESIZE_INTERPOLATION)
    return out


def stitched_size(roi_hw: tuple[int, int], spec: TileSpec, map_hw: tuple[int, int]) -> tuple[int, int]:
    """Cells ``(sh, sw)`` of the stitched map of a ROI of ``roi_hw`` pixels whose tiles give ``map_hw`` maps."""
    (_, _, tw, th) = tile_boxes(roi_hw[0], roi_hw[1], spec)[0]
    return (max(1, int(round(roi_hw[0] * map_hw[0] / th))), max(1, int(round(roi_hw[1] * map_hw[1] / tw))))


def stitch_maps(maps: np.ndarray, roi_hw: tuple[int, int], spec: TileSpec) -> np.ndarray:
    """Stitch one frame's tile maps into a map of its ROI, overlaps averaged.

    Args:
        maps: float ``(rows * cols, mh, mw)``, tile maps in :func:`tile_boxes` order.
        roi_hw: the ROI's ``(height, width)`` in pixels.
        spec: the tile grid the maps came from.

    Returns:
        float32 ``(sh, sw)`` (:func:`stitched_size`); cell ``(i, j)`` covers ROI pixels
        ``[i*H/sh, (i+1)*H/sh) x [j*W/sw, (j+1)*W/sw)`` (the map contract of :mod:`algan.contract`).

    Raises:
        ValueError: a number of maps other than ``rows * cols``.
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or len(maps) != spec.n_tiles:
        raise ValueError(f"need {spec.n_tiles} tile maps (N, h, w) for a {spec.rows}x{spec.cols} grid, got "
                         f"{maps.shape}")
    rh, rw = int(roi_hw[0]), int(roi_hw[1])
    sh, sw = stitched_size((rh, rw), spec, maps.shape[1:])
    acc = np.zeros((sh, sw), np.float32)
    cnt = np.zeros((sh, sw), np.float32)
    for m, (x, y, bw, bh) in zip(maps, tile_boxes(rh, rw, spec), strict=True):
        y0, y1 = int(round(y * sh / rh)), int(round((y + bh) * sh / rh))
        x0, x1 = int(round(x * sw / rw)), int(round((x + bw) * sw / rw))
        part = m if m.shape == (y1 - y0, x1 - x0) else cv2.resize(m, (x1 - x0, y1 - y0),
                                                                  interpolation=cv2.INTER_LINEAR)
        acc[y0:y1, x0:x1] += part
        cnt[y0:y1, x0:x1] += 1.0
    return acc / np.maximum(cnt, 1.0)


def reduce_map(amap: np.ndarray, reduction: str, topk: float = 0.01) -> float:
    """Image score of a map: its ``max``, or the mean of its ``ceil(topk * cells)`` largest cells (``topk_mean``),
    the reductions of :class:`algan.features.patch.MapPostprocess`.

    Raises:
        ValueError: an unknown reduction or ``topk`` outside (0, 1].
    """
    flat = np.asarray(amap, dtype=np.float32).ravel()
    if reduction == "max":
        return float(flat.max())
    if reduction != "topk_mean":
        raise ValueError(f"unknown map reduction {reduction!r}; use one of {', '.join(MAP_REDUCTIONS)}")
    if not 0.0 < topk <= 1.0:
        raise ValueError(f"topk must lie in (0, 1], got {topk}")
    k = max(int(math.ceil(topk * flat.size)), 1)
    return float(np.partition(flat, flat.size - k)[flat.size - k :].astype(np.float64).mean())


def reduce_tile_scores(scores: np.ndarray, n_tiles: int) -> np.ndarray:
    """Frame scores of an image-only head: the maximum over each frame's ``n_tiles`` consecutive tile scores.

    Args:
        scores: float ``(F * n_tiles,)``. Returns float32 ``(F,)``.
    """
    s = np.asarray(scores, dtype=np.float32)
    if s.size % n_tiles:
        raise ValueError(f"{s.size} tile scores are not a whole number of frames of {n_tiles} tiles")
    return s.reshape(-1, n_tiles).max(axis=1)


@dataclass(frozen=True)
class TiledFrames:
    """Frame-level result of a tiled run: ``scores`` float32 ``(F,)``; ``maps``: one stitched float32 map per frame
    (``None`` for an image-only head)."""

    scores: np.ndarray
    maps: list[np.ndarray] | None


def untile(scores: np.ndarray, maps: np.ndarray | None, roi_shapes: Sequence[tuple[int, int]], spec: TileSpec,
           reduction: str = "topk_mean", topk: float = 0.01) -> TiledFrames:
    """Frame scores (and stitched maps) from the outputs of a batch of tiles of consecutive frames.

    Args:
        scores: float ``(F * T,)`` tile scores (used only without maps).
        maps: float ``(F * T, mh, mw)`` tile maps, or ``None`` for an image-only head.
        roi_shapes: the ``(height, width)`` of each frame's ROI (``F`` entries).
        spec: the tile grid (``T = spec.n_tiles``).
        reduction, topk: the head's image-score reduction of the stitched map (:func:`reduce_map`).

    Returns:
        :class:`TiledFrames`: with maps, score = ``reduce_map(stitched)``; without, the max over tiles.
    """
    t = spec.n_tiles
    if maps is None:
        return TiledFrames(reduce_tile_scores(scores, t), None)
    if len(maps) != t * len(roi_shapes):
        raise ValueError(f"{len(maps)} tile maps for {len(roi_shapes)} frames of {t} tiles")
    stitched = [stitch_maps(maps[i * t : (i + 1) * t], shape, spec) for i, shape in enumerate(roi_shapes)]
    return TiledFrames(np.array([reduce_map(m, reduction, topk) for m in stitched], np.float32), stitched)


#: a ROI at least this many times the model input (along an axis) is "much larger": tiling is worth trying there
LARGE_FRAME_RATIO = 1.5


def candidate_grids(roi_hw: tuple[int, int], input_hw: tuple[int, int],
                    overlap: float = DEFAULT_OVERLAP) -> list[TileSpec]:
    """Tile grids worth trying for a ROI of ``roi_hw`` pixels and a model input of ``input_hw`` (e.g. by
    ``--head auto``), one per resolution level, coarsest first; empty when the ROI is not much larger than the input
    (under :data:`LARGE_FRAME_RATIO` times along both axes).

    Along the axis where the ROI is largest relative to the input, ``n = 2, 3, ...`` tiles while a tile stays at
    least as large as the input (tiling keeps resolution; it does not invent it by up-sampling); across, the count
    whose tiles are closest (in log scale) to the same pixels-per-input-pixel, so that tiles keep the input's aspect
    (pcb 640 x 640 at 224 px: 2x2, 3x3; ballscrew 460 x 1130: 1x2, 1x3, ...).
    """
    rh, rw = int(roi_hw[0]), int(roi_hw[1])
    ih, iw = int(input_hw[0]), int(input_hw[1])
    if max(rh / ih, rw / iw) < LARGE_FRAME_RATIO:
        return []
    long_first = rw / iw >= rh / ih
    (la, ia), (lb, ib) = ((rw, iw), (rh, ih)) if long_first else ((rh, ih), (rw, iw))
    out = []
    n = 2
    while True:
        tile = la / (n - (n - 1) * overlap)
        if tile < ia:
            break
        scale = tile / ia
        m = min(range(1, lb + 1), key=lambda k: abs(math.log(lb / (k - (k - 1) * overlap) / (scale * ib))))
        out.append(TileSpec(m, n, overlap) if long_first else TileSpec(n, m, overlap))
        n += 1
    return out


#: the most tiles per frame of the grid ``--head auto`` tries (:func:`auto_grid`); training and scoring cost grow
#: with the tiles
MAX_AUTO_TILES = 9


def auto_grid(roi_hw: tuple[int, int], input_hw: tuple[int, int]) -> TileSpec | None:
    """The one tile grid ``--head auto`` tries beside whole frames: the finest of :func:`candidate_grids` with at most
    :data:`MAX_AUTO_TILES` tiles (the closest to the frame's own resolution at a bounded cost: pcb 640 x 640 at
    224 px: 3x3 of 256 px tiles; ballscrew 1130 x 460: 2x4), or ``None`` when the frame is not much larger than the
    input (:data:`LARGE_FRAME_RATIO`)."""
    fits = [g for g in candidate_grids(roi_hw, input_hw) if g.n_tiles <= MAX_AUTO_TILES]
    return fits[-1] if fits else None


def frame_size(paths: Sequence, roi: Sequence[int] | None = None, n: int = 16) -> tuple[int, int]:
    """The median ``(height, width)`` of the regions of interest (crop ``roi``, default
    :func:`~algan.runtime.preprocess.current_roi`) of up to ``n`` images spread over ``paths``.

    Raises:
        ValueError: no paths. ImageReadError: an unreadable file.
    """
    from statistics import median

    from algan.runtime.preprocess import current_roi, prepare_roi, read_image

    if not paths:
        raise ValueError("no images to measure the frame size of")
    roi = roi if roi is not None else current_roi()
    sizes = [prepare_roi(read_image(p), roi).shape[:2] for p in list(paths)[:: max(1, len(paths) // n)][:n]]
    return int(median(h for h, _ in sizes)), int(median(w for _, w in sizes))


def large_frame_note(roi_hw: tuple[int, int], input_hw: tuple[int, int]) -> str | None:
    """One line for a user training on whole frames much larger than the model input (the grids of
    :func:`candidate_grids`), or ``None`` when the frames are not much larger: defects a few pixels wide shrink below
    one feature cell when the frame is resized to the input, and tiled training keeps them (measured on pcb in
    benchmarks/RESULTS.md, "Session 13")."""
    grids = candidate_grids(roi_hw, input_hw)
    if not grids:
        return None
    ratio = max(roi_hw[0] / input_hw[0], roi_hw[1] / input_hw[1])
    names = [f"{g.rows}x{g.cols}" for g in grids[:3]]
    return (f"the frames ({roi_hw[1]} x {roi_hw[0]} px) are {ratio:.1f}x the model input ({input_hw[1]} x "
            f"{input_hw[0]} px): a defect a few pixels wide shrinks below one feature cell; for such defects also "
            f"train with --tiles {names[-1] if len(names) > 1 else names[0]} (grids that keep the resolution: "
            f"{', '.join(names)}) and compare the two with algan-eval")


def load_tiles(paths: Sequence, size: tuple[int, int], spec: TileSpec | None,
               roi: Sequence[int] | None = None) -> np.ndarray:
    """:func:`algan.runtime.preprocess.load_batch` with tiles: every image's ``rows * cols`` tiles, image by image
    (crop ``roi``, default :func:`~algan.runtime.preprocess.current_roi`); ``spec=None`` is ``load_batch`` itself.

    Returns:
        uint8 BGR ``(N * rows * cols, height, width, 3)``.

    Raises:
        ImageReadError: an unreadable file. ValueError: a ROI that does not fit in an image.
    """
    from algan.runtime.preprocess import current_roi, load_batch, prepare_roi, read_image

    if spec is None:
        return load_batch(paths, size, roi)
    roi = roi if roi is not None else current_roi()
    tiles = [tile_frame(prepare_roi(read_image(p), roi), spec, size) for p in paths]
    return np.concatenate(tiles) if tiles else np.empty((0, size[0], size[1], 3), np.uint8)


def prepare_tiles(frame: np.ndarray, size: tuple[int, int], roi: Sequence[int] | None,
                  spec: TileSpec) -> tuple[np.ndarray, tuple[int, int]]:
    """The tiled counterpart of :func:`algan.runtime.preprocess.prepare_frame`: crop the ROI, cut it into tiles.

    Returns:
        ``(tiles uint8 (rows * cols, height, width, 3), (roi_height, roi_width))``.

    Raises:
        ValueError: a frame that is not a uint8 image, a ROI that does not fit in it, or one smaller than the grid.
    """
    from algan.runtime.preprocess import prepare_roi

    region = prepare_roi(frame, roi)
    return tile_frame(region, spec, size), (int(region.shape[0]), int(region.shape[1]))


def manifest_tiling(manifest) -> TileSpec | None:  # noqa: ANN001
    """The :class:`TileSpec` of a manifest's ``tiling`` section (:class:`algan.contract.Manifest`), or ``None``."""
    section = getattr(manifest, "tiling", None)
    if section is None:
        return None
    return TileSpec(section.grid[0], section.grid[1], section.overlap)


def manifest_reduction(manifest) -> tuple[str, float]:  # noqa: ANN001
    """``(reduction, topk)`` of a patch manifest's image score (``anomaly_map.reduction``, ``patch.topk``); the
    :class:`~algan.features.patch.PatchSpec` defaults where absent."""
    amap, patch = getattr(manifest, "anomaly_map", None), getattr(manifest, "patch", None)
    reduction = (amap.reduction if amap is not None and amap.reduction else None) or (
        patch.reduction if patch is not None else "topk_mean")
    return reduction, float(patch.topk) if patch is not None else 0.01


@dataclass(frozen=True)
class FrameTiling:
    """What a runtime needs to score a tiled bundle: the grid and the image-score reduction of the stitched map."""

    spec: TileSpec
    reduction: str = "topk_mean"
    topk: float = 0.01


def bundle_tiling(model) -> FrameTiling | None:  # noqa: ANN001
    """The tiling of the bundle of ``model`` (a bundle directory, or a file inside one such as ``model.onnx``):
    ``None`` without a manifest beside it or without a ``tiling`` section.

    Raises:
        algan.contract.BundleError: a manifest that cannot be read (a tiled model must not be scored untiled).
    """
    from pathlib import Path

    from algan.contract import MANIFEST_FILE, load_manifest

    p = Path(model)
    bundle = p if p.is_dir() else p.parent
    if not (bundle / MANIFEST_FILE).is_file():
        return None
    manifest = load_manifest(bundle / MANIFEST_FILE)
    spec = manifest_tiling(manifest)
    if spec is None:
        return None
    reduction, topk = manifest_reduction(manifest)
    return FrameTiling(spec, reduction, topk)
