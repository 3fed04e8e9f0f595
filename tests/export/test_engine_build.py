"""``algan-edge build-engine`` on the device: torch-free, one-line errors without TensorRT, and the build -> sidecar
-> engine-vs-ONNX-Runtime parity -> commit logic against the TensorRT/pycuda STAND-INS of ``trt_standin`` (no GPU
here). The ONNX graph is real (two outputs, the anomaly-map contract) and runs on ONNX Runtime CPU; the stand-in
engine reproduces its numerics in numpy, optionally with an injected error, so the parity check can fail.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from trt_standin import StandInCuda, add_runtime, make_standin

from algan.edge.runners import engine_build as eb
from algan.edge.runners.tensorrt import TensorRTRunner
from algan.export import parity

H, W, MH, MW = 8, 6, 4, 3
ROOT = Path(__file__).resolve().parents[2]


def write_bundle(folder: Path, maps: bool = True, n: int = 5) -> Path:
    """A bundle with a real ONNX graph: scores = mean(x)/128, anomaly_maps = 2x2-cell means / 128, + samples."""
    import onnx
    from onnx import TensorProto, helper
    from safetensors.numpy import save_file

    folder.mkdir(parents=True, exist_ok=True)
    k = helper.make_tensor("k", TensorProto.FLOAT, [], [1 / 128])
    shape = helper.make_tensor("shape", TensorProto.INT64, [6], [-1, MH, H // MH, MW, W // MW, 3])
    nodes = [helper.make_node("Cast", ["images"], ["x"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["x"], ["m"], axes=[1, 2, 3], keepdims=0),
             helper.make_node("Mul", ["m", "k"], ["scores"])]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"])]
    if maps:
        nodes += [helper.make_node("Reshape", ["x", "shape"], ["cells"]),
                  helper.make_node("ReduceMean", ["cells"], ["cm"], axes=[2, 4, 5], keepdims=0),
                  helper.make_node("Mul", ["cm", "k"], ["anomaly_maps"])]
        outputs.append(helper.make_tensor_value_info("anomaly_maps", TensorProto.FLOAT, ["N", MH, MW]))
    graph = helper.make_graph(nodes, "standin", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                               ["N", H, W, 3])],
                              outputs, initializer=[k, shape] if maps else [k])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    (folder / "model.fp16.onnx").write_bytes((folder / "model.onnx").read_bytes())
    rng = np.random.default_rng(3)
    save_file({"images": rng.integers(0, 256, (n, H, W, 3), dtype=np.uint8)}, str(folder / "samples.safetensors"))
    return folder


def engine_numerics(error: float = 0.0):
    def run(x):
        f = x.astype(np.float64)
        cells = f.reshape(len(x), MH, H // MH, MW, W // MW, 3).mean(axis=(2, 4, 5)) / 128
        return {"scores": (f.mean(axis=(1, 2, 3)) / 128 + error).astype(np.float32),
                "anomaly_maps": (cells + error).astype(np.float32)}
    return run


def stand_ins(version="10.12.0.36", outputs=("scores", "anomaly_maps"), error=0.0):
    trt = add_runtime(make_standin(version), engine_numerics(error), outputs=outputs, map_shape=(MH, MW),
                      size=(H, W), profile=(1, 4, 8))
    trt.cuda = StandInCuda()
    return trt, trt.cuda


def gpu():
    return "Stand-in GPU", "8.7"


def test_tolerances_are_the_exports():
    assert eb.TOLERANCES["fp32"] == (parity.FP32_TOLERANCE, "abs")
    assert eb.TOLERANCES["fp16"] == (parity.FP16_TOLERANCE, "scaled")


def test_build_on_device_writes_engine_sidecar_and_checks_both_outputs(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    trt, cuda = stand_ins(error=2e-3)  # an FP16-like drift, inside the 1e-2 bound
    lines: list[str] = []
    rep = eb.build_on_device(bundle, fp16=True, batch=eb.BatchProfile(1, 4, 8), trt=trt, cuda=cuda, gpu=gpu,
                             say=lines.append)
    assert ("parse_from_file", str(bundle / "model.fp16.onnx")) in trt.calls  # strongly typed from the FP16 graph
    assert ("profile.set_shape", "images", (1, H, W, 3), (4, H, W, 3), (8, H, W, 3)) in trt.calls  # images only
    assert (bundle / "model.engine").read_bytes() == b"stand-in engine"
    side = json.loads((bundle / "model.engine.json").read_text())
    assert side["output_names"] == ["scores", "anomaly_maps"] and side["precision"] == "fp16"
    assert (side["gpu_name"], side["compute_capability"], side["tensorrt_version"]) == gpu() + ("10.12.0.36",)
    assert side["engine_sha256"] == eb.file_sha256(bundle / "model.engine")
    assert [r["name"] for r in rep.parity] == ["tensorrt-fp16 scores", "tensorrt-fp16 anomaly_maps"]
    for r in rep.parity:
        assert r["ok"] and r["n_images"] == 5 and r["max_abs_diff"] == pytest.approx(2e-3, abs=1e-6)
    assert any("parity (tensorrt-fp16 anomaly_maps)" in s and s.endswith("OK") for s in lines)
    assert not list(bundle.glob(".engine-*")), "staging removed"
    # the daemon's runner loads the committed engine with its sidecar and returns both outputs
    runner = TensorRTRunner(bundle / "model.engine", trt=trt, cuda=cuda)
    try:
        x = np.full((2, H, W, 3), 64, np.uint8)
        out = runner.run(x)
        scores, maps = out.scores, out.maps
        np.testing.assert_allclose(scores, [0.5 + 2e-3] * 2, rtol=1e-6)
        assert maps.shape == (2, MH, MW) and np.allclose(maps, 0.5 + 2e-3)
        assert runner.has_maps and runner.map_size == (MH, MW)
        np.testing.assert_array_equal(runner(x), scores)
    finally:
        runner.close()


def test_parity_failure_writes_nothing(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    trt, cuda = stand_ins(version="10.8.0", error=5e-3)  # FP32 engine: 5e-3 > 1e-4
    with pytest.raises(eb.EngineBuildError, match=r"parity \(tensorrt-fp32 scores\): max \|diff\| = 5\.00e-03 .*"
                                                  r"FAILED.*nothing was written"):
        eb.build_on_device(bundle, batch=eb.BatchProfile(1, 4, 8), trt=trt, cuda=cuda, gpu=gpu, say=lambda s: None)
    assert not (bundle / "model.engine").exists() and not (bundle / "model.engine.json").exists()
    assert not list(bundle.glob(".engine-*"))


def test_score_only_graph_builds_a_score_only_engine(tmp_path):
    bundle = write_bundle(tmp_path / "b", maps=False)
    trt, cuda = stand_ins(version="10.8.0", outputs=("scores",))
    cuda.name, cuda.cc = "Orin", (8, 7)
    rep = eb.build_on_device(bundle, batch=eb.BatchProfile(1, 4, 8), trt=trt, cuda=cuda, say=lambda s: None)
    assert rep.sidecar["output_names"] == ["scores"] and [r["name"] for r in rep.parity] == ["tensorrt-fp32 scores"]
    # the GPU named in the sidecar is read through pycuda, as the runner's check reads it
    assert (rep.sidecar["gpu_name"], rep.sidecar["compute_capability"]) == ("Orin", "8.7")


def test_adopt_a_trtexec_engine(tmp_path):
    bundle = write_bundle(tmp_path / "b")
    outside = tmp_path / "trtexec.engine"
    outside.write_bytes(b"stand-in engine")
    trt, cuda = stand_ins()
    rep = eb.adopt_engine(outside, bundle, precision="fp16", trt=trt, cuda=cuda, gpu=gpu, say=lambda s: None)
    side = json.loads((bundle / "model.engine.json").read_text())
    assert side["batch_profile"] == {"min": 1, "opt": 4, "max": 8} and side["input_shape"] == [H, W]
    assert side["output_names"] == ["scores", "anomaly_maps"] and side["built_by"].startswith("adopted")
    assert side["onnx_sha256"] == eb.file_sha256(bundle / "model.onnx") and len(rep.parity) == 2
    assert (bundle / "model.engine").read_bytes() == b"stand-in engine"
    # an engine of another TensorRT/GPU does not deserialize: one line, nothing written
    (tmp_path / "bad.engine").write_bytes(b"foreign")
    with pytest.raises(eb.EngineError, match="cannot deserialize the engine"):
        eb.adopt_engine(tmp_path / "bad.engine", write_bundle(tmp_path / "c"), trt=trt, cuda=cuda, gpu=gpu)
    assert not (tmp_path / "c" / "model.engine.json").exists()


def _with_manifest(bundle: Path) -> Path:
    """The bundle's algan.json as algan-export leaves it on a machine without TensorRT (no engine recorded)."""
    m = {"format_version": 1, "model_id": "standin-1", "calibration": {"center": 0.0, "threshold": 1.0},
         "exports": {"onnx": {"file": "model.onnx", "sha256": eb.file_sha256(bundle / "model.onnx")},
                     "onnx_fp16": {"file": "model.fp16.onnx", "sha256": eb.file_sha256(bundle / "model.fp16.onnx")},
                     "engine": {"file": None, "note": "no TensorRT engine was built"}}}
    (bundle / "algan.json").write_text(json.dumps(m, indent=2))
    return bundle


def test_build_and_adopt_record_the_engine_in_the_manifest(tmp_path):
    from algan.contract import load_manifest

    bundle = _with_manifest(write_bundle(tmp_path / "b"))
    onnx_record = load_manifest(bundle).exports["onnx"]
    trt, cuda = stand_ins()
    rep = eb.build_on_device(bundle, fp16=True, batch=eb.BatchProfile(1, 4, 8), trt=trt, cuda=cuda, gpu=gpu,
                             say=lambda s: None)
    exports = load_manifest(bundle).exports
    side = json.loads((bundle / "model.engine.json").read_text())
    assert exports["engine"] == {"file": "model.engine", "sidecar": "model.engine.json", **side}
    assert exports["engine"]["engine_sha256"] == eb.file_sha256(bundle / "model.engine")
    assert exports["engine"]["onnx_sha256"] == eb.file_sha256(bundle / "model.fp16.onnx")
    assert exports["engine"]["precision"] == "fp16" and exports["onnx"] == onnx_record, "the rest is kept"
    assert rep.files["algan.json"] == bundle / "algan.json"
    assert (bundle / "algan.json").stat().st_mode & 0o777 == 0o644
    assert not [p.name for p in bundle.iterdir() if p.name.startswith(".")], "no temporary files left"
    # an adopted trtexec engine is recorded the same way
    outside = tmp_path / "trtexec.engine"
    outside.write_bytes(b"stand-in engine")
    eb.adopt_engine(outside, bundle, precision="fp32", trt=trt, cuda=cuda, gpu=gpu, say=lambda s: None)
    entry = load_manifest(bundle).exports["engine"]
    assert entry["precision"] == "fp32" and entry["built_by"].startswith("adopted")
    assert entry == {"file": "model.engine", "sidecar": "model.engine.json",
                     **json.loads((bundle / "model.engine.json").read_text())}


def test_a_damaged_manifest_is_refused_before_the_build(tmp_path):
    bundle = _with_manifest(write_bundle(tmp_path / "b"))
    (bundle / "algan.json").write_text('{"format_version": 1, "model_id": "standin-1", "calib')
    trt, cuda = stand_ins()
    with pytest.raises(eb.EngineError, match=r"cannot read .*algan.json.*re-train or restore the bundle"):
        eb.build_on_device(bundle, fp16=True, batch=eb.BatchProfile(1, 4, 8), trt=trt, cuda=cuda, gpu=gpu,
                           say=lambda s: None)
    assert not any(c[0] == "parse_from_file" for c in trt.calls), "refused before building"
    assert not (bundle / "model.engine").exists()


def test_an_fp16_graph_the_export_did_not_write_is_refused_before_the_build(tmp_path):
    from algan.contract import load_manifest

    bundle = _with_manifest(write_bundle(tmp_path / "b"))
    fp16 = bundle / "model.fp16.onnx"
    fp16.write_bytes(fp16.read_bytes() + b"\0")  # another graph than the one the export recorded
    trt, cuda = stand_ins()
    kw = dict(batch=eb.BatchProfile(1, 4, 8), trt=trt, cuda=cuda, gpu=gpu, say=lambda s: None)
    with pytest.raises(eb.EngineError, match=r"model.fp16.onnx was not written by this bundle's export: its sha256 "
                                             r"\w{12} is not the \w{12} .*algan-export b --fp16"):
        eb.build_on_device(bundle, fp16=True, **kw)
    assert not any(c[0] == "parse_from_file" for c in trt.calls) and not (bundle / "model.engine").exists()
    # an export without --fp16 records none: the file left beside it is refused too
    m = json.loads((bundle / "algan.json").read_text())
    del m["exports"]["onnx_fp16"]
    (bundle / "algan.json").write_text(json.dumps(m))
    with pytest.raises(eb.EngineError, match=r"records no FP16 export \(exports.onnx_fp16\)"):
        eb.build_on_device(bundle, fp16=True, **kw)
    # an FP32 engine does not read the FP16 graph and builds
    rep = eb.build_on_device(bundle, **kw)
    assert rep.sidecar["precision"] == "fp32" and load_manifest(bundle).exports["engine"]["precision"] == "fp32"


PROBE = """
import runpy, sys
sys.argv = ["algan-edge"] + sys.argv[1:]
try:
    runpy.run_module("algan.cli.edge", run_name="__main__")
except SystemExit as e:
    code = e.code
loaded = sorted(m for m in ("torch", "tensorrt") if m in sys.modules)
print("IMPORTED", ",".join(loaded) or "-", file=sys.stderr)
sys.exit(code)
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120, env=env)


def test_cli_without_tensorrt_says_so_in_one_line_and_imports_no_torch(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("TensorRT is installed here; this checks the message on a machine without it")
    except ImportError:
        pass
    bundle = write_bundle(tmp_path / "b")
    p = _cli("build-engine", str(bundle), "--fp16", "--batch-profile", "1:4:8")
    err = p.stderr.strip().splitlines()
    assert p.returncode == 2, p.stderr
    assert err[0].startswith("algan-edge: TensorRT is not installed (No module named 'tensorrt'); on a Jetson")
    assert err[1] == "IMPORTED -" and len(err) == 2, "one line, torch never imported"
    assert not (bundle / "model.engine").exists()
    # user errors before TensorRT: missing ONNX, bad --batch, missing samples
    empty = tmp_path / "empty"
    empty.mkdir()
    p = _cli("build-engine", str(empty))
    assert p.returncode == 2 and p.stderr.startswith(f"algan-edge: {empty} has no model.onnx; run algan-export")
    (bundle / "samples.safetensors").unlink()
    with pytest.raises(eb.EngineError, match="has no samples.safetensors for the engine's parity check"):
        eb.build_on_device(bundle, trt=object(), cuda=object())


def test_an_fp16_build_without_the_fp16_graph_names_the_re_export(tmp_path):
    bundle = _with_manifest(write_bundle(tmp_path / "b"))
    (bundle / "model.fp16.onnx").unlink()
    trt, cuda = stand_ins()
    with pytest.raises(eb.EngineError, match=r"builds FP16 from the FP16 ONNX \(model.fp16.onnx\), which is not in "
                                             r"the bundle: re-export with algan-export MODEL_DIR --fp16"):
        eb.build_on_device(bundle, fp16=True, batch=eb.BatchProfile(1, 4, 8), trt=trt, cuda=cuda, gpu=gpu,
                           say=lambda s: None)
    assert not (bundle / "model.engine").exists()
