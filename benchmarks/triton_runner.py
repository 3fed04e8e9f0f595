"""Triton runner vs the local ONNX Runtime runner on this machine: frames/s and the latency Triton adds.

The same ONNX graph is scored (a) in-process by :class:`~algan.runtime.runners.onnx.OnnxRuntimeRunner` and (b) by
:class:`~algan.runtime.runners.triton.TritonRunner` over gRPC on a real tritonserver started here by PyTriton
(its Python backend runs the graph with ONNX Runtime CPU; ``tests/edge/triton_serve.py``), batch by batch,
alternating, in one run. The graph: ``--model MODEL.onnx`` (an exported bundle's), else a stand-in of the
detector's shape (uint8 [N, 224, 224, 3] -> 4 strided 3x3 convolutions -> scores [N] and anomaly_maps [N, 14, 14]).

Prints frames/s of each, their ratio, per-batch latency p50/p99 and the difference (added latency). Exit 77 when no
PyTriton venv is found (``ALGAN_PYTRITON_PYTHON`` or ``.venv-triton``; see tests/edge/test_runner_triton.py).

    python benchmarks/triton_runner.py [--batch 8] [--batches 40] [--model MODEL.onnx] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def standin_graph(path: Path, size: int) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes = [helper.make_node("Cast", ["images"], ["x0"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["x0"], ["x"], perm=[0, 3, 1, 2])]
    inits, c, prev = [], 3, "x"
    for i, out_c in enumerate((16, 32, 32, 32)):
        w = numpy_helper.from_array((rng.standard_normal((out_c, c, 3, 3)) * 0.01).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes += [helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], strides=[2, 2], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        prev, c = f"r{i}", out_c
    m = size // 16
    nodes += [helper.make_node("ReduceMean", [prev], ["anomaly_maps"], axes=[1], keepdims=0),
              helper.make_node("ReduceMax", ["anomaly_maps"], ["scores"], axes=[1, 2], keepdims=0)]
    graph = helper.make_graph(nodes, "standin", [helper.make_tensor_value_info("images", TensorProto.UINT8,
                                                                               ["N", size, size, 3])],
                              [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N"]),
                               helper.make_tensor_value_info("anomaly_maps", TensorProto.FLOAT, ["N", m, m])],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def pytriton_python() -> str | None:
    exe = os.environ.get("ALGAN_PYTRITON_PYTHON") or str(ROOT / ".venv-triton" / "bin" / "python")
    if not Path(exe).is_file():
        return None
    ok = subprocess.run([exe, "-c", "import pytriton.triton, onnxruntime"], capture_output=True, timeout=60)
    return exe if ok.returncode == 0 else None


def ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    out = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return out


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values) * 1000, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--model", type=Path, help="an exported model.onnx (default: the stand-in graph)")
    ap.add_argument("--smoke", action="store_true", help="CI size: 4 batches of 2 at 64 px")
    a = ap.parse_args()
    if a.smoke:
        a.batch, a.batches, a.size = 2, 4, 64
    exe = pytriton_python()
    if exe is None:
        print("no PyTriton venv (`make triton-venv`, or ALGAN_PYTRITON_PYTHON naming one with nvidia-pytriton, "
              "onnxruntime)", file=sys.stderr)
        return 77
    from algan.runtime.runners.onnx import OnnxRuntimeRunner
    from algan.runtime.runners.triton import TritonRunner

    work = Path(tempfile.mkdtemp(prefix="triton-bench-"))
    model = a.model or standin_graph(work / "model.onnx", a.size)
    grpc, http, metrics = ports(3)
    ready = work / "ready"
    log = open(work / "tritonserver.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([exe, str(ROOT / "tests" / "edge" / "triton_serve.py"), str(grpc), str(http),
                             str(metrics), str(max(8, a.batch)), f"algan={model}"], stdin=subprocess.PIPE,
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "ALGAN_TRITON_READY": str(ready)})
    try:
        t0 = time.monotonic()
        while not ready.exists() and proc.poll() is None and time.monotonic() - t0 < 180:
            time.sleep(0.2)
        if not ready.exists():
            print(f"tritonserver did not start: {(work / 'tritonserver.log').read_text()[-500:]}", file=sys.stderr)
            return 1
        local = OnnxRuntimeRunner(model)
        remote = TritonRunner(model.parent, url=f"127.0.0.1:{grpc}", model_name="algan")
        h, w = local.input_size
        x = np.random.default_rng(1).integers(0, 256, (a.batch, h, w, 3), dtype=np.uint8)
        for _ in range(2):  # warm both
            local.run(x)
            remote.run(x)
        times: dict[str, list[float]] = {"local": [], "triton": []}
        diff = 0.0
        for _ in range(a.batches):  # alternate, so both see the same machine load
            t = time.perf_counter()
            lo = local.run(x)
            times["local"].append(time.perf_counter() - t)
            t = time.perf_counter()
            tr = remote.run(x)
            times["triton"].append(time.perf_counter() - t)
            diff = max(diff, float(np.abs(lo.scores - tr.scores).max()))
        remote.close()
    finally:
        proc.stdin.close()
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
    fps = {k: a.batch * len(v) / sum(v) for k, v in times.items()}
    print(f"model {'stand-in ' + str(a.size) + ' px' if a.model is None else a.model}, batch {a.batch}, "
          f"{a.batches} batches each, max |score diff| {diff:.1e}")
    for k in ("local", "triton"):
        print(f"{k:<7} {fps[k]:8.1f} frames/s   latency p50 {pct(times[k], 50):7.2f} ms  "
              f"p99 {pct(times[k], 99):7.2f} ms")
    print(f"triton / local frames/s: {fps['triton'] / fps['local']:.3f}; added latency p50 "
          f"{pct(times['triton'], 50) - pct(times['local'], 50):+.2f} ms, p99 "
          f"{pct(times['triton'], 99) - pct(times['local'], 99):+.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
