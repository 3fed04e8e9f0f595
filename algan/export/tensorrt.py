"""TensorRT engine building (extra ``tensorrt``; NVIDIA's builder is imported lazily and is optional).

Version-dependent choices live in :func:`plan_build` (pure, tested on every machine), following NVIDIA's API
documentation and migration guides (TensorRT 10.x Python API; "Migrating from TensorRT 10.x to 11.x"):

- TensorRT 8.x needs the ``EXPLICIT_BATCH`` network flag; 10.x ignores it (always explicit batch) and 11.x drops it.
- FP16: ``BuilderFlag.FP16`` (weak typing) before 10.12; from 10.12 weak typing is deprecated, so the FP16 ONNX
  (:mod:`algan.export.fp16`) is parsed into a strongly-typed network (``NetworkDefinitionCreationFlag.
  STRONGLY_TYPED``); 11.x removes the precision flags and is always strongly typed (the flag is ignored there).
- INT8: implicit calibration (``BuilderFlag.INT8`` + ``IInt8EntropyCalibrator2`` with a calibration cache) before
  11; 11.x removes ``BuilderFlag.INT8`` and ``IBuilderConfig.int8_calibrator`` (explicit Q/DQ only), so INT8 is
  refused there with a clear error.

:func:`build_engine` drives the builder: ``OnnxParser`` (errors reported with node index, name and operator),
one optimization profile over the batch dimension, a workspace limit (``MemoryPoolType.WORKSPACE``), a timing
cache that is loaded when present and returned for saving beside the engine, and
``Builder.build_serialized_network``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from algan.contract import INPUT_NAME, OUTPUT_NAME, file_sha256, utc_now_iso
from algan.export.onnx_export import ExportError
from algan.trt_logging import make_logger

log = logging.getLogger(__name__)

#: first TensorRT version whose FP16 builds use a strongly-typed network from the FP16 ONNX
STRONGLY_TYPED_FROM = (10, 12)
#: first TensorRT version without implicit (calibrator-based) INT8
NO_IMPLICIT_INT8_FROM = (11, 0)
MIN_VERSION = (8, 6)
DEFAULT_WORKSPACE_MIB = 1024
SIDECAR_FILE = "model.engine.json"
TIMING_CACHE_FILE = "model.engine.timing.cache"
CALIBRATION_CACHE_FILE = "model.engine.int8.cache"
INT8_CALIBRATION_SET = "int8_calibration.safetensors"


class EngineBuildError(ExportError):
    """TensorRT could not parse or build; the message carries the parser/builder errors."""


def parse_version(version: str) -> tuple[int, int]:
    """``"10.12.0.36"`` -> ``(10, 12)``.

    Raises:
        ValueError: not a dotted version.
    """
    m = re.match(r"^\s*(\d+)\.(\d+)", str(version))
    if not m:
        raise ValueError(f"cannot read the TensorRT version {version!r}")
    return int(m.group(1)), int(m.group(2))


@dataclass(frozen=True)
class BatchProfile:
    """Batch sizes of the engine's optimization profile: ``1 <= min <= opt <= max``."""

    min: int = 1
    opt: int = 8
    max: int = 16

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(f"batch profile must satisfy 1 <= MIN <= OPT <= MAX, got {self.min}:{self.opt}:{self.max}")

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"1:8:16"`` -> ``BatchProfile(1, 8, 16)``; a single number N means ``N:N:N``.

        Raises:
            ValueError: malformed text or an order violation.
        """
        parts = str(text).split(":")
        try:
            nums = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"--batch expects MIN:OPT:MAX (e.g. 1:8:16), got {text!r}") from None
        if len(nums) == 1:
            nums *= 3
        if len(nums) != 3:
            raise ValueError(f"--batch expects MIN:OPT:MAX (e.g. 1:8:16), got {text!r}")
        return cls(*nums)

    def shapes(self, size: tuple[int, int]) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) input shapes [N, H, W, 3] for ``size`` = (H, W)."""
        h, w = size
        return (self.min, h, w, 3), (self.opt, h, w, 3), (self.max, h, w, 3)

    def to_json(self) -> dict:
        return {"min": self.min, "opt": self.opt, "max": self.max}


@dataclass(frozen=True)
class BuildPlan:
    """What to ask a given TensorRT version for.

    Attributes:
        precision: engine precision recorded in the sidecar: ``fp32``, ``fp16`` or ``int8``.
        onnx: which graph to parse: ``fp32`` (model.onnx) or ``fp16`` (model.fp16.onnx).
        network_flags: ``NetworkDefinitionCreationFlag`` member names for ``create_network``.
        builder_flags: ``BuilderFlag`` member names for ``IBuilderConfig.set_flag``.
        int8_calibrator: whether an ``IInt8EntropyCalibrator2`` is attached.
        strongly_typed: whether tensor types come from the graph (10.12+ FP16, always on 11.x).
        notes: human-readable remarks on the choices (deprecations).
    """

    precision: str
    onnx: str
    network_flags: tuple[str, ...] = ()
    builder_flags: tuple[str, ...] = ()
    int8_calibrator: bool = False
    strongly_typed: bool = False
    notes: tuple[str, ...] = field(default=())


def plan_build(trt_version: str | tuple[int, int], fp16: bool, int8: bool) -> BuildPlan:
    """Choose flags, network typing and the graph to parse for a TensorRT version (pure function).

    Raises:
        ExportError: TensorRT older than 8.6, or INT8 on TensorRT 11+ (no implicit calibration there).
    """
    v = parse_version(trt_version) if isinstance(trt_version, str) else tuple(trt_version)[:2]
    label = ".".join(map(str, v))
    if v < MIN_VERSION:
        raise ExportError(f"TensorRT {label} is too old; algan-export needs TensorRT 8.6 or newer")
    explicit = ("EXPLICIT_BATCH",) if v[0] < 10 else ()
    if int8:
        if v >= NO_IMPLICIT_INT8_FROM:
            raise ExportError(
                f"INT8 implicit calibration is not supported on TensorRT 11; TensorRT {label} only builds INT8 "
                "from explicitly quantized (Q/DQ) graphs. Build with --fp16 instead, or use TensorRT 10.x for "
                "calibrator-based INT8")
        notes = ("INT8 with IInt8EntropyCalibrator2 (implicit quantization, deprecated since TensorRT 10.1)",)
        if v >= STRONGLY_TYPED_FROM:
            notes += ("weak typing (precision builder flags) is deprecated from TensorRT 10.12",)
        flags = ("INT8", "FP16") if fp16 else ("INT8",)
        return BuildPlan("int8", "fp32", explicit, flags, True, False, notes)
    if fp16:
        if v >= NO_IMPLICIT_INT8_FROM:
            return BuildPlan("fp16", "fp16", (), (), False, True,
                             ("TensorRT 11: always strongly typed; precision comes from the FP16 ONNX",))
        if v >= STRONGLY_TYPED_FROM:
            return BuildPlan("fp16", "fp16", ("STRONGLY_TYPED",), (), False, True,
                             ("strongly-typed network from the FP16 ONNX (BuilderFlag.FP16 is deprecated)",))
        return BuildPlan("fp16", "fp32", explicit, ("FP16",), False, False, ("weakly typed: BuilderFlag.FP16",))
    return BuildPlan("fp32", "fp32", explicit, (), False, v >= NO_IMPLICIT_INT8_FROM, ())


@dataclass
class EngineRequest:
    """Inputs of one engine build.

    Attributes:
        onnx_fp32: FP32 graph (uint8 [N, H, W, 3] -> float32 [N]).
        onnx_fp16: FP16 graph, required when the plan parses ``fp16``.
        input_size: (H, W).
        batch: optimization profile over N.
        workspace_mib: builder workspace limit in MiB.
        fp16, int8: requested precisions.
        timing_cache: bytes of a previous timing cache (reused when TensorRT accepts it), or None.
        calibration_images: uint8 (N, H, W, 3) frames for INT8 (``int8_calibration.safetensors``).
        calibration_cache: bytes of a previous INT8 calibration cache, or None.
        calibration_batch: frames per calibration batch.
    """

    onnx_fp32: Path
    onnx_fp16: Path | None
    input_size: tuple[int, int]
    batch: BatchProfile = field(default_factory=BatchProfile)
    workspace_mib: int = DEFAULT_WORKSPACE_MIB
    fp16: bool = False
    int8: bool = False
    timing_cache: bytes | None = None
    calibration_images: np.ndarray | None = None
    calibration_cache: bytes | None = None
    calibration_batch: int = 8


@dataclass
class EngineBuild:
    """Result of :func:`build_engine`: the serialized engine, caches to save and the sidecar dict."""

    engine: bytes
    sidecar: dict
    timing_cache: bytes | None
    calibration_cache: bytes | None
    plan: BuildPlan


def _onnx_nodes(path: Path) -> list[tuple[str, str]]:
    """(name, op_type) of each node of an ONNX graph, for naming parser errors."""
    try:
        import onnx

        return [(n.name, n.op_type) for n in onnx.load(str(path), load_external_data=False).graph.node]
    except Exception:  # onnx missing or unreadable: the parser's own error says more
        return []


def parser_errors(parser, nodes: list[tuple[str, str]]) -> list[str]:
    """One line per ``OnnxParser`` error: node index, node name and operator, description."""
    lines = []
    for i in range(int(parser.num_errors)):
        err = parser.get_error(i)
        idx = int(err.node())
        name = err.node_name() if hasattr(err, "node_name") else ""
        op = err.node_operator() if hasattr(err, "node_operator") else ""
        if not name and 0 <= idx < len(nodes):
            name, op = nodes[idx]
        where = f"node {idx} {name!r} ({op})" if idx >= 0 else "graph"
        lines.append(f"{where}: {err.desc()}")
    return lines


def build_engine(req: EngineRequest, trt=None, gpu: Callable[[], tuple[str, str]] | None = None,
                 device_alloc: Callable | None = None) -> EngineBuild:
    """Build a serialized TensorRT engine for the detector graph.

    Args:
        req: what to build.
        trt: the ``tensorrt`` module (imported when None; a stand-in in tests).
        gpu: returns (gpu_name, compute_capability); default :func:`algan.export.trt_helpers.gpu_identity`.
        device_alloc: device buffer factory for INT8 calibration (default cuda-python / pycuda).

    Returns:
        :class:`EngineBuild`; nothing is written to disk here.

    Raises:
        ExportError: unsupported version/precision (see :func:`plan_build`), missing FP16 graph or calibration frames.
        EngineBuildError: parser errors (with node names), an unexpected input, or a failed build.
    """
    from algan.export import trt_helpers

    if trt is None:
        import tensorrt as trt
    plan = plan_build(trt.__version__, req.fp16, req.int8)
    onnx_path = req.onnx_fp16 if plan.onnx == "fp16" else req.onnx_fp32
    if onnx_path is None or not Path(onnx_path).is_file():
        raise ExportError(f"TensorRT {trt.__version__} builds FP16 from the FP16 ONNX, which was not written")
    if plan.int8_calibrator and (req.calibration_images is None or len(req.calibration_images) == 0):
        raise ExportError(f"--int8 needs the calibration frames in MODEL_DIR/{INT8_CALIBRATION_SET}; run "
                          "algan-calibrate on the bundle first")
    errors: list[str] = []
    logger = make_logger(trt, trt_helpers.log, errors)
    builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        lines = parser_errors(parser, _onnx_nodes(Path(onnx_path)))
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {Path(onnx_path).name}: "
                               + "; ".join(lines or errors or ["no details"]))
    inp = network.get_input(0)
    if network.num_inputs != 1 or inp.name != INPUT_NAME:
        raise EngineBuildError(f"{Path(onnx_path).name} must have one input {INPUT_NAME!r}, got "
                               f"{[network.get_input(i).name for i in range(network.num_inputs)]}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(req.workspace_mib) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *req.batch.shapes(req.input_size))
    config.add_optimization_profile(profile)
    cache = config.create_timing_cache(req.timing_cache or b"")
    if not config.set_timing_cache(cache, False):
        log.warning("the saved timing cache does not match this TensorRT/GPU; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    calibrator = None
    if plan.int8_calibrator:
        n = int(min(req.calibration_batch, len(req.calibration_images)))
        calibrator = trt_helpers.make_calibrator(trt, req.calibration_images, n, req.calibration_cache,
                                                 device_alloc or trt_helpers.default_device_alloc)
        cal_profile = builder.create_optimization_profile()
        shape = (n, *req.input_size, 3)
        cal_profile.set_shape(INPUT_NAME, shape, shape, shape)
        config.set_calibration_profile(cal_profile)
        config.int8_calibrator = calibrator
    try:
        serialized = builder.build_serialized_network(network, config)
    finally:
        if calibrator is not None:
            calibrator.close()
    if serialized is None:
        raise EngineBuildError(f"TensorRT {trt.__version__} could not build the engine: "
                               + "; ".join(errors[-3:] or ["no error reported; run with --log-level INFO"]))
    gpu_name, cc = (gpu or trt_helpers.gpu_identity)()
    sidecar = {
        "tensorrt_version": str(trt.__version__),
        "gpu_name": gpu_name,
        "compute_capability": cc,
        "precision": plan.precision,
        "strongly_typed": plan.strongly_typed,
        "builder_flags": list(plan.builder_flags),
        "batch_profile": req.batch.to_json(),
        "onnx_file": Path(onnx_path).name,
        "onnx_sha256": file_sha256(onnx_path),
        "input_name": INPUT_NAME,
        "output_name": OUTPUT_NAME,
        "input_shape": [int(req.input_size[0]), int(req.input_size[1])],
        "workspace_mib": int(req.workspace_mib),
        "created": utc_now_iso(),
    }
    timing = config.get_timing_cache()
    return EngineBuild(bytes(serialized), sidecar, bytes(timing.serialize()) if timing is not None else None,
                       calibrator.cache_out if calibrator is not None else None, plan)


def tensorrt_status() -> tuple[bool, str]:
    """``(available, reason)``: whether the TensorRT builder can be imported here, and why not."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return False, (f"TensorRT is not installed ({exc}); install NVIDIA's TensorRT (pip install "
                       "'algan-edge[tensorrt]' with --extra-index-url https://pypi.nvidia.com) on the GPU machine "
                       "and run algan-export there")
    if not hasattr(trt, "Builder"):
        return False, "only the TensorRT lean runtime is installed, which cannot build engines; install the builder"
    return True, ""
