"""``algan-edge doctor`` on this CPU machine: its real report of OpenCV/ONNX Runtime/TensorRT/CUDA, and the reasons
it gives for a configured backend or camera source that cannot work here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import onnxruntime as ort
import yaml

from algan.edge.doctor import build_flags, doctor

ROOT = Path(__file__).resolve().parents[2]
HAS_TRT = __import__("importlib").util.find_spec("tensorrt") is not None
HAS_GST = build_flags(cv2.getBuildInformation())["GStreamer"]


def test_build_flags_read_the_video_io_section():
    info = "  Video I/O:\n    DC1394:                      NO\n    FFMPEG:                      YES\n" \
           "      avcodec:                   YES (58.134.100)\n    GStreamer:                   NO\n"
    assert build_flags(info) == {"GStreamer": False, "FFMPEG": True}
    assert build_flags("    GStreamer:                   YES (1.20.3)\n") == {"GStreamer": True, "FFMPEG": False}


def test_environment_report_is_this_machines(capsys):
    assert doctor() == 0
    out = capsys.readouterr().out.splitlines()
    cv_line = next(s for s in out if s.startswith("opencv"))
    assert cv2.__version__ in cv_line and f"GStreamer {'YES' if HAS_GST else 'NO'}" in cv_line
    ort_line = next(s for s in out if s.startswith("onnxruntime"))
    assert ort_line.endswith(f"{ort.__version__} providers {', '.join(ort.get_available_providers())}")
    trt_line = next(s for s in out if s.startswith("tensorrt"))
    if not HAS_TRT:
        assert "TensorRT is not installed (No module named 'tensorrt')" in trt_line
    assert any(s.startswith("cuda") for s in out)


def test_config_checks_name_each_reason(tmp_path, capsys):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.engine").write_bytes(b"x")
    (bundle / "model.engine.json").write_text(json.dumps({
        "tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "precision": "fp16",
        "batch_profile": {"min": 1, "opt": 4, "max": 8}, "input_name": "images", "output_name": "scores",
        "input_shape": [8, 6]}))
    (tmp_path / "clip.mp4").write_bytes(b"")
    cfg = {"device_id": "line1", "model": str(bundle / "model.engine"), "runner": {"backend": "tensorrt"},
           "cameras": [{"name": "gst", "source": "nvarguscamerasrc ! nvvidconv ! appsink", "kind": "gstreamer"},
                       {"name": "gone", "source": str(tmp_path / "missing.mp4")},
                       {"name": "clip", "source": str(tmp_path / "clip.mp4")},
                       {"name": "usb", "source": "/dev/video77"}]}
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert doctor(str(path)) == 2  # a camera file the config names is missing: a user error, as check-config says
    out = capsys.readouterr().out.splitlines()
    fails = [s for s in out if s.startswith("FAIL")]
    if not HAS_TRT:
        assert "FAIL backend tensorrt: TensorRT is not importable here; see the tensorrt line above" in fails
    if not HAS_GST:
        assert any(s.startswith("FAIL camera gst: a GStreamer pipeline needs OpenCV built with GStreamer; this "
                                f"OpenCV {cv2.__version__}") and "deploy/jetson/install.sh" in s for s in fails)
    assert f"FAIL camera gone: {tmp_path / 'missing.mp4'} does not exist; fix the source path" in fails
    assert f"ok   camera clip: file source {tmp_path / 'clip.mp4'} exists" in out
    assert any(s.startswith("FAIL camera usb: device /dev/video77 does not exist") for s in fails)
    assert out[-1] == f"{len(fails)} problem(s) found with {path}"


def test_engine_built_before_a_re_export_is_a_fail_line(tmp_path, capsys):
    from edgekit import make_model

    from algan.contract import file_sha256

    bundle = tmp_path / "bundle"
    make_model(bundle / "model.onnx")
    (bundle / "model.engine").write_bytes(b"x")
    side = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": "8.7", "precision": "fp16",
            "batch_profile": {"min": 1, "opt": 4, "max": 8}, "input_name": "images", "output_name": "scores",
            "input_shape": [64, 64], "onnx_file": "model.onnx", "onnx_sha256": file_sha256(bundle / "model.onnx")}
    (bundle / "model.engine.json").write_text(json.dumps(side))
    path = tmp_path / "edge.yaml"
    path.write_text(yaml.safe_dump({"device_id": "line1", "model": str(bundle), "runner": {"backend": "tensorrt"},
                                    "cameras": [{"name": "c", "source": str(bundle / "model.onnx")}]}))
    doctor(str(path))
    assert not [s for s in capsys.readouterr().out.splitlines() if "stale" in s], "the current graph's engine"
    make_model(bundle / "model.onnx", size=(32, 32))  # re-exported after the engine was built
    assert doctor(str(path)) == 1
    stale = [s for s in capsys.readouterr().out.splitlines() if "stale" in s]
    assert stale == [f"FAIL engine: engine {bundle / 'model.engine'} is stale: it was built from a model.onnx with "
                     f"sha256 {side['onnx_sha256'][:12]}..., but {bundle / 'model.onnx'} is now "
                     f"{file_sha256(bundle / 'model.onnx')[:12]}... (the bundle was re-exported after the engine was "
                     f"built); rebuild it with algan-edge build-engine --fp16 {bundle} on this device"]


def test_missing_onnxruntime_provider_and_bad_config(tmp_path, capsys):
    (tmp_path / "model.onnx").write_bytes(b"x")
    (tmp_path / "clip.mp4").write_bytes(b"")
    cfg = {"device_id": "line1", "model": "model.onnx", "runner": {"providers": ["cuda", "cpu"]},
           "cameras": [{"name": "cam1", "source": "clip.mp4"}]}
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(cfg))
    status = doctor(str(tmp_path / "edge.yaml"))
    fails = [s for s in capsys.readouterr().out.splitlines() if s.startswith("FAIL")]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert status == 1 and len(fails) == 1
        assert fails[0].startswith("FAIL backend onnxruntime: runner.providers asks for CUDAExecutionProvider, "
                                   f"which this onnxruntime {ort.__version__} lacks")
    # an invalid config: one line on stderr, exit 2, no report
    (tmp_path / "bad.yaml").write_text("device_id: line1\ncameras: []\n")
    p = subprocess.run([sys.executable, "-m", "algan.cli.edge", "doctor", "--config", str(tmp_path / "bad.yaml")],
                       capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin"})
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert p.stderr.startswith("algan-edge: ")


def test_unreachable_triton_server(tmp_path, capsys):
    import importlib.util

    if importlib.util.find_spec("tritonclient") is None:
        import pytest

        pytest.skip("tritonclient not installed")
    (tmp_path / "model.onnx").write_bytes(b"x")
    cfg = {"device_id": "line1", "model": "model.onnx", "cameras": [{"name": "cam1", "source": "model.onnx"}],
           "runner": {"backend": "triton", "triton": {"url": "127.0.0.1:1", "timeout_s": 2}}}
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(cfg))
    assert doctor(str(tmp_path / "edge.yaml")) == 1
    fails = [s for s in capsys.readouterr().out.splitlines() if s.startswith("FAIL")]
    assert fails == [f"FAIL backend triton: {tmp_path / 'algan.json'} records no Triton model (exports.triton.models); "
                     f"set runner.triton.model or export one with algan-export {tmp_path} --triton-repo DIR"]
    cfg["runner"]["triton"]["model"] = "algan"
    (tmp_path / "edge.yaml").write_text(yaml.safe_dump(cfg))
    assert doctor(str(tmp_path / "edge.yaml")) == 1
    (fail,) = [s for s in capsys.readouterr().out.splitlines() if s.startswith("FAIL")]
    assert fail.startswith("FAIL backend triton: cannot reach the Triton server at 127.0.0.1:1 (")
    assert fail.endswith("start it or fix runner.triton.url")
