"""TensorRT runner (TensorRT 10 Python API + pycuda), for Jetson and other NVIDIA GPU devices.

* One inference thread owns the CUDA context (``pycuda.driver.Device(i).make_context()``, never
  ``pycuda.autoinit``), the stream, the engine, the execution context and every buffer; :meth:`__call__` hands a
  batch to it and waits. So the CUDA context is current on exactly one thread, whatever thread the daemon scores
  from.
* Page-locked host buffers and device buffers are allocated once, for the profile's largest batch.
* Per batch: ``set_input_shape`` (N within the optimization profile; larger batches are split, smaller ones than
  the profile's minimum are padded), async copies, ``set_tensor_address`` + ``execute_async_v3`` on the stream.
* The engine's JSON sidecar (``model.engine.json``, or ``model.json``) must match the running TensorRT version,
  GPU name and compute capability; otherwise the runner refuses the engine with one line saying how to rebuild it
  (``algan-edge build-engine --fp16 MODEL_DIR`` on this device). TensorRT's own log goes to Python logging. That the
  engine was built from the bundle's current graph (its ``onnx_sha256``) is checked before, by
  :func:`algan.runtime.verify.verify_model` (a stale engine, built before a re-export, is refused there).

Sidecar keys (written by ``algan-export``): ``tensorrt_version``, ``gpu_name``, ``compute_capability`` ("8.7"),
``precision`` (fp16|int8|fp32), ``batch_profile`` {min, opt, max}, ``onnx_sha256``, ``input_name`` ("images"),
``output_name`` ("scores"), ``input_shape`` [H, W]; optional ``output_names`` (["scores", "anomaly_maps"] for
patch heads: both outputs are allocated and returned, see :meth:`TensorRTRunner.run`). Sidecars are
written by ``algan-export`` / ``algan-edge build-engine`` on the device, or by ``algan-edge build-engine --adopt
model.engine`` for an engine built with ``trtexec`` (:mod:`algan.export.engine_build`).
"""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from algan.contract import MAPS_OUTPUT_NAME, ONNX_FILE, BundleError, EngineSidecar
from algan.runtime.errors import ModelError
from algan.runtime.runners.base import RunnerOutput, resolve_model_path
from algan.runtime.runners.calibration import onnx_metadata, remap_for
from algan.runtime.verify import sidecar_path
from algan.trt_logging import make_logger

if TYPE_CHECKING:  # the TensorRT API from tensorrt-stubs (make lint): mypy checks every call on these objects
    import tensorrt

log = logging.getLogger(__name__)

#: Longest a caller waits for the inference thread to score one batch (seconds).
CALL_TIMEOUT_S = 60.0


def dims_tuple(dims: Any) -> tuple[int, ...]:
    """A ``tensorrt.Dims`` (or any sequence) as a tuple of ints; ``Dims`` has ``__len__``/``__getitem__``."""
    return tuple(int(dims[i]) for i in range(len(dims)))


def read_sidecar(engine: Path) -> EngineSidecar:
    """Read and check an engine's sidecar (:class:`algan.contract.EngineSidecar`).

    Raises:
        ModelError: missing or unreadable sidecar, or a missing/mistyped key.
    """
    path = sidecar_path(engine)
    rebuild = f"rebuild the engine with algan-edge build-engine --fp16 {engine.parent} on this device"
    try:
        return EngineSidecar.read(path)
    except FileNotFoundError:
        raise ModelError(f"engine {engine} has no sidecar {path.name}; {rebuild}") from None
    except BundleError as e:
        raise ModelError(f"{e}; {rebuild}") from None


def check_sidecar(meta: EngineSidecar, engine: Path, trt_version: str, gpu_name: str, capability: str) -> None:
    """Refuse an engine built for another TensorRT version, GPU or compute capability.

    Args:
        meta: the sidecar (see :func:`read_sidecar`).
        engine: engine path (for the message).
        trt_version: running ``tensorrt.__version__``.
        gpu_name: running GPU name (pycuda ``Device.name()``).
        capability: running compute capability, e.g. ``"8.7"``.

    Raises:
        ModelError: one line listing every mismatch and how to rebuild.
    """
    running = {"tensorrt_version": (meta.tensorrt_version, trt_version), "gpu_name": (meta.gpu_name, gpu_name),
               "compute_capability": (meta.compute_capability, capability)}
    diffs = [f"{k} {built} != {here}" for k, (built, here) in running.items() if built.strip() != here.strip()]
    if diffs:
        msg = (
            f"engine {engine} was built elsewhere ({'; '.join(diffs)} here): TensorRT engines only run on the "
            "TensorRT version and GPU they were built with; rebuild it with algan-edge build-engine --fp16 "
            f"{engine.parent} on this device"
        )
        raise ModelError(msg)


class _Job:
    __slots__ = ("images", "done", "result", "error")

    def __init__(self, images: np.ndarray) -> None:
        self.images = images
        self.done = threading.Event()
        self.result: dict[str, np.ndarray] | None = None
        self.error: BaseException | None = None


class TensorRTRunner:
    """Scores batches with a serialized TensorRT engine.

    Args:
        model: a ``.engine`` file, or a bundle directory holding ``model.engine``.
        device: CUDA device index.
        trt: the ``tensorrt`` module (tests pass a stand-in); imported when ``None``.
        cuda: the ``pycuda.driver`` module (tests pass a stand-in); imported when ``None``.

    Raises:
        ModelError: missing engine or sidecar, an engine built for another TensorRT/GPU, an engine not matching
            the contract, or a failure at load or warm-up.
        ImportError: tensorrt or pycuda is not installed (:func:`algan.runtime.runners.base.load_runner` turns
            this into a one-line install hint).
    """

    def __init__(self, model: Path, device: int = 0, trt: Any = None, cuda: Any = None) -> None:
        if trt is None:
            import tensorrt as trt
        if cuda is None:
            import pycuda.driver as cuda
        self._trt, self._cuda = trt, cuda
        self.path = resolve_model_path(Path(model), "tensorrt")
        self.meta = read_sidecar(self.path)
        h, w = (int(x) for x in self.meta.input_shape)
        self._size = (h, w)
        prof = self.meta.batch_profile
        self.batch_min, self.batch_opt, self.batch_max = int(prof["min"]), int(prof["opt"]), int(prof["max"])
        self._in_name, self._out_name = self.meta.input_name, self.meta.output_name
        self._outputs = list(self.meta.output_names or [self._out_name])
        self._out_shapes: dict[str, tuple[int, ...]] = {}
        extra = self.meta.model_extra or {}
        self._model_id = str(extra.get("model_id") or (self.meta.onnx_sha256 or "")[:12] or self.path.stem)
        # export-time calibration: from the sidecar if it carries it, else from the ONNX the engine was built from
        graph = self.path.with_name(ONNX_FILE)
        meta = onnx_metadata(graph) if graph.is_file() else {}
        meta.update({k: str(v) for k, v in extra.items() if k.startswith("algan.")})
        self._remap = remap_for(Path(model), meta)
        self.device = int(device)
        self._jobs: queue.Queue[_Job | None] = queue.Queue()
        self._ready = threading.Event()
        self._init_error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="tensorrt-inference", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._init_error is not None:
            self._thread.join(5)
            err = self._init_error
            if isinstance(err, ModelError):
                raise err
            raise ModelError(f"cannot load TensorRT engine {self.path}: {str(err)[:300]}") from None
        self._warmup()

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def input_size(self) -> tuple[int, int]:
        return self._size

    @property
    def backend(self) -> str:
        return "tensorrt"

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def output_names(self) -> list[str]:
        """The engine's outputs: ``["scores"]`` or ``["scores", "anomaly_maps"]``."""
        return list(self._outputs)

    @property
    def map_size(self) -> tuple[int, int] | None:
        """``(h, w)`` of the anomaly maps (from the engine's output shape), or ``None`` for a score-only engine."""
        shape = self._out_shapes.get(MAPS_OUTPUT_NAME)
        return (int(shape[0]), int(shape[1])) if shape else None

    # -- inference thread ----------------------------------------------------------------------------------
    def _serve(self) -> None:
        """Owns the CUDA context and every CUDA object; runs until :meth:`close`."""
        cuda, trt = self._cuda, self._trt
        ctx = None
        allocs: list[Any] = []
        try:
            cuda.init()
            dev = cuda.Device(self.device)
            ctx = dev.make_context()
            major, minor = dev.compute_capability()
            check_sidecar(self.meta, self.path, str(trt.__version__), str(dev.name()), f"{major}.{minor}")
            self._logger = make_logger(trt, log, info_level=logging.DEBUG)
            runtime: tensorrt.Runtime = trt.Runtime(self._logger)
            engine: tensorrt.ICudaEngine | None = runtime.deserialize_cuda_engine(self.path.read_bytes())
            if engine is None:
                raise ModelError(f"TensorRT could not deserialize {self.path} (see the TensorRT log above); rebuild it "
                                 f"with algan-edge build-engine --fp16 {self.path.parent} on this device")
            self._check_engine(engine)
            context: tensorrt.IExecutionContext | None = engine.create_execution_context()
            if context is None:
                raise ModelError(f"TensorRT could not create an execution context for {self.path} (out of GPU "
                                 "memory?)")
            stream = cuda.Stream()
            h, w = self._size
            in_dtype = trt.nptype(engine.get_tensor_dtype(self._in_name))
            host_in = cuda.pagelocked_empty((self.batch_max, h, w, 3), in_dtype)
            dev_in = cuda.mem_alloc(host_in.nbytes)
            allocs.append(dev_in)
            host_out, dev_out = {}, {}
            for name in self._outputs:  # every output is bound (TensorRT needs an address for each)
                shape = self._out_shapes.get(name, ())
                host_out[name] = cuda.pagelocked_empty((self.batch_max, *shape),
                                                       trt.nptype(engine.get_tensor_dtype(name)))
                dev_out[name] = cuda.mem_alloc(host_out[name].nbytes)
                allocs.append(dev_out[name])
        except BaseException as e:  # reported to the constructor
            self._init_error = e
            self._release(ctx, allocs)
            self._ready.set()
            return
        self._ready.set()
        try:
            while (job := self._jobs.get()) is not None:
                try:
                    job.result = self._infer(job.images, context, stream, host_in, host_out, dev_in, dev_out)
                except BaseException as e:  # reported to the caller
                    job.error = e
                job.done.set()
        finally:
            del context, engine, runtime
            self._release(ctx, allocs)

    def _release(self, ctx: Any, allocs: list[Any]) -> None:
        for a in allocs:
            a.free()
        allocs.clear()
        if ctx is not None:
            ctx.pop()
            ctx.detach()

    def _check_engine(self, engine: tensorrt.ICudaEngine) -> None:
        trt = self._trt
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if inputs != [self._in_name] or outputs != self._outputs:
            raise ModelError(f"engine {self.path} has inputs {inputs} and outputs {outputs}; expected "
                             f"['{self._in_name}'] -> {self._outputs}: rebuild it with algan-edge build-engine")
        for name in self._outputs[1:]:  # anomaly_maps [N, h, w]: static per-image shape
            shape = dims_tuple(engine.get_tensor_shape(name))[1:]
            if not shape or min(shape) < 1:
                raise ModelError(f"engine {self.path} output {name} has no static per-image shape ({shape}); "
                                 "rebuild it with algan-edge build-engine")
            self._out_shapes[name] = shape
        lo, _, hi = engine.get_tensor_profile_shape(self._in_name, 0)
        if int(lo[0]) > self.batch_min or int(hi[0]) < self.batch_max:
            log.warning("engine %s profile batch %d-%d differs from its sidecar %d-%d; using the engine's", self.path,
                        int(lo[0]), int(hi[0]), self.batch_min, self.batch_max)
            self.batch_min, self.batch_max = int(lo[0]), int(hi[0])

    def _infer(self, images: np.ndarray, context: tensorrt.IExecutionContext, stream: Any, host_in: np.ndarray,
               host_out: dict[str, np.ndarray], dev_in: Any, dev_out: dict[str, Any]) -> dict[str, np.ndarray]:
        """Score ``images`` (N <= batch_max) on the inference thread; pads N up to the profile's minimum."""
        cuda = self._cuda
        n = images.shape[0]
        m = max(n, self.batch_min)
        host_in[:n] = images
        if m > n:
            host_in[n:m] = 0
        h, w = self._size
        if not context.set_input_shape(self._in_name, (m, h, w, 3)):
            raise RuntimeError(f"TensorRT rejected the input shape ({m}, {h}, {w}, 3)")
        cuda.memcpy_htod_async(dev_in, host_in[:m], stream)
        context.set_tensor_address(self._in_name, int(dev_in))
        for name in self._outputs:
            context.set_tensor_address(name, int(dev_out[name]))
        if not context.execute_async_v3(stream.handle):
            raise RuntimeError("TensorRT execute_async_v3 failed (see the TensorRT log)")
        for name in self._outputs:
            cuda.memcpy_dtoh_async(host_out[name][:m], dev_out[name], stream)
        stream.synchronize()
        return {name: host_out[name][:n].astype(np.float32) for name in self._outputs}

    # -- API -----------------------------------------------------------------------------------------------
    def _warmup(self) -> None:
        """Score one black batch of the profile's optimal size: TensorRT sets up its kernels and memory on the
        first run (slow), and a broken engine fails here at start-up rather than on the first camera frame."""
        h, w = self._size
        try:
            out = self(np.zeros((max(1, self.batch_opt), h, w, 3), np.uint8))
        except (RuntimeError, ValueError) as e:
            self.close()
            raise ModelError(f"engine {self.path} fails on a test batch: {str(e)[:300]}; rebuild it") from None
        if out.shape != (max(1, self.batch_opt),):
            self.close()
            raise ModelError(f"engine {self.path} returned scores of shape {out.shape}; rebuild it")

    def _outputs_of(self, images: np.ndarray) -> dict[str, np.ndarray]:
        h, w = self._size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (h, w, 3):
            raise ValueError(f"expected uint8 images of shape (N, {h}, {w}, 3), got {images.dtype} {images.shape}")
        parts: list[dict[str, np.ndarray]] = []
        for i in range(0, images.shape[0], self.batch_max):
            job = _Job(np.ascontiguousarray(images[i : i + self.batch_max]))
            if not self._thread.is_alive():
                raise RuntimeError("the TensorRT inference thread has stopped")
            self._jobs.put(job)
            if not job.done.wait(CALL_TIMEOUT_S):
                raise RuntimeError(f"TensorRT did not answer within {CALL_TIMEOUT_S:g} s")
            if job.error is not None:
                raise RuntimeError(f"TensorRT failed: {job.error}") from job.error
            assert job.result is not None
            parts.append(job.result)
        out = {k: (np.concatenate([p[k] for p in parts]) if len(parts) > 1 else parts[0][k]) for k in self._outputs}
        if self._remap is not None:  # the same affine re-map for scores and anomaly_maps (HELPERS.md contract)
            out = {k: self._remap(v) for k, v in out.items()}
        return out

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Score a batch.

        Args:
            images: uint8 BGR, shape (N, H, W, 3) with (H, W) = :attr:`input_size`; any N >= 1 (split into chunks
                of the profile's maximum).

        Returns:
            float32 calibrated scores, shape (N,).

        Raises:
            ValueError: wrong dtype or shape.
            RuntimeError: TensorRT failed, or the inference thread is gone.
        """
        return self._outputs_of(images)[self._out_name]

    def run(self, images: np.ndarray) -> RunnerOutput:
        """Scores and anomaly maps of a batch (same arguments and errors as :meth:`__call__`).

        Returns:
            ``RunnerOutput(scores float32 (N,), maps float32 (N, h, w) or None for a score-only model)``, both on the
            calibrated scale (re-mapped with the same constants).
        """
        out = self._outputs_of(images)
        return RunnerOutput(out[self._out_name], out.get(MAPS_OUTPUT_NAME))

    @property
    def has_maps(self) -> bool:
        """True when the model has the ``anomaly_maps`` output."""
        return MAPS_OUTPUT_NAME in self.output_names

    def close(self) -> None:
        """Stop the inference thread and free the CUDA buffers and context (idempotent)."""
        if self._thread.is_alive():
            self._jobs.put(None)
            self._thread.join(10)
