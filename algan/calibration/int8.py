"""The INT8 calibration set: a seeded, representative sample of normal frames for TensorRT INT8 quantisation.

Contract with ``algan-export`` (TensorRT INT8 path): ``MODEL_DIR/int8_calibration.safetensors`` holds one tensor
``images``, uint8 (N, H, W, 3), BGR, already prepared by :func:`algan.runtime.preprocess.prepare_frame` at the
bundle's input size (exactly what the exported graph takes); metadata (strings): ``n``, ``seed``, ``source``,
``model_id``, ``created``. Frames are normal images only (held-out calibration frames, never training images).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from algan.contract import IMAGES_KEY, INT8_SET_FILE

#: default number of frames in the INT8 set (TensorRT's entropy calibrator needs a few hundred)
DEFAULT_SIZE = 256


def select_indices(n: int, size: int = DEFAULT_SIZE, seed: int = 0) -> list[int]:
    """Seeded sample (without replacement, sorted) of ``min(size, n)`` positions out of ``n``."""
    if size < 1:
        raise ValueError(f"INT8 calibration set size must be >= 1, got {size}")
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n, min(size, n), replace=False).tolist())


def int8_set_bytes(images: np.ndarray, metadata: dict[str, str]) -> bytes:
    """Serialise the set (uint8 (N, H, W, 3)) as safetensors bytes (written atomically by the caller)."""
    from safetensors.numpy import save

    images = np.ascontiguousarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or len(images) == 0:
        raise ValueError(f"INT8 calibration images must be uint8 (N>0, H, W, 3), got {images.dtype} {images.shape}")
    return save({IMAGES_KEY: images}, metadata={k: str(v) for k, v in metadata.items()})


def load_int8_set(model_dir: str | Path) -> np.ndarray | None:
    """The bundle's INT8 calibration frames, uint8 (N, H, W, 3) BGR, or None when absent."""
    path = Path(model_dir) / INT8_SET_FILE
    if not path.is_file():
        return None
    from safetensors.numpy import load_file

    return load_file(str(path))[IMAGES_KEY]
