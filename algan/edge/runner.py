"""Model runners: the edge side of the exported-graph contract.

Contract (see DESIGN.md, "Exported graph"): one input ``images`` uint8 ``[N, H, W, 3]`` (BGR, N dynamic, H and W
static), one output ``scores`` float32 ``[N]``, calibrated so that 1.0 is the alarm threshold and higher is more
anomalous. ``metadata_props`` may carry ``algan.model_id``.

Backends are imported lazily, so this module needs only numpy (never torch).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from algan.edge.config import EdgeConfig
from algan.edge.errors import ModelError

log = logging.getLogger(__name__)

INPUT_NAME = "images"
OUTPUT_NAME = "scores"
MODEL_FILE = "model.onnx"
MODEL_ID_KEY = "algan.model_id"


@runtime_checkable
class Runner(Protocol):
    """Scores batches of prepared frames."""

    @property
    def input_size(self) -> tuple[int, int]:
        """Model input ``(height, width)`` in pixels."""

    @property
    def backend(self) -> str:
        """Backend name, e.g. ``onnxruntime``."""

    @property
    def model_id(self) -> str:
        """Model identifier used in messages."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Score a batch: uint8 BGR ``(N, H, W, 3)`` -> float32 ``(N,)`` calibrated scores."""


def resolve_model_path(model: Path) -> Path:
    """Return the ONNX file for ``model`` (a bundle directory holding ``model.onnx``, or the file itself).

    Raises:
        ModelError: when no such file exists.
    """
    if model.is_dir():
        path = model / MODEL_FILE
        if not path.is_file():
            msg = f"model bundle {model} has no {MODEL_FILE}; export it first (algan-export {model})"
            raise ModelError(msg)
        return path
    if not model.is_file():
        raise ModelError(f"model {model} does not exist; set 'model' to a bundle directory or a .onnx file")
    return model


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _check_contract(path: Path, inputs: list, outputs: list) -> tuple[int, int]:
    """Check ORT NodeArg lists against the contract; return (H, W)."""

    def bad(what: str) -> ModelError:
        return ModelError(
            f"model {path} does not match the edge contract ({what}); expected input 'images' uint8 [N,H,W,3] "
            "and output 'scores' float32 [N]: re-export it with algan-export"
        )

    if len(inputs) != 1 or inputs[0].name != INPUT_NAME:
        raise bad(f"inputs are {[i.name for i in inputs]}")
    inp = inputs[0]
    if inp.type != "tensor(uint8)":
        raise bad(f"input 'images' is {inp.type}")
    shape = list(inp.shape)
    if len(shape) != 4 or shape[3] != 3:
        raise bad(f"input 'images' has shape {shape}")
    if isinstance(shape[0], int):
        raise bad(f"input 'images' has a fixed batch size {shape[0]} instead of a dynamic N")
    h, w = shape[1], shape[2]
    if not (isinstance(h, int) and isinstance(w, int) and h > 0 and w > 0):
        raise bad(f"input 'images' has non-static height/width {shape[1:3]}")
    if len(outputs) != 1 or outputs[0].name != OUTPUT_NAME:
        raise bad(f"outputs are {[o.name for o in outputs]}")
    out = outputs[0]
    if out.type != "tensor(float)" or len(out.shape) != 1:
        raise bad(f"output 'scores' is {out.type} with shape {list(out.shape)}")
    return h, w


class OnnxRuntimeRunner:
    """ONNX Runtime (CPU provider) runner.

    Args:
        model: bundle directory or ``.onnx`` file.
        threads: intra-op threads; 0 lets ONNX Runtime choose.

    Raises:
        ModelError: unreadable file, graph not matching the contract, or a graph that fails on a warm-up batch.
    """

    def __init__(self, model: Path, threads: int = 0) -> None:
        import onnxruntime as ort

        path = resolve_model_path(Path(model))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self._session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises several pybind exception types for bad files
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            msg = f"cannot load model {path}: {reason[:300]}; is it an ONNX file from algan-export?"
            raise ModelError(msg) from None
        self._size = _check_contract(path, self._session.get_inputs(), self._session.get_outputs())
        meta = self._session.get_modelmeta().custom_metadata_map or {}
        self._model_id = meta.get(MODEL_ID_KEY) or file_sha256(path)[:12]
        self.path = path
        self._warmup()

    def _warmup(self) -> None:
        """Run one black frame: the first ORT run allocates buffers (slow), and a broken graph fails here, at
        start-up, with a clear message instead of on the first camera frame."""
        h, w = self._size
        try:
            out = self(np.zeros((1, h, w, 3), dtype=np.uint8))
        except (RuntimeError, ValueError) as e:
            raise ModelError(f"model {self.path} fails on a test batch: {str(e)[:300]}; re-export it") from None
        if out.shape != (1,):
            raise ModelError(f"model {self.path} returned scores of shape {out.shape} for 1 image; expected (1,)")

    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    @property
    def backend(self) -> str:
        return "onnxruntime"

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
        h, w = self._size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"expected uint8 images of shape (N, {h}, {w}, 3), got {images.dtype} {images.shape}")
        try:
            (scores,) = self._session.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(images)})
        except Exception as e:
            raise RuntimeError(f"ONNX Runtime failed: {e}") from e
        scores = np.asarray(scores, dtype=np.float32)
        if scores.shape != (images.shape[0],):
            raise RuntimeError(f"model returned scores of shape {scores.shape} for {images.shape[0]} images")
        return scores


def load_runner(config: EdgeConfig) -> Runner:
    """Build the runner chosen by ``config.runner.backend`` for ``config.model``.

    Raises:
        ModelError: model problems, or a backend not available in this build.
    """
    backend = config.runner.backend
    if backend == "onnxruntime":
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            raise ModelError("backend 'onnxruntime' needs the onnxruntime package: pip install onnxruntime") from None
        return OnnxRuntimeRunner(config.model, threads=config.runner.threads)
    if backend == "tensorrt":
        raise ModelError(
            "runner backend 'tensorrt' is not available in this build yet; set runner.backend: onnxruntime"
        )
    raise ModelError(f"unknown runner backend {backend!r}; use 'onnxruntime'")
