"""Rule: the edge runtime never imports torch (a Jetson / line PC runs it without torch)."""

from __future__ import annotations

import subprocess
import sys

EDGE_MODULES = [
    "algan.edge", "algan.edge.config", "algan.edge.errors", "algan.edge.alarm", "algan.edge.batcher",
    "algan.edge.hub", "algan.edge.sources", "algan.edge.runner", "algan.edge.mqtt", "algan.edge.broker",
    "algan.edge.messages", "algan.edge.stats", "algan.edge.sdnotify", "algan.edge.logs", "algan.edge.app",
    "algan.cli.edge", "algan.cli.alarms", "algan.edge.camera", "algan.edge.runner_onnx", "algan.edge.runner_tensorrt",
    "algan.edge.calibration", "algan.edge.metrics", "algan.edge.journal", "algan.trt_logging",
]


def test_edge_modules_do_not_import_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {EDGE_MODULES!r}: importlib.import_module(m)\n"
        "import onnxruntime, algan.edge.runner\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
