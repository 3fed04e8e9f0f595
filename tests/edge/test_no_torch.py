"""Rule: the edge runtime never imports torch (a Jetson / line PC runs it without torch).

The modules are found by walking the ``algan.edge`` package (a new module is covered without editing this file),
plus the torch-free modules outside it that the runtime or its tools import.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import algan
import algan.edge

ROOT = Path(algan.__file__).resolve().parent
#: torch-free modules outside algan.edge (those that exist: some land with other work)
OUTSIDE_EDGE = ["algan.cli.edge", "algan.cli.alarms", "algan.trt_logging", "algan.contract", "algan.inference"]


def torch_free_modules() -> list[str]:
    edge = ["algan.edge"] + [m.name for m in pkgutil.walk_packages(algan.edge.__path__, "algan.edge.")]
    outside = [m for m in OUTSIDE_EDGE if (ROOT.parent / (m.replace(".", "/") + ".py")).is_file()]
    return sorted(edge) + outside


def test_the_walk_finds_the_runtime():
    mods = torch_free_modules()
    assert {"algan.edge.app", "algan.edge.config", "algan.edge.runners.onnx", "algan.edge.runners.tensorrt",
            "algan.cli.edge", "algan.trt_logging"} <= set(mods)
    files = sorted((ROOT / "edge").rglob("*.py"))  # every module and subpackage (capture, runners, config...)
    expected = {".".join(("algan", *f.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
                for f in files}
    assert {m for m in mods if m.startswith("algan.edge")} == expected


def test_edge_modules_do_not_import_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {torch_free_modules()!r}: importlib.import_module(m)\n"
        "import onnxruntime, algan.edge.runners.base\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
