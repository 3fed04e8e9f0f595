"""Patch heads scored on one set of cached patch features (``algan-bench --variants patch``, benchmarks).

Comparing several patch heads fairly means the same sampled training patches, the same test feature maps and the
same map post-processing for all of them. :func:`build_eval_set` extracts those once for a data set (the test maps
are kept in float16: MTD's 725 x 304 x 28 x 28 take 346 MB); :func:`head_maps` runs one fitted head over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchProjection, PatchSpec
from algan.model.fit import MAP_STATS_IMAGES, extract_patches, map_stats_paths, pooled_training_cells
from algan.runtime.preprocess import load_batch


@dataclass
class PatchEvalSet:
    """One data set's patch features, ready for every patch head.

    Attributes:
        train: projected training patch vectors, float32 (M, K): ``patches_per_image`` random cells per image.
        n_cells: all training cells (images x grid), the PatchCore bank's reference size.
        test: projected test feature maps, float16 (N, K, gh, gw), in the order of the test samples.
        masks: ground-truth masks at the input size, bool (N, H, W); ``None`` when not asked for.
        projection: the fitted :class:`PatchProjection` (identity for ``projection="none"``).
        stats: projected feature maps of training images, float16 (S, K, gh, gw), for the per-location map
            statistics (:meth:`algan.features.patch.MapPostprocess.fit_norm`); (0, K, gh, gw) when not asked for.
        sizes: ``(height, width)`` of each test image file, int (N, 2) (the frame a map is drawn on).
        pooled: the training images' pooled head inputs, float32 (N_train, 2K) (:func:`pool_cells`), in the order of
            the training paths; ``None`` when not asked for.
        scale: projected feature maps of a seeded fifth of the training images (:func:`scale_indices`), float16,
            whose scores set ALGAN-patch's global branch scales; ``None`` when not asked for.
    """

    train: np.ndarray
    n_cells: int
    test: torch.Tensor
    masks: np.ndarray | None
    projection: PatchProjection
    stats: torch.Tensor | None = None
    sizes: np.ndarray | None = None
    pooled: np.ndarray | None = None
    scale: torch.Tensor | None = None


#: share of the training images whose scores set the global branch's scales in the benchmark (the product uses its
#: held-out normals); the branch's discriminator is trained on the others
SCALE_FRACTION = 0.2


def scale_indices(n_train: int, seed: int) -> np.ndarray:
    """Sorted indices of the seeded :data:`SCALE_FRACTION` of ``n_train`` training images (at least one)."""
    k = max(1, int(round(SCALE_FRACTION * n_train)))
    return np.sort(np.random.default_rng(seed + 2).choice(n_train, min(k, n_train), replace=False))


def build_eval_set(preprocess: torch.nn.Module, feature_maps: PatchFeatureMaps, patch: PatchSpec,
                   train: Sequence[Path], test: Sequence, size: tuple[int, int], seed: int = 0,
                   with_masks: bool = False, batch_size: int = 32, desc: str | None = None,
                   n_stats: int = MAP_STATS_IMAGES, global_branch: bool = False) -> PatchEvalSet:
    """Extract a data set's patch features once.

    Args:
        preprocess, feature_maps: the backbone's input normalisation and patch feature maps.
        patch: the patch settings (``patches_per_image``, ``projection``, ``dim``).
        train: training image paths; test: test samples (``.path``, ``.mask``), as from
            :func:`algan.data.datasets.load_dataset`.
        size: input (H, W) in pixels.
        seed: seed of the cell sample and of a random projection.
        with_masks: also load the test masks (:func:`algan.model.evaluation.pixel_eval.load_masks`).
        desc: progress-bar label of the training extraction (``None``: no bar).
        n_stats: training images (a seeded subset, :func:`algan.model.fit.map_stats_paths`) whose full feature
            maps are kept for the per-location map statistics; 0 = none.
        global_branch: also keep what ALGAN-patch's global branch needs (``pooled`` and ``scale``).

    Raises:
        DatasetError: an image or mask cannot be read; ValueError: a projection that cannot be fitted.
    """
    raw_pooled: list[np.ndarray] | None = [] if global_branch else None
    patches = extract_patches(preprocess, feature_maps, train, size, patch.patches_per_image, seed, batch_size, desc,
                              None, raw_pooled)
    proj = PatchProjection.fit(patch.projection, patches, patch.dim, seed)
    pooled = scale = None
    if raw_pooled is not None:
        pooled = pooled_training_cells(preprocess, feature_maps, proj, raw_pooled or None, list(train), size,
                                       batch_size)
        spaths = [train[i] for i in scale_indices(len(train), seed)]
        with torch.no_grad():
            scale = torch.cat([proj(feature_maps(preprocess(torch.from_numpy(load_batch(spaths[i : i + batch_size],
                                                                                         size))))).half()
                               for i in range(0, len(spaths), batch_size)])
    with torch.no_grad():
        x = proj.vectors(torch.from_numpy(patches)).numpy()
        del patches
        paths = [s.path for s in test]
        feats = [proj(feature_maps(preprocess(torch.from_numpy(load_batch(paths[i : i + batch_size], size))))).half()
                 for i in range(0, len(paths), batch_size)]
        spaths = map_stats_paths(list(train), n_stats, seed) if n_stats else []
        stats = [proj(feature_maps(preprocess(torch.from_numpy(load_batch(spaths[i : i + batch_size], size))))).half()
                 for i in range(0, len(spaths), batch_size)]
    masks = None
    if with_masks:
        from algan.model.evaluation.pixel_eval import load_masks

        masks = load_masks(test, size)
    gh, gw = feature_maps.grid
    stats_t = torch.cat(stats) if stats else torch.zeros((0, proj.out_dim, gh, gw), dtype=torch.float16)
    return PatchEvalSet(x, len(train) * gh * gw, torch.cat(feats), masks, proj, stats_t, image_sizes(paths), pooled,
                        scale)


def image_sizes(paths: Sequence[Path]) -> np.ndarray:
    """``(height, width)`` of image files from their headers (nothing decoded), int (N, 2).

    Raises:
        DatasetError: a file that is not a readable image.
    """
    from PIL import Image

    from algan.data.datasets import DatasetError

    out = np.zeros((len(paths), 2), np.int64)
    for i, p in enumerate(paths):
        try:
            with Image.open(p) as im:
                out[i] = (im.height, im.width)
        except OSError as exc:
            raise DatasetError(f"cannot read the size of {p}: {exc}") from exc
    return out


def fit_map_norm(head: torch.nn.Module, post: MapPostprocess, stats: torch.Tensor, batch_size: int = 32) -> None:
    """Fit ``post``'s per-location normalisation on the smoothed maps of cached training feature maps ``stats``
    (S, K, gh, gw) (:meth:`MapPostprocess.fit_norm`; nothing with ``map_norm = "none"``)."""
    if post.norm is None:
        return
    head.eval()
    with torch.no_grad():
        maps = torch.cat([post.smooth(head(stats[i : i + batch_size].float()))
                          for i in range(0, len(stats), batch_size)])
    post.fit_norm(maps)


def head_maps(head: torch.nn.Module, post: MapPostprocess, feats: torch.Tensor, batch_size: int = 32) -> torch.Tensor:
    """Smoothed anomaly maps of a fitted patch head over cached maps ``feats`` (N, K, gh, gw): float32 (N, h, w) at
    the map resolution (``post.map_size``); image scores are ``post.reduce`` of them."""
    head.eval()
    with torch.no_grad():
        return torch.cat([post(head(feats[i : i + batch_size].float())) for i in range(0, len(feats), batch_size)])


def pixel_metrics(maps: torch.Tensor, masks: np.ndarray | None) -> dict:
    """``{"pixel_auroc", "aupro"}`` of maps against masks
    (:func:`algan.model.evaluation.pixel_eval.metrics_from_maps`), rounded
    to 4 places; both ``None`` without masks."""
    if masks is None:
        return {"pixel_auroc": None, "aupro": None}
    from algan.model.evaluation.pixel_eval import metrics_from_maps

    m = metrics_from_maps(maps.numpy(), masks)
    return {"pixel_auroc": round(m["pixel_auroc"], 4), "aupro": round(m["aupro"], 4)}


#: per-image false-alarm rate of the image threshold that :func:`calibrated_mask_f1` sets (algan-train's default)
BENCH_TARGET_FPR = 0.01


def calibrated_mask_f1(maps: torch.Tensor, scores: np.ndarray, masks: np.ndarray | None, labels: np.ndarray,
                       seed: int = 0, target_fpr: float = BENCH_TARGET_FPR, pixel_fpr: float | None = None,
                       chunk: int = 32) -> float | None:
    """The mask F1 of a head at calibrated thresholds, with algan-calibrate's protocol on an mvtec/mtd test split.

    The normal test images are split by a seeded permutation into halves: the first sets the image threshold
    (:func:`algan.contract.empirical_threshold` at ``target_fpr`` over their scores) and the pixel threshold
    (:func:`algan.contract.pixel_threshold` at ``pixel_fpr`` over their map cells); the mask F1
    (:class:`algan.model.evaluation.pixel_metrics.MaskF1`, pooled pixels, maps upsampled to the mask size) is measured
    on the
    other images (the second half of the normals and every anomalous image).

    Args:
        maps: raw anomaly maps float (N, h, w) of the test images; scores: their raw image scores (N,).
        masks: ground-truth masks bool (N, H, W), or ``None`` (the data set has none: returns ``None``).
        labels: int (N,), 1 = anomalous.
        seed: seed of the split; target_fpr, pixel_fpr: the thresholds' rates (``pixel_fpr`` ``None`` =
            :data:`algan.contract.DEFAULT_PIXEL_FPR`).

    Returns:
        The F1 rounded to 4 places, or ``None`` without masks (or when undefined).
    """
    if masks is None:
        return None
    from algan.contract import DEFAULT_PIXEL_FPR, empirical_threshold, pixel_threshold
    from algan.model.evaluation.pixel_metrics import MaskF1, upsample_maps

    m = maps.float().numpy() if isinstance(maps, torch.Tensor) else np.asarray(maps, np.float32)
    s = np.asarray(scores, np.float64).reshape(-1)
    labels = np.asarray(labels)
    normal = np.flatnonzero(labels == 0)
    perm = np.random.default_rng(seed).permutation(normal)
    calib = np.sort(perm[: len(perm) // 2])
    if len(calib) == 0:
        return None
    rest = np.setdiff1d(np.arange(len(labels)), calib)
    thr = empirical_threshold(s[calib], target_fpr, clip=True).threshold
    level = pixel_threshold(m[calib], DEFAULT_PIXEL_FPR if pixel_fpr is None else pixel_fpr).threshold
    f1 = MaskF1(level, thr)
    for i in range(0, len(rest), chunk):
        idx = rest[i : i + chunk]
        f1.add(upsample_maps(m[idx], masks.shape[1:]), masks[idx], s[idx])
    v = f1.f1()
    return None if v is None else round(v, 4)
