"""What algan-calibrate stores in a bundle, written all-or-nothing.

* ``calibration_scores.safetensors``: tensor ``scores`` float32 (<= 1000,) sorted raw scores of the calibration
  normals (or their quantiles, :func:`algan.calibration.drift.reference_scores`), the drift-check reference;
  metadata ``center``, ``threshold`` (raw, as ``repr`` of floats), ``n_images``, ``model_id``.
* ``int8_calibration.safetensors``: see :mod:`algan.calibration.int8`.
* ``weights.safetensors`` / ``algan.json`` calibration (and the ``roi`` it was computed on): via
  :func:`algan.bundle.update_calibration`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from algan.bundle import update_calibration
from algan.contract import CALIBRATION_SCORES_FILE, SCORES_KEY, Manifest


def reference_bytes(scores: np.ndarray, center: float, threshold: float, n_images: int, model_id: str) -> bytes:
    """Serialise the drift reference (float32 scores) with the calibration it belongs to."""
    from safetensors.numpy import save

    meta = {"center": repr(float(center)), "threshold": repr(float(threshold)), "n_images": str(int(n_images)),
            "model_id": model_id}
    return save({SCORES_KEY: np.ascontiguousarray(scores, dtype=np.float32)}, metadata=meta)


def load_reference(model_dir: str | Path, manifest: Manifest) -> np.ndarray:
    """The stored drift reference scores (float64), checked against the bundle's current calibration.

    Raises:
        ValueError: no reference (never calibrated with algan-calibrate) or one from another calibration.
    """
    from safetensors import safe_open

    path = Path(model_dir) / CALIBRATION_SCORES_FILE
    if not path.is_file():
        raise ValueError(f"{path} is missing: the bundle was not calibrated with algan-calibrate; run "
                         f"algan-calibrate {model_dir} --data NORMALS first")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            scores = f.get_tensor(SCORES_KEY).astype(np.float64)
        stored_thr = float(meta["threshold"])
    except Exception as exc:  # corrupt file, missing tensor or metadata
        raise ValueError(f"cannot read {path} ({exc}); re-run algan-calibrate") from exc
    threshold = manifest.calibration.threshold
    if not np.isclose(stored_thr, threshold, rtol=1e-6, atol=1e-9):
        msg = (f"{path} belongs to another calibration (threshold {stored_thr:.6g}, the bundle has "
               f"{threshold}): the bundle was changed after algan-calibrate; re-run algan-calibrate")
        raise ValueError(msg)
    return scores


def commit(model_dir: str | Path, center: float, threshold: float, info: dict,
           files: dict[Path, bytes], roi: Sequence[int] | None | Literal["keep"] = "keep") -> Manifest:
    """Write the calibration and its side files so that a failure leaves the bundle as it was.

    Every file is first written to a temporary name next to its target; then the calibration (weights, then
    manifest, with ``roi`` as in :func:`algan.bundle.update_calibration`) is updated, and only then are the files
    renamed into place.

    Returns:
        the updated manifest.
    """
    tmps: dict[Path, str] = {}
    try:
        for target, data in files.items():
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
            tmps[target] = tmp
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        manifest = update_calibration(model_dir, center, threshold, info, roi)
        for target, tmp in tmps.items():
            os.replace(tmp, target)
    finally:
        for tmp in tmps.values():
            Path(tmp).unlink(missing_ok=True)
    return manifest

