"""TensorRT version decisions and the build orchestration, against a recording stand-in module (not TensorRT)."""

from __future__ import annotations

import numpy as np
import pytest
from trt_standin import StandInBuffer, make_standin

from algan.export.onnx_export import ExportError
from algan.export.tensorrt import (
    BatchProfile,
    EngineBuildError,
    EngineRequest,
    build_engine,
    parse_version,
    plan_build,
)

SIZE = (64, 64)


@pytest.mark.parametrize(("version", "fp16", "int8", "precision", "onnx", "net", "flags", "typed"), [
    ("8.6.1", False, False, "fp32", "fp32", ("EXPLICIT_BATCH",), (), False),
    ("8.6.1", True, False, "fp16", "fp32", ("EXPLICIT_BATCH",), ("FP16",), False),
    ("10.8.0.43", True, False, "fp16", "fp32", (), ("FP16",), False),
    ("10.11.0", True, False, "fp16", "fp32", (), ("FP16",), False),
    ("10.12.0.36", True, False, "fp16", "fp16", ("STRONGLY_TYPED",), (), True),
    ("10.16.1", True, False, "fp16", "fp16", ("STRONGLY_TYPED",), (), True),
    ("11.0.0", True, False, "fp16", "fp16", (), (), True),
    ("11.4.1", False, False, "fp32", "fp32", (), (), True),
    ("10.8.0", False, True, "int8", "fp32", (), ("INT8",), False),
    ("10.13.0", True, True, "int8", "fp32", (), ("INT8", "FP16"), False),
    ("8.6.1", False, True, "int8", "fp32", ("EXPLICIT_BATCH",), ("INT8",), False),
])
def test_plan_build_follows_the_version(version, fp16, int8, precision, onnx, net, flags, typed):
    plan = plan_build(version, fp16, int8)
    assert (plan.precision, plan.onnx, plan.network_flags, plan.builder_flags) == (precision, onnx, net, flags)
    assert plan.strongly_typed is typed
    assert plan.int8_calibrator is int8


def test_plan_build_refuses_int8_on_11_and_old_versions():
    with pytest.raises(ExportError, match="INT8 implicit calibration is not supported on TensorRT 11"):
        plan_build("11.1.0", fp16=False, int8=True)
    with pytest.raises(ExportError, match="too old"):
        plan_build("8.5.3", fp16=True, int8=False)
    assert parse_version("10.12.0.36") == (10, 12)
    with pytest.raises(ValueError, match="cannot read"):
        parse_version("ten")


def test_batch_profile_parsing():
    assert BatchProfile.parse("1:8:16") == BatchProfile(1, 8, 16)
    assert BatchProfile.parse("4") == BatchProfile(4, 4, 4)
    assert BatchProfile(1, 2, 4).shapes((64, 48)) == ((1, 64, 48, 3), (2, 64, 48, 3), (4, 64, 48, 3))
    for bad in ("8:4:16", "0:1:2", "1:2", "a:b:c"):
        with pytest.raises(ValueError):
            BatchProfile.parse(bad)


def _onnx_files(tmp_path):
    f32, f16 = tmp_path / "model.onnx", tmp_path / "model.fp16.onnx"
    f32.write_bytes(b"fp32 graph")
    f16.write_bytes(b"fp16 graph")
    return f32, f16


def _gpu():
    return "Stand-in GPU", "8.7"


def test_fp16_build_on_10_12_parses_the_fp16_graph_strongly_typed(tmp_path):
    trt = make_standin("10.12.0.36")
    f32, f16 = _onnx_files(tmp_path)
    req = EngineRequest(f32, f16, SIZE, BatchProfile(1, 4, 8), workspace_mib=256, fp16=True,
                        timing_cache=b"old-cache")
    out = build_engine(req, trt=trt, gpu=_gpu)
    calls = trt.calls
    assert ("create_network", 1 << 1) in calls  # STRONGLY_TYPED
    assert ("parse_from_file", str(f16)) in calls
    assert not [c for c in calls if c[0] == "set_flag"]
    assert ("set_memory_pool_limit", "WORKSPACE", 256 << 20) in calls
    assert ("profile.set_shape", "images", (1, 64, 64, 3), (4, 64, 64, 3), (8, 64, 64, 3)) in calls
    assert ("create_timing_cache", b"old-cache") in calls and ("set_timing_cache", b"old-cache", False) in calls
    assert out.engine == b"stand-in engine" and out.timing_cache == b"old-cache+timed"
    s = out.sidecar
    assert s.precision == "fp16" and s.strongly_typed is True and s.onnx_file == "model.fp16.onnx"
    assert s.batch_profile == {"min": 1, "opt": 4, "max": 8} and s.input_shape == [64, 64]
    assert (s.gpu_name, s.compute_capability, s.tensorrt_version) == ("Stand-in GPU", "8.7", "10.12.0.36")
    assert (s.input_name, s.output_name, s.workspace_mib) == ("images", "scores", 256)
    assert len(s.onnx_sha256) == 64 and s.created.endswith("Z")


def test_fp16_build_before_10_12_sets_the_builder_flag(tmp_path):
    trt = make_standin("10.8.0.43")
    f32, f16 = _onnx_files(tmp_path)
    out = build_engine(EngineRequest(f32, f16, SIZE, fp16=True), trt=trt, gpu=_gpu)
    assert ("create_network", 0) in trt.calls and ("parse_from_file", str(f32)) in trt.calls
    assert ("set_flag", "FP16") in trt.calls and ("create_timing_cache", b"") in trt.calls
    assert out.sidecar.precision == "fp16" and out.sidecar.strongly_typed is False


def test_fp16_build_on_11_uses_no_precision_flags(tmp_path):
    trt = make_standin("11.0.0")
    f32, f16 = _onnx_files(tmp_path)
    out = build_engine(EngineRequest(f32, f16, SIZE, fp16=True), trt=trt, gpu=_gpu)
    assert ("create_network", 0) in trt.calls and ("parse_from_file", str(f16)) in trt.calls
    assert out.sidecar.builder_flags == []


def test_int8_build_feeds_the_calibrator_batch_by_batch(tmp_path):
    trt = make_standin("10.8.0")
    f32, f16 = _onnx_files(tmp_path)
    frames = np.arange(10 * 64 * 64 * 3, dtype=np.uint64).astype(np.uint8).reshape(10, 64, 64, 3)
    StandInBuffer.copies = []
    req = EngineRequest(f32, None, SIZE, int8=True, calibration_images=frames, calibration_batch=4)
    out = build_engine(req, trt=trt, gpu=_gpu, device_alloc=StandInBuffer)
    assert ("set_flag", "INT8") in trt.calls and ("set_calibration_profile",) in trt.calls
    assert ("profile.set_shape", "images", (4, 64, 64, 3), (4, 64, 64, 3), (4, 64, 64, 3)) in trt.calls
    assert [c for c in trt.calls if c[0] == "calibrated_batch"] == [("calibrated_batch", 4)] * 2  # 10 // 4
    assert len(StandInBuffer.copies) == 2
    np.testing.assert_array_equal(StandInBuffer.copies[1], frames[4:8])
    assert out.calibration_cache == b"calibration-table" and out.sidecar.precision == "int8"
    # a saved calibration cache skips calibration
    trt2 = make_standin("10.8.0")
    req.calibration_cache = out.calibration_cache
    build_engine(req, trt=trt2, gpu=_gpu, device_alloc=StandInBuffer)
    assert not [c for c in trt2.calls if c[0] == "calibrated_batch"]


def test_int8_without_frames_and_int8_on_11_fail_clearly(tmp_path):
    f32, f16 = _onnx_files(tmp_path)
    with pytest.raises(ExportError, match="algan-calibrate"):
        build_engine(EngineRequest(f32, None, SIZE, int8=True), trt=make_standin("10.8.0"), gpu=_gpu)
    with pytest.raises(ExportError, match="not supported on TensorRT 11"):
        build_engine(EngineRequest(f32, None, SIZE, int8=True), trt=make_standin("11.2.0"), gpu=_gpu)


def test_parser_errors_name_the_onnx_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["images"], ["a"], name="/backbone/Relu_7"),
                               helper.make_node("NonZero", ["a"], ["scores"], name="/head/NonZero")], "g",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("scores", TensorProto.INT64, [1, 1])])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), path)
    trt = make_standin("10.8.0", parse_ok=False, errors=[(1, "unsupported operator NonZero")])
    with pytest.raises(EngineBuildError, match=r"node 1 '/head/NonZero' \(NonZero\): unsupported operator NonZero"):
        build_engine(EngineRequest(path, None, SIZE), trt=trt, gpu=_gpu)


def test_failed_build_quotes_tensorrt_errors(tmp_path):
    f32, f16 = _onnx_files(tmp_path)
    with pytest.raises(EngineBuildError, match="stand-in: out of workspace"):
        build_engine(EngineRequest(f32, f16, SIZE), trt=make_standin("10.8.0", build_ok=False), gpu=_gpu)
