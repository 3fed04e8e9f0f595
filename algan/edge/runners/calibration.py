"""Re-calibration of exported scores at run time, so a new threshold needs no re-export.

The exported graph outputs calibrated scores ``score = (raw - center) / scale`` (1.0 = alarm threshold) with the
calibration of export time, recorded in the ONNX ``metadata_props`` as ``algan.calibration_center`` and
``algan.calibration_scale``. When the bundle was re-calibrated afterwards (``algan.json`` ``calibration``
``{center, threshold}``, scale = threshold - center), the runner maps each score to the new calibration with the
pure affine :func:`recalibrate`. The same constants re-map a patch head's ``anomaly_maps`` output (the maps share
the scores' calibrated scale, see :mod:`algan.edge.runners.base`). Missing metadata means no re-mapping.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from algan.contract import KEY_CAL_CENTER, KEY_CAL_SCALE, KEY_PIXEL_THRESHOLD, MANIFEST_FILE, ONNX_FILE

log = logging.getLogger("algan.edge.calibration")  # the name in log lines, as before the regroup


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
        cal = json.loads(path.read_text(encoding="utf-8"))["calibration"]
        center, threshold = float(cal["center"]), float(cal["threshold"])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("cannot read the calibration of %s; scores are used as exported", path)
        return None
    if not (math.isfinite(center) and math.isfinite(threshold) and threshold > center):
        return None
    return center, threshold - center


def onnx_metadata(path: Path) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX file (with the ``onnx`` package if installed, else ONNX Runtime); ``{}``
    when the file is missing or unreadable."""
    if not path.is_file():
        return {}
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
        return {p.key: p.value for p in model.metadata_props}
    except ImportError:
        pass
    except Exception as e:  # a broken file: no re-mapping rather than no daemon
        log.warning("cannot read the metadata of %s (%s); scores are used as exported", path, e)
        return {}
    try:
        import onnxruntime as ort

        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return dict(sess.get_modelmeta().custom_metadata_map or {})
    except Exception as e:
        log.warning("cannot read the metadata of %s (%s); scores are used as exported", path, e)
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
            cal = json.loads(path.read_text(encoding="utf-8"))["calibration"]
            center, threshold = float(cal["center"]), float(cal["threshold"])
            pt = cal.get("pixel_threshold")
            if pt is not None and math.isfinite(float(pt)) and threshold > center:
                return (float(pt) - center) / (threshold - center), f"the pixel threshold of {path}"
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            log.warning("cannot read the calibration of %s; looking for a pixel threshold in the graph", path)
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
