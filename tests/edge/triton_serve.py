"""Serve an exported ``model.onnx`` on a REAL Triton Inference Server through PyTriton (``nvidia-pytriton``: the
tritonserver binary with its Python backend), ONNX Runtime CPU inside. The test stand-in for the GPU backends
(onnxruntime_onnx / tensorrt_plan) of the repository ``algan-export --triton-repo`` writes, which need a GPU server.

Run with the Python of a venv holding nvidia-pytriton, onnxruntime and numpy (made from /usr/bin/python3.11: the
Python backend's stub links the system libpython)::

    python triton_serve.py GRPC_PORT HTTP_PORT METRICS_PORT MAX_BATCH NAME=MODEL.onnx [NAME=MODEL.onnx ...]

Every endpoint (gRPC, HTTP, Prometheus metrics) listens on 127.0.0.1 only. Writes ``READY`` into the file named by
``$ALGAN_TRITON_READY`` once the models are loaded; stops when stdin closes.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def bind(triton: Triton, name: str, path: str, max_batch: int) -> None:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    h, w = sess.get_inputs()[0].shape[1:3]

    @batch
    def infer(images: np.ndarray) -> dict[str, np.ndarray]:
        res = dict(zip(outs, sess.run(outs, {"images": images}), strict=True))
        res["scores"] = res["scores"].reshape(-1, 1)  # Triton: per-request dims [1]
        return res

    outputs = [Tensor(name="scores", dtype=np.float32, shape=(1,))]
    if "anomaly_maps" in outs:
        mh, mw = sess.get_outputs()[outs.index("anomaly_maps")].shape[1:3]
        outputs.append(Tensor(name="anomaly_maps", dtype=np.float32, shape=(int(mh), int(mw))))
    triton.bind(model_name=name, infer_func=infer,
                inputs=[Tensor(name="images", dtype=np.uint8, shape=(int(h), int(w), 3))], outputs=outputs,
                config=ModelConfig(max_batch_size=max_batch,
                                   batcher=DynamicBatcher(max_queue_delay_microseconds=2000)))


def main() -> None:
    grpc_port, http_port, metrics_port, max_batch = (int(a) for a in sys.argv[1:5])
    cfg = TritonConfig(grpc_port=grpc_port, http_port=http_port, metrics_port=metrics_port, log_verbose=0,
                       grpc_address="127.0.0.1", http_address="127.0.0.1", metrics_address="127.0.0.1")
    with Triton(config=cfg) as triton:
        for pair in sys.argv[5:]:
            name, path = pair.split("=", 1)
            bind(triton, name, path, max_batch)
        triton.run()
        Path(os.environ["ALGAN_TRITON_READY"]).write_text("READY")
        sys.stdin.read()


if __name__ == "__main__":
    main()
