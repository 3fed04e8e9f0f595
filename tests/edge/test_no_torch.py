"""Rule: the runtime and the daemon never import torch (a Jetson / line PC runs them without torch).

The modules are found by walking the ``algan.contract``, ``algan.runtime`` and ``algan.edge`` packages (a new module
is covered without editing this file), plus the torch-free modules outside them that the device runs: the commands
``algan-edge`` / ``algan-alarms`` / ``algan-predict`` and the TensorRT engine builder of ``algan-edge build-engine``.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import algan
import algan.contract
import algan.edge
import algan.runtime

ROOT = Path(algan.__file__).resolve().parent
PACKAGES = {"algan.contract": algan.contract, "algan.runtime": algan.runtime, "algan.edge": algan.edge}
#: torch-free modules outside those packages
OUTSIDE = ["algan.cli.edge", "algan.cli.alarms", "algan.cli.predict", "algan.trt_logging",
           "algan.export.engine_build", "algan.export.trt_helpers"]


def torch_free_modules() -> list[str]:
    walked = [name for name, pkg in PACKAGES.items()
              for name in [name, *(m.name for m in pkgutil.walk_packages(pkg.__path__, name + "."))]]
    return sorted(walked) + OUTSIDE


def test_the_walk_finds_the_runtime():
    mods = torch_free_modules()
    assert {"algan.edge.app", "algan.edge.config", "algan.runtime.runners.onnx", "algan.runtime.runners.tensorrt",
            "algan.runtime.inference", "algan.contract.manifest", "algan.cli.edge", "algan.trt_logging"} <= set(mods)
    for folder in ("contract", "runtime", "edge"):
        files = sorted((ROOT / folder).rglob("*.py"))  # every module and subpackage (capture, runners, config...)
        expected = {".".join(("algan", *f.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
                    for f in files}
        assert {m for m in mods if m.startswith(f"algan.{folder}")} == expected


def test_edge_modules_do_not_import_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {torch_free_modules()!r}: importlib.import_module(m)\n"
        "import onnxruntime, algan.runtime.runners.base\n"
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))\n"
        "assert not bad, bad\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
