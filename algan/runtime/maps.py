"""Anomaly maps on the host: map -> region in frame pixels, map -> defect mask, map -> heat-map overlay with the
mask's contours, JPEG with a size cap, ROI.

Pure numpy/OpenCV helpers shared by :class:`algan.runtime.inference.Inferencer`, ``algan-predict`` and the edge daemon
(never torch).

Geometry (the anomaly-map contract, see :mod:`algan.runtime.runners.base`): the model input is the region of interest
``roi = (x, y, w, h)`` of the frame (the whole frame when there is none) resized to the model input ``(H, W)``; a
map of ``(mh, mw)`` cells covers the whole input, so cell ``(i, j)`` covers the ROI pixels
``[i*h/mh, (i+1)*h/mh) x [j*w/mw, (j+1)*w/mw)`` and the frame pixels shifted by ``(x, y)``. Map values are on the
calibrated score scale: 0 = typical normal, 1.0 = the image threshold's level. The defect mask is the map upsampled
to the ROI and thresholded at the pixel threshold's level on that scale (:func:`mask_from_map`; the level comes from
:func:`algan.runtime.runners.calibration.pixel_level`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from algan.contract import MANIFEST_FILE, BundleError, load_manifest

log = logging.getLogger(__name__)

#: map value drawn as the top of the colour scale (calibrated score units: 2 = twice the threshold's level)
HEAT_VMAX = 2.0
#: weight of the heat map where it is blended over the frame (0-1)
HEAT_ALPHA = 0.45
#: outline colour of the anomalous region (BGR)
REGION_COLOUR = (0, 0, 255)
#: outline of the region of a frame scored below the threshold (BGR grey)
NORMAL_REGION_COLOUR = (170, 170, 170)
#: value of a defect pixel in a mask (uint8; 0 elsewhere), white in a PNG like the data sets' ground-truth masks
MASK_ON = 255

Roi = tuple[int, int, int, int]


@dataclass(frozen=True)
class Region:
    """Where the defect is, in frame pixels.

    Attributes:
        box: bounding box ``(x, y, width, height)`` of the connected component of the thresholded map that holds
            the peak (frame pixels, integers): the box always contains :attr:`peak`.
        peak: ``(x, y)`` frame pixel at the centre of the map's highest cell.
        peak_score: value of that cell (calibrated score units).
        level: the map level the component was thresholded at (calibrated score units): ``max(threshold,
            peak / 2)`` when the peak reaches the threshold, else half the peak ("around the peak").
        area: pixels of the frame's defect mask (:func:`mask_from_map`), or ``None`` when no mask was made.
    """

    box: tuple[int, int, int, int]
    peak: tuple[int, int]
    peak_score: float
    level: float
    area: int | None = None

    def to_dict(self) -> dict:
        """JSON form: ``{"box": [x, y, w, h], "peak": [x, y], "peak_score": s, "level": l}``, plus ``"area"``
        (mask pixels) when a mask was made."""
        ps = round(float(self.peak_score), 6) if math.isfinite(self.peak_score) else None
        out = {"box": [int(v) for v in self.box], "peak": [int(v) for v in self.peak], "peak_score": ps,
               "level": round(float(self.level), 6)}
        if self.area is not None:
            out["area"] = int(self.area)
        return out

    def overlap(self, mask: np.ndarray) -> float:
        """Fraction of the box's pixels that are set in a frame-sized boolean mask (0 when the box is empty)."""
        x, y, w, h = self.box
        sub = mask[y : y + h, x : x + w]
        return float(sub.mean()) if sub.size else 0.0


def parse_roi(text: str | Sequence[int] | None) -> Roi | None:
    """``"x,y,w,h"`` (or a 4-sequence, or ``None``) -> ``(x, y, w, h)`` ints.

    Raises:
        ValueError: not four integers, a negative offset or a non-positive width/height (one line, how to fix).
    """
    if text is None:
        return None
    parts = text.split(",") if isinstance(text, str) else list(text)
    try:
        vals = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        vals = ()
    if len(vals) != 4 or vals[0] < 0 or vals[1] < 0 or vals[2] <= 0 or vals[3] <= 0:
        raise ValueError(f"ROI {text!r} is not x,y,width,height in pixels (x, y >= 0; width, height > 0), "
                         "e.g. --roi 100,50,640,480")
    return vals  # type: ignore[return-value]


def frame_roi(frame_shape: Sequence[int], roi: Roi | None) -> Roi:
    """The ROI actually used on a frame of shape ``(H, W, ...)``: ``roi``, or the whole frame when ``None``."""
    return roi if roi is not None else (0, 0, int(frame_shape[1]), int(frame_shape[0]))


def region_from_map(amap: np.ndarray, roi: Roi, level: float = 1.0) -> Region:
    """The anomalous region of one map, in frame pixels.

    The map is thresholded at ``max(level, peak / 2)`` (the half-maximum keeps the box on the defect when a strong
    one lifts its whole neighbourhood above the threshold; ``peak / 2`` alone when the peak stays below ``level``,
    so that a normal frame still gets a region around its peak); the 8-connected component of cells that holds the
    peak gives the box, so the box and the peak marker of one event name the same place (a larger, weaker blob
    elsewhere stays in the map and the mask, not in the box; on the dev sets this rule is within 0.02 median IoU of
    the largest component's box, benchmarks/RESULTS.md "the region box and the peak marker").

    Args:
        amap: float32 ``(mh, mw)`` anomaly map (calibrated score units) at the model's map resolution.
        roi: ``(x, y, w, h)`` frame pixels the model input came from (see :func:`frame_roi`).
        level: map level of an anomalous cell (calibrated; 1.0 = the image threshold's level).

    Returns:
        The :class:`Region`.

    Raises:
        ValueError: a map that is not 2-D.
    """
    a = np.asarray(amap, dtype=np.float32)
    if a.ndim != 2 or a.size == 0:
        raise ValueError(f"expected a 2-D anomaly map, got shape {a.shape}")
    a = np.nan_to_num(a, nan=-np.inf)
    mh, mw = a.shape
    rx, ry, rw, rh = (int(v) for v in roi)
    pi, pj = np.unravel_index(int(np.argmax(a)), a.shape)
    peak = float(a[pi, pj])
    lev = max(float(level), peak / 2.0) if peak >= level else (peak / 2.0 if peak > 0 else peak)
    mask = (a >= lev).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    best = int(labels[pi, pj])  # the peak cell is at or above the level, so in a component
    if best > 0:
        j0, i0 = int(stats[best, cv2.CC_STAT_LEFT]), int(stats[best, cv2.CC_STAT_TOP])
        j1, i1 = j0 + int(stats[best, cv2.CC_STAT_WIDTH]), i0 + int(stats[best, cv2.CC_STAT_HEIGHT])
    else:
        i0, j0, i1, j1 = int(pi), int(pj), int(pi) + 1, int(pj) + 1
    x0, x1 = rx + math.floor(j0 * rw / mw), rx + math.ceil(j1 * rw / mw)
    y0, y1 = ry + math.floor(i0 * rh / mh), ry + math.ceil(i1 * rh / mh)
    px = rx + min(rw - 1, int((pj + 0.5) * rw / mw))
    py = ry + min(rh - 1, int((pi + 0.5) * rh / mh))
    return Region((x0, y0, x1 - x0, y1 - y0), (px, py), peak, lev)


def upsample_map(amap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear upsampling of a ``(mh, mw)`` map to ``size = (height, width)`` pixels; float32 ``(height, width)``.

    Cell centres land on the pixel centres of their footprint (OpenCV's ``INTER_LINEAR`` half-pixel convention).
    """
    h, w = int(size[0]), int(size[1])
    return cv2.resize(np.asarray(amap, dtype=np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def mask_from_map(amap: np.ndarray, size: tuple[int, int], level: float) -> np.ndarray:
    """The defect mask of one map: the map upsampled (bilinear, :func:`upsample_map`) to ``size`` and thresholded at
    the pixel threshold's ``level``.

    Args:
        amap: float32 ``(mh, mw)`` anomaly map (calibrated units) at the model's map resolution.
        size: ``(height, width)`` of the mask in pixels (the ROI's size).
        level: the pixel threshold on the map's calibrated scale
            (:attr:`algan.contract.CalibrationSection.pixel_level`).

    Returns:
        uint8 ``(height, width)``: :data:`MASK_ON` (255) where the map is at or above ``level``, 0 elsewhere (NaN
        cells are 0).
    """
    up = upsample_map(amap, size)
    return np.where(np.nan_to_num(up, nan=-np.inf) >= float(level), MASK_ON, 0).astype(np.uint8)


def mask_contours(mask: np.ndarray, offset: tuple[int, int] = (0, 0)) -> list[np.ndarray]:
    """Outer contours of a mask's blobs (``cv2.findContours``, ``RETR_EXTERNAL``), shifted by ``offset = (x, y)``
    (the ROI's corner in the frame): int32 arrays ``(k, 1, 2)`` of ``(x, y)`` frame pixels."""
    contours, _ = cv2.findContours((np.asarray(mask) > 0).astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE, offset=(int(offset[0]), int(offset[1])))
    return list(contours)


def heat_colours(values: np.ndarray, vmax: float = HEAT_VMAX) -> np.ndarray:
    """Map values (calibrated units) -> uint8 BGR JET colours, 0 -> blue, ``vmax`` and above -> red."""
    u8 = (np.clip(np.nan_to_num(values, nan=0.0) / vmax, 0.0, 1.0) * 255.0).astype(np.uint8)
    return cv2.applyColorMap(u8, cv2.COLORMAP_JET)


def label_box(shape: tuple[int, ...], text_size: tuple[int, int, int], peak: tuple[int, int] | None,
              margin: int) -> tuple[int, int, int, int]:
    """Corners ``(x0, y0, x1, y1)`` (frame pixels, inclusive) of the score label's dark box: the top-left corner,
    or the bottom-left one when the top-left box would cover the peak marker (a defect at the frame's top edge).

    Args:
        shape: the frame's ``(H, W, ...)``; text_size: ``(width, height, baseline)`` of the text
            (``cv2.getTextSize``); peak: ``(x, y)`` of the region's peak, or ``None``; margin: the marker's
            half-size in pixels.
    """
    tw, th, base = text_size
    h, w = int(shape[0]), int(shape[1])
    x1 = min(6 + tw + 4, w - 1)
    top = (2, 1, x1, 4 + th + base + 1)
    if peak is not None and peak[0] - margin <= top[2] and peak[1] - margin <= top[3]:
        height = top[3] - top[1]
        return 2, h - 2 - height, x1, h - 2
    return top


def draw_overlay(frame: np.ndarray, amap: np.ndarray | None, roi: Roi | None, region: Region | None = None,
                 score: float | None = None, threshold: float = 1.0, vmax: float = HEAT_VMAX,
                 alpha: float = HEAT_ALPHA, mask: np.ndarray | None = None) -> np.ndarray:
    """The full frame with the heat map blended over the ROI, the defect mask's contours (or, without a mask, the
    region's box) outlined and the peak marked.

    Args:
        frame: uint8 BGR ``(H, W, 3)`` (grayscale ``(H, W)`` is expanded); not modified.
        amap: float32 ``(mh, mw)`` map (calibrated units), or ``None`` (score-only model: no heat map).
        roi: ``(x, y, w, h)`` of the model input in frame pixels, ``None`` = whole frame.
        region: its peak marked as a cross, and its box outlined when no ``mask`` is given, when given: in red, or in
            grey when ``score`` is below ``threshold``. Callers pass no region for frames below the threshold
            (:class:`algan.runtime.inference.Prediction` has none), so that a normal frame carries no outline.
        mask: uint8 ``(roi_h, roi_w)`` defect mask (:func:`mask_from_map`), its contours drawn in red over the ROI
            (:func:`mask_contours`), or ``None``.
        score: written in the top-left corner (``score 1.23 / thr 1.00``; the bottom-left one when the label
            would hide the peak marker, :func:`label_box`) when given and the frame is at least 200 pixels wide;
            red when >= threshold.
        threshold: decision threshold (calibrated units).
        vmax: map value at the top of the colour scale (or the map's peak when higher).
        alpha: heat-map weight in the blend.

    Returns:
        A new uint8 BGR ``(H, W, 3)`` image.
    """
    out = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame.copy()
    x, y, w, h = frame_roi(out.shape, roi)
    if amap is not None:
        # the colour scale tops out at vmax, or at the map's peak when it is higher (a strong defect keeps its shape)
        top = max(vmax, float(np.nanmax(amap))) if np.isfinite(np.nanmax(amap)) else vmax
        heat = heat_colours(upsample_map(amap, (h, w)), top)
        sub = out[y : y + h, x : x + w]
        out[y : y + h, x : x + w] = cv2.addWeighted(sub, 1.0 - alpha, heat, alpha, 0.0)
    thick = max(1, round(max(out.shape[:2]) / 300))
    if roi is not None:
        cv2.rectangle(out, (x, y), (x + w - 1, y + h - 1), (255, 255, 255), 1)
    if mask is not None:
        if mask.shape[:2] != (h, w):
            raise ValueError(f"the mask has shape {mask.shape[:2]}, the ROI is {(h, w)} (height, width)")
        cv2.drawContours(out, mask_contours(mask, (x, y)), -1, REGION_COLOUR, thick + 1)
    if region is not None:
        bx, by, bw, bh = region.box
        # red = an anomalous frame's region; a frame scored below the threshold gets its peak's region in grey
        box_colour = REGION_COLOUR if score is None or score >= threshold else NORMAL_REGION_COLOUR
        if mask is None:
            cv2.rectangle(out, (bx, by), (bx + bw - 1, by + bh - 1), box_colour, thick + 1)
        cv2.drawMarker(out, region.peak, (255, 255, 255), cv2.MARKER_CROSS, 6 * thick + 6, thick)
    if score is not None and out.shape[1] >= 200:  # no room for a legible label on a tiny frame
        text = f"score {score:.2f} / thr {threshold:.2f}"
        colour = REGION_COLOUR if score >= threshold else (0, 200, 0)
        scale = max(0.4, out.shape[1] / 900)
        font = cv2.FONT_HERSHEY_SIMPLEX
        # on a filled dark label: a thicker outline of the same text is wider (Hershey advances grow with the
        # thickness), so on small frames its glyphs drift off the coloured ones and the label becomes unreadable
        (tw, th), base = cv2.getTextSize(text, font, scale, thick)
        x0, y0, x1, y1 = label_box(out.shape, (tw, th, base), region.peak if region is not None else None,
                                   3 * thick + 3)
        cv2.rectangle(out, (x0, y0), (x1, y1), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, text, (x0 + 4, y0 + 3 + th), font, scale, colour, thick, cv2.LINE_AA)
    return out


def encode_jpeg(image: np.ndarray, quality: int = 90, max_bytes: int | None = None) -> bytes:
    """JPEG bytes of a uint8 BGR image; with ``max_bytes``, halved in size (then lower quality) until it fits.

    Raises:
        ValueError: the image cannot be encoded, or cannot be brought under ``max_bytes`` (below 16x16 pixels).
    """
    img, q = image, int(quality)
    while True:
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])
        if not ok:
            raise ValueError(f"JPEG encoding failed for an image of shape {image.shape}")
        data = buf.tobytes()
        if max_bytes is None or len(data) <= max_bytes:
            return data
        if min(img.shape[:2]) >= 32:
            scale = max(0.3, min(0.9, math.sqrt(max_bytes / len(data)) * 0.95))
            img = cv2.resize(img, (max(16, int(img.shape[1] * scale)), max(16, int(img.shape[0] * scale))),
                             interpolation=cv2.INTER_AREA)
        elif q > 30:
            q -= 20
        else:
            raise ValueError(f"cannot encode a JPEG under {max_bytes} bytes; raise the size cap")


def bundle_roi(model: str | Path) -> Roi | None:
    """The ROI recorded in the bundle of ``model`` (a bundle directory, or a file inside one): the manifest's
    ``roi`` (:func:`algan.contract.load_manifest`, lenient); ``None`` when there is no manifest, no ROI, or it
    cannot be read (logged)."""
    p = Path(model)
    manifest = (p if p.is_dir() else p.parent) / MANIFEST_FILE
    if not manifest.is_file():
        return None
    try:
        roi = load_manifest(manifest, lenient=True).roi
        return parse_roi(roi) if roi is not None else None
    except (BundleError, ValueError) as e:
        log.warning("cannot read the roi of %s (%s); cameras use their own", manifest, e)
        return None
