"""ONNX export of the whole detector and parity checks against torch (DESIGN.md "Exported graph").

Graph contract: input ``images`` uint8 [N, H, W, 3] (BGR, NHWC, N dynamic, H and W static) -> output ``scores``
float32 [N], calibrated so 1.0 = alarm threshold. Colour conversion, normalisation, backbone, feature transform,
head and calibration are all inside the graph; resizing/cropping stays on the host.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from algan import __version__

INPUT_NAME = "images"
OUTPUT_NAME = "scores"
DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """An export that failed (tracing, checker, parity)."""


def export_onnx(detector, manifest: dict, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace ``detector`` to ONNX, add metadata, check it with ``onnx.checker`` and write it atomically.

    Args:
        detector: :class:`algan.model.detector.AnomalyDetector` (eval mode).
        manifest: the bundle manifest (model id, threshold, input size go into metadata_props).
        path: output ``.onnx`` file.
        opset: ONNX opset (>= 17).

    Raises:
        ExportError: tracing or checking failed.
    """
    import onnx
    import torch

    if opset < 17:
        raise ExportError(f"opset {opset} is too old; use 17 or newer")
    path = Path(path)
    h, w = detector.input_size
    dummy = torch.zeros((2, h, w, 3), dtype=torch.uint8)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                detector.eval(),
                (dummy,),
                tmp,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={INPUT_NAME: {0: "N"}, OUTPUT_NAME: {0: "N"}},
                opset_version=opset,
                do_constant_folding=True,
            )
        model = onnx.load(tmp)
        meta = {
            "algan.model_id": manifest.get("model_id", ""),
            "algan.version": __version__,
            "algan.input_height": str(h),
            "algan.input_width": str(w),
            "algan.colour_order": "BGR",
            "algan.threshold": "1.0",
            "algan.head": manifest.get("head", {}).get("kind", ""),
        }
        del model.metadata_props[:]
        for k, v in meta.items():
            model.metadata_props.add(key=k, value=v)
        model.producer_name = "algan-edge"
        model.producer_version = __version__
        onnx.checker.check_model(model)
        onnx.save(model, tmp)
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def ort_scores(onnx_path: str | Path, images: np.ndarray, batch_size: int = 16, threads: int = 0) -> np.ndarray:
    """Scores of uint8 (N, H, W, 3) images with ONNX Runtime on the CPU, float32 (N,)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    out = [sess.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0] for i in range(0, len(images),
                                                                                               batch_size)]
    return np.concatenate(out).astype(np.float32)


def torch_scores(detector, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Scores of the torch detector for uint8 (N, H, W, 3) images, float32 (N,)."""
    from algan.model.detector import run_batched

    return run_batched(detector, images, batch_size)


def parity(detector, onnx_path: str | Path, images: np.ndarray) -> dict:
    """Compare ONNX Runtime with torch on the same images.

    Returns:
        ``{"n_images", "max_abs_diff", "torch", "onnx"}`` (scores on the calibrated scale).
    """
    if len(images) == 0:
        raise ExportError("no images for the parity check; pass --images DIR or re-train to store samples")
    t = torch_scores(detector, images)
    o = ort_scores(onnx_path, images)
    return {"n_images": int(len(images)), "max_abs_diff": float(np.max(np.abs(t - o))), "torch": t, "onnx": o}
