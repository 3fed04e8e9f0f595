"""TensorRT engine building, torch-free: what ``algan-edge build-engine`` runs on the device and ``algan-export``
runs on the workstation (NVIDIA's builder is imported lazily and is optional; extra ``tensorrt`` or JetPack's).

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
from typing import TYPE_CHECKING, Any

import numpy as np

from algan.contract import (
    ENGINE_FILE,
    ENGINE_INT8_CACHE_FILE,
    ENGINE_SIDECAR_FILE,
    ENGINE_TIMING_CACHE_FILE,
    FP16_ONNX_FILE,
    IMAGES_KEY,
    INPUT_NAME,
    INT8_SET_FILE,
    MANIFEST_FILE,
    MAPS_OUTPUT_NAME,
    ONNX_FILE,
    OUTPUT_NAME,
    SAMPLES_FILE,
    BundleError,
    EngineExport,
    EngineSidecar,
    file_sha256,
    load_manifest,
    utc_now_iso,
    write_manifest,
)
from algan.export.parity import TOLERANCES, ParityResult, compare
from algan.runtime.errors import EdgeError, ModelError
from algan.trt_logging import make_logger

if TYPE_CHECKING:  # the TensorRT API from tensorrt-stubs (make lint): mypy checks every call on these objects
    import tensorrt

log = logging.getLogger(__name__)

#: first TensorRT version whose FP16 builds use a strongly-typed network from the FP16 ONNX
STRONGLY_TYPED_FROM = (10, 12)
#: first TensorRT version without implicit (calibrator-based) INT8
NO_IMPLICIT_INT8_FROM = (11, 0)
MIN_VERSION = (8, 6)
DEFAULT_WORKSPACE_MIB = 1024


class EngineError(ModelError):
    """A build request that cannot work here (TensorRT version, precision, missing files); exit status 2."""


class EngineBuildError(EdgeError):
    """TensorRT could not parse or build; the message carries the parser/builder errors (exit status 1)."""


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
        EngineError: TensorRT older than 8.6, or INT8 on TensorRT 11+ (no implicit calibration there).
    """
    v = parse_version(trt_version) if isinstance(trt_version, str) else tuple(trt_version)[:2]
    label = ".".join(map(str, v))
    if v < MIN_VERSION:
        raise EngineError(f"TensorRT {label} is too old; algan-export needs TensorRT 8.6 or newer")
    explicit = ("EXPLICIT_BATCH",) if v[0] < 10 else ()
    if int8:
        if v >= NO_IMPLICIT_INT8_FROM:
            raise EngineError(
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
    """Result of :func:`build_engine`: the serialized engine, caches to save and the sidecar."""

    engine: bytes
    sidecar: EngineSidecar
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


def network_outputs(network: tensorrt.INetworkDefinition) -> list[str]:
    """Output tensor names of a parsed ``INetworkDefinition`` (``["scores"]`` or ``["scores", "anomaly_maps"]``).

    Raises:
        EngineBuildError: the graph does not output ``scores`` first.
    """
    n = int(getattr(network, "num_outputs", 1))
    names = [str(network.get_output(i).name) for i in range(n)] if hasattr(network, "get_output") else [OUTPUT_NAME]
    if not names or names[0] != OUTPUT_NAME or not set(names[1:]) <= {MAPS_OUTPUT_NAME}:
        raise EngineBuildError(f"the graph outputs {names}; the edge contract is ['{OUTPUT_NAME}'] or "
                               f"['{OUTPUT_NAME}', '{MAPS_OUTPUT_NAME}']: re-export the bundle with algan-export")
    return names


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
        EngineError: unsupported version/precision (see :func:`plan_build`), missing FP16 graph or calibration frames.
        EngineBuildError: parser errors (with node names), an unexpected input, or a failed build.
    """
    from algan.export import trt_helpers

    if trt is None:
        import tensorrt as trt
    plan = plan_build(trt.__version__, req.fp16, req.int8)
    onnx_path = req.onnx_fp16 if plan.onnx == "fp16" else req.onnx_fp32
    if onnx_path is None or not Path(onnx_path).is_file():
        raise EngineError(f"TensorRT {trt.__version__} builds FP16 from the FP16 ONNX ({FP16_ONNX_FILE}), which is "
                          "not in the bundle: re-export with algan-export MODEL_DIR --fp16 on the workstation and copy "
                          "the whole bundle directory")
    if plan.int8_calibrator and (req.calibration_images is None or len(req.calibration_images) == 0):
        raise EngineError(f"--int8 needs the calibration frames in MODEL_DIR/{INT8_SET_FILE}; run "
                          "algan-calibrate on the bundle first")
    errors: list[str] = []
    logger = make_logger(trt, trt_helpers.log, errors)
    builder: tensorrt.Builder = trt.Builder(logger)
    flags = 0
    for name in plan.network_flags:
        flags |= 1 << int(getattr(trt.NetworkDefinitionCreationFlag, name))
    network: tensorrt.INetworkDefinition = builder.create_network(flags)
    parser: tensorrt.OnnxParser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        lines = parser_errors(parser, _onnx_nodes(Path(onnx_path)))
        raise EngineBuildError(f"TensorRT {trt.__version__} cannot parse {Path(onnx_path).name}: "
                               + "; ".join(lines or errors or ["no details"]))
    inp = network.get_input(0)
    if network.num_inputs != 1 or inp.name != INPUT_NAME:
        raise EngineBuildError(f"{Path(onnx_path).name} must have one input {INPUT_NAME!r}, got "
                               f"{[network.get_input(i).name for i in range(network.num_inputs)]}")
    config: tensorrt.IBuilderConfig = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(req.workspace_mib) << 20)
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    profile: tensorrt.IOptimizationProfile = builder.create_optimization_profile()
    profile.set_shape(INPUT_NAME, *req.batch.shapes(req.input_size))
    config.add_optimization_profile(profile)
    cache: tensorrt.ITimingCache = config.create_timing_cache(req.timing_cache or b"")
    if not config.set_timing_cache(cache, False):
        log.warning("the saved timing cache does not match this TensorRT/GPU; starting a new one")
        config.set_timing_cache(config.create_timing_cache(b""), False)
    calibrator = None
    if plan.int8_calibrator:
        n = int(min(req.calibration_batch, len(req.calibration_images)))
        calibrator = trt_helpers.make_calibrator(trt, req.calibration_images, n, req.calibration_cache,
                                                 device_alloc or trt_helpers.default_device_alloc)
        cal_profile: tensorrt.IOptimizationProfile = builder.create_optimization_profile()
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
    outputs = network_outputs(network)
    gpu_name, cc = (gpu or trt_helpers.gpu_identity)()
    sidecar = EngineSidecar(
        tensorrt_version=str(trt.__version__),
        gpu_name=gpu_name,
        compute_capability=cc,
        precision=plan.precision,
        strongly_typed=plan.strongly_typed,
        builder_flags=list(plan.builder_flags),
        batch_profile=req.batch.to_json(),
        onnx_file=Path(onnx_path).name,
        onnx_sha256=file_sha256(onnx_path),
        input_name=INPUT_NAME,
        output_name=OUTPUT_NAME,
        output_names=outputs,
        input_shape=[int(req.input_size[0]), int(req.input_size[1])],
        workspace_mib=int(req.workspace_mib),
        created=utc_now_iso(),
    )
    timing = config.get_timing_cache()
    return EngineBuild(bytes(serialized), sidecar, bytes(timing.serialize()) if timing is not None else None,
                       calibrator.cache_out if calibrator is not None else None, plan)


TENSORRT_MISSING = ("TensorRT is not installed ({exc}); on a Jetson use JetPack's TensorRT (python3-libnvinfer, "
                    "seen through a venv made by deploy/jetson/install.sh with --system-site-packages), elsewhere "
                    "pip install 'algan-edge[tensorrt]' --extra-index-url https://pypi.nvidia.com")


def tensorrt_status() -> tuple[bool, str]:
    """``(available, reason)``: whether the TensorRT builder can be imported here, and why not."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        return False, TENSORRT_MISSING.format(exc=exc)
    if not hasattr(trt, "Builder"):
        return False, "only the TensorRT lean runtime is installed, which cannot build engines; install the builder"
    return True, ""


# -- on the device: algan-edge build-engine --------------------------------------------------------------------------

ADOPTED_NOTE = "adopted: built outside algan (trtexec); sidecar written by algan-edge build-engine --adopt"


@dataclass
class DeviceBuildReport:
    """What :func:`build_on_device` / :func:`adopt_engine` committed: file paths, sidecar and parity lines."""

    sidecar: EngineSidecar
    files: dict[str, Path] = field(default_factory=dict)
    parity: list[ParityResult] = field(default_factory=list)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module (builder included).

    Raises:
        EngineError: TensorRT is absent or only the lean runtime is installed (one line saying how to install it).
    """
    ok, reason = tensorrt_status()
    if not ok:
        raise EngineError(reason)
    import tensorrt

    return tensorrt


def import_pycuda() -> Any:
    """``pycuda.driver`` (the TensorRT runner's CUDA API, used for the parity run).

    Raises:
        EngineError: pycuda is absent (one line saying how to install it).
    """
    try:
        import pycuda.driver
    except ImportError as e:
        raise EngineError(f"pycuda is not installed ({e}); it runs the engine for the parity check: on a Jetson "
                          "apt-get install python3-pycuda (JetPack), elsewhere pip install pycuda") from None
    return pycuda.driver


def pycuda_identity(cuda: Any) -> Callable[[], tuple[str, str]]:
    """(gpu_name, compute_capability) of CUDA device 0 read with ``pycuda.driver`` -- the same calls the TensorRT
    runner's sidecar check makes, so a sidecar written here always matches the runner on this device."""
    def identity() -> tuple[str, str]:
        cuda.init()
        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return str(dev.name()), f"{major}.{minor}"
    return identity


def graph_io(onnx_path: Path) -> tuple[tuple[int, int], list[str]]:
    """``((H, W), output names)`` of an exported graph, read with ONNX Runtime (a base dependency; ``onnx`` is not).

    Raises:
        EngineError: unreadable graph, or an input that is not ``images`` uint8 [N, H, W, 3] with static H, W.
    """
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    except Exception as e:  # a truncated/corrupt file: onnxruntime raises its own exception types
        raise EngineError(f"cannot read {onnx_path} ({str(e).splitlines()[0][:200]}); copy the bundle from the "
                          "workstation again") from None
    inputs = sess.get_inputs()
    dims = list(inputs[0].shape) if len(inputs) == 1 else []
    if (len(inputs) != 1 or inputs[0].name != INPUT_NAME or inputs[0].type != "tensor(uint8)" or len(dims) != 4
            or dims[3] != 3 or not all(isinstance(d, int) and d > 0 for d in dims[1:3])):
        raise EngineError(f"{onnx_path} does not take '{INPUT_NAME}' uint8 [N, H, W, 3]; re-export it with "
                          "algan-export")
    return (int(dims[1]), int(dims[2])), [o.name for o in sess.get_outputs()]


def load_samples(model_dir: Path, size: tuple[int, int]) -> np.ndarray:
    """The bundle's ``samples.safetensors`` (tensor ``images``, uint8 (N, H, W, 3)) with ``safetensors.numpy``.

    Raises:
        EngineError: no samples, or samples of another size (the parity check needs them).
    """
    from safetensors.numpy import load_file

    path = model_dir / SAMPLES_FILE
    if not path.is_file():
        raise EngineError(f"{model_dir} has no {SAMPLES_FILE} for the engine's parity check; copy the whole bundle "
                          "(algan-train writes it)")
    images = load_file(str(path)).get(IMAGES_KEY)
    if images is None or images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (*size, 3) \
            or len(images) == 0:
        got = None if images is None else (images.dtype, images.shape)
        raise EngineError(f"{path} must hold '{IMAGES_KEY}' uint8 (N, {size[0]}, {size[1]}, 3), got {got}")
    return images


def ort_outputs(onnx_path: Path, images: np.ndarray) -> dict[str, np.ndarray]:
    """Raw graph outputs on ONNX Runtime's CPU provider (the parity reference), in batches of 8."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    parts = [sess.run(names, {INPUT_NAME: images[i : i + 8]}) for i in range(0, len(images), 8)]
    return {n: np.concatenate([p[k] for p in parts]).astype(np.float32) for k, n in enumerate(names)}


def _engine_parity(staging: Path, onnx_ref: Path, images: np.ndarray, precision: str, trt: Any, cuda: Any,
                   say: Callable[[str], None]) -> list[ParityResult]:
    """Run the staged engine with :class:`~algan.runtime.runners.tensorrt.TensorRTRunner` (raw outputs: the staging
    directory has no bundle calibration) and compare each output with ONNX Runtime CPU on the same images
    (:func:`algan.export.parity.compare` at the precision's :data:`~algan.export.parity.TOLERANCES`)."""
    from algan.runtime.runners.tensorrt import TensorRTRunner

    ref = ort_outputs(onnx_ref, images)
    runner = TensorRTRunner(staging / ENGINE_FILE, trt=trt, cuda=cuda)
    try:
        out = runner.run(images)
    finally:
        runner.close()
    got = {OUTPUT_NAME: out.scores, MAPS_OUTPUT_NAME: out.maps}
    tol, metric = TOLERANCES[precision]
    results = []
    for name in runner.output_names:
        what = f"tensorrt-{precision} {name}"
        out_arr = got[name]
        if out_arr is None or out_arr.shape != ref[name].shape:
            shape = None if out_arr is None else out_arr.shape
            raise EngineBuildError(f"parity ({what}): shape {shape} != reference {ref[name].shape} against ONNX "
                                   "Runtime CPU; nothing was written to the bundle")
        r = compare(what, ref[name], out_arr, tol, metric)
        say(r.line())
        results.append(r)
    bad = [r.line() for r in results if not r.ok]
    if bad:
        raise EngineBuildError(f"{'; '.join(bad)} against ONNX Runtime CPU; nothing was written to the bundle")
    return results


def _manifest_of(model_dir: Path) -> Path | None:
    """``model_dir/algan.json`` when the directory is a bundle (checked readable and valid), else ``None`` (a directory
    holding only the exported graph and samples: no manifest to record the engine in).

    Raises:
        EngineError: the manifest is unreadable or invalid (one line from :func:`algan.contract.load_manifest`).
    """
    path = model_dir / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        load_manifest(path)
    except BundleError as e:
        raise EngineError(str(e)) from None
    return path


def check_fp16_graph(model_dir: Path) -> None:
    """Refuse a ``model.fp16.onnx`` that ``algan-export --fp16`` did not write for this bundle's current export.

    The FP16 graph carries the calibration of the export that converted it; the export records its sha256 in
    ``algan.json`` (``exports.onnx_fp16.sha256``) and removes it when a later export has no ``--fp16``. A file whose
    hash is not the recorded one (copied in by hand, or left from another bundle) would give an engine with another
    model's scores, so it is refused before any build.

    Raises:
        EngineError: no ``exports.onnx_fp16`` entry, or a sha256 other than the recorded one (one line, with the fix).
    """
    entry = load_manifest(model_dir).exports.onnx_fp16
    recorded = entry.sha256 if entry is not None else None
    actual = file_sha256(model_dir / FP16_ONNX_FILE)
    if recorded == actual:
        return
    why = ("algan.json records no FP16 export (exports.onnx_fp16)" if recorded is None else
           f"its sha256 {actual[:12]} is not the {str(recorded)[:12]} that algan.json records")
    raise EngineError(f"{model_dir / FP16_ONNX_FILE} was not written by this bundle's export: {why}; re-export "
                      f"with algan-export {model_dir.name} --fp16 on the workstation and copy the whole bundle "
                      "directory, or build from model.onnx without --fp16")


def record_engine(model_dir: Path, sidecar: EngineSidecar) -> Path:
    """Record the committed engine in the bundle's manifest (``exports.engine`` = :meth:`EngineExport.of`), the rest of
    ``algan.json`` kept; written atomically (temp file + rename) as ``algan-export`` writes it.

    Returns:
        The manifest's path.

    Raises:
        EngineError: the manifest is missing, unreadable or invalid.
        OSError: the bundle directory is not writable.
    """
    try:
        manifest = load_manifest(model_dir)
    except BundleError as e:
        raise EngineError(str(e)) from None
    manifest.exports.engine = EngineExport.of(sidecar)
    write_manifest(model_dir, manifest)
    return model_dir / MANIFEST_FILE


def _commit(staging: Path, model_dir: Path, names: list[str]) -> dict[str, Path]:
    import os

    out = {}
    for name in names:
        if (staging / name).is_file():
            os.replace(staging / name, model_dir / name)
            out[name] = model_dir / name
    return out


def _device_inputs(model_dir: Path, fix: str, trt: Any, cuda: Any) -> tuple[Path, tuple[int, int], list[str],
                                                                          np.ndarray, Any, Any]:
    """What a device-side build or adoption starts from: the bundle's FP32 graph, its input size and outputs, the
    stored sample frames, and the tensorrt and pycuda modules (imported unless given).

    Raises:
        EngineError: no ``model.onnx`` in ``model_dir`` (``fix`` says what to do), no samples, TensorRT or pycuda
            missing.
    """
    onnx32 = model_dir / ONNX_FILE
    if not onnx32.is_file():
        raise EngineError(f"{model_dir} has no {ONNX_FILE}; {fix}")
    size, outputs = graph_io(onnx32)
    images = load_samples(model_dir, size)
    return (onnx32, size, outputs, images, trt if trt is not None else import_tensorrt(),
            cuda if cuda is not None else import_pycuda())


def build_on_device(model_dir: Path, fp16: bool = False, int8: bool = False, batch: BatchProfile | None = None,
                    workspace_mib: int = DEFAULT_WORKSPACE_MIB, trt: Any = None, cuda: Any = None,
                    gpu: Callable[[], tuple[str, str]] | None = None, device_alloc: Callable | None = None,
                    say: Callable[[str], None] = print) -> DeviceBuildReport:
    """Build ``model.engine`` from the bundle's exported ONNX on this device, without torch.

    Reads ``model.onnx`` (and ``model.fp16.onnx`` where the plan parses it), builds with :func:`build_engine`, runs
    the engine on ``samples.safetensors`` against ONNX Runtime CPU (:data:`TOLERANCES`), then moves the engine,
    its sidecar ``model.engine.json`` and the timing/calibration caches into ``model_dir`` and records the engine
    in the bundle's ``algan.json`` (``exports.engine``, :func:`record_engine`; a directory without a manifest has
    nothing to record it in). Nothing is written when a step fails.

    Args:
        model_dir: a bundle directory copied from the workstation after ``algan-export``.
        fp16, int8, batch, workspace_mib: as ``algan-export``.
        trt, cuda: ``tensorrt`` and ``pycuda.driver`` modules (stand-ins in tests); imported when None.
        gpu: (gpu_name, compute_capability) for the sidecar; default :func:`pycuda_identity` (what the runner checks).
        device_alloc: device buffers for INT8 calibration (default cuda-python / pycuda).
        say: receives one line per step.

    Raises:
        EngineError: missing files, an invalid ``algan.json``, TensorRT absent, unsupported precision (exit 2).
        EngineBuildError: parser/builder failure or parity beyond tolerance (exit 1).
    """
    import shutil
    import tempfile

    model_dir = Path(model_dir)
    manifest = _manifest_of(model_dir)  # before the build: a damaged manifest would fail after it
    onnx32, size, outputs, images, trt, cuda = _device_inputs(
        model_dir, f"run algan-export {model_dir.name} on the workstation and copy the whole bundle directory to this "
        "device", trt, cuda)
    plan = plan_build(trt.__version__, fp16, int8)
    calib = None
    if plan.int8_calibrator:
        from safetensors.numpy import load_file

        cpath = model_dir / INT8_SET_FILE
        if not cpath.is_file():
            raise EngineError(f"--int8 needs {cpath} (tensor '{IMAGES_KEY}', uint8 [N,H,W,3]); run algan-calibrate "
                              "first")
        calib = load_file(str(cpath))[IMAGES_KEY]
    fp16_path = model_dir / FP16_ONNX_FILE
    if plan.onnx == "fp16" and manifest is not None and fp16_path.is_file():
        check_fp16_graph(model_dir)
    timing, cal_cache = model_dir / ENGINE_TIMING_CACHE_FILE, model_dir / ENGINE_INT8_CACHE_FILE
    req = EngineRequest(onnx_fp32=onnx32, onnx_fp16=fp16_path if fp16_path.is_file() else None, input_size=size,
                        batch=batch or BatchProfile(), workspace_mib=workspace_mib, fp16=fp16, int8=int8,
                        timing_cache=timing.read_bytes() if timing.is_file() else None, calibration_images=calib,
                        calibration_cache=cal_cache.read_bytes() if cal_cache.is_file() else None)
    gpu = gpu or pycuda_identity(cuda)
    b = req.batch
    say(f"building the TensorRT {trt.__version__} engine from {ONNX_FILE if plan.onnx == 'fp32' else FP16_ONNX_FILE} "
        f"(outputs {', '.join(outputs)}; batch {b.min}:{b.opt}:{b.max}, workspace {workspace_mib} MiB) ...")
    built = build_engine(req, trt=trt, gpu=gpu, device_alloc=device_alloc)
    for note in built.plan.notes:
        say(f"TensorRT: {note}")
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".engine-"))
    try:
        (staging / ENGINE_FILE).write_bytes(built.engine)
        built.sidecar.engine_sha256 = file_sha256(staging / ENGINE_FILE)
        built.sidecar.built_by = "algan-edge build-engine"
        (staging / ENGINE_SIDECAR_FILE).write_text(built.sidecar.text(), encoding="utf-8")
        if built.timing_cache:
            (staging / ENGINE_TIMING_CACHE_FILE).write_bytes(built.timing_cache)
        if built.calibration_cache:
            (staging / ENGINE_INT8_CACHE_FILE).write_bytes(built.calibration_cache)
        parity = _engine_parity(staging, onnx32, images, built.plan.precision, trt, cuda, say)
        files = _commit(staging, model_dir,
                        [ENGINE_FILE, ENGINE_SIDECAR_FILE, ENGINE_TIMING_CACHE_FILE, ENGINE_INT8_CACHE_FILE])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if manifest is not None:
        files[MANIFEST_FILE] = record_engine(model_dir, built.sidecar)
    return DeviceBuildReport(built.sidecar, files, parity)


def engine_signature(trt: Any, engine_bytes: bytes, logger: Any) -> dict:
    """I/O signature of a serialized engine: input/output names, input shape [H, W], profile 0's batch range and
    the output dtypes, read with ``trt.Runtime.deserialize_cuda_engine`` (needs the GPU the engine was built on).

    Raises:
        EngineError: TensorRT cannot deserialize it, or it does not match the edge contract.
    """
    runtime: tensorrt.Runtime = trt.Runtime(logger)
    engine: tensorrt.ICudaEngine | None = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise EngineError("TensorRT cannot deserialize the engine: it was built with another TensorRT version or for "
                          "another GPU; build it here with algan-edge build-engine")
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    if inputs != [INPUT_NAME] or not outputs or outputs[0] != OUTPUT_NAME or not set(outputs[1:]) <= {MAPS_OUTPUT_NAME}:
        raise EngineError(f"the engine has inputs {inputs} and outputs {outputs}; the edge contract is "
                          f"['{INPUT_NAME}'] -> ['{OUTPUT_NAME}'(, '{MAPS_OUTPUT_NAME}')]: build it from the bundle's "
                          "model.onnx (trtexec --onnx=model.onnx keeps the names)")
    from algan.runtime.runners.tensorrt import dims_tuple

    lo, opt, hi = (dims_tuple(s) for s in engine.get_tensor_profile_shape(INPUT_NAME, 0))
    if len(hi) != 4 or hi[3] != 3:
        raise EngineError(f"the engine's input {INPUT_NAME} has profile shape {hi}; expected [N, H, W, 3]")
    return {"input_name": INPUT_NAME, "output_name": OUTPUT_NAME, "output_names": outputs,
            "input_shape": [hi[1], hi[2]], "batch_profile": {"min": lo[0], "opt": opt[0], "max": hi[0]}}


def adopt_engine(engine_path: Path, model_dir: Path | None = None, precision: str = "fp16", trt: Any = None,
                 cuda: Any = None, gpu: Callable[[], tuple[str, str]] | None = None,
                 say: Callable[[str], None] = print) -> DeviceBuildReport:
    """Write the sidecar of an engine built with ``trtexec`` (e.g. ``trtexec --onnx=model.onnx --fp16
    --minShapes=images:1x224x224x3 --optShapes=images:8x224x224x3 --maxShapes=images:16x224x224x3
    --saveEngine=model.engine``), after checking its I/O signature and its parity with ONNX Runtime CPU.

    The sidecar records this device's TensorRT version, GPU name and compute capability (an engine only
    deserializes on the TensorRT it was built with), the I/O signature read from the engine, the ``onnx_sha256`` of
    the bundle's ``model.onnx`` and ``precision`` (as told: a serialized engine does not say). The engine is
    copied to ``model_dir/model.engine`` when it lives elsewhere, and recorded in the bundle's ``algan.json`` as a
    built one is (:func:`record_engine`).

    Raises:
        EngineError: missing files, an invalid ``algan.json``, an engine that does not deserialize here or breaks the
            I/O contract (exit 2).
        EngineBuildError: parity beyond the tolerance of ``precision`` (exit 1).
    """
    import shutil
    import tempfile

    engine_path = Path(engine_path)
    model_dir = Path(model_dir) if model_dir is not None else engine_path.parent
    if precision not in TOLERANCES:
        raise EngineError(f"--precision must be one of {', '.join(TOLERANCES)}, got {precision!r}")
    if not engine_path.is_file():
        raise EngineError(f"engine {engine_path} does not exist")
    manifest = _manifest_of(model_dir)
    onnx32, size, _, images, trt, cuda = _device_inputs(
        model_dir, "pass the bundle directory as MODEL_DIR (algan-edge build-engine MODEL_DIR --adopt ENGINE) to "
        "check the engine against", trt, cuda)
    blob = engine_path.read_bytes()
    sig = engine_signature(trt, blob, make_logger(trt, log))
    if tuple(sig["input_shape"]) != size:
        raise EngineError(f"the engine takes {sig['input_shape']} images, {ONNX_FILE} takes {list(size)}: build it "
                          f"from this bundle's {ONNX_FILE}")
    gpu_name, cc = (gpu or pycuda_identity(cuda))()
    sidecar = EngineSidecar.model_validate(
        {"tensorrt_version": str(trt.__version__), "gpu_name": gpu_name, "compute_capability": cc,
         "precision": precision, **sig, "onnx_file": ONNX_FILE, "onnx_sha256": file_sha256(onnx32),
         "engine_sha256": file_sha256(engine_path), "built_by": ADOPTED_NOTE, "created": utc_now_iso()})
    staging = Path(tempfile.mkdtemp(dir=model_dir, prefix=".engine-"))
    try:
        shutil.copyfile(engine_path, staging / ENGINE_FILE)
        (staging / ENGINE_SIDECAR_FILE).write_text(sidecar.text(), encoding="utf-8")
        say(f"adopting {engine_path} (TensorRT {trt.__version__}, {gpu_name} {cc}; outputs "
            f"{', '.join(sig['output_names'])}; batch {sig['batch_profile']['min']}-{sig['batch_profile']['max']})")
        parity = _engine_parity(staging, onnx32, images, precision, trt, cuda, say)
        files = _commit(staging, model_dir, [ENGINE_FILE, ENGINE_SIDECAR_FILE])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if manifest is not None:
        files[MANIFEST_FILE] = record_engine(model_dir, sidecar)
    return DeviceBuildReport(sidecar, files, parity)
