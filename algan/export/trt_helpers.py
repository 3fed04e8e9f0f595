"""TensorRT helpers that touch the GPU: INT8 entropy calibrator, device buffers, GPU identity (the logger bridge is
algan.trt_logging, shared with the edge runner).

Everything takes the ``tensorrt`` module as an argument, so the build orchestration can be tested against a
stand-in module on machines without TensorRT. TensorRT is optional (extra ``tensorrt``) and imported lazily.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Callable
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)


class DeviceBuffer(Protocol):
    """A GPU allocation the calibrator copies host batches into."""

    ptr: int

    def copy_from(self, host: np.ndarray) -> None:
        """Copy a C-contiguous host array (at most the buffer's size) to the device."""

    def free(self) -> None:
        """Release the allocation (idempotent)."""


class _CudaPythonBuffer:
    """Device memory through cuda-python's runtime API (primary context, as TensorRT uses)."""

    def __init__(self, nbytes: int) -> None:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:  # cuda-python < 12.6
            from cuda import cudart
        self._rt = cudart
        err, ptr = cudart.cudaMalloc(nbytes)
        if int(err) != 0:
            raise RuntimeError(f"cudaMalloc({nbytes}) failed with {err}")
        self.ptr = int(ptr)

    def copy_from(self, host: np.ndarray) -> None:
        rt = self._rt
        (err,) = rt.cudaMemcpy(self.ptr, host.ctypes.data, host.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice)
        if int(err) != 0:
            raise RuntimeError(f"cudaMemcpy to the device failed with {err}")

    def free(self) -> None:
        if self.ptr:
            self._rt.cudaFree(self.ptr)
            self.ptr = 0


class _PycudaBuffer:
    """Device memory through pycuda, on the device's primary context (``pycuda.autoprimaryctx``)."""

    def __init__(self, nbytes: int) -> None:
        import pycuda.autoprimaryctx  # noqa: F401 - retains the primary context TensorRT also uses
        import pycuda.driver as cuda

        self._cuda = cuda
        self._mem = cuda.mem_alloc(nbytes)
        self.ptr = int(self._mem)

    def copy_from(self, host: np.ndarray) -> None:
        self._cuda.memcpy_htod(self._mem, host)

    def free(self) -> None:
        if self._mem is not None:
            self._mem.free()
            self._mem = None
            self.ptr = 0


def default_device_alloc(nbytes: int) -> DeviceBuffer:
    """Allocate ``nbytes`` of GPU memory with cuda-python, else pycuda.

    Raises:
        RuntimeError: neither package is installed (the message says how to install one).
    """
    try:
        return _CudaPythonBuffer(nbytes)
    except ImportError:
        pass
    try:
        return _PycudaBuffer(nbytes)
    except ImportError:
        raise RuntimeError("INT8 calibration needs cuda-python or pycuda to copy batches to the GPU: "
                           "pip install cuda-python (or pip install 'algan-edge[tensorrt]')") from None


def make_calibrator(trt, images: np.ndarray, batch_size: int, cache: bytes | None,
                    device_alloc: Callable[[int], DeviceBuffer] = default_device_alloc):
    """An ``IInt8EntropyCalibrator2`` (TensorRT < 11) that feeds uint8 BGR (N, H, W, 3) frames.

    ``get_batch`` copies the next ``batch_size`` frames into one device buffer and returns its address; a last
    partial batch is dropped (TensorRT calibrates with a fixed batch shape, the calibration profile). The cache
    read from ``read_calibration_cache`` is ``cache`` (skip calibration when it matches); what TensorRT writes is
    kept in ``calibrator.cache_out`` for the caller to save.

    Raises:
        ValueError: not uint8 (N, H, W, 3), or fewer than one batch of frames.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"INT8 calibration frames must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if len(images) < batch_size:
        raise ValueError(f"INT8 calibration needs at least one batch of {batch_size} frames, got {len(images)}")

    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.batch_size = int(batch_size)
            self.images = images
            self.index = 0
            self.cache_out: bytes | None = None
            self.buffer = device_alloc(int(np.prod(images.shape[1:])) * self.batch_size)

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names, *args):  # noqa: ANN001, ANN002 - TensorRT's signature (names[, p_str])
            if self.index + self.batch_size > len(self.images):
                return None
            chunk = np.ascontiguousarray(self.images[self.index : self.index + self.batch_size])
            self.index += self.batch_size
            self.buffer.copy_from(chunk)
            return [int(self.buffer.ptr)]

        def read_calibration_cache(self):
            return cache or None

        def write_calibration_cache(self, data) -> None:  # noqa: ANN001 - a buffer
            self.cache_out = bytes(data)

        def close(self) -> None:
            self.buffer.free()

    return EntropyCalibrator()


def gpu_identity() -> tuple[str, str]:
    """``(gpu_name, compute_capability)`` of CUDA device 0, e.g. ``("Orin", "8.7")``.

    Tries cuda-python, pycuda, then ``nvidia-smi`` (never torch: the device build is torch-free).

    Raises:
        RuntimeError: no way to ask the GPU (the engine sidecar must name it).
    """
    try:
        try:
            from cuda.bindings import runtime as cudart
        except ImportError:
            from cuda import cudart
        err, props = cudart.cudaGetDeviceProperties(0)
        if int(err) == 0:
            name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
            return name.strip("\x00 "), f"{props.major}.{props.minor}"
    except ImportError:
        pass
    try:
        import pycuda.autoprimaryctx  # noqa: F401
        import pycuda.driver as cuda

        dev = cuda.Device(0)
        major, minor = dev.compute_capability()
        return dev.name(), f"{major}.{minor}"
    except ImportError:
        pass
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap", "--format=csv,noheader", "-i", "0"],
                             capture_output=True, text=True, timeout=20, check=True).stdout.strip()
        name, cc = (s.strip() for s in out.split(",", 1))
        return name, cc
    except (OSError, subprocess.SubprocessError, ValueError):
        pass
    raise RuntimeError("cannot identify the GPU for the engine sidecar: install cuda-python or pycuda "
                       "(pip install 'algan-edge[tensorrt]')")
