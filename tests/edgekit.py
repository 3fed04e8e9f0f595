"""Edge test helpers (a plain module, imported as ``edgekit``): tiny ONNX models built with onnx.helper (no torch),
synthetic videos and image folders, and subprocess runners for the CLIs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml

DARK = 20  # mean pixel value -> score 20/128 = 0.16
BRIGHT = 230  # -> score 230/128 = 1.80


def make_model(
    path: Path,
    size: tuple[int, int] = (64, 64),
    model_id: str | None = "tiny-1",
    input_name: str = "images",
    output_name: str = "scores",
    input_dtype: int | None = None,
    batch_dim: int | str = "N",
) -> Path:
    """Write a tiny ONNX model: ``scores = mean(float(images), axes=(1,2,3)) / 128`` (bright frames score high).

    Args:
        path: output ``.onnx`` file.
        size: static (H, W).
        model_id: stored as metadata ``algan.model_id`` (None = no metadata).
        input_name, output_name, input_dtype, batch_dim: break the contract on purpose in tests.
    """
    import onnx
    from onnx import TensorProto, helper

    h, w = size
    in_type = TensorProto.UINT8 if input_dtype is None else input_dtype
    inp = helper.make_tensor_value_info(input_name, in_type, [batch_dim, h, w, 3])
    out = helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [batch_dim])
    nodes = [
        helper.make_node("Cast", [input_name], ["f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["f"], ["m"], axes=[1, 2, 3], keepdims=0),
        helper.make_node("Div", ["m", "k"], [output_name]),
    ]
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [128.0])
    graph = helper.make_graph(nodes, "tiny", [inp], [out], initializer=[k])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    if model_id is not None:
        helper.set_model_props(model, {"algan.model_id": model_id})
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def make_bundle(path: Path, model_id: str = "tiny-1", *, onnx: bool = True, **manifest: Any) -> Path:
    """A torch-free model bundle as algan-train + algan-export leave it: ``weights.safetensors`` (one tensor),
    ``model.onnx`` (:func:`make_model`, graph id ``model_id``) and ``algan.json`` with ``format_version`` 1, the
    ``model_id`` and ``exports.onnx.sha256``; ``manifest`` entries are added/overridden."""
    import hashlib
    import json

    from safetensors.numpy import save_file

    path.mkdir(parents=True, exist_ok=True)
    save_file({"head.w": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(path / "weights.safetensors"))
    m: dict[str, Any] = {"format_version": 1, "model_id": model_id,
                         "calibration": {"center": 0.0, "threshold": 1.0}}
    if onnx:
        make_model(path / "model.onnx", model_id=model_id)
        digest = hashlib.sha256((path / "model.onnx").read_bytes()).hexdigest()
        m["exports"] = {"onnx": {"file": "model.onnx", "sha256": digest}}
    m.update(manifest)
    (path / "algan.json").write_text(json.dumps(m, indent=2))
    return path


def make_video(path: Path, levels: Sequence[int], size: int = 64, fps: float = 25.0) -> Path:
    """Write an mp4v video with one uniform grey frame per entry of ``levels`` (pixel values 0-255)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size, size))
    assert writer.isOpened(), "cv2.VideoWriter cannot write mp4v here"
    for v in levels:
        writer.write(np.full((size, size, 3), v, np.uint8))
    writer.release()
    return path


def make_folder(path: Path, levels: Sequence[int], corrupt: Sequence[int] = (), size: int = 32) -> Path:
    """Write ``000.png``, ``001.png``... (uniform grey); indices in ``corrupt`` get garbage bytes instead."""
    path.mkdir(parents=True, exist_ok=True)
    for i, v in enumerate(levels):
        f = path / f"{i:03d}.png"
        if i in corrupt:
            f.write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
        else:
            cv2.imwrite(str(f), np.full((size, size, 3), v, np.uint8))
    return path


def edge_config(model: Path, broker: tuple[str, int], cameras: list[dict[str, Any]], **over: Any) -> dict[str, Any]:
    """A config dict for tests: fast stats, small batches, no embedded broker unless overridden."""
    cfg: dict[str, Any] = {
        "device_id": "line1",
        "model": str(model),
        "runner": {"backend": "onnxruntime", "threads": 1},
        "batch": {"max_size": 4, "max_wait_ms": 10},
        "mqtt": {"host": broker[0], "port": broker[1], "embedded_broker": "never", "connect_timeout_s": 5},
        "alarm": {"threshold": 1.0, "clear_threshold": 0.9, "raise_frames": 3, "clear_frames": 5},
        "stats_interval_s": 60,
        "cameras": cameras,
    }
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@dataclass
class EdgeRun:
    returncode: int
    stdout: str
    stderr: str


def write_config(path: Path, cfg: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_edge(config: Path, timeout: float = 60.0, *extra: str) -> EdgeRun:
    """Run ``algan-edge run --config FILE`` as a subprocess and wait for it."""
    cmd = [sys.executable, "-m", "algan.cli.edge", "run", "--config", str(config), *extra]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    return EdgeRun(res.returncode, res.stdout, res.stderr)


def run_cli(module: str, *args: str, timeout: float = 30.0) -> EdgeRun:
    res = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                         check=False)
    return EdgeRun(res.returncode, res.stdout, res.stderr)
