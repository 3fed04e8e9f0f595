"""ONNX Runtime runner: CPU, or the CUDA / TensorRT execution providers when this onnxruntime build has them."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from algan.contract import INPUT_NAME, KEY_MAP_SIZE, KEY_MODEL_ID, MAPS_OUTPUT_NAME, OUTPUT_NAME, file_sha256
from algan.runtime.errors import ModelError
from algan.runtime.runners.base import (
    RunnerOutput,
    check_contract,
    map_output_size,
    parse_map_size,
    resolve_model_path,
)
from algan.runtime.runners.calibration import remap_for
from algan.runtime.runners.settings import ORT_PROVIDERS

log = logging.getLogger(__name__)


def choose_providers(
    wanted: list[str], available: list[str], device: int = 0, fp16: bool = True
) -> list[str | tuple[str, dict]]:
    """ONNX Runtime provider list for the config's short names, keeping only those this build has.

    Args:
        wanted: short names in order of preference (``tensorrt``, ``cuda``, ``cpu``).
        available: ``onnxruntime.get_available_providers()``.
        device: CUDA device index for the GPU providers.
        fp16: let the TensorRT provider build FP16 engines.

    Returns:
        Providers (name or ``(name, options)``) for ``InferenceSession``; always ends with the CPU provider.
    """
    out: list[str | tuple[str, dict]] = []
    for short in wanted:
        name = ORT_PROVIDERS[short]
        if name not in available:
            log.warning("ONNX Runtime provider %s is not in this onnxruntime build (has %s); skipping it "
                        "(install onnxruntime-gpu for cuda/tensorrt)", short, ", ".join(available))
            continue
        if short == "tensorrt":
            out.append((name, {"device_id": device, "trt_fp16_enable": fp16}))
        elif short == "cuda":
            out.append((name, {"device_id": device}))
        else:
            out.append(name)
    if ORT_PROVIDERS["cpu"] not in [p if isinstance(p, str) else p[0] for p in out]:
        out.append(ORT_PROVIDERS["cpu"])
    return out


class OnnxRuntimeRunner:
    """ONNX Runtime runner for score-only graphs and for graphs with the ``anomaly_maps`` output.

    ``runner(images)`` returns the scores only (the maps are not fetched); ``runner.run(images)`` returns
    :class:`~algan.runtime.runners.base.RunnerOutput` with the maps (``None`` for a score-only graph). The export-time
    calibration re-map applies to both.

    Args:
        model: bundle directory or ``.onnx`` file.
        threads: intra-op threads; 0 lets ONNX Runtime choose.
        providers: short provider names in order of preference (``tensorrt``, ``cuda``, ``cpu``).
        device: CUDA device index for GPU providers.
        fp16: FP16 engines in the TensorRT provider.

    Raises:
        ModelError: unreadable file, graph not matching the contract, or a graph that fails on a warm-up batch.
    """

    def __init__(
        self,
        model: Path,
        threads: int = 0,
        providers: list[str] | None = None,
        device: int = 0,
        fp16: bool = True,
    ) -> None:
        import onnxruntime as ort

        path = resolve_model_path(Path(model))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # no busy-waiting between runs: the camera readers decode and resize on the same cores, and a spinning
        # intra-op pool steals their CPU (measured 2x slower end to end on a loaded 2-core box)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        chosen = choose_providers(providers or ["cpu"], ort.get_available_providers(), device, fp16)
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=chosen)
        except Exception as e:  # ORT raises several pybind exception types for bad files
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            msg = f"cannot load model {path}: {reason[:300]}; is it an ONNX file from algan-export?"
            raise ModelError(msg) from None
        outputs = self._session.get_outputs()
        self._size = check_contract(path, self._session.get_inputs(), outputs)
        self._map_size = map_output_size(outputs)
        meta = self._session.get_modelmeta().custom_metadata_map or {}
        self._model_id = meta.get(KEY_MODEL_ID) or file_sha256(path)[:12]
        self._remap = remap_for(Path(model), meta)
        if self._map_size == (0, 0):  # symbolic h, w in the graph: the metadata's, else the warm-up run's
            self._map_size = parse_map_size(meta.get(KEY_MAP_SIZE)) or (0, 0)
        self.providers = self._session.get_providers()
        self.path = path
        log.info("ONNX Runtime providers: %s", ", ".join(self.providers))
        self._warmup()

    def _warmup(self) -> None:
        """Run one black frame: the first ORT run allocates buffers (slow), and a broken graph fails here, at
        start-up, with a clear message instead of on the first camera frame."""
        h, w = self._size
        try:
            out = self(np.zeros((1, h, w, 3), dtype=np.uint8))
        except (RuntimeError, ValueError, MemoryError) as e:
            raise ModelError(f"model {self.path} fails on a test batch: {str(e)[:300]}; re-export it") from None
        if out.shape != (1,):
            raise ModelError(f"model {self.path} returned scores of shape {out.shape} for 1 image; expected (1,)")
        if self._map_size is not None:
            try:
                if self._map_size == (0, 0):
                    (got,) = self._session.run([MAPS_OUTPUT_NAME], {INPUT_NAME: np.zeros((1, h, w, 3), dtype=np.uint8)})
                    self._map_size = (int(got.shape[1]), int(got.shape[2]))
                maps = self.run(np.zeros((1, h, w, 3), dtype=np.uint8)).maps
            except (RuntimeError, ValueError, MemoryError) as e:
                raise ModelError(f"model {self.path} fails on a test batch: {str(e)[:300]}; re-export it") from None
            assert maps is not None

    @property
    def has_maps(self) -> bool:
        """True when the graph has the ``anomaly_maps`` output."""
        return self._map_size is not None

    @property
    def map_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the anomaly maps in cells, or ``None`` for a score-only graph."""
        return self._map_size

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    @property
    def backend(self) -> str:
        short = {v: k for k, v in ORT_PROVIDERS.items()}.get(self.providers[0], self.providers[0])
        return "onnxruntime" if short == "cpu" else f"onnxruntime:{short}"

    @property
    def model_id(self) -> str:
        return self._model_id

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Score a batch.

        Args:
            images: uint8 BGR, shape (N, H, W, 3) with (H, W) = :attr:`input_size`.

        Returns:
            float32 scores, shape (N,).

        Raises:
            ValueError: wrong dtype or shape.
            RuntimeError: ONNX Runtime failed, or the graph returned a wrong shape.
        """
        return self._infer(images, maps=False).scores

    def run(self, images: np.ndarray) -> RunnerOutput:
        """Scores and anomaly maps of a batch.

        Args:
            images: uint8 BGR, shape (N, H, W, 3) with (H, W) = :attr:`input_size`.

        Returns:
            ``RunnerOutput(scores float32 (N,), maps float32 (N, h, w) or None)``, both calibrated (re-mapped).

        Raises:
            ValueError: wrong dtype or shape.
            RuntimeError: ONNX Runtime failed, or the graph returned a wrong shape.
        """
        return self._infer(images, maps=self._map_size is not None)

    def _infer(self, images: np.ndarray, maps: bool) -> RunnerOutput:
        h, w = self._size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"expected uint8 images of shape (N, {h}, {w}, 3), got {images.dtype} {images.shape}")
        names = [OUTPUT_NAME, MAPS_OUTPUT_NAME] if maps else [OUTPUT_NAME]
        try:
            got = self._session.run(names, {INPUT_NAME: np.ascontiguousarray(images)})
        except Exception as e:
            raise RuntimeError(f"ONNX Runtime failed: {e}") from e
        n = images.shape[0]
        scores = np.asarray(got[0], dtype=np.float32)
        if scores.shape != (n,):
            raise RuntimeError(f"model returned scores of shape {scores.shape} for {n} images")
        out_maps = None
        if maps:
            out_maps = np.asarray(got[1], dtype=np.float32)
            want = (n, *(self._map_size or ()))
            if out_maps.shape != want:
                raise RuntimeError(f"model returned anomaly maps of shape {out_maps.shape} for {n} images; expected "
                                   f"{want}")
        if self._remap is not None:
            scores = self._remap(scores)
            out_maps = self._remap(out_maps) if out_maps is not None else None
        return RunnerOutput(scores, out_maps)

    def close(self) -> None:
        """Nothing to release explicitly (the session is freed with the object)."""
