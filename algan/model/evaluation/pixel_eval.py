"""Pixel-level evaluation of a detector's anomaly maps on a test split with ground-truth masks.

:func:`evaluate_maps` runs ``detector.score_and_maps`` over the test images in batches (the anomaly-map contract:
``has_maps``, ``map_size``, calibrated ``(scores (N,), maps (N, h, w))``), brings every map to the model input size
(:func:`algan.model.evaluation.pixel_metrics.upsample_maps`), reads the masks aligned with the prepared images
(:func:`algan.data.datasets.load_mask`) and streams both into a
:class:`~algan.model.evaluation.pixel_metrics.PixelScoreCollector`, so memory stays bounded (MTD's 725 test images at
224x224
are 36 M pixels; the collector keeps the defect pixels and a fixed-size subsample of the others).

Metrics are computed at the model input resolution (the resized frame, as anomalib does), not at each file's
original size.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from algan.data.datasets import Dataset, Sample, load_mask
from algan.model.evaluation.pixel_metrics import (
    DEFAULT_FPR_LIMIT,
    DEFAULT_MAX_NORMAL_PIXELS,
    MaskF1,
    PixelScoreCollector,
    upsample_maps,
)
from algan.runtime.preprocess import prepare_frame, prepare_roi, read_image

log = logging.getLogger(__name__)


def _no_pixel_metrics(reason: str) -> dict:
    return {"pixel_auroc": None, "aupro": None, "mask_f1": None, "scores": None, "n_regions": 0,
            "pixel_note": reason, "maps": None, "masks": None, "frame_sizes": None}


def pixel_metrics_unavailable(detector, samples: Sequence[Sample]) -> str | None:
    """Why pixel metrics cannot be computed for this detector and these test samples, or ``None`` when they can."""
    if not detector.has_maps:
        return "the model scores whole images (no anomaly maps); train a patch head (algan-train --variant patch)"
    anomalous = [s for s in samples if s.label == 1]
    if not anomalous:
        return "the test split has no anomalous images"
    missing = sum(1 for s in anomalous if s.mask is None)
    if missing:
        return f"{missing} of {len(anomalous)} anomalous test images have no ground-truth mask"
    return None


@torch.no_grad()
def evaluate_maps(detector, dataset: Dataset | Sequence[Sample], batch_size: int = 16, *,
                  fpr_limit: float = DEFAULT_FPR_LIMIT, max_normal_pixels: int = DEFAULT_MAX_NORMAL_PIXELS,
                  progress: str | None = None, pixel_level: float | None = None) -> dict:
    """Pixel AUROC, AUPRO and the mask F1 of a detector's anomaly maps (one pass over the test images).

    Args:
        detector: an :class:`~algan.model.detector.AnomalyDetector` (or any module with ``has_maps``, ``map_size``,
            ``input_size`` (H, W) and ``score_and_maps(uint8 (N, H, W, 3) BGR tensor) -> (scores (N,), maps
            (N, h, w))``).
        dataset: a :class:`~algan.data.datasets.Dataset` (its ``test`` split is used) or a list of test samples.
        batch_size: images per forward pass.
        fpr_limit: AUPRO's FPR integration limit (MVTec AD: 0.3).
        max_normal_pixels: defect-free pixels kept for the metrics (see :mod:`algan.model.evaluation.pixel_metrics`).
        progress: a progress-bar label (shown only when stderr is a terminal), or ``None``.
        pixel_level: the pixel threshold on the detector's calibrated map scale
            (:attr:`algan.contract.CalibrationSection.pixel_level`); with it ``mask_f1`` is the pooled pixel F1
            (:class:`~algan.model.evaluation.pixel_metrics.MaskF1`) of the predicted masks (map >= level on images
            scored >= 1.0,
            the calibrated image threshold), else ``None``.

    Returns:
        ``{"pixel_auroc": float | None, "aupro": float | None, "mask_f1": float | None, "scores": float32 (N,)
        calibrated image scores of the samples in order (or None), "n_regions": int (ground-truth defect
        regions), "pixel_note": None or the reason the metrics are None, "maps": float32 (N, h, w) calibrated maps,
        "masks": bool (N, H, W) at the input size, "frame_sizes": int (N, 2) (height, width) of each image file}``
        (the last three for the localisation figures, :mod:`algan.calibration.localisation`; None with the metrics;
        a tiled bundle's maps are its stitched frame maps, all on the first one's grid). The metrics are ``None``
        (nothing is run) when the detector has no maps or an anomalous sample has no mask; the image scores come from
        the same pass, so a caller needs no second one.

    Raises:
        ValueError: the detector's maps do not have shape (N, *map_size), a mask does not match its image's size,
            or an image/mask file cannot be read (:class:`~algan.runtime.preprocess.ImageReadError`,
            :class:`~algan.data.datasets.DatasetError`).
    """
    samples = list(dataset.test if isinstance(dataset, Dataset) else dataset)
    reason = pixel_metrics_unavailable(detector, samples)
    if reason is not None:
        log.info("no pixel-level metrics: %s", reason)
        return _no_pixel_metrics(reason)
    size = tuple(int(v) for v in detector.input_size)
    map_size = tuple(int(v) for v in detector.map_size)
    collector = PixelScoreCollector(len(samples) * size[0] * size[1], max_normal_pixels)
    f1 = MaskF1(pixel_level, 1.0) if pixel_level is not None else None
    tiled = getattr(detector, "tiling", None) is not None
    stitched_grid: tuple[int, ...] | None = None
    scores, all_maps = [], []
    all_masks = np.zeros((len(samples), *size), bool)
    frame_sizes = np.zeros((len(samples), 2), np.int64)
    starts = range(0, len(samples), batch_size)
    if progress:
        from tqdm import tqdm

        starts = tqdm(starts, desc=progress, unit="batch", dynamic_ncols=True, leave=False,
                      disable=not sys.stderr.isatty())
    for i in starts:
        chunk = samples[i : i + batch_size]
        images = np.empty((len(chunk), *size, 3), np.uint8)
        masks = np.empty((len(chunk), *size), bool)
        for j, s in enumerate(chunk):
            img = read_image(s.path)
            images[j] = prepare_frame(img, size)
            masks[j] = load_mask(s.mask, size, image_shape=img.shape[:2])
            frame_sizes[i + j] = img.shape[:2]
        if tiled:  # a tiled bundle: stitched maps of the whole images
            frames = detector.frame_outputs([prepare_roi(read_image(s.path)) for s in chunk], batch_size)
            cal = detector.calibration
            center, scale = float(cal.center), float(cal.scale)
            sc = torch.from_numpy((frames.scores - center) / scale)
            calibrated = [((m - center) / scale).astype(np.float32) for m in frames.maps]
            up = np.stack([cv2.resize(m, (size[1], size[0]), interpolation=cv2.INTER_LINEAR) for m in calibrated])
            collector.add(up, masks)
            scores.append(sc.float().numpy().reshape(-1))
            if f1 is not None:
                f1.add(up, masks, scores[-1])
            # the localisation figures take one map grid: every stitched map on the first one's (same-sized images
            # give same-sized stitched maps; others are resized bilinearly)
            if stitched_grid is None:
                stitched_grid = calibrated[0].shape
            gh, gw = stitched_grid
            all_maps.append(np.stack([m if m.shape == stitched_grid
                                      else cv2.resize(m, (gw, gh), interpolation=cv2.INTER_LINEAR)
                                      for m in calibrated]))
            all_masks[i : i + len(chunk)] = masks
            continue
        sc, maps = detector.score_and_maps(torch.from_numpy(images))
        maps = maps.float().cpu().numpy()
        if maps.shape != (len(chunk), *map_size):
            msg = (f"the detector returned anomaly maps of shape {maps.shape}, expected {(len(chunk), *map_size)} "
                   "(N, *map_size); the model bundle is inconsistent, re-train or re-export it")
            raise ValueError(msg)
        up = upsample_maps(maps, size)
        collector.add(up, masks)
        scores.append(sc.float().cpu().numpy().reshape(-1))
        if f1 is not None:
            f1.add(up, masks, scores[-1])
        all_maps.append(maps.astype(np.float32, copy=False))
        all_masks[i : i + len(chunk)] = masks
    return {
        "pixel_auroc": collector.pixel_auroc(),
        "aupro": collector.aupro(fpr_limit),
        "mask_f1": f1.f1() if f1 is not None else None,
        "scores": np.concatenate(scores).astype(np.float32),
        "n_regions": collector.n_regions,
        "pixel_note": None,
        "maps": np.concatenate(all_maps),
        "masks": all_masks,
        "frame_sizes": frame_sizes,
    }


def load_masks(samples: Sequence[Sample], size: tuple[int, int]) -> np.ndarray:
    """Ground-truth masks of test samples at the model input size, bool (N, H, W) (normal images all False).

    MTD's 725 test images at 224x224 take 36 MB. Image sizes are not checked against the masks here (that needs
    the image files; :func:`evaluate_maps` does it).

    Raises:
        DatasetError: a mask file cannot be read.
    """
    out = np.zeros((len(samples), int(size[0]), int(size[1])), bool)
    for i, s in enumerate(samples):
        if s.mask is not None:
            out[i] = load_mask(s.mask, size)
    return out


def metrics_from_maps(maps, masks: np.ndarray, fpr_limit: float = DEFAULT_FPR_LIMIT,
                      max_normal_pixels: int = DEFAULT_MAX_NORMAL_PIXELS, chunk: int = 32) -> dict:
    """Pixel AUROC and AUPRO of anomaly maps already computed (e.g. several heads on the same patch features).

    Args:
        maps: float (N, h, w) anomaly maps at map resolution, in the order of ``masks``; upsampled to the mask size
            ``chunk`` images at a time (bounded memory).
        masks: bool (N, H, W), e.g. from :func:`load_masks`.
        fpr_limit, max_normal_pixels: as in :func:`evaluate_maps`.

    Returns:
        ``{"pixel_auroc": float, "aupro": float, "n_regions": int}``.

    Raises:
        ValueError: N differs between maps and masks, or see :mod:`algan.model.evaluation.pixel_metrics`.
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or masks.ndim != 3 or len(maps) != len(masks):
        raise ValueError(f"need anomaly maps (N, h, w) and masks (N, H, W) for the same N, got {maps.shape} and "
                         f"{masks.shape}")
    collector = PixelScoreCollector(masks.size, max_normal_pixels)
    for i in range(0, len(maps), chunk):
        collector.add(upsample_maps(maps[i : i + chunk], masks.shape[1:]), masks[i : i + chunk])
    return {"pixel_auroc": collector.pixel_auroc(), "aupro": collector.aupro(fpr_limit),
            "n_regions": collector.n_regions}
