"""torch runner: the model bundle on a CUDA GPU in FP16 autocast, for x86 GPU boxes without TensorRT.

The one runner backend that needs torch, so it lives here, outside the torch-free ``algan.edge``: importing this
module imports no torch (torch and the bundle loader are imported in :class:`TorchRunner`'s constructor), and the
daemon imports the module by name only when ``runner.backend: torch`` is chosen. The bundle's detector applies its
own (current) calibration, so no re-mapping is needed here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from algan.runtime.errors import ModelError
from algan.runtime.runners.base import RunnerOutput, resolve_model_path

log = logging.getLogger(__name__)


class TorchRunner:
    """Scores batches with the bundle's torch detector on ``cuda:<device>``.

    Args:
        model: bundle directory (``algan.json`` + ``weights.safetensors``).
        device: CUDA device index.
        fp16: run under ``torch.autocast(dtype=float16)``.
        allow_cpu: run on the CPU when CUDA is absent (tests only; the daemon refuses).

    Raises:
        ModelError: no CUDA device, or a bundle that cannot be loaded.
        ImportError: torch is not installed.
    """

    def __init__(self, model: Path, device: int = 0, fp16: bool = True, allow_cpu: bool = False) -> None:
        import torch

        from algan.bundle import BundleError, load_bundle

        self._torch = torch
        path = resolve_model_path(Path(model), "torch")
        if torch.cuda.is_available():
            if device >= torch.cuda.device_count():
                raise ModelError(f"runner.device {device} does not exist ({torch.cuda.device_count()} CUDA devices)")
            self._device = torch.device("cuda", device)
        elif allow_cpu:
            self._device = torch.device("cpu")
        else:
            raise ModelError("backend 'torch' needs a CUDA GPU and a CUDA build of torch; none found here "
                             "(use runner.backend: onnxruntime)")
        try:
            detector, manifest = load_bundle(path)
        except BundleError as e:
            raise ModelError(f"cannot load bundle {path}: {e}") from None
        self._detector = detector.eval().to(self._device)
        self._fp16 = fp16 and self._device.type == "cuda"
        self._size = tuple(int(x) for x in detector.input_size)
        self._has_maps = detector.has_maps
        size = detector.map_size if self._has_maps else None
        self._map_size = (int(size[0]), int(size[1])) if size is not None else None
        self._model_id = str(manifest.model_id or path.name)
        self.path = path
        self._warmup()

    def _warmup(self) -> None:
        """One black frame: CUDA kernels load and autotune on the first call (slow), and a broken bundle fails here."""
        h, w = self._size
        out = self(np.zeros((1, h, w, 3), np.uint8))
        if out.shape != (1,):
            raise ModelError(f"bundle {self.path} returned scores of shape {out.shape} for 1 image; expected (1,)")

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size  # type: ignore[return-value]

    @property
    def backend(self) -> str:
        return "torch"

    @property
    def has_maps(self) -> bool:
        """True when the bundle's head produces anomaly maps (``AnomalyDetector.has_maps``)."""
        return self._has_maps

    @property
    def map_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the anomaly maps in cells, or ``None``."""
        return self._map_size

    @property
    def model_id(self) -> str:
        return self._model_id

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Score a batch: uint8 BGR (N, H, W, 3) -> float32 calibrated scores (N,).

        Raises:
            ValueError: wrong dtype or shape.
            RuntimeError: torch failed (e.g. out of GPU memory).
        """
        return self._infer(images, maps=False).scores

    def run(self, images: np.ndarray) -> RunnerOutput:
        """Scores and maps of a batch: uint8 BGR (N, H, W, 3) -> ``RunnerOutput(scores float32 (N,), maps float32
        (N, h, w) or None)``, calibrated by the bundle's detector (``AnomalyDetector.score_and_maps``).

        Raises:
            ValueError: wrong dtype or shape.
            RuntimeError: torch failed (e.g. out of GPU memory).
        """
        return self._infer(images, maps=self._has_maps)

    def _infer(self, images: np.ndarray, maps: bool) -> RunnerOutput:
        torch = self._torch
        h, w = self._size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"expected uint8 images of shape (N, {h}, {w}, 3), got {images.dtype} {images.shape}")
        x = torch.from_numpy(np.ascontiguousarray(images)).to(self._device, non_blocking=True)
        ctx: Any = (torch.autocast("cuda", dtype=torch.float16) if self._fp16
                    else torch.autocast("cpu", enabled=False))
        with torch.inference_mode(), ctx:
            if maps:
                scores, amaps = self._detector.score_and_maps(x)
            else:
                scores, amaps = self._detector(x), None
        out_maps = amaps.float().cpu().numpy().astype(np.float32) if amaps is not None else None
        return RunnerOutput(scores.float().cpu().numpy().astype(np.float32), out_maps)

    def close(self) -> None:
        """Free the detector's GPU memory."""
        self._detector = None  # type: ignore[assignment]
        if self._device.type == "cuda":
            self._torch.cuda.empty_cache()
