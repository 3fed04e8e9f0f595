"""Fit a complete detector on a data set: features -> transform -> head -> calibration -> manifest.

This is the training pipeline behind ``algan-train``; it holds no CLI code. The ALGAN training loop itself is
:mod:`algan.model.gan.feature`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from algan import __version__
from algan.contract import (
    DEFAULT_HOLDOUT,
    DEFAULT_PIXEL_FPR,
    FORMAT_VERSION,
    MAP_OUTPUTS,
    SCORE_OUTPUTS,
    Manifest,
    center_and_threshold,
    pixel_threshold,
    utc_now_iso,
)
from algan.data.datasets import Dataset
from algan.features.backbone import BackboneSpec, Preprocess, build_backbone
from algan.features.patch import MapPostprocess, PatchFeatureMaps, PatchProjection, PatchSpec, sample_cells
from algan.model.detector import AnomalyDetector, Calibration
from algan.model.gan.feature import AlganConfig
from algan.model.gan.image import PIXEL_MEAN, PIXEL_STD, ImageConfig, PixelBackbone
from algan.model.heads.patch import GLOBAL_WEIGHT, MIN_BRANCH_NORMALS, pool_cells
from algan.model.heads.registry import FittedHead, head_kind, head_kinds
from algan.model.heads.vector import FeatureTransform
from algan.progress import track
from algan.runtime.preprocess import current_roi, load_batch, prepare_roi, read_image
from algan.runtime.tiling import TileSpec, load_tiles

log = logging.getLogger(__name__)
#: number of held-out normal frames stored in the bundle for parity checks (samples.safetensors); with cross-fitted
#: calibration every normal is a training image, and the frames are stored mirrored left-right (unseen by the head)
N_STORED_SAMPLES = 16
#: training images (at most; a seeded subset) whose maps give the per-location map statistics of the patch variant
MAP_STATS_IMAGES = 200


@dataclass
class FitSettings:
    """Everything that decides a trained model (stored in the manifest).

    Attributes:
        head: ``algan`` (default), ``mahalanobis`` or ``knn``.
        variant: ``feature`` (heads on backbone features) or ``image`` (ALGAN-image on pixels; head ``algan`` only).
        image: ALGAN-image hyper-parameters (``variant == "image"``; its ``size`` is the input size).
        backbone: backbone spec (name, blocks, pooling, input size).
        transform: feature transform before the head, ``standardize`` or ``pca``.
        pca_dim: PCA components for ``pca``.
        algan: ALGAN hyper-parameters (``head == "algan"``); ``None`` (default) = the variant's default preset,
            ``AlganConfig.preset("patch")`` for ``variant == "patch"``, else ``AlganConfig()``.
        knn_k: neighbours for ``knn``.
        knn_metric: ``whitened`` (default; Ledoit-Wolf shrunk ZCA whitening before the distances) or ``euclidean``.
        holdout: fraction of the normal training images held out for calibration (not trained on).
        target_fpr: per-frame false-alarm rate the initial threshold is set to (on the held-out normals).
        pixel_fpr: per-pixel false-positive rate of the initial pixel threshold (patch variant: the defect mask's
            level, :func:`algan.contract.pixel_threshold` over the held-out normals' maps).
        max_train: use at most this many training images (a seeded subset), ``None`` = all.
        seed: seed of the split, the subset and the training.
        batch_size: images per backbone batch.
        checkpoint: ALGAN training checkpoint directory, any variant (resumable training, bit-identical to an
            uninterrupted run; see :func:`algan.model.gan.loop.train_gan`); ``None`` = no checkpoint. Not part of
            the model.
        patch: patch features and maps (``variant == "patch"``; heads ``algan``, ``patchcore``, ``padim``).
        coreset_ratio: PatchCore memory bank size as a fraction of all training patch cells (PatchCore: 0.01-0.1),
            capped by the sampled patches.
        tiling: tile grid (:class:`algan.runtime.tiling.TileSpec`): the head is fitted on the tiles of the normal images
            (each tile resized to the input) and calibrated on stitched frame scores; ``None`` = whole images.
        calibration: how the threshold's normal scores are found (:data:`CALIBRATIONS`, :func:`calibration_mode`):
            ``holdout`` (the head is fitted on the training split and scores the held-out normals), ``crossfit``
            (the head is fitted on all training normals; each normal is scored by a head fitted on the other folds,
            :func:`crossfit_scores`) or ``auto`` (default: ``crossfit`` where it is cheap, see
            :func:`calibration_mode`).
        global_weight: ALGAN-patch on whole frames: weight of its image-level discriminator in the image score
            (:class:`algan.model.heads.patch.GlobalBranch`, default :data:`~algan.model.heads.patch.GLOBAL_WEIGHT`);
            0 = the map's image score alone. Tiled bundles have none.
    """

    head: str = "algan"
    variant: str = "feature"
    image: ImageConfig | None = None
    backbone: BackboneSpec = field(default_factory=BackboneSpec)
    transform: str = "standardize"
    pca_dim: int | None = None
    algan: AlganConfig = None  # type: ignore[assignment]  # set by __post_init__
    knn_k: int = 1
    knn_metric: str = "whitened"
    holdout: float = DEFAULT_HOLDOUT
    target_fpr: float = 0.01
    pixel_fpr: float = DEFAULT_PIXEL_FPR
    max_train: int | None = None
    seed: int = 0
    batch_size: int = 32
    checkpoint: str | None = None
    patch: PatchSpec = field(default_factory=PatchSpec)
    coreset_ratio: float = 0.01
    tiling: TileSpec | None = None
    calibration: str = "auto"
    global_weight: float = GLOBAL_WEIGHT

    def __post_init__(self) -> None:
        if self.algan is None:
            self.algan = AlganConfig.preset("patch") if self.variant == "patch" else AlganConfig()


#: ``FitSettings.calibration`` values (``--calibration``)
CALIBRATIONS = ("auto", "holdout", "crossfit")


#: folds of the cross-fitted calibration: each fold's head sees 90 % of the normals, so its scores run close to those
#: of the head fitted on all of them (on full MTD with Mahalanobis the test normals' median calibrated score is -0.04
#: with 5 folds, -0.003 with 10; ``benchmarks/crossfit.py``)
CROSSFIT_FOLDS = 10


def calibration_mode(settings: FitSettings, trains: bool, n_images: int) -> str:
    """``holdout`` or ``crossfit`` for a run on ``n_images`` training normals (``trains``: the head has a training
    loop, :attr:`algan.model.heads.registry.HeadKind.trains`).

    ``auto`` takes ``crossfit`` for the feature variant's heads that fit in seconds (Mahalanobis, kNN) on whole
    images with at least ``2 *`` :data:`CROSSFIT_FOLDS` normals: the shipped head is then fitted on every training
    normal (full MTD: 619 instead of 495 images, recall at 1 % FPR 0.57-0.66 -> 0.76-0.78, ``benchmarks/RESULTS.md``
    Session 16) and the threshold comes from out-of-fold scores of all of them. It costs :data:`CROSSFIT_FOLDS`
    extra fits, which ALGAN's training loop and the patch heads' per-cell maps would multiply (they keep
    ``holdout``).

    Needs no hold-out: with ``--holdout 0`` it is the only calibration that does not score the head's own training
    images.

    Raises:
        ValueError: an unknown mode; ``crossfit`` asked for a patch, image or tiled model, or with too few images.
    """
    mode = settings.calibration
    if mode not in CALIBRATIONS:
        raise ValueError(f"--calibration must be one of {', '.join(CALIBRATIONS)}, got {mode!r}")
    possible = settings.variant == "feature" and settings.tiling is None
    if mode == "crossfit" and not possible:
        raise ValueError("--calibration crossfit works with the feature variant on whole images (got --variant "
                         f"{settings.variant}" + (f", --tiles {settings.tiling}" if settings.tiling is not None else "")
                         + "); use --calibration holdout")
    if mode == "crossfit" and n_images < 2 * CROSSFIT_FOLDS:
        raise ValueError(f"only {n_images} training images: cross-fitted calibration needs at least "
                         f"{2 * CROSSFIT_FOLDS}; use --calibration holdout")
    if mode == "auto":
        return "crossfit" if possible and not trains and n_images >= 2 * CROSSFIT_FOLDS else "holdout"
    return mode


def fit_feature_head(settings: FitSettings, feats: np.ndarray) -> tuple[FeatureTransform, torch.nn.Module]:
    """The feature transform and head ``settings.head`` (eval mode) fitted on raw training features float32 (N, D):
    one fold of :func:`crossfit_scores`; score new features with ``head(transform(x))``.

    Raises:
        ValueError: not a feature head, or settings the head refuses.
    """
    transform = FeatureTransform.fit(feats, settings.transform, settings.pca_dim)
    with torch.no_grad():
        x = transform(torch.from_numpy(feats)).numpy()
    # ALGAN trains: outside no_grad
    return transform, head_kind("feature", settings.head).fit(settings, x, progress=False).head.eval()


def crossfit_scores(settings: FitSettings, feats: np.ndarray, folds: int, progress: bool = False) -> np.ndarray:
    """Out-of-fold raw scores float64 (N,) of training features ``feats`` float32 (N, D): the N rows in ``folds``
    seeded folds; each fold is scored by the feature transform and head fitted on the other folds (K-fold
    cross-fitting, as in cross-validation: every score comes from a head that did not see the image).

    The head fitted on all N rows sees more data than each fold's head, so its normal scores run a little lower
    than these: a threshold from them errs towards fewer false alarms (measured in ``benchmarks/RESULTS.md``).

    Raises:
        ValueError: fewer than ``2 * folds`` rows, or settings the head refuses.
    """
    n = len(feats)
    if n < 2 * folds:
        raise ValueError(f"only {n} training images: too few for {folds}-fold cross-fitted calibration; "
                         "use --calibration holdout")
    smallest = n - int(np.ceil(n / folds))  # images of the smallest fold head
    if settings.head == "knn" and settings.knn_k > smallest:
        raise ValueError(f"--knn-k {settings.knn_k} is more than the {smallest} images each cross-fitted head holds "
                         f"({folds} folds of {n}); use --knn-k <= {smallest} or --calibration holdout")
    part = np.random.default_rng(settings.seed + 2).permutation(n) % folds
    out = np.zeros(n, np.float64)
    for k in range(folds):
        transform, head = fit_feature_head(settings, feats[part != k])
        with torch.no_grad():
            out[part == k] = head(transform(torch.from_numpy(feats[part == k]))).numpy()
        if progress:
            log.info("cross-fitted calibration: fold %d of %d scored", k + 1, folds)
    return out


@dataclass
class FitCache:
    """What ``--head auto`` already computed on the same training split, so that the chosen head is not
    extracted or fitted twice.

    Attributes:
        features: raw training features of the split's fit images: feature variant float32 (N, D) backbone
            features; patch variant float32 (M, C) sampled patch vectors (before the projection).
        fitted: the fitted head (:class:`~algan.model.heads.registry.FittedHead`), or ``None`` to fit here.
    """

    features: np.ndarray
    fitted: FittedHead | None = None


@dataclass
class FitResult:
    detector: AnomalyDetector
    manifest: Manifest
    samples: np.ndarray
    extra_tensors: dict


@torch.no_grad()
def extract_features(
    preprocess: torch.nn.Module,
    backbone: torch.nn.Module,
    paths: Sequence[Path],
    size: tuple[int, int],
    batch_size: int = 32,
    desc: str | None = "features",
    tiling: TileSpec | None = None,
) -> np.ndarray:
    """Backbone features of image files, float32 (N, D) (with ``tiling``: of their tiles, (N * rows * cols, D)).
    Reads images in batches (bounded memory)."""
    out = []
    rng = track(range(0, len(paths), batch_size), desc or "", unit="batch", enabled=bool(desc))
    for i in rng:
        for x in _chunks(load_tiles(paths[i : i + batch_size], size, tiling), batch_size):
            out.append(backbone(preprocess(torch.from_numpy(x))).numpy())
    dim = getattr(backbone, "out_dim", 0)
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, dim), np.float32)


@torch.no_grad()
def extract_patches(
    preprocess: torch.nn.Module,
    feature_maps: PatchFeatureMaps,
    paths: Sequence[Path],
    size: tuple[int, int],
    per_image: int,
    seed: int,
    batch_size: int = 32,
    desc: str | None = "patches",
    tiling: TileSpec | None = None,
    pooled: list[np.ndarray] | None = None,
) -> np.ndarray:
    """Patch vectors of ``per_image`` random distinct cells per image (all cells for 0), float32 (N * k, C); with
    ``tiling`` every tile counts as an image (N * rows * cols * k vectors).

    Only the sampled cells are kept, batch by batch: the full maps of a data set (N x C x gh x gw) are never held.
    ``pooled``: a list that receives each batch's pooled maps float32 (n, 2C) (:func:`pool_cells`, one row per image
    or tile, in order).
    """
    rng = np.random.default_rng(seed)
    out = []
    it = track(range(0, len(paths), batch_size), desc or "", unit="batch", enabled=bool(desc))
    for i in it:
        for x in _chunks(load_tiles(paths[i : i + batch_size], size, tiling), batch_size):
            maps = feature_maps(preprocess(torch.from_numpy(x)))
            if pooled is not None:
                pooled.append(pool_cells(maps).numpy())
            cells = torch.from_numpy(sample_cells(len(maps), feature_maps.grid, per_image, rng))
            out.append(maps.permute(0, 2, 3, 1)[cells[:, 0], cells[:, 1], cells[:, 2]].numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, feature_maps.out_dim), np.float32)


def wants_global_branch(settings: FitSettings) -> bool:
    """Whether the fitted head gets ALGAN-patch's image-level discriminator (whole frames, weight > 0)."""
    return (settings.variant == "patch" and settings.head == "algan" and settings.tiling is None
            and settings.global_weight > 0)


@torch.no_grad()
def pooled_training_cells(preprocess: torch.nn.Module, feature_maps: PatchFeatureMaps, projection: PatchProjection,
                          raw_pooled: list[np.ndarray] | None, paths: Sequence[Path], size: tuple[int, int],
                          batch_size: int) -> np.ndarray:
    """The pooled head inputs float32 (N, 2K) of the training images for the global branch: the pooled raw maps
    :func:`extract_patches` collected (``raw_pooled``) when the projection is the identity, else one more pass with
    the fitted projection (the standard deviation of projected cells is not the projection of the raw one)."""
    if projection.kind == "none" and raw_pooled is not None:
        return np.concatenate(raw_pooled).astype(np.float32)
    out = [pool_cells(projection(feature_maps(preprocess(torch.from_numpy(load_batch(paths[i : i + batch_size],
                                                                                      size)))))).numpy()
           for i in range(0, len(paths), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _chunks(x: np.ndarray, n: int) -> list[np.ndarray]:
    """``x`` in consecutive pieces of at most ``n`` rows (a batch of images' tiles is ``rows * cols`` times larger)."""
    return [x[i : i + n] for i in range(0, len(x), n)]


def fit_patch_head(settings: FitSettings, x: np.ndarray, n_cells: int, progress: bool,
                   pooled: np.ndarray | None = None) -> FittedHead:
    """Fit the patch head ``settings.head`` (:func:`algan.model.heads.registry.head_kind` ``("patch", head)``) on
    projected training patch vectors x float32 (M, K); ``n_cells`` = all training cells (images x grid), for the
    PatchCore bank size; ``pooled``: training images' pooled head inputs (N, 2K) for ALGAN-patch's global branch
    (its scales are set afterwards, :meth:`algan.model.heads.patch.GlobalBranch.set_scales`).

    Raises:
        ValueError: not a patch head, a checkpoint with a head that does not train, or settings the head refuses.
    """
    check_checkpoint_settings(settings)
    return head_kind("patch", settings.head).fit(settings, x, n_cells=n_cells, progress=progress, pooled=pooled)


def training_split(dataset: Dataset, settings: FitSettings) -> tuple[list[Path], list[Path]]:
    """``(fit, holdout)`` image paths of a training run: the seeded ``max_train`` subset, then the seeded hold-out
    (:func:`split_holdout`)."""
    paths = list(dataset.train)
    if settings.max_train is not None and len(paths) > settings.max_train:
        keep = np.random.default_rng(settings.seed).choice(len(paths), settings.max_train, replace=False)
        paths = [paths[i] for i in sorted(keep.tolist())]
    return split_holdout(paths, settings.holdout, settings.seed)


def frame_raw_scores(det: AnomalyDetector, paths: Sequence[Path], batch_size: int = 32) -> np.ndarray:
    """Uncalibrated frame scores float64 (N,) of image files (crop :func:`~algan.runtime.preprocess.current_roi`), read
    ``batch_size`` at a time, scored as every runner scores them (:meth:`AnomalyDetector.frame_raw_scores`: tiled
    bundles tile and stitch)."""
    roi = current_roi()
    out = [det.frame_raw_scores([prepare_roi(read_image(p), roi) for p in paths[i : i + batch_size]], batch_size)
           for i in range(0, len(paths), batch_size)]
    return np.concatenate(out) if out else np.zeros(0)


def frame_outputs_of(det: AnomalyDetector, paths: Sequence[Path], batch_size: int = 32) -> tuple[np.ndarray,
                                                                                                   np.ndarray]:
    """A tiled patch detector's uncalibrated frame scores float64 (N,) and every cell of the stitched frame maps,
    float32 (sum of the N maps' sizes,), of image files (crop :func:`~algan.runtime.preprocess.current_roi`), read
    ``batch_size`` at a time (:meth:`AnomalyDetector.frame_outputs`)."""
    roi = current_roi()
    scores: list[np.ndarray] = []
    cells: list[np.ndarray] = []
    for i in range(0, len(paths), batch_size):
        done = det.frame_outputs([prepare_roi(read_image(p), roi) for p in paths[i : i + batch_size]], batch_size)
        scores.append(np.asarray(done.scores, np.float64))
        cells.extend(np.asarray(m, np.float32).ravel() for m in done.maps or [])
    return (np.concatenate(scores) if scores else np.zeros(0),
            np.concatenate(cells) if cells else np.zeros(0, np.float32))


def map_stats_paths(paths: Sequence[Path], n: int, seed: int) -> list[Path]:
    """The training images whose smoothed maps give the per-location map statistics: all of ``paths`` when there
    are at most ``n``, else a seeded subset of ``n`` in their order (bounds the extra pass over the training set)."""
    paths = list(paths)
    if len(paths) <= n:
        return paths
    keep = np.random.default_rng(seed + 1).choice(len(paths), n, replace=False)
    return [paths[i] for i in sorted(keep.tolist())]


@torch.no_grad()
def fit_map_statistics(det: AnomalyDetector, paths: Sequence[Path], size: tuple[int, int], batch_size: int,
                       progress: bool, tiling: TileSpec | None = None) -> int:
    """Fit the patch detector's per-location map normalisation (:class:`algan.features.patch.MapNormalization`)
    on the smoothed maps of training normals; returns the number of images used (0 when ``map_norm`` is none).

    The maps come from the fitted head on the training images (a subset of :data:`MAP_STATS_IMAGES`,
    :func:`map_stats_paths`), not the held-out images: those stay unseen for the threshold. With ``tiling`` the
    statistics are of the tiles' maps, the maps the normalisation is applied to at inference.
    """
    post = det.postprocess
    if post is None or post.norm is None:
        return 0
    from algan.model.detector import run_batched

    def smoothed(x: torch.Tensor) -> torch.Tensor:
        return post.smooth(det.head(det.transform(det.features(x))))

    maps = run_batched(smoothed, load_tiles(list(paths), size, tiling), batch_size,
                       "maps (train)" if progress else None)
    post.fit_norm(torch.from_numpy(maps))
    return len(paths)


def split_holdout(paths: Sequence[Path], fraction: float, seed: int) -> tuple[list[Path], list[Path]]:
    """Seeded split of normal images into (fit, holdout)."""
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must lie in [0, 1), got {fraction}")
    idx = np.random.default_rng(seed).permutation(len(paths))
    n_hold = int(round(len(paths) * fraction))
    if fraction > 0 and len(paths) - n_hold < 2:
        raise ValueError(f"only {len(paths)} training images: too few to hold out {fraction:.0%} for calibration")
    hold = sorted(idx[:n_hold].tolist())
    fit = sorted(idx[n_hold:].tolist())
    return [paths[i] for i in fit], [paths[i] for i in hold]


def quantile_threshold(normal_scores: np.ndarray, target_fpr: float,
                       what: str = "held-out normal images") -> tuple[float, float]:
    """``(center, threshold)`` of normal raw scores: their median, and the order statistic ``X_(k)``,
    ``k = ceil((n + 1)(1 - target_fpr))`` (:func:`algan.contract.empirical_threshold`, the rule algan-calibrate
    uses too).

    With fewer than ``1 / target_fpr - 1`` scores the rate cannot be resolved: the threshold is then the maximum
    (expected false-alarm rate ``1 / (n + 1)``, above the target) and a warning says so (algan-calibrate refuses
    instead, and offers an extreme-value fit); ``what`` names the scores in it. A threshold not above the median is
    widened to keep the calibrated scale valid.

    Raises:
        ValueError: no scores, NaN/inf scores, or ``target_fpr`` outside (0, 1).
    """
    s = np.asarray(normal_scores, dtype=np.float64)
    center, thr, rule = center_and_threshold(s, target_fpr)
    if not rule.resolved:
        log.warning("%d %s cannot resolve a per-frame false-alarm rate of %g (needs >= %d): "
                    "the threshold is their maximum score (expected rate about %.2g); re-calibrate with more normal "
                    "frames (algan-calibrate)", len(s), what, target_fpr, rule.needed, rule.expected_fpr)
    return center, thr


def calibration_source(held_out: bool, folds: int, tiling: TileSpec | None) -> str:
    """The manifest's ``calibration.source``: which normal scores the threshold came from."""
    if folds:
        text = (f"out-of-fold scores of all training normals ({folds}-fold cross-fit: each scored by a head fitted on "
                "the other folds; the bundle's head is fitted on all of them)")
    else:
        text = "held-out training normals" if held_out else "training normals (no holdout)"
    return text + (f" (frame scores of {tiling.rows}x{tiling.cols} tiles, stitched)" if tiling is not None else "")


def check_checkpoint_settings(settings: FitSettings) -> None:
    """Raise ValueError when a training checkpoint is asked for with a head that does not train (not ALGAN)."""
    check_checkpoint_head(settings.checkpoint, settings.head)


def check_checkpoint_head(checkpoint: str | None, head: str) -> None:
    """The one rule for ``--checkpoint``: the heads that train (:attr:`HeadKind.trains
    <algan.model.heads.registry.HeadKind.trains>`: ALGAN, every variant) checkpoint; the classical heads fit in
    seconds and have no training state. Raises ValueError for another head."""
    if checkpoint is not None and not any(k.trains for k in head_kinds() if k.name == head):
        raise ValueError(f"--checkpoint works with the ALGAN head only (--head algan, any --variant), not with "
                         f"--head {head}: it fits in seconds and has no training state to resume")


def fit_head(settings: FitSettings, x: np.ndarray, progress: bool) -> FittedHead:
    """Fit the feature head ``settings.head`` (:func:`algan.model.heads.registry.head_kind` ``("feature", head)``)
    on transformed features x float32 (N, K).

    Raises:
        ValueError: not a feature head, a checkpoint with a head that does not train, or settings the head refuses.
    """
    check_checkpoint_settings(settings)
    return head_kind("feature", settings.head).fit(settings, x, progress=progress)


def fit_detector(dataset: Dataset, settings: FitSettings, progress: bool = True,
                 cache: FitCache | None = None) -> FitResult:
    """Train a detector on the normal training images of ``dataset``.

    Returns:
        the detector (eval mode), its manifest, a few uint8 held-out frames (N, H, W, 3) and extra tensors to
        store (the ALGAN generator). ``cache``: training features (and the fitted head) already computed on the
        same split by :func:`algan.model.select.fit_auto`.

    Raises:
        ValueError: bad settings or too few images.
    """
    t0 = time.perf_counter()
    torch.manual_seed(settings.seed)
    fit_paths, hold_paths = training_split(dataset, settings)
    kind = head_kind(settings.variant, settings.head)  # ValueError: unknown variant, or the variant's heads
    check_checkpoint_settings(settings)
    crossfit = calibration_mode(settings, kind.trains, len(fit_paths) + len(hold_paths)) == "crossfit"
    folds = CROSSFIT_FOLDS if crossfit else 0
    calib_paths = hold_paths or fit_paths
    postprocess = None
    tiling = settings.tiling
    n_tiles = tiling.n_tiles if tiling is not None else 1
    if settings.variant == "image":
        icfg = settings.image or ImageConfig(seed=settings.seed)
        size = (icfg.size, icfg.size)
        preprocess, backbone = Preprocess(PIXEL_MEAN, PIXEL_STD), PixelBackbone(icfg.channels)
        backbone_json = {"name": "pixels", "channels": icfg.channels, "input_size": list(size),
                         "mean": list(PIXEL_MEAN), "std": list(PIXEL_STD)}
    else:
        spec = settings.backbone
        size = tuple(spec.input_size)
        preprocess = Preprocess(spec.mean, spec.std)
        backbone = PatchFeatureMaps(spec, settings.patch) if settings.variant == "patch" else build_backbone(spec)
    log.info("extracting features of %d training and %d held-out images", len(fit_paths), len(hold_paths))
    if settings.variant == "patch":
        pspec = settings.patch
        fitted = cache.fitted if cache is not None else None
        raw_pooled: list[np.ndarray] | None = [] if wants_global_branch(settings) and fitted is None else None
        patches = cache.features if cache is not None else extract_patches(
            preprocess, backbone, fit_paths, size, pspec.patches_per_image, settings.seed, settings.batch_size,
            "patches (train)" if progress else None, tiling, raw_pooled)
        transform = PatchProjection.fit(pspec.projection, patches, pspec.dim, settings.seed)
        with torch.no_grad():
            x = transform.vectors(torch.from_numpy(patches)).numpy()
        n_cells = len(fit_paths) * n_tiles * backbone.grid[0] * backbone.grid[1]
        if fitted is None:
            pooled = None
            if wants_global_branch(settings):
                pooled = pooled_training_cells(preprocess, backbone, transform, raw_pooled or None, fit_paths, size,
                                               settings.batch_size)
            fitted = kind.fit(settings, x, n_cells=n_cells, progress=progress, pooled=pooled)
        head, head_settings, extras, train_info = fitted
        postprocess = MapPostprocess(pspec, size)
        backbone_json = spec.to_json()
        feature_json = {"transform": pspec.projection, "in_dim": int(patches.shape[1]), "dim": int(x.shape[1]),
                        "n_patches": int(len(patches))}
    elif settings.variant == "image":
        feats = extract_features(preprocess, backbone, fit_paths, size, settings.batch_size,
                                 "features (train)" if progress else None, tiling)
        transform = torch.nn.Identity()
        head, head_settings, extras, train_info = kind.fit(settings, feats, progress=progress)
        feature_json = {"transform": "none", "in_dim": 0, "dim": 0}
    else:
        feats = cache.features if cache is not None else extract_features(
            preprocess, backbone, fit_paths, size, settings.batch_size, "features (train)" if progress else None,
            tiling)
        if crossfit:  # every training normal: scored out of fold for the threshold, then all fitted on
            hold_feats = extract_features(preprocess, backbone, hold_paths, size, settings.batch_size,
                                          "features (holdout)" if progress else None)
            every = fit_paths + hold_paths
            order = sorted(range(len(every)), key=lambda i: str(every[i]))  # folds independent of the split
            feats = np.concatenate([feats, hold_feats])[order]
            hold_raw = crossfit_scores(settings, feats, folds, progress)
            fit_paths = calib_paths = [every[i] for i in order]
            hold_paths = []
        transform = FeatureTransform.fit(feats, settings.transform, settings.pca_dim)
        with torch.no_grad():
            x = transform(torch.from_numpy(feats)).numpy()
        head, head_settings, extras, train_info = (cache.fitted if cache is not None and cache.fitted is not None
                                                   and not crossfit else kind.fit(settings, x, progress=progress))
        backbone_json = spec.to_json()
        feature_json = {"transform": settings.transform, "in_dim": int(feats.shape[1]), "dim": int(x.shape[1])}
    head.eval()
    det = AnomalyDetector(preprocess, backbone, transform, head, input_size=size, postprocess=postprocess)
    n_stats = 0
    if postprocess is not None:
        n_stats = fit_map_statistics(det, map_stats_paths(fit_paths, MAP_STATS_IMAGES, settings.seed), size,
                                     settings.batch_size, progress, tiling)
    if not hold_paths and not crossfit:
        log.warning("no held-out images: the threshold comes from training images and will be optimistic")
    det.tiling = tiling
    pixel_rule = None  # the pixel threshold of the defect mask: patch heads, over the held-out normals' map cells
    n_pixels = 0
    if tiling is not None and postprocess is not None:
        # a tiled patch bundle: frame scores from the stitched maps, the pixel threshold over every stitched cell
        # (the rule algan-calibrate applies to tiled bundles, algan.calibration.scoring.score_images)
        hold_raw, stitched = frame_outputs_of(det, calib_paths, settings.batch_size)
        pixel_rule, n_pixels = pixel_threshold(stitched, settings.pixel_fpr), int(stitched.size)
    elif tiling is not None:  # an image-only head on tiles: the max over each frame's tiles
        hold_raw = frame_raw_scores(det, calib_paths, settings.batch_size)
    elif settings.variant == "patch":
        from algan.model.detector import run_batched

        hold_u8 = load_batch(calib_paths, size)
        hold_maps = run_batched(det.raw_maps, hold_u8, settings.batch_size, "maps (holdout)" if progress else None)
        with torch.no_grad():
            hold_raw = det.postprocess.reduce(torch.from_numpy(hold_maps)).numpy()
        if det.global_branch is not None and (not hold_paths or len(hold_raw) < MIN_BRANCH_NORMALS):
            log.warning("ALGAN-patch's image-level discriminator is scaled on held-out normals and needs >= %d, got "
                        "%d: the bundle ships without it (the map's score alone); add normal images or raise "
                        "--holdout", MIN_BRANCH_NORMALS, len(hold_paths))
            head.global_branch = None
            head_settings = {k: v for k, v in head_settings.items() if k != "global_branch"}
        if (branch := det.global_branch) is not None:  # its scale from the same unseen normals, then the fused score
            g_hold = run_batched(lambda u: branch.raw(det.cells(u)), hold_u8, settings.batch_size)
            branch.set_scales(hold_raw, g_hold, settings.target_fpr)
            with torch.no_grad():
                hold_raw = np.maximum(hold_raw, branch.to_patch_scale(torch.from_numpy(g_hold)).numpy())
        pixel_rule, n_pixels = pixel_threshold(hold_maps, settings.pixel_fpr), int(hold_maps.size)
    elif not crossfit:
        hold_feats = extract_features(preprocess, backbone, calib_paths, size, settings.batch_size,
                                      "features (holdout)" if progress else None)
        with torch.no_grad():
            hold_raw = head(transform(torch.from_numpy(hold_feats))).numpy()
    center, threshold = quantile_threshold(hold_raw, settings.target_fpr,
                                           "out-of-fold scores of training normals" if crossfit else
                                           "held-out normal images" if hold_paths else
                                           "training images (no hold-out)")
    det.calibration = Calibration(center, threshold)
    det.eval()
    rng = np.random.default_rng(settings.seed)
    pick = sorted(rng.choice(len(calib_paths), min(N_STORED_SAMPLES, len(calib_paths)), replace=False).tolist())
    samples = load_tiles([calib_paths[i] for i in pick], size, tiling)
    if crossfit:  # every normal is a training image (a kNN head scores its own 0): parity needs unseen frames
        samples = np.ascontiguousarray(samples[:, :, ::-1])  # NHWC, mirrored left-right
    if tiling is not None:  # the graph scores tiles: keep N_STORED_SAMPLES of them, spread over the frames
        samples = samples[np.linspace(0, len(samples) - 1, min(N_STORED_SAMPLES, len(samples))).round().astype(int)]
    stamp = utc_now_iso()[:19].replace(':', '').replace('-', '')
    model_id = f"{dataset.root.name or 'model'}-{kind.label}-{stamp}-{uuid.uuid4().hex[:6]}"  # unique within a second
    manifest = {
        "format_version": FORMAT_VERSION,
        "model_id": model_id,
        "created": utc_now_iso(),
        "algan_edge_version": __version__,
        "variant": settings.variant,
        "backbone": backbone_json,
        "input": {"height": size[0], "width": size[1], "layout": "NHWC", "dtype": "uint8", "colour_order": "BGR"},
        "features": feature_json,
        "head": {"kind": settings.head, "settings": head_settings},
        "calibration": {
            "center": center,
            "threshold": threshold,
            "target_fpr": settings.target_fpr,
            "n_images": len(calib_paths),
            "source": calibration_source(bool(hold_paths), folds, tiling),
            "method": "empirical quantile",
        },
        "training": {
            "data": dataset.summary(),
            "n_train": len(fit_paths),
            "n_holdout": len(hold_paths),
            "seed": settings.seed,
            "max_train": settings.max_train,
            **({"crossfit_folds": folds} if crossfit else {}),
            "wall_s": round(time.perf_counter() - t0, 2),
            **train_info,
        },
        "exports": {},
        "outputs": list(SCORE_OUTPUTS),
    }
    if tiling is not None:
        manifest["tiling"] = tiling.to_json()
    if postprocess is not None:
        mh, mw = postprocess.map_size
        if pixel_rule is not None:
            manifest["calibration"].update({"pixel_threshold": pixel_rule.threshold,
                                            "pixel_target_fpr": settings.pixel_fpr, "n_pixels": n_pixels})
        manifest["patch"] = settings.patch.to_json()
        manifest["outputs"] = list(MAP_OUTPUTS)
        manifest["anomaly_map"] = {"height": mh, "width": mw, "reduction": settings.patch.reduction,
                                   "grid": list(backbone.grid), "normalization": settings.patch.map_norm,
                                   "normalization_images": n_stats}
    return FitResult(det, Manifest.model_validate(manifest), samples, extras)
