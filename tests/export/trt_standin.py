"""A STAND-IN for the ``tensorrt`` module (not TensorRT): records every call the build orchestration makes.

Only the API surface ``algan.export.tensorrt.build_engine`` uses is modelled, with the names of the TensorRT
Python API (Builder, OnnxParser, IBuilderConfig, IOptimizationProfile, ITimingCache, IInt8EntropyCalibrator2).
Precision flags and the INT8 calibrator API are absent in the 11.x stand-in, as they are in TensorRT 11.
"""

from __future__ import annotations

import enum
import types

import numpy as np


def make_standin(version: str, parse_ok: bool = True, build_ok: bool = True, errors=()):
    """A module-like stand-in for TensorRT ``version``; ``mod.calls`` lists ``(name, args)`` in call order."""
    calls: list[tuple] = []
    major = int(version.split(".")[0])
    mod = types.SimpleNamespace(__version__=version, calls=calls)

    class Severity(enum.IntEnum):
        INTERNAL_ERROR = 0
        ERROR = 1
        WARNING = 2
        INFO = 3
        VERBOSE = 4

    class ILogger:
        def __init__(self):
            calls.append(("ILogger.__init__",))

    flags = {"STRONGLY_TYPED": 1} if major >= 10 else {"EXPLICIT_BATCH": 0, "STRONGLY_TYPED": 1}
    mod.NetworkDefinitionCreationFlag = enum.IntEnum("NetworkDefinitionCreationFlag", flags)
    builder_flags = {"TF32": 7} if major >= 11 else {"FP16": 0, "INT8": 1, "TF32": 7}
    mod.BuilderFlag = enum.Enum("BuilderFlag", builder_flags)
    mod.MemoryPoolType = enum.Enum("MemoryPoolType", {"WORKSPACE": 0})
    ILogger.Severity = Severity
    mod.ILogger = ILogger

    class Tensor:
        def __init__(self, name):
            self.name = name

    class Network:
        num_inputs = 1

        @property
        def num_outputs(self):
            return len(getattr(mod, "network_outputs", [Tensor("scores")]))

        def get_input(self, i):
            return Tensor("images")

        def get_output(self, i):
            return getattr(mod, "network_outputs", [Tensor("scores")])[i]

    class ParserError:
        def __init__(self, node, desc):
            self._node, self._desc = node, desc

        def node(self):
            return self._node

        def desc(self):
            return self._desc

    class OnnxParser:
        def __init__(self, network, logger):
            calls.append(("OnnxParser",))
            self.logger = logger
            self.num_errors = 0 if parse_ok else len(errors)

        def parse_from_file(self, path):
            calls.append(("parse_from_file", path))
            return parse_ok

        def get_error(self, i):
            return ParserError(*errors[i])

    class Profile:
        def set_shape(self, name, mn, opt, mx):
            calls.append(("profile.set_shape", name, tuple(mn), tuple(opt), tuple(mx)))

    class TimingCache:
        def __init__(self, blob):
            self.blob = bytes(blob)

        def serialize(self):
            return self.blob + b"+timed"

    class Config:
        def __init__(self):
            self.int8_calibrator = None
            self._cache = None

        def set_memory_pool_limit(self, pool, size):
            calls.append(("set_memory_pool_limit", pool.name, size))

        def set_flag(self, flag):
            calls.append(("set_flag", flag.name))

        def add_optimization_profile(self, p):
            calls.append(("add_optimization_profile",))

        def set_calibration_profile(self, p):
            calls.append(("set_calibration_profile",))

        def create_timing_cache(self, blob):
            calls.append(("create_timing_cache", bytes(blob)))
            return TimingCache(blob)

        def set_timing_cache(self, cache, ignore_mismatch):
            calls.append(("set_timing_cache", cache.blob, ignore_mismatch))
            self._cache = cache
            return True

        def get_timing_cache(self):
            return self._cache

    class Builder:
        def __init__(self, logger):
            calls.append(("Builder",))
            self.logger = logger

        def create_network(self, flags):
            calls.append(("create_network", flags))
            return Network()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            calls.append(("build_serialized_network",))
            cal = config.int8_calibrator
            if cal is not None:  # what TensorRT does with an implicit-INT8 calibrator
                bs = cal.get_batch_size()
                if cal.read_calibration_cache() is None:
                    while cal.get_batch(["images"]) is not None:
                        calls.append(("calibrated_batch", bs))
                    cal.write_calibration_cache(b"calibration-table")
            if not build_ok:
                self.logger.log(Severity.ERROR, "stand-in: out of workspace")
                return None
            return b"stand-in engine"

    mod.Builder = Builder
    mod.OnnxParser = OnnxParser
    if major < 11:
        class IInt8EntropyCalibrator2:
            def __init__(self):
                calls.append(("IInt8EntropyCalibrator2.__init__",))

        mod.IInt8EntropyCalibrator2 = IInt8EntropyCalibrator2
    return mod


class StandInBuffer:
    """Stand-in device buffer: records host batches copied 'to the device'."""

    copies: list = []

    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.ptr = 0xD0000
        self.freed = False

    def copy_from(self, host):
        assert host.nbytes <= self.nbytes and host.flags["C_CONTIGUOUS"]
        StandInBuffer.copies.append(host.copy())

    def free(self):
        self.freed = True


def add_runtime(mod, run, outputs=("scores",), map_shape=(4, 3), size=(8, 6), profile=(1, 4, 8)):
    """Give a builder stand-in the runtime API the TensorRT runner uses (Runtime, engine, execution context).

    ``run(images uint8 (N, H, W, 3)) -> {output name: float32 array}`` plays the engine's numerics; the engine's
    I/O tensors are ``images`` and ``outputs``; device memory is the :class:`StandInCuda`'s. The parsed network
    of the builder stand-in reports the same outputs.
    """
    h, w = size
    names = ("images", *outputs)

    class Context:
        def __init__(self, cuda):
            self.cuda, self.shape, self.addr = cuda, None, {}

        def set_input_shape(self, name, shape):
            self.shape = tuple(shape)
            return profile[0] <= shape[0] <= profile[2]

        def set_tensor_address(self, name, addr):
            self.addr[name] = addr

        def execute_async_v3(self, handle):
            mem = self.cuda.mem
            n = self.shape[0]
            x = mem[self.addr["images"]][: n * h * w * 3].reshape(n, h, w, 3)
            for name, value in run(x).items():
                if name not in outputs:
                    continue
                raw = np.ascontiguousarray(value, np.float32).view(np.uint8).ravel()
                mem[self.addr[name]][: raw.size] = raw
            return True

    class Engine:
        num_io_tensors = len(names)

        def __init__(self, cuda):
            self.cuda = cuda

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return "IN" if name == "images" else "OUT"

        def get_tensor_dtype(self, name):
            return np.uint8 if name == "images" else np.float32

        def get_tensor_shape(self, name):
            return (-1, h, w, 3) if name == "images" else (-1,) if name == "scores" else (-1, *map_shape)

        def get_tensor_profile_shape(self, name, index):
            return [(p, h, w, 3) for p in profile]

        def create_execution_context(self):
            return Context(self.cuda)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            mod.calls.append(("deserialize_cuda_engine", bytes(data)))
            return Engine(mod.cuda) if bytes(data) == b"stand-in engine" else None

    class Out:
        def __init__(self, name):
            self.name = name

    mod.Runtime = Runtime
    mod.TensorIOMode = types.SimpleNamespace(INPUT="IN", OUTPUT="OUT")
    mod.nptype = lambda dt: dt
    mod.network_outputs = [Out(n) for n in outputs]
    return mod


class StandInCuda:
    """Stand-in for ``pycuda.driver``: device memory is a dict of numpy byte arrays."""

    def __init__(self, name="Stand-in GPU", cc=(8, 7)):
        self.mem: dict[int, np.ndarray] = {}
        self._next = 0x1000
        self.name, self.cc = name, cc
        cuda = self

        class Device:
            def __init__(self, i):
                pass

            def name(self):
                return cuda.name

            def compute_capability(self):
                return cuda.cc

            def make_context(self):
                return types.SimpleNamespace(pop=lambda: None, detach=lambda: None)

        class Stream:
            handle = 7

            def synchronize(self):
                pass

        class Alloc:
            def __init__(self, nbytes):
                cuda._next += 0x1000
                self.addr = cuda._next
                cuda.mem[self.addr] = np.zeros(nbytes, np.uint8)

            def __int__(self):
                return self.addr

            def free(self):
                del cuda.mem[self.addr]

        self.Device, self.Stream, self._Alloc = Device, Stream, Alloc

    def init(self):
        pass

    def pagelocked_empty(self, shape, dtype):
        return np.empty(shape, dtype)

    def mem_alloc(self, nbytes):
        return self._Alloc(nbytes)

    def memcpy_htod_async(self, dst, src, stream):
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        self.mem[int(dst)][: raw.size] = raw

    def memcpy_dtoh_async(self, dst, src, stream):
        dst.view(np.uint8).ravel()[:] = self.mem[int(src)][: dst.nbytes]
