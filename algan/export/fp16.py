"""FP16 ONNX graph (``model.fp16.onnx``) for strongly-typed TensorRT builds and GPU ONNX Runtime.

Made with onnxconverter-common's ``convert_float_to_float16(keep_io_types=True)``: the graph keeps its uint8 input
and float32 output, the backbone computes in float16. Two sets of nodes stay float32 on purpose:

- ``Cast`` nodes *to* float32 (the uint8 -> float conversion of the input): the converter retypes their outputs
  but not their ``to`` attribute, which leaves an invalid graph; blocked, they get a Cast to float16 after them.
- the feature transform, head and calibration (scopes ``/transform/``, ``/head/``, ``/calibration/``, and
  scope-less helper nodes that only feed them): cheap to run, and the Mahalanobis / kNN distances over ~1400
  standardised features would lose most of their digits in float16.
- the backbone stem and MBConv blocks 0-3 (EfficientNet-Lite0 scopes ``/backbone/stem/``,
  ``/backbone/blocks.0-3/``, about a fifth of the multiply-adds): measured on an MTD Mahalanobis bundle (64
  parity images), rounding there dominates the score error: all-FP16 backbone 1.8e-2, with these in FP32 7.4e-3
  (FP16 tolerance 1e-2), while keeping blocks 8-15 or the pooling in FP32 changed nothing. A backbone with other
  scope names simply runs fully in FP16 and the parity check decides.

Some heads amplify the backbone's rounding more than others (a whitened ALGAN head on a small synthetic set measured
1.14e-2 with blocks 0-3 in FP32, against 7.9e-3 for the 3-member ensemble on the same data), so ``algan-export`` climbs
:data:`FP16_FP32_BLOCKS`: blocks 0-3, then 0-7, then 0-11 in FP32, and keeps the first graph that passes parity.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from collections.abc import Iterable
from pathlib import Path

from algan.contract import KEY_PRECISION, set_metadata

#: how many leading backbone blocks stay float32, tried in this order until the FP16 graph passes parity
FP16_FP32_BLOCKS = (4, 8, 12)


def fp32_scopes(n_blocks: int = FP16_FP32_BLOCKS[0]) -> tuple[str, ...]:
    """Node-name prefixes (torch module scopes) kept in float32: the backbone stem and blocks ``0 .. n_blocks-1``,
    the feature transform, the head and the calibration."""
    # a patch head's backbone is the trunk of its patch feature maps (/backbone/trunk/); its map postprocess stays
    # FP32 like the head, and its calibration is applied twice (scores and maps: /calibration/, /calibration_1/)
    return ("/backbone/stem/", *(f"/backbone/blocks.{i}/" for i in range(n_blocks)),
            "/backbone/trunk/stem/", *(f"/backbone/trunk/blocks.{i}/" for i in range(n_blocks)),
            "/transform/", "/head/", "/postprocess/", "/calibration")


#: the first rung: stem and blocks 0-3 in float32 (see the module docstring)
FP32_SCOPES = fp32_scopes()
#: ops blocked in addition to onnxconverter-common's DEFAULT_OP_BLOCK_LIST
EXTRA_OP_BLOCK_LIST = ("TopK",)


def fp32_node_names(model, scopes: Iterable[str] = FP32_SCOPES) -> list[str]:
    """Names of the nodes of ``model`` (``onnx.ModelProto``) to keep in float32.

    Nodes in ``scopes``, ``Cast`` nodes to float32, and (repeatedly) nodes without a scope whose outputs all feed
    nodes already kept (constants and ``Identity`` copies that constant folding leaves behind).
    """
    from onnx import TensorProto

    scopes = tuple(scopes)
    keep = set()
    for n in model.graph.node:
        to_fp32 = n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT for a in n.attribute)
        if to_fp32 or n.name.startswith(scopes):
            keep.add(n.name)
    consumers: dict[str, list[str]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n.name)
    changed = True
    while changed:
        changed = False
        for n in model.graph.node:
            if n.name in keep or n.name.startswith("/"):
                continue
            users = [c for o in n.output for c in consumers.get(o, [])]
            if users and all(u in keep for u in users):
                keep.add(n.name)
                changed = True
    return sorted(keep)


def convert_fp16(src: str | Path, dst: str | Path, scopes: Iterable[str] = FP32_SCOPES) -> Path:
    """Write the FP16 version of the FP32 graph ``src`` to ``dst`` (temporary name + rename).

    The uint8 (N, H, W, 3) input and float32 (N,) output types are kept; ``metadata_props`` are copied with
    ``algan.precision`` = ``fp16``.

    Raises:
        ExportError: the conversion failed or the checker rejects the result.
    """
    import onnx
    from onnxconverter_common import float16

    from algan.export.onnx_export import ExportError

    dst = Path(dst)
    model = onnx.load(str(src))
    meta = {p.key: p.value for p in model.metadata_props}
    keep = fp32_node_names(model, scopes)
    model_types = {o.name: o.type.tensor_type.elem_type for o in model.graph.output}
    ops = list(dict.fromkeys([*float16.DEFAULT_OP_BLOCK_LIST, *EXTRA_OP_BLOCK_LIST]))
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        with warnings.catch_warnings():  # one "value truncated" warning per small weight
            warnings.simplefilter("ignore")
            out = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=ops,
                                                   node_block_list=keep)
        _restore_output_types(model_types, out)
        set_metadata(out, {**meta, KEY_PRECISION: "fp16"})
        onnx.checker.check_model(out)
        onnx.save(out, tmp)
        os.chmod(tmp, 0o644)  # mkstemp gives 0600; a bundle is read by the service user
        os.replace(tmp, dst)
    except Exception as exc:
        raise ExportError(f"FP16 conversion failed: {exc}") from exc
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dst


def _restore_output_types(types: dict[str, int], model) -> None:
    """Give the graph outputs back their original types (``types``: name -> ONNX elem type).

    With ``keep_io_types`` and a blocked (FP32) last node, onnxconverter-common 1.16 still appends a Cast to
    float16 and declares the output float16. Such a Cast is turned back into a Cast to the original type; any
    other retyped output gets a Cast appended.
    """
    from onnx import TensorProto, helper

    producers = {o: n for n in model.graph.node for o in n.output}
    for out in model.graph.output:
        want = types.get(out.name)
        if want is None or out.type.tensor_type.elem_type == want:
            continue
        node = producers.get(out.name)
        if node is not None and node.op_type == "Cast":
            for a in node.attribute:
                if a.name == "to":
                    a.i = want
        else:
            inner = f"{out.name}_fp16"
            if node is not None:
                node.output[list(node.output).index(out.name)] = inner
            model.graph.node.append(helper.make_node("Cast", [inner], [out.name], to=want,
                                                     name=f"{out.name}_restore_type"))
        out.type.tensor_type.elem_type = want
        if want != TensorProto.FLOAT16:
            for vi in model.graph.value_info:
                if vi.name == out.name:
                    vi.type.tensor_type.elem_type = want
