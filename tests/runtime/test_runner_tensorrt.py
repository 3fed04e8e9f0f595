"""TensorRT runner: logic against a recording STAND-IN for the tensorrt and pycuda.driver modules (no GPU needed),
plus a real-GPU test that skips without TensorRT.

The stand-in implements only what the runner calls; its "engine" scores like the tiny test model
(mean pixel / 128) so results can be checked, and it records every call with the calling thread.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from algan.runtime.errors import ModelError
from algan.runtime.runners.tensorrt import TensorRTRunner, check_sidecar, read_sidecar

H, W = 8, 6


class StandInCuda:
    """Stand-in for ``pycuda.driver``: host/device memory are numpy arrays; records calls and threads."""

    def __init__(self, name: str = "Orin", cc: tuple[int, int] = (8, 7)) -> None:
        self.calls: list[tuple[str, str]] = []
        self.mem: dict[int, np.ndarray] = {}
        self._next = 0x1000
        self.name, self.cc = name, cc
        cuda = self

        class Device:
            def __init__(self, i):
                cuda._rec("Device")

            def name(self):
                return cuda.name

            def compute_capability(self):
                return cuda.cc

            def make_context(self):
                cuda._rec("make_context")
                return SimpleNamespace(pop=lambda: cuda._rec("ctx.pop"), detach=lambda: cuda._rec("ctx.detach"))

        class Stream:
            handle = 42

            def synchronize(self):
                cuda._rec("synchronize")

        class Alloc:
            def __init__(self, nbytes):
                cuda._next += 0x1000
                self.addr = cuda._next
                cuda.mem[self.addr] = np.zeros(nbytes, np.uint8)

            def __int__(self):
                return self.addr

            def free(self):
                cuda._rec("free")
                del cuda.mem[self.addr]

        self.Device, self.Stream, self._Alloc = Device, Stream, Alloc

    def _rec(self, what: str) -> None:
        self.calls.append((what, threading.current_thread().name))

    def init(self):
        self._rec("init")

    def pagelocked_empty(self, shape, dtype):
        self._rec("pagelocked_empty")
        return np.empty(shape, dtype)

    def mem_alloc(self, nbytes):
        self._rec("mem_alloc")
        return self._Alloc(nbytes)

    def memcpy_htod_async(self, dst, src, stream):
        self._rec("memcpy_htod_async")
        raw = np.ascontiguousarray(src).view(np.uint8).ravel()
        self.mem[int(dst)][: raw.size] = raw

    def memcpy_dtoh_async(self, dst, src, stream):
        self._rec("memcpy_dtoh_async")
        dst.view(np.uint8).ravel()[:] = self.mem[int(src)][: dst.nbytes]


def make_stand_in_trt(cuda: StandInCuda, version: str = "10.3.0", profile=(1, 4, 8), names=("images", "scores")):
    """Stand-in for the ``tensorrt`` module whose engine computes mean(image) / 128."""
    calls = cuda.calls

    class Severity:
        INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = range(5)

    class ILogger:
        def __init__(self):
            pass

    ILogger.Severity = Severity

    class Context:
        def __init__(self):
            self.shape = None
            self.addr = {}

        def set_input_shape(self, name, shape):
            calls.append((f"set_input_shape {name} {tuple(shape)}", threading.current_thread().name))
            ok = profile[0] <= shape[0] <= profile[2]
            if ok:
                self.shape = tuple(shape)
            return ok

        def set_tensor_address(self, name, addr):
            calls.append((f"set_tensor_address {name}", threading.current_thread().name))
            self.addr[name] = addr

        def execute_async_v3(self, stream_handle):
            calls.append((f"execute_async_v3 {stream_handle}", threading.current_thread().name))
            n = self.shape[0]
            x = cuda.mem[self.addr[names[0]]][: n * H * W * 3].reshape(n, H, W, 3).astype(np.float32)
            out = (x.mean(axis=(1, 2, 3)) / 128).astype(np.float32)
            cuda.mem[self.addr[names[1]]][: out.nbytes] = out.view(np.uint8)
            return True

    class Engine:
        num_io_tensors = 2

        def get_tensor_name(self, i):
            return names[i]

        def get_tensor_mode(self, name):
            return "IN" if name == names[0] else "OUT"

        def get_tensor_dtype(self, name):
            return np.uint8 if name == names[0] else np.float32

        def get_tensor_profile_shape(self, name, index):
            return [(p, H, W, 3) for p in profile]

        def create_execution_context(self):
            return Context()

    class Runtime:
        def __init__(self, logger):
            self.logger = logger

        def deserialize_cuda_engine(self, data):
            calls.append(("deserialize_cuda_engine", threading.current_thread().name))
            return Engine() if data == b"ENGINE" else None

    return SimpleNamespace(__version__=version, ILogger=ILogger, Runtime=Runtime, nptype=lambda dt: dt,
                           TensorIOMode=SimpleNamespace(INPUT="IN", OUTPUT="OUT"))


def write_engine(folder: Path, **over) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    engine = folder / "model.engine"
    engine.write_bytes(b"ENGINE")
    meta = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "precision": "fp16",
            "batch_profile": {"min": 1, "opt": 4, "max": 8}, "onnx_sha256": "ab" * 32, "input_name": "images",
            "output_name": "scores", "input_shape": [H, W], **over}
    (folder / "model.engine.json").write_text(json.dumps(meta))
    return engine


def test_stand_in_runner_scores_on_its_own_thread(tmp_path):
    cuda = StandInCuda()
    runner = TensorRTRunner(write_engine(tmp_path / "b"), trt=make_stand_in_trt(cuda), cuda=cuda)
    try:
        assert runner.input_size == (H, W) and runner.backend == "tensorrt"
        images = np.stack([np.full((H, W, 3), v, np.uint8) for v in (0, 64, 128, 255)] * 3)  # 12 > max 8: split
        scores = runner(images)
        np.testing.assert_allclose(scores, [0, 0.5, 1.0, 255 / 128] * 3, rtol=1e-6)
        assert scores.dtype == np.float32 and scores.shape == (12,)
        with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, 8, 6, 3\)"):
            runner(np.zeros((1, 6, 8, 3), np.uint8))
    finally:
        runner.close()
    names = [c[0] for c in cuda.calls]
    assert {t for _, t in cuda.calls} == {"tensorrt-inference"}, "every CUDA/TensorRT call on the inference thread"
    assert names[:3] == ["init", "Device", "make_context"] and names[-2:] == ["ctx.pop", "ctx.detach"]
    assert names.count("pagelocked_empty") == 2 and names.count("mem_alloc") == 2, "buffers allocated once"
    shapes = [n for n in names if n.startswith("set_input_shape")]
    assert shapes == [f"set_input_shape images ({n}, {H}, {W}, 3)" for n in (4, 8, 4)], "warm-up at opt, then split"
    i = names.index("execute_async_v3 42")
    assert names[i - 3 : i] == ["memcpy_htod_async", "set_tensor_address images", "set_tensor_address scores"]
    assert names[i + 1 : i + 3] == ["memcpy_dtoh_async", "synchronize"]
    assert names.count("free") == 2


def test_batches_below_the_profile_minimum_are_padded(tmp_path):
    cuda = StandInCuda()
    trt = make_stand_in_trt(cuda, profile=(2, 4, 8))
    runner = TensorRTRunner(write_engine(tmp_path / "b", batch_profile={"min": 2, "opt": 4, "max": 8}), trt=trt,
                            cuda=cuda)
    try:
        np.testing.assert_allclose(runner(np.full((1, H, W, 3), 128, np.uint8)), [1.0])
    finally:
        runner.close()
    assert f"set_input_shape images (2, {H}, {W}, 3)" in [c[0] for c in cuda.calls]


@pytest.mark.parametrize(
    ("cuda_kw", "trt_version", "needle"),
    [
        ({"name": "NVIDIA H200"}, "10.3.0", "gpu_name Orin != NVIDIA H200"),
        ({"cc": (9, 0)}, "10.3.0", "compute_capability 8.7 != 9.0"),
        ({}, "10.7.1", "tensorrt_version 10.3.0 != 10.7.1"),
    ],
)
def test_engine_from_another_device_is_refused_with_rebuild_hint(tmp_path, cuda_kw, trt_version, needle):
    cuda = StandInCuda(**cuda_kw)
    engine = write_engine(tmp_path / "bundle")
    with pytest.raises(ModelError) as info:
        TensorRTRunner(engine, trt=make_stand_in_trt(cuda, version=trt_version), cuda=cuda)
    text = str(info.value)
    assert needle in text and "\n" not in text
    assert f"algan-edge build-engine --fp16 {engine.parent} on this device" in text
    assert "deserialize_cuda_engine" not in [c[0] for c in cuda.calls], "refused before deserializing"
    assert [c[0] for c in cuda.calls][-2:] == ["ctx.pop", "ctx.detach"], "context released"


def test_sidecar_problems(tmp_path):
    engine = write_engine(tmp_path / "b")
    (tmp_path / "b" / "model.engine.json").unlink()
    with pytest.raises(ModelError, match="has no sidecar model.engine.json; rebuild"):
        read_sidecar(engine)
    (tmp_path / "b" / "model.json").write_text(json.dumps({"tensorrt_version": "10"}))
    with pytest.raises(ModelError, match=r"key 'gpu_name' is missing \(and \d+ more\); rebuild"):
        read_sidecar(engine)
    good = read_sidecar(write_engine(tmp_path / "c"))
    check_sidecar(good, engine, good.tensorrt_version, good.gpu_name, good.compute_capability)
    with pytest.raises(ModelError, match=r"was built elsewhere \(gpu_name .* != Other GPU here\)"):
        check_sidecar(good, engine, good.tensorrt_version, "Other GPU", good.compute_capability)


def test_undeserializable_engine_and_wrong_tensor_names(tmp_path):
    cuda = StandInCuda()
    engine = write_engine(tmp_path / "b")
    engine.write_bytes(b"garbage")
    with pytest.raises(ModelError, match="TensorRT could not deserialize"):
        TensorRTRunner(engine, trt=make_stand_in_trt(cuda), cuda=cuda)
    engine.write_bytes(b"ENGINE")
    with pytest.raises(ModelError, match=r"has inputs \['input'\] and outputs \['out'\]"):
        TensorRTRunner(engine, trt=make_stand_in_trt(cuda, names=("input", "out")), cuda=cuda)


def test_bundle_directory_without_engine(tmp_path):
    (tmp_path / "b").mkdir()
    with pytest.raises(ModelError, match=r"has no model.engine; export it first \(algan-edge build-engine --fp16"):
        TensorRTRunner(tmp_path / "b", trt=make_stand_in_trt(StandInCuda()), cuda=StandInCuda())


@pytest.mark.trt
@pytest.mark.gpu
def test_real_engine_if_tensorrt_is_installed():
    """Needs TensorRT, pycuda, a GPU and ALGAN_TRT_ENGINE pointing at an engine built on this device."""
    import os

    try:
        import pycuda.driver  # noqa: F401
        import tensorrt  # noqa: F401
    except ImportError as e:
        pytest.skip(f"TensorRT/pycuda not installed ({e}); runs on a GPU device with JetPack or TensorRT 10")
    engine = os.environ.get("ALGAN_TRT_ENGINE")
    if not engine:
        pytest.skip("set ALGAN_TRT_ENGINE to a model.engine built here with algan-export --fp16")
    runner = TensorRTRunner(Path(engine))
    try:
        h, w = runner.input_size
        scores = runner(np.zeros((3, h, w, 3), np.uint8))
        assert scores.shape == (3,) and np.isfinite(scores).all()
    finally:
        runner.close()
