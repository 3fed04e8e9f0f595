"""NVIDIA Triton Inference Server model repository for the exported detector.

Layout (Triton "Model Repository" docs)::

    DIR/<name>/config.pbtxt
    DIR/<name>/1/model.plan          platform tensorrt_plan   (when an engine was built)
    DIR/<name>-onnx/config.pbtxt     platform onnxruntime_onnx
    DIR/<name>-onnx/1/model.onnx

(with no engine, ``<name>`` itself is the ONNX Runtime model). Batch convention (Triton "Model Configuration"):
with ``max_batch_size > 0`` the ``dims`` leave out the batch dimension, so the input is ``TYPE_UINT8 dims
[H, W, 3]`` (``format: FORMAT_NHWC``), and the batch-only ``scores`` output [N] is declared ``dims: [ 1 ]`` with
``reshape: { shape: [ ] }`` (every output needs non-empty ``dims``). Requests are batched by the dynamic batcher
(preferred sizes, bounded queue delay) up to ``max_batch_size`` = the engine profile's MAX. Patch-head graphs
also declare ``anomaly_maps`` ``TYPE_FP32 dims [h, w]`` (the anomaly-map contract), read from the graph's outputs,
so ``runner.backend: triton`` in the daemon gets both.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from algan.contract import (
    INPUT_NAME,
    MAPS_OUTPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    OutputDirError,
    atomic_directory,
)

PLATFORM_FILES = {"onnxruntime_onnx": ONNX_FILE, "tensorrt_plan": "model.plan"}
DEFAULT_QUEUE_DELAY_US = 2000


@dataclass(frozen=True)
class TritonModel:
    """One model of the repository.

    Attributes:
        name: model (directory) name: letters, digits, ``_``, ``-``, ``.``.
        platform: ``onnxruntime_onnx`` or ``tensorrt_plan``.
        source: file copied to ``<name>/1/model.onnx`` or ``model.plan``.
        input_size: (H, W) of the uint8 NHWC input.
        max_batch_size: largest batch Triton forms (>= 1).
        preferred_batch_sizes: dynamic batcher preferred sizes (each <= max_batch_size).
        max_queue_delay_us: longest wait for more requests, in microseconds.
        map_size: (h, w) of the ``anomaly_maps`` output, None for a score-only graph; :func:`write_model` reads it
            from the graph when not given.
    """

    name: str
    platform: str
    source: Path
    input_size: tuple[int, int]
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = DEFAULT_QUEUE_DELAY_US
    map_size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.platform not in PLATFORM_FILES:
            raise ValueError(f"unknown Triton platform {self.platform!r}; use {', '.join(PLATFORM_FILES)}")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.name):
            raise ValueError(f"Triton model name {self.name!r} may only hold letters, digits, '_', '-', '.'")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred batch sizes {bad} are outside 1..max_batch_size ({self.max_batch_size})")
        if self.max_queue_delay_us < 0:
            raise ValueError(f"max_queue_delay_microseconds must be >= 0, got {self.max_queue_delay_us}")


def render_config(model: TritonModel) -> str:
    """The ``config.pbtxt`` text (protobuf text format of ``inference.ModelConfig``)."""
    h, w = model.input_size
    preferred = ", ".join(str(b) for b in sorted(set(model.preferred_batch_sizes)))
    batching = [f"  preferred_batch_size: [ {preferred} ]"] if preferred else []
    lines = [
        f'name: "{model.name}"',
        f'platform: "{model.platform}"',
        f"max_batch_size: {model.max_batch_size}",
        "input [",
        "  {",
        f'    name: "{INPUT_NAME}"',
        "    data_type: TYPE_UINT8",
        "    format: FORMAT_NHWC",
        f"    dims: [ {h}, {w}, 3 ]",
        "  }",
        "]",
        "output [",
        "  {",
        f'    name: "{OUTPUT_NAME}"',
        "    data_type: TYPE_FP32",
        "    dims: [ 1 ]",
        "    reshape: { shape: [ ] }",
        "  }" if model.map_size is None else "  },",
        *([] if model.map_size is None else [
            "  {",
            f'    name: "{MAPS_OUTPUT_NAME}"',
            "    data_type: TYPE_FP32",
            f"    dims: [ {int(model.map_size[0])}, {int(model.map_size[1])} ]",
            "  }"]),
        "]",
        "dynamic_batching {",
        *batching,
        f"  max_queue_delay_microseconds: {model.max_queue_delay_us}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def graph_map_size(source: Path) -> tuple[int, int] | None:
    """(h, w) of the ``anomaly_maps`` output of the ONNX graph ``source`` (for an engine: the ``model.onnx`` beside
    it), or None when the graph has no such output (or no graph is found)."""
    import onnx

    onnx_path = source if source.suffix == ".onnx" else source.with_name(ONNX_FILE)
    if not onnx_path.is_file():
        return None
    for out in onnx.load(str(onnx_path), load_external_data=False).graph.output:
        if out.name == MAPS_OUTPUT_NAME:
            dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
            if len(dims) == 3 and min(dims[1:]) > 0:
                return int(dims[1]), int(dims[2])
    return None


def write_model(repo: str | Path, model: TritonModel) -> Path:
    """Write ``repo/<name>/config.pbtxt`` and ``repo/<name>/1/<model file>``.

    The model directory is assembled under a temporary name inside ``repo`` and renamed into place; an existing
    ``repo/<name>`` is replaced only once the new one is complete.

    Returns:
        the model directory.

    Raises:
        FileNotFoundError: ``model.source`` is missing.
        OutputDirError: ``repo/<name>`` exists and is not a Triton model directory (nothing is written).
    """
    repo = Path(repo)
    src = Path(model.source)
    if not src.is_file():
        raise FileNotFoundError(f"{src} does not exist; cannot add it to the Triton repository")
    if model.map_size is None and (size := graph_map_size(src)) is not None:
        model = dataclasses.replace(model, map_size=size)
    final = repo / model.name
    if final.is_dir() and any(final.iterdir()):
        # replaced as a whole: only an earlier Triton model directory (config.pbtxt + version folders) may go
        foreign = [e.name for e in os.scandir(final) if not (e.name == "config.pbtxt" and e.is_file())
                   and not (e.name.isdigit() and e.is_dir(follow_symlinks=False))]
        if not (final / "config.pbtxt").is_file() or foreign:
            raise OutputDirError(f"{final} exists and is not a Triton model directory written by algan-export "
                                 f"(it holds {', '.join(sorted(os.listdir(final))[:3])}); nothing was written: "
                                 "choose another --triton-repo or --triton-name")
    elif final.exists() and not final.is_dir():
        raise OutputDirError(f"{final} exists and is not a directory; choose another --triton-repo or --triton-name")
    with atomic_directory(final) as tmp:  # fsynced, then swapped in; removed on any error
        (tmp / "1").mkdir()
        shutil.copyfile(src, tmp / "1" / PLATFORM_FILES[model.platform])
        (tmp / "config.pbtxt").write_text(render_config(model))
        os.chmod(tmp, 0o755)
    return final
