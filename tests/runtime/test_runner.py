"""OnnxRuntimeRunner: contract checks with tiny onnx.helper graphs (no torch)."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest
from edgekit import make_bundle, make_model
from onnx import TensorProto

from algan.edge.config import parse_config
from algan.runtime.errors import ModelError
from algan.runtime.runners.base import Runner, choose_backend, load_runner
from algan.runtime.runners.onnx import OnnxRuntimeRunner


def test_scores_and_properties(tmp_path):
    runner = OnnxRuntimeRunner(make_model(tmp_path / "m.onnx", size=(48, 32)), threads=1)
    assert isinstance(runner, Runner)
    assert runner.input_size == (48, 32) and runner.backend == "onnxruntime" and runner.model_id == "tiny-1"
    images = np.stack([np.full((48, 32, 3), v, np.uint8) for v in (0, 128, 255)])
    scores = runner(images)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    np.testing.assert_allclose(scores, [0.0, 1.0, 255 / 128], rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected uint8 images of shape \(N, 48, 32, 3\)"):
        runner(np.zeros((1, 32, 48, 3), np.uint8))


def test_bundle_directory_and_sha_model_id(tmp_path):
    path = make_model(tmp_path / "bundle" / "model.onnx", model_id=None)
    runner = OnnxRuntimeRunner(tmp_path / "bundle")
    assert runner.model_id == hashlib.sha256(path.read_bytes()).hexdigest()[:12]


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"input_name": "input"}, "inputs are ['input']"),
        ({"output_name": "logits"}, "outputs are ['logits']"),
        ({"input_dtype": TensorProto.FLOAT}, "input 'images' is tensor(float)"),
        ({"batch_dim": 1}, "fixed batch size 1 instead of a dynamic N"),
    ],
)
def test_contract_rejections(tmp_path, kwargs, needle):
    path = make_model(tmp_path / "bad.onnx", **kwargs)
    with pytest.raises(ModelError) as info:
        OnnxRuntimeRunner(path)
    text = str(info.value)
    assert needle in text and "re-export it with algan-export" in text and "\n" not in text


def test_unreadable_and_missing_models(tmp_path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"definitely not protobuf")
    with pytest.raises(ModelError, match="cannot load model .*junk.onnx"):
        OnnxRuntimeRunner(junk)
    with pytest.raises(ModelError, match="does not exist"):
        OnnxRuntimeRunner(tmp_path / "nope.onnx")
    (tmp_path / "empty_bundle").mkdir()
    with pytest.raises(ModelError, match="has no model.onnx; export it first"):
        OnnxRuntimeRunner(tmp_path / "empty_bundle")


def _load(cfg):
    return load_runner(cfg.model, cfg.runner)


def _choose(cfg):
    return choose_backend(cfg.model, cfg.runner.backend)


def test_load_runner_backends(tmp_path):
    path = make_model(tmp_path / "m.onnx")
    base = {"device_id": "d", "model": str(path), "cameras": [{"name": "c", "source": 0}]}
    assert _load(parse_config(base)).backend == "onnxruntime"
    assert _choose(parse_config(base)) == "onnxruntime"
    assert _choose(parse_config({**base, "model": "/m/model.engine"})) == "tensorrt", ".engine -> tensorrt"
    assert _choose(parse_config({**base, "model": "/m/model.engine", "runner": {"backend": "torch"}})) == "torch"
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(ModelError, match="backend 'tensorrt' needs a package that is missing") as info:
            _load(parse_config({**base, "runner": {"backend": "tensorrt"}}))
        assert "install NVIDIA TensorRT and pycuda" in str(info.value) and "\n" not in str(info.value)


def test_unavailable_providers_fall_back_to_cpu(tmp_path, caplog):
    from algan.runtime.runners.onnx import choose_providers

    got = choose_providers(["tensorrt", "cuda", "cpu"], ["CPUExecutionProvider"])
    assert got == ["CPUExecutionProvider"]
    assert "provider tensorrt is not in this onnxruntime build" in caplog.text
    full = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    got = choose_providers(["cuda"], full, device=1)
    assert got == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"], "cpu always last"
    assert choose_providers(["tensorrt"], full, fp16=False)[0] == (
        "TensorrtExecutionProvider", {"device_id": 0, "trt_fp16_enable": False})
    runner = OnnxRuntimeRunner(make_model(tmp_path / "m.onnx"), threads=1, providers=["cuda", "cpu"])
    assert runner.backend == "onnxruntime" and runner.providers == ["CPUExecutionProvider"]


def test_torch_backend_without_cuda_is_one_line(tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present (tested in tests/pipeline/test_torch_runner.py)")
    bundle = make_bundle(tmp_path / "bundle", onnx=False)  # passes the bundle verification
    base = {"device_id": "d", "model": str(bundle), "runner": {"backend": "torch"}, "cameras": [{"name": "c",
                                                                                                "source": 0}]}
    with pytest.raises(ModelError, match="backend 'torch' needs a CUDA GPU"):
        _load(parse_config(base))
    with pytest.raises(ModelError, match="needs a model bundle directory"):
        _load(parse_config({**base, "model": str(tmp_path / "x.onnx")}))


def test_cli_wrong_model_one_line(tmp_path):
    from edgekit import run_edge, write_config

    bad = make_model(tmp_path / "bad.onnx", input_name="x")
    from edgekit import DARK, make_folder

    imgs = make_folder(tmp_path / "imgs", [DARK])
    cfg = {"device_id": "d", "model": str(bad), "cameras": [{"name": "c", "source": str(imgs)}]}
    res = run_edge(write_config(tmp_path / "edge.yaml", cfg))
    assert res.returncode == 2 and "Traceback" not in res.stderr, "a wrong model is a user error: exit 2"
    assert res.stderr.strip().splitlines()[-1].startswith("algan-edge: model ")
    chk = subprocess.run([sys.executable, "-m", "algan.cli.edge", "check-config", "--config",
                          str(tmp_path / "edge.yaml")], capture_output=True, text=True, timeout=60, check=False)
    assert chk.returncode == 2 and "does not match the edge contract" in chk.stderr, "check-config refuses it too"
