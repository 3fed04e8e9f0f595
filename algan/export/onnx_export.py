"""ONNX export of the whole detector (graph names and metadata keys: :mod:`algan.contract`).

Graph contract: input ``images`` uint8 [N, H, W, 3] (BGR, NHWC, N dynamic, H and W static) -> output ``scores``
float32 [N], calibrated so 1.0 = alarm threshold. Colour conversion, normalisation, backbone, feature transform,
head and calibration are all inside the graph; resizing/cropping stays on the host. The opset and the dynamic axis
are set here, in one place; the I/O contract goes into ``metadata_props``
(:mod:`algan.export.metadata`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from algan import __version__
from algan.contract import INPUT_NAME, OUTPUT_NAME
from algan.export.metadata import graph_metadata, set_metadata

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 17

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "ExportError", "export_onnx", "ort_scores", "simplify_onnx",
           "torch_scores"]


class ExportError(RuntimeError):
    """An export that failed (tracing, checker, parity, engine build); the message says what and how to fix."""


def export_onnx(detector, manifest: dict, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
    """Trace ``detector`` to ONNX, add the I/O contract metadata, check it with ``onnx.checker``, write atomically.

    Args:
        detector: :class:`algan.model.detector.AnomalyDetector` (put in eval mode here); maps uint8 BGR
            (N, H, W, 3) to float32 calibrated scores (N,).
        manifest: the bundle manifest (model id, backbone normalisation, head kind go into ``metadata_props``).
        path: output ``.onnx`` file; written under a temporary name in the same directory and renamed.
        opset: ONNX opset, >= 17.

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        ExportError: opset too old, tracing failed, or the checker rejected the graph.
    """
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; use {MIN_OPSET} or newer (--opset)")
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
        cal = detector.calibration
        set_metadata(model, graph_metadata(manifest, (h, w), float(cal.center), float(cal.scale), opset))
        model.producer_name = "algan-edge"
        model.producer_version = __version__
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, tmp)
        os.chmod(tmp, 0o644)  # mkstemp gives 0600; a bundle is read by the service user
        os.replace(tmp, path)
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"ONNX export failed: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path


def simplify_onnx(src: str | Path, dst: str | Path) -> str | None:
    """Simplify an ONNX graph with onnxslim (or onnx-simplifier) when installed, keeping its metadata.

    The caller must check parity of ``dst`` against torch before using it: a simplifier rewrites the graph and
    may change results.

    Returns:
        the tool used (``"onnxslim x.y"`` / ``"onnxsim x.y"``), or ``None`` when neither is installed (``dst`` is
        then not written).

    Raises:
        ExportError: the simplifier failed or produced a graph the checker rejects.
    """
    import onnx

    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    try:
        import onnxslim

        tool = f"onnxslim {onnxslim.__version__}"
        simplify = onnxslim.slim
    except ImportError:
        try:
            import onnxsim

            tool = f"onnxsim {getattr(onnxsim, '__version__', '?')}"

            def simplify(m):
                out, ok = onnxsim.simplify(m)
                if not ok:
                    raise ExportError("onnx-simplifier could not validate the simplified graph")
                return out
        except ImportError:
            return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = simplify(model)
        set_metadata(out, meta)
        onnx.checker.check_model(out)
        onnx.save(out, str(dst))
    except Exception as exc:
        raise ExportError(f"{tool} failed: {exc}") from exc
    return tool


def ort_scores(onnx_path: str | Path, images: np.ndarray, batch_size: int = 16, threads: int = 0) -> np.ndarray:
    """Scores of ONNX Runtime on the CPU.

    Args:
        onnx_path: graph with the ``images`` -> ``scores`` contract.
        images: uint8 BGR (N, H, W, 3).
        batch_size: images per run.
        threads: intra-op threads, 0 = ONNX Runtime's choice.

    Returns:
        float32 (N,).
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    out = [sess.run([OUTPUT_NAME], {INPUT_NAME: images[i : i + batch_size]})[0]
           for i in range(0, len(images), batch_size)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)


def torch_scores(detector, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Scores of the torch detector for uint8 BGR (N, H, W, 3) images, float32 (N,)."""
    from algan.model.detector import run_batched

    return run_batched(detector, images, batch_size)
