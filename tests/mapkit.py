"""Anomaly-map test helpers (a plain module, imported as ``mapkit``): a stand-in two-output ONNX graph built with
onnx.helper (no torch) and a bundle directory around it.

The stand-in follows the anomaly-map contract of HELPERS.md: ``anomaly_maps[n, i, j]`` = mean over the cell's pixels
of ``|gray - 128| / 64`` (a mid-grey frame is 0, a white or black cell about 2), ``scores[n]`` = the map's max.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

GREY = 128


def make_map_model(path: Path, size: tuple[int, int] = (64, 64), cells: tuple[int, int] = (16, 16),
                   maps: bool = True, model_id: str = "maps-1", center: float | None = 0.0,
                   scale: float | None = 1.0, pixel_threshold: float | None = None) -> Path:
    """Write the stand-in graph: ``images`` uint8 [N,H,W,3] -> ``scores`` [N] (+ ``anomaly_maps`` [N,h,w]).

    Args:
        path: the ``.onnx`` file.
        size: static input (H, W); must be a multiple of ``cells``.
        cells: map size (h, w).
        maps: False = a score-only graph (same scores).
        model_id, center, scale: metadata (``algan.model_id``, export-time calibration; ``None`` = absent).
        pixel_threshold: ``algan.pixel_threshold`` metadata (the graph's calibrated map units), ``None`` = absent.
    """
    import onnx
    from onnx import TensorProto, helper

    h, w = size
    mh, mw = cells
    kh, kw = h // mh, w // mw
    inp = helper.make_tensor_value_info("images", TensorProto.UINT8, ["N", h, w, 3])
    outs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])]
    if maps:
        outs.append(helper.make_tensor_value_info("anomaly_maps", TensorProto.FLOAT, ["N", mh, mw]))
    nodes = [
        helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["g"], axes=[3], keepdims=1),  # N,H,W,1
        helper.make_node("Sub", ["g", "c128"], ["d"]),
        helper.make_node("Abs", ["d"], ["a"]),
        helper.make_node("Div", ["a", "c64"], ["u"]),
        helper.make_node("Transpose", ["u"], ["t"], perm=[0, 3, 1, 2]),  # N,1,H,W
        helper.make_node("AveragePool", ["t"], ["p"], kernel_shape=[kh, kw], strides=[kh, kw]),  # N,1,h,w
        helper.make_node("Squeeze", ["p", "ax1"], ["m"]),  # N,h,w
        helper.make_node("ReduceMax", ["m"], ["scores"], axes=[1, 2], keepdims=0),
    ]
    if maps:
        nodes.append(helper.make_node("Identity", ["m"], ["anomaly_maps"]))
    init = [helper.make_tensor("c128", TensorProto.FLOAT, [], [128.0]),
            helper.make_tensor("c64", TensorProto.FLOAT, [], [64.0]),
            helper.make_tensor("ax1", TensorProto.INT64, [1], [1])]
    graph = helper.make_graph(nodes, "maps-standin", [inp], outs, initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    meta = {"algan.model_id": model_id, "algan.outputs": "scores,anomaly_maps" if maps else "scores"}
    if maps:
        meta["algan.map_size"] = f"{mh},{mw}"
    if center is not None and scale is not None:
        meta.update({"algan.calibration_center": repr(float(center)), "algan.calibration_scale": repr(float(scale))})
    if pixel_threshold is not None:
        meta["algan.pixel_threshold"] = repr(float(pixel_threshold))
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_map_bundle(directory: Path, size: tuple[int, int] = (64, 64), cells: tuple[int, int] = (16, 16),
                    maps: bool = True, roi: list[int] | None = None, center: float = 0.0,
                    threshold: float = 1.0, pixel_threshold: float | None = None,
                    graph_pixel_threshold: float | None = None) -> Path:
    """A bundle directory (``algan.json``, ``model.onnx``, a token ``weights.safetensors``) around
    :func:`make_map_model`; the manifest's
    calibration ``{center, threshold}`` re-maps the graph's (0, 1) export calibration when it differs;
    ``pixel_threshold`` (raw) goes into the manifest's calibration, ``graph_pixel_threshold`` into the graph's
    metadata (both absent by default: a bundle from before pixel thresholds)."""
    import hashlib

    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    make_map_model(directory / "model.onnx", size, cells, maps, pixel_threshold=graph_pixel_threshold)
    save_file({"head.w": np.arange(4, dtype=np.float32)}, str(directory / "weights.safetensors"))
    manifest = {
        "format_version": 1, "model_id": "maps-1", "variant": "patch",
        "input": {"height": size[0], "width": size[1], "layout": "NHWC", "dtype": "uint8", "colour_order": "BGR"},
        "head": {"kind": "standin"},
        "calibration": {"center": center, "threshold": threshold,
                        **({"pixel_threshold": pixel_threshold} if pixel_threshold is not None else {})},
        "outputs": ["scores", "anomaly_maps"] if maps else ["scores"],
        "roi": roi,
        "exports": {"onnx": {"file": "model.onnx",
                             "sha256": hashlib.sha256((directory / "model.onnx").read_bytes()).hexdigest()}},
    }
    if maps:
        manifest["anomaly_map"] = {"height": cells[0], "width": cells[1], "reduction": "max"}
    (directory / "algan.json").write_text(json.dumps(manifest, indent=2))
    return directory


def grey_frame(shape: tuple[int, int] = (120, 160), spot: tuple[int, int, int, int] | None = None,
               value: int = 255) -> np.ndarray:
    """A mid-grey BGR frame with an optional ``(x, y, w, h)`` spot of ``value``."""
    img = np.full((*shape, 3), GREY, np.uint8)
    if spot is not None:
        x, y, w, h = spot
        img[y : y + h, x : x + w] = value
    return img


def write_frames(folder: Path, frames: list[np.ndarray], prefix: str = "f") -> list[Path]:
    """PNG files ``<prefix>000.png`` ... (lossless)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, f in enumerate(frames):
        p = folder / f"{prefix}{i:03d}.png"
        cv2.imwrite(str(p), f)
        paths.append(p)
    return paths
