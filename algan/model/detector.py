"""The whole inference path in one traceable module: uint8 BGR frames -> calibrated anomaly scores.

``AnomalyDetector`` = Preprocess (colour order, scaling, normalisation) -> backbone -> feature transform ->
head (raw score, higher = more anomalous) -> calibration. This is exactly what ``algan-export`` writes to ONNX
(names and keys: :mod:`algan.contract`), so torch and ONNX Runtime scores can be compared one to one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


class Calibration(nn.Module):
    """Affine score calibration: ``calibrated = (raw - center) / (threshold - center)``.

    ``center`` is the median raw score of held-out normal images and ``threshold`` the raw score at the target
    false-alarm rate, so a calibrated score of 0 is a typical normal image and 1.0 is the alarm threshold
    (the calibrated scale of :mod:`algan.contract`). Changing the threshold at run time then needs no
    re-export: the daemon compares calibrated scores with its own level.
    """

    def __init__(self, center: float = 0.0, threshold: float = 1.0) -> None:
        super().__init__()
        if not threshold > center:
            msg = f"calibration threshold ({threshold}) must exceed the normal-score center ({center})"
            raise ValueError(msg)
        self.register_buffer("center", torch.tensor(float(center), dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(float(threshold - center), dtype=torch.float32))

    def forward(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.center) / self.scale


class AnomalyDetector(nn.Module):
    """Frames -> calibrated anomaly scores (and, for patch heads, anomaly maps).

    Input: uint8 (N, H, W, 3), BGR, already resized to ``input_size`` (H, W) on the host
    (:func:`algan.runtime.preprocess.prepare_frame`). Output of ``forward``: float32 (N,), 1.0 = alarm threshold.

    With a ``postprocess`` (:class:`algan.features.patch.MapPostprocess`) the head returns raw per-cell scores
    (N, gh, gw); the postprocess resizes and smooths them to the anomaly map (N, h, w) = :attr:`map_size` and
    reduces the map to the image score. :meth:`score_and_maps` returns both on the calibrated scale (the map with
    the image calibration's constants: 1.0 = the image threshold's level).
    """

    def __init__(
        self,
        preprocess: nn.Module,
        backbone: nn.Module,
        transform: nn.Module,
        head: nn.Module,
        calibration: Calibration | None = None,
        input_size: tuple[int, int] = (224, 224),
        postprocess: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.preprocess = preprocess
        self.backbone = backbone
        self.transform = transform
        self.head = head
        self.calibration = calibration if calibration is not None else Calibration()
        self.postprocess = postprocess
        #: the tile grid (:class:`algan.runtime.tiling.TileSpec`) of a tiled bundle, else ``None``; the graph (this
        #: module's ``forward``) scores single tiles, :meth:`frame_raw_scores` scores whole regions of interest
        self.tiling = None

    @property
    def has_maps(self) -> bool:
        """Whether the head scores per location (patch heads), so that :meth:`score_and_maps` gives maps."""
        return self.postprocess is not None

    @property
    def map_size(self) -> tuple[int, int] | None:
        """Anomaly-map ``(h, w)`` in cells, or ``None`` for image-level heads."""
        return tuple(self.postprocess.map_size) if self.postprocess is not None else None

    @property
    def global_branch(self) -> nn.Module | None:
        """ALGAN-patch's image-level discriminator (:class:`algan.model.heads.patch.GlobalBranch`), whose score
        the image score takes the maximum with; ``None`` for every other head."""
        from algan.model.heads.patch import PatchwiseHead

        return self.head.global_branch if isinstance(self.head, PatchwiseHead) else None

    def cells(self, images: torch.Tensor) -> torch.Tensor:
        """A patch head's inputs: projected patch features float32 (N, K, gh, gw)."""
        return self.transform(self.features(images))

    def raw_maps(self, images: torch.Tensor) -> torch.Tensor:
        """Uncalibrated anomaly maps float32 (N, h, w) (patch heads only)."""
        if self.postprocess is None:
            raise ValueError("this detector scores whole images (no anomaly maps); train a patch head "
                             "(algan-train --variant patch)")
        return self.postprocess(self.head(self.cells(images)))

    def raw_scores_and_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Uncalibrated ``(image scores (N,), maps (N, h, w))`` of a patch head: the image score is the map's
        reduction (``postprocess.reduce``), or with a :attr:`global_branch` the larger of that and the branch's."""
        from algan.model.heads.patch import scores_and_maps

        if self.postprocess is None:
            raise ValueError("this detector scores whole images (no anomaly maps); train a patch head "
                             "(algan-train --variant patch)")
        return scores_and_maps(self.head, self.postprocess, self.cells(images))

    def score_and_maps(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Calibrated ``(scores float32 (N,), anomaly maps float32 (N, h, w))`` (patch heads only)."""
        scores, maps = self.raw_scores_and_maps(images)
        return self.calibration(scores), self.calibration(maps)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Backbone features, float32 (N, D), before the feature transform."""
        return self.backbone(self.preprocess(images))

    def raw_scores(self, images: torch.Tensor) -> torch.Tensor:
        """Uncalibrated head scores, float32 (N,)."""
        if self.postprocess is not None:
            return self.raw_scores_and_maps(images)[0]
        return self.head(self.transform(self.features(images)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.calibration(self.raw_scores(images))

    @torch.no_grad()
    def frame_raw_scores(self, regions: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Uncalibrated frame scores float64 (F,) of full-resolution regions of interest (uint8 BGR ``(h, w, 3)``
        each, :func:`algan.runtime.preprocess.prepare_roi`), the way every runner scores them: with :attr:`tiling`,
        each region's tiles in one pass, maps stitched and reduced (image-only heads: the max over tiles,
        :func:`algan.runtime.tiling.untile`); without, the region resized to the input (``prepare_frame``)."""
        from algan.runtime.preprocess import prepare_frame

        if not regions:
            return np.zeros(0)
        if self.tiling is None:
            x = np.stack([prepare_frame(r, self.input_size) for r in regions])
            return run_batched(self.raw_scores, x, batch_size).astype(np.float64)
        return self.frame_outputs(regions, batch_size).scores.astype(np.float64)

    @torch.no_grad()
    def frame_outputs(self, regions: list[np.ndarray], batch_size: int = 32):  # noqa: ANN201
        """A tiled detector's uncalibrated frame scores and stitched maps of full-resolution regions of interest
        (:class:`algan.runtime.tiling.TiledFrames`; maps ``None`` for an image-only head).

        Raises:
            ValueError: the detector is not tiled (:attr:`tiling` is ``None``).
        """
        from algan.runtime.tiling import tile_frame, untile

        if self.tiling is None:
            raise ValueError("frame_outputs needs a tiled detector (algan-train --tiles)")
        tiles = np.concatenate([tile_frame(r, self.tiling, self.input_size) for r in regions])
        shapes = [(int(r.shape[0]), int(r.shape[1])) for r in regions]
        if self.postprocess is None:
            return untile(run_batched(self.raw_scores, tiles, batch_size), None, shapes, self.tiling)
        maps = run_batched(self.raw_maps, tiles, batch_size)
        return untile(np.zeros(len(tiles)), maps, shapes, self.tiling, self.postprocess.reduction,
                      self.postprocess.topk)

    @torch.no_grad()
    def frame_scores(self, regions: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
        """Calibrated frame scores float32 (F,) of :meth:`frame_raw_scores`."""
        raw = torch.from_numpy(self.frame_raw_scores(regions, batch_size).astype(np.float32))
        return self.calibration(raw).numpy()


class ScoresAndMaps(nn.Module):
    """Export wrapper of a patch detector: frames -> ``(scores (N,), anomaly_maps (N, h, w))``, calibrated."""

    def __init__(self, detector: AnomalyDetector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.detector.score_and_maps(images)


@torch.no_grad()
def run_batched(fn, images: np.ndarray, batch_size: int = 32, progress: str | None = None) -> np.ndarray:
    """Apply ``fn`` (uint8 tensor batch -> float tensor) to a uint8 (N, H, W, 3) array in batches.

    Returns a float32 numpy array, concatenated along the first axis.
    """
    outs = []
    from algan.progress import track

    rng = track(range(0, len(images), batch_size), progress or "", unit="batch", enabled=bool(progress))
    for i in rng:
        outs.append(fn(torch.from_numpy(images[i : i + batch_size])).float().numpy())
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)
