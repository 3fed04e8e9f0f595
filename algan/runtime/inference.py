"""The exported model in five lines of Python, without torch: :class:`Inferencer` -> :class:`Prediction`.

::

    import cv2, algan
    model = algan.Inferencer("model")                      # a bundle exported with algan-export
    frame = cv2.imread("part.png")                         # any frame size, BGR as OpenCV reads it
    p = model.predict(frame)                               # p.score (1.0 = threshold), p.is_anomalous, p.region
    cv2.imwrite("overlay.png", model.overlay(frame, p))    # heat map over the ROI, the defect mask outlined

What happens to a frame (the same as in ``algan-train`` and the edge daemon,
:func:`algan.runtime.preprocess.prepare_frame`): crop the region of interest (the bundle's ``roi``, or the one
given here), resize it to the model input with ``INTER_AREA``, run the exported graph (ONNX Runtime by default).
For a patch head the graph's ``anomaly_maps`` output is upsampled back to the ROI's size; a frame at or above the
image threshold also gets its defect mask (the upsampled map at or above the pixel threshold,
:func:`~algan.runtime.maps.mask_from_map`) and a :class:`~algan.runtime.maps.Region` in frame pixels (box, peak, the
mask's area). A frame below the image threshold gets neither.
A tiled bundle (manifest ``tiling``) cuts the ROI into its tile grid instead, scores the tiles in one run and
stitches their maps (:mod:`algan.runtime.tiling`): the frame score is the reduction of the stitched map (image-only
heads: the maximum over tiles).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from algan.contract import MANIFEST_FILE, BundleError, Manifest, load_manifest
from algan.runtime.errors import ModelError
from algan.runtime.maps import (
    Region,
    Roi,
    draw_overlay,
    frame_roi,
    mask_from_map,
    parse_roi,
    region_from_map,
    upsample_map,
)
from algan.runtime.preprocess import prepare_frame
from algan.runtime.runners.base import BACKENDS, Runner, load_runner
from algan.runtime.runners.settings import RunnerConfig
from algan.runtime.tiling import TileSpec, manifest_reduction, manifest_tiling, prepare_tiles, untile

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    """The model's verdict on one frame: what :class:`Inferencer` returns and what the daemon makes of each runner
    output it describes in an alarm event (:func:`interpret`, the one per-frame interpretation).

    Attributes:
        score: calibrated anomaly score (float; 0 = typical normal, 1.0 = the alarm threshold).
        is_anomalous: ``score >= threshold``.
        map_cells: float32 ``(h, w)`` map at the model's resolution (what the graph returned), or ``None``.
        roi: ``(x, y, w, h)`` frame pixels that went into the model (the whole frame without a ROI).
        threshold: the decision threshold used (calibrated units).
        pixel_threshold: the pixel threshold on the calibrated map scale (1.0 = the image threshold's level), or
            ``None`` for a score-only model.

    :attr:`anomaly_map`, :attr:`mask` and :attr:`region` are computed from the cells on first access.
    """

    score: float
    is_anomalous: bool
    map_cells: np.ndarray | None = None
    roi: Roi = (0, 0, 0, 0)
    threshold: float = 1.0
    pixel_threshold: float | None = None

    @cached_property
    def anomaly_map(self) -> np.ndarray | None:
        """float32 ``(roi_h, roi_w)`` map upsampled (bilinear) to the ROI's size in pixels (the frame's size without
        a ROI), calibrated units; ``None`` for a score-only model."""
        if self.map_cells is None:
            return None
        return upsample_map(self.map_cells, (self.roi[3], self.roi[2]))

    @cached_property
    def mask(self) -> np.ndarray | None:
        """uint8 ``(roi_h, roi_w)`` predicted defect mask (:func:`~algan.runtime.maps.mask_from_map`: 255 where the
        upsampled map is at or above :attr:`pixel_threshold`, 0 elsewhere); ``None`` for a score-only model and for
        a frame below the threshold."""
        if self.map_cells is None or not self.is_anomalous:
            return None
        level = self.pixel_threshold if self.pixel_threshold is not None else 1.0
        return mask_from_map(self.map_cells, (self.roi[3], self.roi[2]), level)

    @cached_property
    def region(self) -> Region | None:
        """Where the defect is, in frame pixels (:class:`~algan.runtime.maps.Region`: box, peak, ``area`` = the
        mask's pixels); ``None`` for a score-only model and for a frame below the threshold."""
        if self.map_cells is None or self.mask is None:
            return None
        return replace(region_from_map(self.map_cells, self.roi, self.threshold),
                       area=int(np.count_nonzero(self.mask)))

    def to_dict(self) -> dict:
        """JSON-able summary: score, is_anomalous, threshold, pixel_threshold, roi, region (with the mask's area;
        no arrays)."""
        return {"score": round(self.score, 6), "is_anomalous": self.is_anomalous, "threshold": self.threshold,
                "pixel_threshold": round(self.pixel_threshold, 6) if self.pixel_threshold is not None else None,
                "roi": list(self.roi),
                "region": self.region.to_dict() if self.region is not None else None}


def interpret(frame_shape: Sequence[int], score: float, cells: np.ndarray | None, roi: Roi | None,
              threshold: float, pixel_threshold: float = 1.0) -> Prediction:
    """The :class:`Prediction` of one runner output: a frame of shape ``(H, W, ...)`` cropped at ``roi`` (``None`` =
    the whole frame) scored ``score`` with map ``cells`` (float32 ``(h, w)`` or ``None``) against ``threshold``,
    defect pixels at ``pixel_threshold`` (calibrated map scale)."""
    return Prediction(float(score), bool(score >= threshold), cells, frame_roi(frame_shape, roi), float(threshold),
                      float(pixel_threshold) if cells is not None else None)


def check_frame(frame: object, what: str = "frame", batch_ok: bool = False) -> None:
    """Refuse what is not a frame with one clear line.

    Args:
        frame: the argument given.
        what: its name in the message.
        batch_ok: also accept a ``(N, H, W, 3)`` uint8 array or a list/tuple (its frames are checked one by one later).

    Raises:
        ValueError: ``None`` (``cv2.imread`` of a missing or unreadable file), an empty array, a dtype other than
            uint8, or a shape other than ``(H, W)`` / ``(H, W, 3)`` / ``(H, W, 4)`` (``(N, H, W, 3)`` with
            ``batch_ok``).
    """
    if frame is None:
        raise ValueError(f"{what} is None, not an image: cv2.imread returns None for a missing or unreadable file; "
                         "check the path before calling predict()")
    if batch_ok and isinstance(frame, (list, tuple)):
        return
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"{what} is a {type(frame).__name__}, not an image: pass a uint8 numpy array (H, W, 3) BGR, "
                         "as cv2.imread returns")
    if frame.size == 0:
        raise ValueError(f"{what} is empty (shape {frame.shape}); pass a uint8 image (H, W, 3)")
    if frame.dtype != np.uint8:
        raise ValueError(f"{what} has dtype {frame.dtype}, not uint8: pass 8-bit BGR pixels 0-255 as cv2.imread "
                         "returns (convert with np.clip(x, 0, 255).astype(np.uint8))")
    shapes_ok = frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4))  # BGRA: alpha dropped
    if batch_ok:
        shapes_ok = shapes_ok or (frame.ndim == 4 and frame.shape[3] == 3)
    if not shapes_ok:
        raise ValueError(f"{what} has shape {frame.shape}; pass a BGR image (H, W, 3), a gray one (H, W)"
                         + (" or a batch (N, H, W, 3)" if batch_ok else ""))


class Inferencer:
    """Scores frames with an exported bundle (no torch).

    Args:
        model: bundle directory with ``model.onnx`` (from ``algan-export``), or the ``.onnx`` file itself.
        roi: ``(x, y, w, h)`` or ``"x,y,w,h"`` crop in frame pixels; default: the bundle's ``roi`` (manifest),
            else the whole frame. ``"full"`` forces the whole frame.
        threshold: decision threshold (calibrated units, default 1.0 = the calibrated alarm threshold).
        pixel_threshold: defect-mask level on the calibrated map scale; default: the bundle's pixel threshold
            (:func:`algan.runtime.runners.calibration.pixel_level`: ``algan.json``, else the graph's metadata, else 1.0
            for bundles calibrated before pixel thresholds existed).
        backend: ``onnxruntime`` (default), ``tensorrt`` (``model.engine``) or ``torch`` (the bundle).
        threads: ONNX Runtime intra-op threads (0 = its default).
        providers: ONNX Runtime providers by short name (``cpu``, ``cuda``, ``tensorrt``), default CPU.
        batch_size: frames per graph run in :meth:`predict_many`.
        runner: an already built :class:`~algan.runtime.runners.base.Runner` instead of loading one.

    Raises:
        ModelError: no exported model, a graph outside the contract, a backend that is not installed.
        ValueError: a malformed ``roi``.
    """

    def __init__(self, model: str | Path, roi: Roi | str | None = None, threshold: float = 1.0,
                 backend: str = "onnxruntime", threads: int = 0, providers: Sequence[str] | None = None,
                 batch_size: int = 8, runner: Runner | None = None,
                 pixel_threshold: float | None = None) -> None:
        self.model = Path(model)
        bundle = self.model if self.model.is_dir() else self.model.parent
        #: the bundle's manifest; ``None`` for a bare graph file without an ``algan.json`` beside it
        self.manifest: Manifest | None = None
        if (bundle / MANIFEST_FILE).is_file():
            try:
                self.manifest = load_manifest(bundle / MANIFEST_FILE, lenient=True)
            except BundleError as e:
                raise ModelError(str(e)) from None
        roi_json = self.manifest.roi if self.manifest is not None else None
        self.bundle_roi = parse_roi(roi_json) if roi_json is not None else None
        if isinstance(roi, str) and roi.strip().lower() == "full":
            self.roi: Roi | None = None
        else:
            self.roi = parse_roi(roi) if roi is not None else self.bundle_roi
        self.roi_from_bundle = roi is None
        if roi is not None and self.roi != self.bundle_roi:
            log.warning("ROI %s differs from the one the model was trained with (%s); scores may shift",
                        list(self.roi) if self.roi else "full frame",
                        list(self.bundle_roi) if self.bundle_roi else "full frame")
        self.threshold = float(threshold)
        self.batch_size = max(1, int(batch_size))
        #: the bundle's tile grid (:mod:`algan.runtime.tiling`), ``None`` for a whole-ROI model
        self.tiling: TileSpec | None = manifest_tiling(self.manifest) if self.manifest is not None else None
        self.reduction, self.topk = (manifest_reduction(self.manifest) if self.manifest is not None
                                     else ("topk_mean", 0.01))
        self.runner = runner if runner is not None else self._load(backend, threads, providers)
        if pixel_threshold is not None:
            self.pixel_threshold, source = float(pixel_threshold), "the caller"
        else:
            from algan.runtime.runners.calibration import pixel_level

            self.pixel_threshold, source = pixel_level(self.model)
        if self.has_maps:
            log.info("defect masks at map level %.4g (%s)", self.pixel_threshold, source)

    def _load(self, backend: str, threads: int, providers: Sequence[str] | None) -> Runner:
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        try:
            settings = RunnerConfig(backend=backend, threads=threads, providers=list(providers or ["cpu"]))
        except ValueError as e:  # pydantic's ValidationError: a provider name outside tensorrt/cuda/cpu
            raise ModelError(f"runner settings: {str(e).splitlines()[-1].strip()}") from None
        return load_runner(self.model, settings, verify=False)

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input ``(height, width)`` in pixels."""
        return tuple(self.runner.input_size)  # type: ignore[return-value]

    @property
    def has_maps(self) -> bool:
        """True when the model returns anomaly maps (a patch head)."""
        return self.runner.has_maps

    @property
    def model_id(self) -> str:
        return str(self.runner.model_id)

    def prepare(self, frame: np.ndarray) -> np.ndarray:
        """Crop (ROI) and resize one uint8 BGR ``(H, W, 3)`` (or gray ``(H, W)``) frame to the model input.

        Raises:
            ValueError: not a uint8 image, or a ROI that does not fit in the frame.
        """
        try:
            return prepare_frame(frame, self.input_size, self.roi)
        except ValueError as e:
            if self.roi is None or "does not fit" not in str(e):
                raise
            where = ("the bundle's roi (algan.json; the model was trained on that crop)" if self.roi_from_bundle
                     else "the roi given (algan-predict --roi)")
            raise ValueError(f"{e}: it is {where}; pass a roi x,y,w,h inside the frame, or roi 'full' "
                             "(--roi full) for the whole frame") from None

    def predict(self, image_or_batch: np.ndarray | Sequence[np.ndarray]) -> Prediction | list[Prediction]:
        """Score one frame or a batch.

        Args:
            image_or_batch: one uint8 BGR frame ``(H, W, 3)`` (or gray ``(H, W)``) of any size -> one
                :class:`Prediction`; a ``(N, H, W, 3)`` array or a list of frames (sizes may differ) -> a list.

        Returns:
            :class:`Prediction` or a list of them, in order.

        Raises:
            ValueError: ``None`` (what ``cv2.imread`` returns for a missing or unreadable file), an empty frame or
                batch, a frame that is not a uint8 ``(H, W)``/``(H, W, 3)`` array, or a ROI that does not fit in it.
            RuntimeError: the runtime failed.
        """
        if isinstance(image_or_batch, np.ndarray) and image_or_batch.ndim in (2, 3):
            return self.predict_many([image_or_batch])[0]
        check_frame(image_or_batch, "image_or_batch", batch_ok=True)
        frames = list(image_or_batch)
        if not frames:
            raise ValueError("predict() got an empty batch; pass one frame (H, W, 3) or a non-empty list of frames")
        return self.predict_many(frames)

    def predict_many(self, frames: Iterable[np.ndarray]) -> list[Prediction]:
        """Score frames in batches of :attr:`batch_size` (see :meth:`predict`)."""
        frames = list(frames)
        for i, f in enumerate(frames):
            check_frame(f, f"frame {i}")
        out: list[Prediction] = []
        for i in range(0, len(frames), self.batch_size):
            chunk = frames[i : i + self.batch_size]
            if self.tiling is not None:
                out.extend(self._predict_tiled(chunk))
                continue
            batch = np.stack([self.prepare(f) for f in chunk])
            res = self.runner.run(batch)
            maps = res.maps if res.maps is not None else [None] * len(chunk)
            out.extend(self.interpret(f, float(s), m) for f, s, m in zip(chunk, res.scores.tolist(), maps,
                                                                          strict=True))
        return out

    def _predict_tiled(self, chunk: list[np.ndarray]) -> list[Prediction]:
        """A tiled bundle: every frame's tiles in one run, maps stitched, scores from the stitched maps."""
        assert self.tiling is not None
        prepared = [prepare_tiles(f, self.input_size, self.roi, self.tiling) for f in chunk]
        res = self.runner.run(np.concatenate([t for t, _ in prepared]))
        frames = untile(res.scores, res.maps, [shape for _, shape in prepared], self.tiling, self.reduction,
                        self.topk)
        maps = frames.maps if frames.maps is not None else [None] * len(chunk)
        return [self.interpret(f, float(s), m) for f, s, m in zip(chunk, frames.scores.tolist(), maps, strict=True)]

    def interpret(self, frame: np.ndarray, score: float, cells: np.ndarray | None) -> Prediction:
        """A :class:`Prediction` from a frame's score and its ``(h, w)`` map cells (or ``None``): :func:`interpret`
        with this Inferencer's ROI, threshold and pixel threshold (region and mask only when ``score >=
        threshold``)."""
        return interpret(frame.shape, score, cells, self.roi, self.threshold, self.pixel_threshold)

    def overlay(self, frame: np.ndarray, prediction: Prediction) -> np.ndarray:
        """The frame with the heat map over its ROI, the defect mask's contours and the peak drawn (frames at or above
        the threshold) and the score written (uint8 BGR, frame size); see :func:`algan.runtime.maps.draw_overlay`."""
        return draw_overlay(frame, prediction.map_cells, prediction.roi, prediction.region, prediction.score,
                            prediction.threshold, mask=prediction.mask)

    def close(self) -> None:
        self.runner.close()
