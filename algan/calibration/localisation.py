"""Localisation figures of anomaly maps: where the map's peak and region lie (numpy, OpenCV; no torch).

What an operator sees of a map is its peak marker and its region box (:func:`algan.runtime.maps.region_from_map`, the
runtime's function, used here so the figures match the overlays). Three figures say whether they can be trusted:

- ``border_peak_fraction``: of the normal test images, the fraction whose peak lies within ``margin_px`` (8) pixels
  of the edge of the frame (the map brought to the image's own size, as the daemon maps it onto a ROI). A map
  without a location bias puts the peak of a normal image anywhere: about ``1 - (1 - 16 / side)^2`` on the border
  (11 % for a 300 x 300 frame).
- ``peak_hit_rate``: of the defect images, the fraction whose peak cell touches the ground-truth mask (at the
  mask's resolution, the model input size); ``peak_hit_rate_flagged`` the same over the defect images scored at or
  above the threshold (the alarms an operator looks at).
- ``region_iou``: median IoU of the region box (thresholded at ``level``, 1.0 = the image threshold on the
  calibrated scale) with the box of the ground-truth defect it overlaps best (8-connected components of the mask;
  several defects in one image are several boxes), over the flagged defect images.

The predicted defect mask's figure, ``mask_f1``, is :class:`algan.model.evaluation.pixel_metrics.MaskF1` (pooled pixel
F1 at the
calibrated pixel threshold).

All figures are ``None`` when they have nothing to count (no normal images, no masks, no flagged defect).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from algan.runtime.maps import region_from_map

#: distance from the frame's edge, in pixels, within which a peak counts as a border peak
BORDER_MARGIN_PX = 8


def box_iou(a: Sequence[int], b: Sequence[int]) -> float:
    """IoU of two boxes ``(x, y, w, h)`` in pixels (0 when either is empty)."""
    ax0, ay0, aw, ah = (int(v) for v in a)
    bx0, by0, bw, bh = (int(v) for v in b)
    iw = max(0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    ih = max(0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = iw * ih
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def mask_boxes(mask: np.ndarray) -> list[tuple[int, int, int, int]]:
    """Boxes ``(x, y, w, h)`` of the 8-connected components of a bool (H, W) mask (empty list for an empty mask)."""
    n, _, stats, _ = cv2.connectedComponentsWithStats(np.asarray(mask, np.uint8), connectivity=8)
    return [tuple(int(v) for v in stats[i, :4]) for i in range(1, n)]  # type: ignore[misc]


def is_border_peak(amap: np.ndarray, frame_size: tuple[int, int], margin_px: int = BORDER_MARGIN_PX) -> bool:
    """Whether the map's peak, mapped onto a frame of ``(height, width)`` pixels, lies within ``margin_px`` of its
    edge."""
    fh, fw = (int(v) for v in frame_size)
    px, py = region_from_map(amap, (0, 0, fw, fh)).peak
    return px < margin_px or py < margin_px or px >= fw - margin_px or py >= fh - margin_px


def peak_hits_mask(amap: np.ndarray, mask: np.ndarray) -> bool:
    """Whether the map's highest cell covers a ground-truth pixel of ``mask`` (bool (H, W), the model input size)."""
    a = np.nan_to_num(np.asarray(amap, np.float32), nan=-np.inf)
    mh, mw = a.shape
    h, w = mask.shape
    pi, pj = np.unravel_index(int(np.argmax(a)), a.shape)
    y0, y1 = int(np.floor(pi * h / mh)), max(int(np.ceil((pi + 1) * h / mh)), int(np.floor(pi * h / mh)) + 1)
    x0, x1 = int(np.floor(pj * w / mw)), max(int(np.ceil((pj + 1) * w / mw)), int(np.floor(pj * w / mw)) + 1)
    return bool(mask[y0:y1, x0:x1].any())


def region_box_iou(amap: np.ndarray, mask: np.ndarray, level: float = 1.0) -> float:
    """IoU of the runtime's region box (:func:`region_from_map` at ``level``, on a frame of the mask's size) with
    the best-overlapping ground-truth component box of ``mask`` (0 for an empty mask)."""
    h, w = mask.shape
    box = region_from_map(amap, (0, 0, w, h), level).box
    return max((box_iou(box, b) for b in mask_boxes(mask)), default=0.0)


def localisation_metrics(maps: np.ndarray, labels: np.ndarray, masks: np.ndarray | None = None,
                         flagged: np.ndarray | None = None, frame_sizes: np.ndarray | None = None,
                         level: float = 1.0, margin_px: int = BORDER_MARGIN_PX) -> dict:
    """The localisation figures of the module docstring for a test set.

    Args:
        maps: float (N, h, w) anomaly maps at map resolution, on the calibrated scale when ``level`` is the
            threshold's 1.0 (any scale where ``level`` is the image threshold's map level).
        labels: int (N,), 1 = defect image.
        masks: bool (N, H, W) ground-truth masks at the model input size, or ``None`` (no mask figures).
        flagged: bool (N,) images scored at or above the image threshold; ``None`` = every defect image counts as
            flagged.
        frame_sizes: int (N, 2) ``(height, width)`` of each original image (the frame the map is drawn on); ``None``
            = the mask size, else the map size.
        level: map level of the region box (see :func:`region_from_map`).
        margin_px: border width in frame pixels.

    Returns:
        ``{"border_peak_fraction", "peak_hit_rate", "peak_hit_rate_flagged", "region_iou": float | None,
        "n_flagged_defects": int}`` (fractions in [0, 1]).

    Raises:
        ValueError: maps, labels, masks, flags or sizes of different lengths.
    """
    maps = np.asarray(maps, np.float32)
    labels = np.asarray(labels).astype(int)
    n = len(maps)
    if maps.ndim != 3 or len(labels) != n or (masks is not None and len(masks) != n) or \
            (flagged is not None and len(flagged) != n) or (frame_sizes is not None and len(frame_sizes) != n):
        raise ValueError(f"need maps (N, h, w) with N labels, masks, flags and frame sizes; got maps {maps.shape}, "
                         f"{len(labels)} labels")
    flags = np.ones(n, bool) if flagged is None else np.asarray(flagged, bool)
    if frame_sizes is not None:
        sizes = np.asarray(frame_sizes, int)
    else:
        sizes = np.tile(np.array(masks.shape[1:] if masks is not None else maps.shape[1:], int), (n, 1))
    normal = np.flatnonzero(labels == 0)
    border = (float(np.mean([is_border_peak(maps[i], tuple(sizes[i]), margin_px) for i in normal]))
              if len(normal) else None)
    out = {"border_peak_fraction": border, "peak_hit_rate": None, "peak_hit_rate_flagged": None, "region_iou": None,
           "n_flagged_defects": int((flags & (labels == 1)).sum())}
    if masks is None:
        return out
    defect = [i for i in np.flatnonzero(labels == 1) if masks[i].any()]
    if not defect:
        return out
    hits = np.array([peak_hits_mask(maps[i], masks[i]) for i in defect])
    out["peak_hit_rate"] = float(hits.mean())
    sel = [k for k, i in enumerate(defect) if flags[i]]
    if sel:
        out["peak_hit_rate_flagged"] = float(hits[sel].mean())
        out["region_iou"] = float(np.median([region_box_iou(maps[defect[k]], masks[defect[k]], level) for k in sel]))
    return out
