"""Re-calibration of exported scores at run time, so a new threshold needs no re-export.

The exported graph outputs calibrated scores ``score = (raw - center) / scale`` (1.0 = alarm threshold) with the
calibration of export time, recorded in the ONNX ``metadata_props`` as ``algan.calibration_center`` and
``algan.calibration_scale``. When the bundle was re-calibrated afterwards (``algan.json`` ``calibration``
``{center, threshold}``, scale = threshold - center), the runner maps each score to the new calibration with the
pure affine :func:`recalibrate`. The same constants re-map a patch head's ``anomaly_maps`` output (the maps share
the scores' calibrated scale, see :mod:`algan.runtime.runners.base`). Missing metadata means no re-mapping.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from algan.contract import (
    KEY_CAL_CENTER,
    KEY_CAL_SCALE,
    KEY_PIXEL_THRESHOLD,
    MANIFEST_FILE,
    ONNX_FILE,
    BundleError,
    load_manifest,
)

log = logging.getLogger(__name__)


def recalibrate(
    score: np.ndarray | float, old_center: float, old_scale: float, new_center: float, new_scale: float
) -> np.ndarray | float:
    """Map scores calibrated with ``(old_center, old_scale)`` to ``(new_center, new_scale)``.

    ``raw = score * old_scale + old_center``; result ``= (raw - new_center) / new_scale``.

    Args:
        score: calibrated score(s), float or float32 array of any shape.
        old_center, old_scale: calibration the scores were made with (raw-score units, scale > 0).
        new_center, new_scale: calibration to map to (raw-score units, scale > 0).

    Returns:
        Scores on the new scale, same shape; float32 for arrays.

    Raises:
        ValueError: a scale that is not a positive finite number.

    Example:
        >>> recalibrate(1.0, old_center=2.0, old_scale=4.0, new_center=2.0, new_scale=2.0)
        2.0
    """
    for name, s in (("old_scale", old_scale), ("new_scale", new_scale)):
        if not (math.isfinite(s) and s > 0):
            raise ValueError(f"{name} must be a positive finite number, got {s}")
    a = old_scale / new_scale
    b = (old_center - new_center) / new_scale
    if isinstance(score, np.ndarray):
        return (score.astype(np.float64) * a + b).astype(np.float32)
    return float(score) * a + b


@dataclass(frozen=True)
class Remap:
    """An affine score re-mapping (old -> new calibration), applied by :meth:`__call__` to float32 scores (N,) or
    anomaly maps (N, h, w) alike (any shape; float32 out)."""

    old_center: float
    old_scale: float
    new_center: float
    new_scale: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        return recalibrate(scores, self.old_center, self.old_scale, self.new_center, self.new_scale)


def bundle_calibration(model: Path) -> tuple[float, float] | None:
    """``(center, scale)`` from the bundle's ``algan.json`` (``model`` is the bundle directory, or a file inside
    it), or ``None`` when there is no manifest or it has no usable calibration."""
    bundle = model if model.is_dir() else model.parent
    path = bundle / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        cal = load_manifest(path, lenient=True).calibration
    except BundleError as e:
        log.warning("cannot read the calibration of %s (%s); scores are used as exported", path, e)
        return None
    center, threshold = cal.center, cal.threshold
    if not (math.isfinite(center) and math.isfinite(threshold) and threshold > center):
        return None
    return center, threshold - center


def read_graph_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file: the one reader of the package (the ``onnx`` package where it is
    installed, without the graph's external data; else ONNX Runtime's model metadata, read without graph
    optimizations so that nothing is folded or allocated).

    Raises:
        ValueError: the file cannot be read or parsed as ONNX (the reason in the message).
    """
    try:
        import onnx
    except ImportError:
        onnx = None
    try:
        if onnx is not None:
            model = onnx.load(str(path), load_external_data=False)
            return {p.key: p.value for p in model.metadata_props}
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        return dict(sess.get_modelmeta().custom_metadata_map or {})
    except Exception as e:  # protobuf DecodeError, ORT's own exception types, OSError
        raise ValueError(f"cannot read the ONNX graph {path} ({str(e).splitlines()[0][:200] if str(e) else e!r})") \
            from None


def onnx_metadata(path: Path) -> dict[str, str]:
    """:func:`read_graph_metadata` for the runners' re-calibration: ``{}`` (logged) when the file is missing or
    unreadable (no re-mapping rather than no daemon)."""
    if not path.is_file():
        return {}
    try:
        return read_graph_metadata(path)
    except ValueError as e:
        log.warning("%s; scores are used as exported", e)
        return {}


def remap_for(model: Path, metadata: dict[str, str]) -> Remap | None:
    """The re-mapping a runner must apply, or ``None``.

    Args:
        model: the configured model path (bundle directory, or an exported file inside a bundle).
        metadata: the graph's metadata_props (``algan.calibration_center`` / ``algan.calibration_scale``).

    Returns:
        A :class:`Remap` when both the graph metadata and the bundle calibration exist and differ, else ``None``.
    """
    try:
        old_center, old_scale = float(metadata[KEY_CAL_CENTER]), float(metadata[KEY_CAL_SCALE])
    except (KeyError, ValueError):
        return None
    new = bundle_calibration(model)
    if new is None or not (math.isfinite(old_center) and math.isfinite(old_scale) and old_scale > 0):
        return None
    new_center, new_scale = new
    if math.isclose(old_center, new_center, rel_tol=1e-6, abs_tol=1e-9) and math.isclose(
        old_scale, new_scale, rel_tol=1e-6, abs_tol=1e-9
    ):
        return None
    log.info("model %s was re-calibrated after export (center %.6g -> %.6g, scale %.6g -> %.6g): re-mapping scores",
             model, old_center, new_center, old_scale, new_scale)
    return Remap(old_center, old_scale, new_center, new_scale)


#: where :func:`pixel_level` found the level when neither the bundle nor the graph has a pixel threshold
PIXEL_LEVEL_FALLBACK = ("the image threshold's level 1.0 (the bundle has no pixel threshold: re-calibrate it with "
                        "algan-calibrate to get one)")


def pixel_level(model: Path, metadata: dict[str, str] | None = None) -> tuple[float, str]:
    """The defect-mask level of a model's anomaly maps, on the calibrated map scale the runners deliver (the
    bundle's current calibration; 1.0 = the image threshold's level): a map value at or above it is a defect pixel.

    Looked up in this order:

    1. the bundle's ``algan.json`` ``calibration.pixel_threshold`` (raw): ``(pixel_threshold - center) /
       (threshold - center)``, the bundle's current calibration, which the runners re-map the maps to;
    2. the graph's ``algan.pixel_threshold`` metadata (its own calibrated scale), re-mapped to the bundle's
       calibration when the bundle was re-calibrated after export (:func:`remap_for`);
    3. the fallback for bundles written before the pixel threshold: 1.0, the image threshold's level.

    Args:
        model: the bundle directory, or a model file inside it (``.onnx``, ``.engine``).
        metadata: the graph's ``metadata_props``; ``None`` reads them from the ``.onnx`` (``model`` itself, or the
            bundle's ``model.onnx``).

    Returns:
        ``(level, source)``: the level (float) and where it came from, in words (for logs).
    """
    model = Path(model)
    bundle = model if model.is_dir() else model.parent
    path = bundle / MANIFEST_FILE
    if path.is_file():
        try:
            cal = load_manifest(path, lenient=True).calibration
        except BundleError as e:
            log.warning("cannot read the calibration of %s (%s); looking for a pixel threshold in the graph", path, e)
        else:
            if cal.pixel_threshold is not None and math.isfinite(cal.pixel_threshold) and cal.threshold > cal.center:
                return cal.pixel_level, f"the pixel threshold of {path}"
    if metadata is None:
        onnx_path = model if model.suffix == ".onnx" else bundle / ONNX_FILE
        metadata = onnx_metadata(onnx_path)
    try:
        level = float(metadata[KEY_PIXEL_THRESHOLD])
    except (KeyError, ValueError):
        return 1.0, PIXEL_LEVEL_FALLBACK
    if not math.isfinite(level):
        return 1.0, PIXEL_LEVEL_FALLBACK
    remap = remap_for(model, metadata)
    return (float(remap(np.float32(level))) if remap is not None else level), "the graph's algan.pixel_threshold"
