"""Triton runner (``runner.backend: triton``): request/response mapping and one-line errors against a fake gRPC
client, and scores/maps against a REAL Triton server (PyTriton's tritonserver with its Python backend running the
exported graph with ONNX Runtime CPU; see ``triton_serve.py``), compared with the ONNX Runtime runner."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from algan.runtime.errors import ModelError

pytest.importorskip("tritonclient.grpc", reason="tritonclient[grpc] not installed (pip install 'algan-edge[triton]')")

from algan.runtime.runners.triton import TritonRunner, model_name_from_bundle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export"))
from test_engine_build import MH, MW, H, W, write_bundle  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


class FakeResult:
    def __init__(self, arrays):
        self.arrays = arrays

    def as_numpy(self, name):
        return self.arrays.get(name)


class FakeClient:
    """Answers like ``tritonclient.grpc.InferenceServerClient`` for a model scoring mean(x)/128 as [N, 1]."""

    def __init__(self, live=True, ready=True, inputs=None, outputs=("scores", "anomaly_maps"), max_batch=4):
        self.live, self.ready, self.requests = live, ready, []
        self.inputs = inputs or [{"name": "images", "datatype": "UINT8", "shape": ["-1", str(H), str(W), "3"]}]
        self.outputs, self.max_batch = outputs, max_batch

    def is_server_live(self, client_timeout=None):
        return self.live

    def is_model_ready(self, name, version, client_timeout=None):
        return self.ready

    def get_model_metadata(self, name, version, as_json=False, client_timeout=None):
        return {"name": name, "inputs": self.inputs, "outputs": [{"name": n, "datatype": "FP32"} for n in self.outputs]}

    def get_model_config(self, name, version, as_json=False, client_timeout=None):
        return {"config": {"name": name, "max_batch_size": self.max_batch}}

    def infer(self, name, inputs, model_version="", outputs=None, client_timeout=None):
        x = inputs[0]._np  # set by the patched InferInput below
        self.requests.append((name, model_version, x.shape, [o.name() for o in outputs]))
        f = x.astype(np.float64)
        return FakeResult({"scores": (f.mean(axis=(1, 2, 3)) / 128).astype(np.float32).reshape(-1, 1),
                           "anomaly_maps": np.full((len(x), MH, MW), 0.25, np.float32)})

    def close(self):
        pass


@pytest.fixture
def capture_inputs(monkeypatch):
    import tritonclient.grpc as g

    orig = g.InferInput.set_data_from_numpy

    def keep(self, arr):
        self._np = arr
        return orig(self, arr)

    monkeypatch.setattr(g.InferInput, "set_data_from_numpy", keep)


def test_request_mapping_chunks_and_reshapes(tmp_path, capture_inputs):
    client = FakeClient(max_batch=4)
    r = TritonRunner(write_bundle(tmp_path / "b"), model_name="algan", model_version="2", client=client)
    x = np.stack([np.full((H, W, 3), v, np.uint8) for v in (0, 64, 128, 255, 32, 16, 8, 4, 2, 1)])
    out = r.run(x)
    scores, maps = out.scores, out.maps
    np.testing.assert_allclose(scores, x.reshape(10, -1).mean(axis=1) / 128, rtol=1e-6)
    assert scores.shape == (10,) and maps.shape == (10, MH, MW) and r.input_size == (H, W)
    assert [q[2][0] for q in client.requests] == [1, 4, 4, 2], "warm-up, then chunks of max_batch_size"
    assert client.requests[-1][:2] == ("algan", "2") and client.requests[-1][3] == ["scores", "anomaly_maps"]
    assert r.backend == "triton" and r.has_maps


def test_one_line_errors(tmp_path, capture_inputs):
    b = write_bundle(tmp_path / "b")
    cases = [(FakeClient(live=False), "the Triton server at localhost:8001 is not live"),
             (FakeClient(ready=False), "Triton model 'algan' at localhost:8001 is not ready"),
             (FakeClient(inputs=[{"name": "input", "datatype": "FP32", "shape": [-1, 3, H, W]}]),
              "the edge contract is 'images' UINT8 [N, H, W, 3]"),
             (FakeClient(outputs=("logits",)), "outputs ['logits']; the edge contract is 'scores'")]
    for client, needle in cases:
        with pytest.raises(ModelError, match=needle.replace("[", r"\[").replace("]", r"\]")) as e:
            TritonRunner(b, model_name="algan", client=client)
        assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match="records no Triton model"):
        model_name_from_bundle(b)
    (b / "algan.json").write_text(json.dumps({"format_version": 1, "model_id": "tiny-1",
                                               "calibration": {"center": 0.0, "threshold": 1.0},
                                               "exports": {"triton": {"repository": "/srv/triton",
                                                                      "models": ["line1", "line1-onnx"]}}}))
    assert model_name_from_bundle(b) == "line1"


def _pytriton_python() -> str:
    exe = os.environ.get("ALGAN_PYTRITON_PYTHON") or str(ROOT / ".venv-triton" / "bin" / "python")
    if not Path(exe).is_file():
        pytest.skip("no PyTriton venv: `make triton-venv` makes .venv-triton from /usr/bin/python3.11 "
                    "(tools/pytriton-requirements.txt), or name its python in ALGAN_PYTRITON_PYTHON")
    ok = subprocess.run([exe, "-c", "import pytriton.triton, onnxruntime"], capture_output=True, timeout=60)
    if ok.returncode != 0:
        pytest.skip(f"pytriton is not importable with {exe}: {ok.stderr.decode()[-200:]}")
    return exe


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory):
    exe = _pytriton_python()
    d = tmp_path_factory.mktemp("triton")
    maps, plain = write_bundle(d / "maps", n=9), write_bundle(d / "plain", maps=False, n=9)
    from edgekit import make_bundle

    tiny = make_bundle(d / "tiny")  # a bundle as algan-train + algan-export leave it, 64x64 tiny model
    manifest = json.loads((tiny / "algan.json").read_text())
    manifest["exports"]["triton"] = {"repository": str(d / "repo"), "models": ["tiny"]}  # what --triton-repo records
    (tiny / "algan.json").write_text(json.dumps(manifest))
    socks = [socket.socket() for _ in range(3)]
    for sock in socks:
        sock.bind(("127.0.0.1", 0))
    ports = [sock.getsockname()[1] for sock in socks]
    for sock in socks:
        sock.close()
    ready, logf = d / "ready", open(d / "tritonserver.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([exe, str(Path(__file__).with_name("triton_serve.py")), *map(str, ports), "8",
                             f"maps={maps / 'model.onnx'}", f"plain={plain / 'model.onnx'}",
                             f"tiny={tiny / 'model.onnx'}"],
                            stdin=subprocess.PIPE, stdout=logf, stderr=subprocess.STDOUT,
                            env={**os.environ, "ALGAN_TRITON_READY": str(ready)})
    t0 = time.monotonic()
    while not ready.exists() and proc.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.2)
    if not ready.exists():
        proc.kill()
        logf.close()
        tail = (d / "tritonserver.log").read_text()[-600:]
        pytest.fail(f"tritonserver did not start ({time.monotonic() - t0:.0f} s): {tail}")
    yield f"127.0.0.1:{ports[0]}", maps, plain, tiny
    proc.stdin.close()
    try:
        proc.wait(40)
    except subprocess.TimeoutExpired:
        proc.kill()
    logf.close()


@pytest.mark.triton
def test_real_triton_scores_equal_the_onnxruntime_runner(triton_server):
    import onnxruntime as ort
    from safetensors.numpy import load_file

    from algan.edge.config import parse_config
    from algan.runtime.runners.base import load_runner
    from algan.runtime.runners.onnx import OnnxRuntimeRunner

    url, maps_dir, plain_dir, _ = triton_server
    x = load_file(str(plain_dir / "samples.safetensors"))["images"]  # 9 > max_batch_size 8: two requests
    # the daemon's way: runner.backend triton from the config
    cfg = parse_config({"device_id": "l1", "model": str(plain_dir / "model.onnx"),
                        "runner": {"backend": "triton", "triton": {"url": url, "model": "plain"}},
                        "cameras": [{"name": "c", "source": str(plain_dir / "model.onnx")}]}, plain_dir / "e.yaml")
    runner = load_runner(cfg.model, cfg.runner)
    try:
        assert isinstance(runner, TritonRunner) and runner.max_batch == 8
        np.testing.assert_allclose(runner(x), OnnxRuntimeRunner(plain_dir / "model.onnx")(x), rtol=0, atol=1e-6)
    finally:
        runner.close()
    r = TritonRunner(maps_dir, url=url, model_name="maps")
    try:
        out = r.run(x)
        scores, maps = out.scores, out.maps
    finally:
        r.close()
    ref_s, ref_m = ort.InferenceSession(str(maps_dir / "model.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"images": x})
    assert maps.shape == (9, MH, MW) and r.map_size == (MH, MW)
    np.testing.assert_allclose(scores, ref_s, atol=1e-6)
    np.testing.assert_allclose(maps, ref_m, atol=1e-6)


@pytest.mark.triton
def test_daemon_with_runner_triton_publishes_the_onnxruntime_scores(tmp_path, triton_server, mqtt_broker,
                                                                    mqtt_collector, capsys):
    """The daemon on the same folder twice: backend onnxruntime, then backend triton (model name read from the
    bundle manifest); the published per-frame scores must be equal."""
    from edgekit import edge_config, make_folder, run_edge, write_config

    url, _, _, tiny = triton_server
    folder = make_folder(tmp_path / "imgs", [10, 60, 120, 200, 250, 30, 90, 160])
    published = {}
    for backend in ("onnxruntime", "triton"):
        col = mqtt_collector("algan/line1/#")
        runner = {"backend": backend, "threads": 1, **({"triton": {"url": url}} if backend == "triton" else {})}
        cfg = edge_config(tiny, mqtt_broker, [{"name": "cam1", "source": str(folder)}], runner=runner)
        res = run_edge(write_config(tmp_path / f"{backend}.yaml", cfg))
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr
        assert col.wait_for(lambda ms: any(m.topic.endswith("/stats") for m in ms), timeout=10)
        (stats,) = [json.loads(m.payload) for m in col.on("line1/stats")]
        assert stats["backend"] == backend
        published[backend] = {p["frame"]: p["score"] for p in (json.loads(m.payload) for m in col.on("cam1/score"))}
    assert sorted(published["triton"]) == list(range(8))
    local, remote = (np.array([published[b][i] for i in range(8)]) for b in ("onnxruntime", "triton"))
    np.testing.assert_allclose(remote, local, rtol=0, atol=1e-6)
    assert local.max() > 1.5 and local.min() < 0.1, "frames span the score range"
    # the doctor finds the model the bundle names ready on that server
    from algan.edge.doctor import doctor

    doctor(str(tmp_path / "triton.yaml"))
    assert f"ok   backend triton: model 'tiny' ready at {url}" in capsys.readouterr().out
