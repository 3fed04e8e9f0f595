"""A STAND-IN for the ``tensorrt`` module (not TensorRT): records every call the build orchestration makes.

Only the API surface ``algan.export.tensorrt.build_engine`` uses is modelled, with the names of the TensorRT
Python API (Builder, OnnxParser, IBuilderConfig, IOptimizationProfile, ITimingCache, IInt8EntropyCalibrator2).
Precision flags and the INT8 calibrator API are absent in the 11.x stand-in, as they are in TensorRT 11.
"""

from __future__ import annotations

import enum
import types


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

        def get_input(self, i):
            return Tensor("images")

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
