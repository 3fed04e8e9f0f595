"""The exported graph's I/O contract, written into ONNX ``metadata_props`` (the keys the runtime reads are the
``KEY_*`` names of :mod:`algan.contract.names`; the others are written here only, for people and tools).

A runner (``algan.edge``) reads these keys instead of guessing: input layout, colour order, dtype and value range,
normalisation, output name and score direction, and the calibration constants baked into the graph. The edge runner
uses ``algan.calibration_center`` / ``algan.calibration_scale`` to re-map scores when the bundle is re-calibrated
after export (``raw = score * scale + center``; new score = ``(raw - new_center) / new_scale``).

All values are strings (ONNX ``StringStringEntryProto``); lists are JSON, floats are written with ``repr`` so they
round-trip exactly.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from algan.contract import names as n

if TYPE_CHECKING:
    from algan.contract.manifest import Manifest


def graph_metadata(manifest: Manifest, input_size: tuple[int, int], center: float, scale: float, opset: int,
                   precision: str = "fp32", map_size: tuple[int, int] | None = None,
                   pixel_threshold: float | None = None, *, version: str) -> dict[str, str]:
    """The ``metadata_props`` of an exported graph.

    Args:
        manifest: the bundle manifest (``model_id``, ``backbone.mean/std``, ``head.kind``, ``calibration``).
        input_size: (height, width) in pixels of the static input.
        center: raw-score center baked into the graph (``calibration.center`` buffer).
        scale: raw-score scale baked into the graph (threshold - center, ``calibration.scale`` buffer), > 0.
        opset: ONNX opset of the graph.
        precision: ``fp32`` or ``fp16`` (compute precision of the graph; its I/O types never change).
        map_size: ``(h, w)`` of the ``anomaly_maps`` output of a patch head, ``None`` for a score-only graph
            (``algan.outputs`` = ``scores``; with maps ``scores,anomaly_maps``, ``algan.map_size`` = ``h,w`` and
            ``algan.map_norm``, the per-location map normalisation inside the graph: none, mean or standardize).
        pixel_threshold: the bundle's raw pixel threshold (``calibration.pixel_threshold``) or ``None``; with maps
            it is written as ``algan.pixel_threshold`` = ``(pixel_threshold - center) / scale`` (calibrated map
            units, ``repr``), absent otherwise.
        version: the exporting algan-edge version (``algan.__version__``), written as ``algan.version``.

    Returns:
        ``{key: value}`` with string values.

    Raises:
        ValueError: a non-positive ``scale``.
    """
    if not scale > 0:
        raise ValueError(f"calibration scale must be > 0 (threshold above center), got {scale}")
    backbone = manifest.backbone
    h, w = int(input_size[0]), int(input_size[1])
    maps = {} if map_size is None else {n.KEY_MAP_SIZE: f"{int(map_size[0])},{int(map_size[1])}",
                                        "algan.map_scale": "same calibrated scale as scores (1.0 = threshold)",
                                        n.KEY_MAP_NORM: manifest.patch.map_norm if manifest.patch else "none"}
    if map_size is not None and pixel_threshold is not None:
        maps[n.KEY_PIXEL_THRESHOLD] = repr((float(pixel_threshold) - float(center)) / float(scale))
    return {
        n.KEY_MODEL_ID: manifest.model_id,
        "algan.version": version,
        "algan.format_version": str(manifest.format_version),
        "algan.input_name": n.INPUT_NAME,
        "algan.output_name": n.OUTPUT_NAME,
        "algan.input_height": str(h),
        "algan.input_width": str(w),
        "algan.input_shape": json.dumps(["N", h, w, 3]),
        "algan.layout": "NHWC",
        "algan.dtype": "uint8",
        "algan.value_range": "[0, 255]",
        "algan.colour_order": "BGR",
        "algan.mean_rgb": json.dumps(list(backbone.mean) if backbone is not None else []),
        "algan.std_rgb": json.dumps(list(backbone.std) if backbone is not None else []),
        "algan.backbone": backbone.name if backbone is not None else "",
        "algan.head": manifest.head_kind,
        "algan.score_direction": "higher is more anomalous",
        "algan.threshold": "1.0",
        n.KEY_CAL_CENTER: repr(float(center)),
        n.KEY_CAL_SCALE: repr(float(scale)),
        "algan.opset": str(int(opset)),
        n.KEY_PRECISION: precision,
        n.KEY_OUTPUTS: n.OUTPUT_NAME if map_size is None else f"{n.OUTPUT_NAME},{n.MAPS_OUTPUT_NAME}",
        **maps,
    }


def set_metadata(model: Any, meta: dict[str, str]) -> None:
    """Replace the ``metadata_props`` of an ``onnx.ModelProto`` in place (the contract does not import onnx)."""
    del model.metadata_props[:]
    for k, v in meta.items():
        model.metadata_props.add(key=k, value=v)
