"""Pixel-level anomaly-map metrics: pixel AUROC and AUPRO (numpy, scikit-learn, OpenCV; no torch).

Both compare anomaly maps (float, higher = more anomalous) with ground-truth masks (bool, True = defect pixel) of
the same shape (N, H, W); a normal image has an all-zero mask. Maps coarser than the masks are brought to the mask
size first with :func:`upsample_maps`.

- **Pixel AUROC**: ``sklearn.metrics.roc_auc_score`` over all pixels of all images (defect pixels positive).
- **AUPRO** (Bergmann et al., "The MVTec Anomaly Detection Dataset: A Comprehensive Real-World Dataset for
  Unsupervised Anomaly Detection", IJCV 2021, Sec. 3.3, and the official MVTec AD evaluation code,
  ``pro_curve_util.compute_pro`` / ``generic_util.trapezoid``): every connected component (8-connectivity) of the
  ground truth is one defect region. For a threshold t, PRO(t) = mean over all regions of all images of the fraction
  of the region's pixels with score >= t, and FPR(t) = fraction of defect-free pixels (of normal and anomalous
  images) with score >= t. AUPRO = area under PRO over FPR in [0, fpr_limit] (trapezoids, PRO linearly
  interpolated at ``fpr_limit``) divided by ``fpr_limit``: 1.0 is perfect, a random map gives about fpr_limit / 2.
  It is computed like the official code, by one sort of all pixel scores and cumulative sums of per-pixel FPR and
  PRO increments (1 / #normal pixels, 1 / (#regions * region size)); each distinct score is one threshold.

Memory: :class:`PixelScoreCollector` streams batches and keeps every defect pixel's score and region weight, but
only a deterministic uniform random subset of the defect-free pixels (each kept with probability
``max_normal_pixels / n_pixels``, a seeded ``numpy.random.Generator`` drawn image by image, so the subset does not
depend on the batch size). With ``n_pixels <= max_normal_pixels`` (default 2**22, e.g. 83 images at 224x224)
nothing is dropped and both metrics are exact; above it they are unbiased estimates (the FPR of a threshold is
estimated from >= 4 M pixels: standard error <= 0.00025).
"""

from __future__ import annotations

import cv2
import numpy as np

#: defect-free pixels kept at most by :class:`PixelScoreCollector` (scores float32: 16 MiB, sort included ~100 MiB).
DEFAULT_MAX_NORMAL_PIXELS = 1 << 22
#: the MVTec AD protocol's FPR integration limit.
DEFAULT_FPR_LIMIT = 0.3


def check_maps_and_masks(maps, masks) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert a batch of maps and masks.

    Args:
        maps: float array (N, H, W) (or (H, W) for one image), finite values.
        masks: bool or integer {0, 1}/{0, 255} array of the same shape; nonzero = defect pixel.

    Returns:
        ``(maps float32 (N, H, W), masks bool (N, H, W))``.

    Raises:
        ValueError: shapes differ or are not (N, H, W), or maps hold NaN/inf.
    """
    maps, masks = np.asarray(maps), np.asarray(masks)
    if maps.ndim == 2 and masks.ndim == 2:
        maps, masks = maps[None], masks[None]
    if maps.ndim != 3 or masks.ndim != 3:
        raise ValueError(f"anomaly maps and masks must have shape (N, H, W), got {maps.shape} and {masks.shape}")
    if maps.shape != masks.shape:
        msg = (f"anomaly maps {maps.shape} and masks {masks.shape} differ in shape; bring the maps to the mask size "
               "with algan.model.evaluation.pixel_metrics.upsample_maps")
        raise ValueError(msg)
    if not np.issubdtype(maps.dtype, np.number) or np.issubdtype(maps.dtype, np.complexfloating):
        raise ValueError(f"anomaly maps must be real numbers, got dtype {maps.dtype}")
    maps = maps.astype(np.float32, copy=False)
    if not np.isfinite(maps).all():
        raise ValueError("anomaly maps contain NaN or infinite values; check the model (or its calibration)")
    return maps, masks.astype(bool, copy=False)


def upsample_maps(maps, size: tuple[int, int]) -> np.ndarray:
    """Resize anomaly maps (N, h, w) to ``size = (H, W)`` with bilinear interpolation (``cv2.INTER_LINEAR``).

    OpenCV maps pixel centres to pixel centres, which matches the map contract: cell (i, j) covers input pixels
    [i*H/h, (i+1)*H/h) x [j*W/w, (j+1)*W/w), so its value lands at the centre of that block.

    Returns:
        float32 (N, H, W); the input itself (as float32) when it already has that size.

    Raises:
        ValueError: ``maps`` is not (N, h, w).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"anomaly maps must have shape (N, h, w), got {maps.shape}")
    h, w = int(size[0]), int(size[1])
    if maps.shape[1:] == (h, w):
        return maps
    return np.stack([cv2.resize(m, (w, h), interpolation=cv2.INTER_LINEAR) for m in maps]) if len(maps) else \
        np.zeros((0, h, w), np.float32)


def _trapezoid_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Area under the polyline (x, y) (x non-decreasing) from x[0] to ``x_max``, y interpolated linearly at x_max
    (as the MVTec AD evaluation code's ``trapezoid``)."""
    k = int(np.searchsorted(x, x_max, side="right"))  # x[:k] <= x_max
    xs, ys = x[:k], y[:k]
    if k < len(x) and xs[-1] < x_max:
        x0, x1, y0, y1 = x[k - 1], x[k], y[k - 1], y[k]
        y_at = y0 + (y1 - y0) * (x_max - x0) / (x1 - x0)
        xs, ys = np.append(xs, x_max), np.append(ys, y_at)
    return float(np.sum(np.diff(xs) * (ys[1:] + ys[:-1]) / 2.0))


class PixelScoreCollector:
    """Collects the pixel scores of anomaly maps batch by batch for :meth:`pixel_auroc` and :meth:`aupro`.

    Args:
        n_pixels: total number of pixels that will be added (N * H * W), to fix the keep probability of the
            defect-free pixels; ``None`` keeps all of them (exact metrics, memory grows with the data).
        max_normal_pixels: defect-free pixels to keep (in expectation) when ``n_pixels`` exceeds it.
        seed: seed of the deterministic subsampling.

    Raises:
        ValueError: ``max_normal_pixels < 1``.
    """

    def __init__(self, n_pixels: int | None = None, max_normal_pixels: int = DEFAULT_MAX_NORMAL_PIXELS,
                 seed: int = 0) -> None:
        if max_normal_pixels < 1:
            raise ValueError(f"max_normal_pixels must be >= 1, got {max_normal_pixels}")
        self.keep_rate = 1.0 if n_pixels is None or n_pixels <= max_normal_pixels else max_normal_pixels / n_pixels
        self._rng = np.random.default_rng(seed)
        self._normal: list[np.ndarray] = []
        self._defect: list[np.ndarray] = []
        self._region_size: list[np.ndarray] = []  # per defect pixel: size of its region
        self.n_regions = 0
        self.n_images = 0
        self.n_normal_seen = 0

    def add(self, maps, masks) -> None:
        """Add anomaly maps float (N, H, W) (or (H, W)) and their masks bool (N, H, W), same shape.

        Raises:
            ValueError: see :func:`check_maps_and_masks`.
        """
        maps, masks = check_maps_and_masks(maps, masks)
        for s, m in zip(maps, masks, strict=True):
            self.n_images += 1
            normal = s[~m]
            self.n_normal_seen += normal.size
            if self.keep_rate < 1.0:
                normal = normal[self._rng.random(normal.size) < self.keep_rate]
            self._normal.append(normal.copy())
            if m.any():
                n_lab, labels = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
                lab = labels[m]
                sizes = np.bincount(lab, minlength=n_lab)
                self._defect.append(s[m].copy())
                self._region_size.append(sizes[lab].astype(np.float64))
                self.n_regions += n_lab - 1

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        normal = np.concatenate(self._normal) if self._normal else np.zeros(0, np.float32)
        defect = np.concatenate(self._defect) if self._defect else np.zeros(0, np.float32)
        size = np.concatenate(self._region_size) if self._region_size else np.zeros(0)
        if defect.size == 0:
            raise ValueError("pixel metrics need at least one defect pixel in the masks; these masks are all empty")
        if normal.size == 0:
            raise ValueError("pixel metrics need defect-free pixels; every mask pixel is a defect")
        return normal, defect, size

    def pixel_auroc(self) -> float:
        """Pixel AUROC (``sklearn.metrics.roc_auc_score``), defect pixels positive.

        Raises:
            ValueError: no defect pixel or no defect-free pixel was added.
        """
        from sklearn.metrics import roc_auc_score

        normal, defect, _ = self._arrays()
        labels = np.concatenate([np.zeros(normal.size, np.int8), np.ones(defect.size, np.int8)])
        return float(roc_auc_score(labels, np.concatenate([normal, defect])))

    def pro_curve(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The PRO curve over all thresholds.

        Returns:
            ``(fpr, pro, thresholds)``: float64 (T+1,), (T+1,) and float32 (T,): point k >= 1 is the threshold
            ``thresholds[k-1]`` (distinct scores, descending; a pixel is positive when its score >= threshold);
            point 0 is (0, 0), above every score.

        Raises:
            ValueError: no defect pixel or no defect-free pixel was added.
        """
        normal, defect, size = self._arrays()
        scores = np.concatenate([normal, defect])
        fpr_inc = np.concatenate([np.full(normal.size, 1.0 / normal.size), np.zeros(defect.size)])
        pro_inc = np.concatenate([np.zeros(normal.size), 1.0 / (self.n_regions * size)])
        order = np.argsort(scores, kind="stable")[::-1]
        scores = scores[order]
        fpr = np.cumsum(fpr_inc[order])
        pro = np.cumsum(pro_inc[order])
        last = np.append(scores[1:] != scores[:-1], True)  # the last pixel of each distinct score
        fpr = np.concatenate([[0.0], np.minimum(fpr[last], 1.0)])
        pro = np.concatenate([[0.0], np.minimum(pro[last], 1.0)])
        return fpr, pro, scores[last]

    def aupro(self, fpr_limit: float = DEFAULT_FPR_LIMIT) -> float:
        """Normalised area under the PRO curve for FPR in [0, ``fpr_limit``] (MVTec AD: 0.3), in [0, 1].

        Raises:
            ValueError: ``fpr_limit`` outside (0, 1], or no defect / defect-free pixel was added.
        """
        if not 0.0 < fpr_limit <= 1.0:
            raise ValueError(f"fpr_limit must lie in (0, 1], got {fpr_limit}")
        fpr, pro, _ = self.pro_curve()
        return _trapezoid_to(fpr, pro, fpr_limit) / fpr_limit


def pixel_auroc(maps, masks, max_pixels: int = DEFAULT_MAX_NORMAL_PIXELS, seed: int = 0) -> float:
    """Pixel AUROC of anomaly maps float (N, H, W) against masks bool (N, H, W) (``sklearn.metrics.roc_auc_score``
    over all pixels; above ``max_pixels`` pixels the defect-free ones are subsampled deterministically, see the
    module docstring).

    Raises:
        ValueError: shapes differ, NaN/inf in the maps, or the masks hold no defect (or no defect-free) pixel.
    """
    maps, masks = check_maps_and_masks(maps, masks)
    c = PixelScoreCollector(maps.size, max_pixels, seed)
    c.add(maps, masks)
    return c.pixel_auroc()


def aupro(maps, masks, fpr_limit: float = DEFAULT_FPR_LIMIT, max_pixels: int = DEFAULT_MAX_NORMAL_PIXELS,
          seed: int = 0) -> float:
    """AUPRO up to ``fpr_limit`` (MVTec AD protocol, see the module docstring) of anomaly maps float (N, H, W)
    against masks bool (N, H, W); exact up to ``max_pixels`` pixels, a deterministic subsample of the defect-free
    pixels above.

    Raises:
        ValueError: shapes differ, NaN/inf in the maps, ``fpr_limit`` outside (0, 1], or the masks hold no defect
            (or no defect-free) pixel.
    """
    maps, masks = check_maps_and_masks(maps, masks)
    c = PixelScoreCollector(maps.size, max_pixels, seed)
    c.add(maps, masks)
    return c.aupro(fpr_limit)


class MaskF1:
    """Pixel F1 of predicted defect masks against ground-truth masks, pooled over all pixels of all images (as
    anomalib's pixel ``F1Score``): ``F1 = 2 TP / (2 TP + FP + FN)``, counted batch by batch.

    The predicted mask is what an operator is shown (:class:`algan.runtime.inference.Prediction`): the map at or
    above the pixel threshold's ``level``, on images whose score reaches the image threshold; an image below it has
    an empty mask (its defect pixels count as missed, FN).

    Args:
        level: the pixel threshold, in the units of the maps given to :meth:`add`.
        image_threshold: the image threshold, in the units of the scores given to :meth:`add`.
    """

    def __init__(self, level: float, image_threshold: float) -> None:
        self.level = float(level)
        self.image_threshold = float(image_threshold)
        self.tp = self.fp = self.fn = 0

    def add(self, maps, masks, scores) -> None:
        """Count one batch: ``maps`` float (N, H, W) at the mask size, ``masks`` (N, H, W) nonzero = defect,
        ``scores`` float (N,) image scores.

        Raises:
            ValueError: see :func:`check_maps_and_masks`; ``scores`` not of length N.
        """
        maps, masks = check_maps_and_masks(maps, masks)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        if len(scores) != len(maps):
            raise ValueError(f"{len(scores)} image scores for {len(maps)} maps")
        pred = (maps >= self.level) & (scores >= self.image_threshold)[:, None, None]
        self.tp += int(np.count_nonzero(pred & masks))
        self.fp += int(np.count_nonzero(pred & ~masks))
        self.fn += int(np.count_nonzero(~pred & masks))

    def f1(self) -> float | None:
        """The pooled pixel F1, or ``None`` when there is no defect pixel and no predicted one (undefined)."""
        denom = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / denom if denom else None
