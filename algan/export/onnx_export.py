"""ONNX export of the whole detector (graph names and metadata keys: :mod:`algan.contract`).

Graph contract: input ``images`` uint8 [N, H, W, 3] (BGR, NHWC, N dynamic, H and W static) -> output ``scores``
float32 [N], calibrated so 1.0 = alarm threshold. Colour conversion, normalisation, backbone, feature transform,
head and calibration are all inside the graph; resizing/cropping stays on the host. The opset and the dynamic axis
are set here, in one place; the I/O contract goes into ``metadata_props``
(:mod:`algan.contract.metadata`).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np

from algan import __version__
from algan.contract import INPUT_NAME, MAPS_OUTPUT_NAME, OUTPUT_NAME, Manifest, graph_metadata, set_metadata

log = logging.getLogger(__name__)

DEFAULT_OPSET = 17
MIN_OPSET = 17

__all__ = ["DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME", "ExportError", "export_onnx", "ort_outputs",
           "ort_scores", "simplify_onnx", "torch_outputs", "torch_scores"]


class ExportError(RuntimeError):
    """An export that failed (tracing, checker, parity, engine build); the message says what and how to fix."""


def export_onnx(detector, manifest: Manifest, path: str | Path, opset: int = DEFAULT_OPSET) -> Path:
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
    from algan.model.detector import ScoresAndMaps

    path = Path(path)
    h, w = detector.input_size
    dummy = torch.zeros((2, h, w, 3), dtype=torch.uint8)
    has_maps = detector.has_maps
    module = ScoresAndMaps(detector) if has_maps else detector
    outputs = [OUTPUT_NAME, MAPS_OUTPUT_NAME] if has_maps else [OUTPUT_NAME]
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # The TorchScript exporter (dynamo=False), on purpose, although torch marks it deprecated. Measured with
            # torch 2.13 (Session 11, feature/mahalanobis and patch/padim bundles at 64x64): the dynamo exporter
            # keeps FP32 parity (6.6e-06 and 1.1e-05 max |diff| against torch, bar 1e-4) but (1) it needs onnxscript,
            # which is not a dependency, (2) it writes opset 18, and (3) its node names are not the torch module
            # scopes ("/backbone/blocks.3/...") that the FP16 ladder (algan.export.fp16.fp32_scopes) keeps in
            # float32, so model.fp16.onnx would lose its parity fallback; TensorRT op support of its graph is not
            # checked either. tests/export/test_export_pipeline.py::test_exporter_keeps_the_scopes_the_fp16_ladder_needs
            # fails when the exporter changes without the ladder.
            torch.onnx.export(
                module.eval(),
                (dummy,),
                tmp,
                dynamo=False,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes={name: {0: "N"} for name in [INPUT_NAME, *outputs]},
                opset_version=opset,
                do_constant_folding=True,
            )
        model = onnx.load(tmp)
        if has_maps:  # the map size is static (the contract); the tracer leaves it symbolic
            dims = model.graph.output[1].type.tensor_type.shape.dim
            for dim, value in zip(dims[1:], detector.map_size, strict=True):
                dim.Clear()
                dim.dim_value = int(value)
        cal = detector.calibration
        set_metadata(model, graph_metadata(manifest, (h, w), float(cal.center), float(cal.scale), opset,
                                           map_size=detector.map_size if has_maps else None,
                                           pixel_threshold=manifest.calibration.pixel_threshold, version=__version__))
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


def ort_outputs(onnx_path: str | Path, images: np.ndarray, batch_size: int = 16,
                threads: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """Scores and, for a graph with the ``anomaly_maps`` output, maps of ONNX Runtime on the CPU.

    Args:
        onnx_path: graph with the ``images`` -> ``scores`` [, ``anomaly_maps``] contract.
        images: uint8 BGR (N, H, W, 3).
        batch_size: images per run.
        threads: intra-op threads, 0 = ONNX Runtime's choice.

    Returns:
        ``(scores float32 (N,), maps float32 (N, h, w) or None)``.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    wanted = [OUTPUT_NAME, MAPS_OUTPUT_NAME] if MAPS_OUTPUT_NAME in names else [OUTPUT_NAME]
    runs = [sess.run(wanted, {INPUT_NAME: images[i : i + batch_size]}) for i in range(0, len(images), batch_size)]
    scores = np.concatenate([r[0] for r in runs]).astype(np.float32) if runs else np.zeros((0,), np.float32)
    maps = np.concatenate([r[1] for r in runs]).astype(np.float32) if runs and len(wanted) == 2 else None
    return scores, maps


def ort_scores(onnx_path: str | Path, images: np.ndarray, batch_size: int = 16, threads: int = 0) -> np.ndarray:
    """Scores of ONNX Runtime on the CPU, float32 (N,) (see :func:`ort_outputs`)."""
    return ort_outputs(onnx_path, images, batch_size, threads)[0]


def torch_outputs(detector, images: np.ndarray, batch_size: int = 16) -> tuple[np.ndarray, np.ndarray | None]:
    """Calibrated scores float32 (N,) and maps float32 (N, h, w) (``None`` for image heads) of the torch
    detector for uint8 BGR (N, H, W, 3) images."""
    import torch

    from algan.model.detector import run_batched

    if not detector.has_maps:
        return run_batched(detector, images, batch_size), None
    scores, maps = [], []
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            s, m = detector.score_and_maps(torch.from_numpy(images[i : i + batch_size]))
            scores.append(s.float().numpy())
            maps.append(m.float().numpy())
    if not scores:
        h, w = detector.map_size
        return np.zeros((0,), np.float32), np.zeros((0, h, w), np.float32)
    return np.concatenate(scores), np.concatenate(maps)


def torch_scores(detector, images: np.ndarray, batch_size: int = 16) -> np.ndarray:
    """Scores of the torch detector for uint8 BGR (N, H, W, 3) images, float32 (N,)."""
    return torch_outputs(detector, images, batch_size)[0]
